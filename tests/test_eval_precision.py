"""model/lora.py: adapters_in_compute_dtype, which evaluation applies to its model (evaluate/compare.py
load_tuned, and the earlier task's adapter in evaluate/forgetting.py): LoRA weights in the base's
16-bit compute dtype, the adapter matmuls in the precision training's autocast gave them."""

import torch

from tunewise.model.lora import adapters_in_compute_dtype
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
