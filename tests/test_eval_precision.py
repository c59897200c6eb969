"""model/lora.py: adapters_in_compute_dtype, which evaluation applies to its model (evaluate/compare.py
load_tuned, and the earlier task's adapter in evaluate/forgetting.py): LoRA weights in the base's
16-bit compute dtype, the adapter matmuls in the precision training's autocast gave them."""

import torch
from peft import PeftModel

from tunewise.config import Config, dump_config
from tunewise.evaluate.compare import load_tuned
from tunewise.model.load import load_model
from tunewise.model.lora import adapters_in_compute_dtype
from tunewise.model.lora_add import fuse_lora_add
from tunewise.train.loss import adapter_precision


def test_adapters_run_in_the_bases_dtype_as_in_training(tiny_model_dir, lora_model, nonzero_b):
    model = nonzero_b(lora_model(tiny_model_dir, dtype="bfloat16")).eval()
    ids = torch.randint(0, 1000, (2, 24))
    with torch.no_grad(), adapter_precision(model):  # training's precision, fp32 adapter weights
        trained = model(input_ids=ids).logits
    with torch.no_grad():
        pefts_default = model(input_ids=ids).logits  # PEFT's eval: input copied to fp32, adapters in fp32
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert adapters_in_compute_dtype(model) == len(lora) > 0
    assert {p.dtype for p in lora} == {torch.bfloat16}
    with torch.no_grad():
        evaluated = model(input_ids=ids).logits
    torch.testing.assert_close(evaluated, trained, rtol=0, atol=0)
    assert not torch.equal(pefts_default, trained)  # the comparison can tell the two precisions apart
    assert adapters_in_compute_dtype(model) == 0  # nothing left to cast


def test_a_32_bit_base_keeps_fp32_adapters(tiny_model_dir, lora_model):
    model = lora_model(tiny_model_dir, dtype="float32")
    assert adapters_in_compute_dtype(model) == 0
    assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}


def test_load_tuned_computes_what_training_computed(tiny_model_dir, lora_model, nonzero_b, tmp_path):
    """Evaluation's model (evaluate/compare.py: load_tuned) gives the logits of training's forward:
    the adapter matmuls in bf16 and the LoRA add in one addmm (model/lora_add.py), not PEFT's add."""
    model = nonzero_b(lora_model(tiny_model_dir, dtype="bfloat16")).eval()
    run = tmp_path / "run"
    model.save_pretrained(str(run / "adapter"))
    config = Config.model_validate({"model": {"name": str(tiny_model_dir)}, "data": {"train": "x"},
                                    "output_dir": str(run)})
    (run / "config.yaml").write_text(dump_config(config))
    assert fuse_lora_add(model) > 0  # training's LoRA add (train/patches.py: apply_speed_paths)
    ids = torch.randint(0, 1000, (2, 24))
    with torch.no_grad(), adapter_precision(model):
        trained = model(input_ids=ids).logits
    tuned, _, _ = load_tuned(run, device="cpu")
    with torch.no_grad():
        evaluated = tuned(input_ids=ids).logits
        with tuned.disable_adapter():
            base = tuned(input_ids=ids).logits
    torch.testing.assert_close(evaluated, trained, rtol=0, atol=0)
    peft = PeftModel.from_pretrained(load_model(str(tiny_model_dir), "bfloat16"), str(run / "adapter")).eval()
    adapters_in_compute_dtype(peft)
    with torch.no_grad():
        pefts = peft(input_ids=ids).logits
    assert not torch.equal(pefts, trained)  # PEFT's add rounds the adapter's product first: told apart
    # and yet the same adapter: PEFT's logits are far closer to these than the base model's are
    assert (evaluated - base).abs().max() > 10 * (evaluated - pefts).abs().max()
