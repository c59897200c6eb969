"""The training maths on a tiny random Llama: selective loss, gradient accumulation, resume, QLoRA."""

import json

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from tunewise.config import Config
from tunewise.data.batching import collate, micro_batches
from tunewise.errors import TunewiseError
from tunewise.model.quant import count_4bit_linear
from tunewise.train import loop
from tunewise.train.loss import LossForward, summed_loss


def test_selective_loss_equals_full_logits(tiny_model_dir, chatml_tokenizer, sql_data, lora_model, encoded, grads,
                                           reference_loss):
    model = lora_model(tiny_model_dir)
    with torch.no_grad():  # lora_B starts at zero, which would leave lora_A's gradients 0 on both sides
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    items = encoded(chatml_tokenizer, sql_data[0])[:4]
    batch = collate(items, chatml_tokenizer.pad_token_id)
    ours, n = summed_loss(model, batch)
    ours.backward()
    g_ours = grads(model)
    model.zero_grad()
    ref, n_ref = reference_loss(model, batch)
    ref.backward()
    assert n == n_ref > 0
    assert all(g.abs().sum() > 0 for name, g in g_ours.items() if "lora_A" in name)  # compared, not 0 == 0
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
    for name, g in grads(model).items():
        torch.testing.assert_close(g_ours[name], g, rtol=1e-4, atol=1e-6)


def test_the_loss_on_a_cpu_takes_chunks_whose_logits_stay_small(tiny_model_dir, chatml_tokenizer, sql_data, lora_model,
                                                               encoded, grads, nonzero_b, monkeypatch):
    """On a CPU the head's logits are computed a few positions at a time (plan.loss_chunk), and the
    loss and gradients are those of one chunk over every position."""
    from tunewise import plan
    from tunewise.train import loss as loss_module

    model = nonzero_b(lora_model(tiny_model_dir))  # lora_A's gradients are then not all zero
    vocab = model.get_output_embeddings().weight.shape[0]
    batch = collate(encoded(chatml_tokenizer, sql_data[0])[:4], chatml_tokenizer.pad_token_id)
    whole, n = summed_loss(model, batch)  # the tiny vocabulary fits every position in one chunk
    whole.backward()
    g_whole = grads(model)
    model.zero_grad()
    assert plan.loss_chunk(vocab, on_gpu=False) >= n
    assert plan.loss_chunk(49152, on_gpu=False) == 85  # SmolLM2: 16 MiB of fp32 logits, not 2048 positions' 384 MiB
    assert plan.loss_chunk(256000, on_gpu=False) == plan.CPU_CHUNK_MIN  # a huge vocabulary: a floor of positions
    monkeypatch.setattr(plan, "CPU_CHUNK_BYTES", 4 * vocab * 5)  # 5 positions' fp32 logits
    monkeypatch.setattr(plan, "CPU_CHUNK_MIN", 1)
    assert plan.loss_chunk(vocab, on_gpu=False) == 5 and plan.loss_chunk(vocab, on_gpu=True) == plan.LOSS_CHUNK
    rows = []
    linear = torch.nn.functional.linear

    def head_matmul(h, weight, *args, **kwargs):
        if weight.shape[0] == vocab:
            rows.append(h.shape[0])
        return linear(h, weight, *args, **kwargs)

    monkeypatch.setattr(loss_module.F, "linear", head_matmul)
    chunked, n_chunked = summed_loss(model, batch)
    chunked.backward()
    assert n_chunked == n and sum(rows) == n and max(rows) == 5  # every trained position, 5 at a time
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-4)
    for name, g in grads(model).items():  # the head's matmul over 5 rows rounds in another order
        torch.testing.assert_close(g, g_whole[name], rtol=1e-4, atol=1e-5)


def test_gradient_accumulation_is_exact(tiny_model_dir, chatml_tokenizer, sql_data, lora_model, encoded, grads):
    """Batch 4 in one pass == 2 micro-batches of 2: same loss, same gradients."""
    model = lora_model(tiny_model_dir)
    # make lora_B non-zero so every adapter weight gets a gradient worth comparing
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    items = encoded(chatml_tokenizer, sql_data[0])[:4]
    lengths = [len(x.input_ids) for x in items]
    assert len(set(lengths)) > 1, "examples of different lengths make per-micro-batch averaging wrong"
    acc = Accelerator(cpu=True)
    results = {}
    for micro in (4, 2, 1):
        model.zero_grad()
        groups = micro_batches([0, 1, 2, 3], lengths, micro)
        assert len(groups) == 4 // micro
        batches = [collate([items[i] for i in g], chatml_tokenizer.pad_token_id) for g in groups]
        results[micro] = (loop.accumulate_gradients(LossForward(model), batches, acc), grads(model))
    (loss4, n4), g4 = results[4]
    for micro in (2, 1):
        (loss, n), g = results[micro]
        assert n == n4
        assert loss == pytest.approx(loss4, rel=1e-5)
        for name in g4:
            torch.testing.assert_close(g[name], g4[name], rtol=1e-4, atol=1e-7)


def run_config(model_dir, data, out, **train):
    settings = {"epochs": 1, "batch_size": 4, "eval_every": 2, "save_every": 2, "max_steps": 6,
                "early_stopping_patience": None, **train}
    return Config.model_validate({
        "model": {"name": str(model_dir), "dtype": "float32"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
        "data": {"train": str(data[0]), "val": str(data[1]), "max_seq_len": 256, "allow_small": True},
        "train": settings, "output_dir": str(out),
    })


def test_resume_gives_the_same_adapter(tiny_model_dir, sql_data, tmp_path, monkeypatch):
    cfg_a = run_config(tiny_model_dir, sql_data, tmp_path / "a", lr=5e-3)
    loop.train(cfg_a)

    cfg_b = run_config(tiny_model_dir, sql_data, tmp_path / "b", lr=5e-3)
    real_save = loop.ckpt.save_checkpoint

    def save_then_die(run_dir, step, *args, **kwargs):
        path = real_save(run_dir, step, *args, **kwargs)
        if step == 4:
            raise KeyboardInterrupt  # killed right after the step-4 checkpoint
        return path

    monkeypatch.setattr(loop.ckpt, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg_b)
    monkeypatch.setattr(loop.ckpt, "save_checkpoint", real_save)
    result = loop.train(cfg_b, resume=True)
    assert result.steps == 6

    for sub in ("adapter", "checkpoints/step-6"):
        a = load_file(str(tmp_path / "a" / sub / "adapter_model.safetensors"))
        b = load_file(str(tmp_path / "b" / sub / "adapter_model.safetensors"))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{sub}:{key} differs after resume"
    from rich.console import Console

    console = Console(record=True, width=200)
    longer = run_config(tiny_model_dir, sql_data, tmp_path / "b", lr=5e-3, max_steps=7, epochs=2)
    loop.train(longer, resume=True, console=console)
    assert "train.max_steps: 6 -> 7" in console.export_text()  # a changed setting is never silent
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[:-2]
    assert len(lines) == len((tmp_path / "a" / "metrics.jsonl").read_text().splitlines())


def test_resume_with_another_lora_rank_is_refused_before_loading(tiny_model_dir, sql_data, tmp_path, monkeypatch):
    """PyTorch's size-mismatch traceback used to reach the user; now the key is named first."""
    cfg = run_config(tiny_model_dir, sql_data, tmp_path / "r", max_steps=2)
    loop.train(cfg)
    changed = cfg.model_copy(update={"lora": cfg.lora.model_copy(update={"r": 8})})
    loaded = []
    monkeypatch.setattr("tunewise.train.session.load_model", lambda *a, **k: loaded.append(a))
    with pytest.raises(TunewiseError, match=r"lora.r was 4 .* is 8 now"):
        loop.train(changed, resume=True)
    assert loaded == []  # refused before any weight was read


def test_run_directory_contract(tiny_model_dir, sql_data, tmp_path):
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = run_config(tiny_model_dir, sql_data, tmp_path / "run", lr=5e-3, max_steps=4)
    result = loop.train(cfg)
    run = tmp_path / "run"
    assert ({"config.yaml", "manifest.json", "metrics.jsonl", "checkpoints", "adapter"}
            <= {p.name for p in run.iterdir()})
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["versions"]["peft"] and len(manifest["chat_template_sha256"]) == 64
    assert manifest["data"]["train"]["sha256"]
    assert (manifest["speed_paths"]["packed_attention"] == {"layers": 2}
            and manifest["speed_paths"]["fused_loss"] is True)
    assert manifest["patches"] == [  # every library internal touched, applied or not (train/patches.py)
        {"patch": "bitsandbytes Linear4bit.support_avx512bf16_for_cpu = False", "off": "no 4-bit layers"},
        {"patch": "transformers AttentionInterface and mask registries: 'tunewise_packed'", "registered": 1}]
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [2, 4]
    trains = [e for e in events if e["event"] == "train"]
    assert all(e["peak_mem_mib"] > 100 for e in trains)  # the process's peak RSS: at least torch itself
    assert [e["peak_mem_mib"] for e in trains] == sorted(e["peak_mem_mib"] for e in trains)  # a running peak
    assert result.best_val_loss == min(e["val_loss"] for e in evals)
    # adapter/ is the best checkpoint by val loss, and plain PEFT loads it
    best = f"checkpoints/step-{result.best_step}/adapter_model.safetensors"
    a, b = load_file(str(run / "adapter/adapter_model.safetensors")), load_file(str(run / best))
    assert all(torch.equal(a[k], b[k]) for k in a)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    PeftModel.from_pretrained(base, str(run / "adapter"))
    # a second run into the same directory is refused rather than overwriting it
    from tunewise.errors import TunewiseError

    with pytest.raises(TunewiseError, match="already holds a run"):
        loop.train(cfg)


def test_qlora_layers_are_4bit_and_train(tiny_model_dir, chatml_tokenizer, sql_data, lora_model, encoded):
    import bitsandbytes as bnb

    model = lora_model(tiny_model_dir, dtype="bfloat16", quantization="nf4")
    n_linear = 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers
    assert count_4bit_linear(model) == n_linear
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            assert module.weight.dtype == torch.uint8
            assert module.weight.quant_state.quant_type == "nf4"
            assert module.weight.quant_state.nested  # double quantization
    # frozen non-quantized weights stay 16-bit (no blanket fp32 upcast)
    assert model.get_base_model().get_input_embeddings().weight.dtype == torch.bfloat16
    items = encoded(chatml_tokenizer, sql_data[0])[:2]
    loss, n = summed_loss(model, collate(items, chatml_tokenizer.pad_token_id))
    loss.backward()
    assert torch.isfinite(loss) and n > 0
    lora_a = [p.grad for name, p in model.named_parameters() if "lora_B" in name]
    assert len(lora_a) == n_linear and all(g is not None and g.abs().sum() > 0 for g in lora_a)


def test_16bit_base_runs_adapters_in_16bit_with_fp32_masters(tiny_model_dir, chatml_tokenizer, sql_data, lora_model,
                                                             encoded):
    """With a bf16 base, the training forward autocasts the adapters (no fp32 input copies), the
    adapter weights and their gradients stay fp32, and the loss matches the fp32-adapter path."""
    from peft.helpers import disable_input_dtype_casting  # noqa: F401  (the mechanism under test)

    from tunewise.train.loss import _summed_loss

    model = lora_model(tiny_model_dir, dtype="bfloat16")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    batch = collate(encoded(chatml_tokenizer, sql_data[0])[:4], chatml_tokenizer.pad_token_id)
    fast, n = summed_loss(model, batch)
    fast.backward()
    assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
               for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        slow, n2 = _summed_loss(model, batch)  # PEFT's default: fp32 adapters on fp32 input copies
    assert n == n2
    torch.testing.assert_close(fast.detach(), slow, rtol=2e-2, atol=0.0)
    assert all(m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled"))


def test_frozen_head_loss_matches_autograd_and_keeps_nothing_vocabulary_sized(tiny_model_dir, chatml_tokenizer,
                                                                                sql_data, monkeypatch, lora_model,
                                                                                encoded, grads):
    """With a frozen head the loss's gradient is computed in the forward pass (train/loss.py): the
    same loss and gradients as autograd's chunked cross-entropy, and no [positions, vocab] tensor
    kept for backward."""
    from tunewise.train import loss as loss_module

    model = lora_model(tiny_model_dir)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    batch = collate(encoded(chatml_tokenizer, sql_data[0])[:4], chatml_tokenizer.pad_token_id)
    vocab = model.get_base_model().config.vocab_size
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(tuple(t.shape)) or t, lambda t: t):
        fused, n = summed_loss(model, batch)
    (fused / 7).backward()
    g_fused = grads(model)
    assert kept and not any(shape and shape[-1] == vocab for shape in kept)
    model.zero_grad()
    monkeypatch.setattr(loss_module, "_frozen_linear", lambda head: False)
    plain, n_plain = summed_loss(model, batch)
    (plain / 7).backward()
    assert n == n_plain > 0
    torch.testing.assert_close(fused, plain, rtol=1e-6, atol=1e-4)
    for name, g in grads(model).items():
        torch.testing.assert_close(g_fused[name], g, rtol=1e-4, atol=1e-6)


def test_validation_does_not_change_qlora_training(tiny_model_dir, sql_data, tmp_path):
    """bitsandbytes repacks 4-bit weights on an eval-mode forward on CPUs with AVX512-BF16, and
    training on the repacked weights differs (model/quant.py). With a validation after every step
    the training losses must equal those of a run validating only at the end."""
    losses = {}
    for every in (1, 100):
        cfg = run_config(tiny_model_dir, sql_data, tmp_path / f"v{every}", eval_every=every, max_steps=3, lr=5e-3)
        cfg.model.quantization, cfg.model.dtype = "nf4", "bfloat16"
        loop.train(cfg)
        events = [json.loads(line) for line in (tmp_path / f"v{every}" / "metrics.jsonl").read_text().splitlines()]
        losses[every] = [(e["loss"], e["grad_norm"]) for e in events if e["event"] == "train"]
    assert losses[1] == losses[100]


def _idle_share(steps: list[list[int]], lengths: list[int]) -> float:
    """The share of two ranks' time spent waiting, when each trains one of a step's two sequences."""
    return 1 - sum(sum(lengths[i] for i in s) / 2 for s in steps) / sum(max(lengths[i] for i in s) for s in steps)


def test_group_by_length_pairs_similar_lengths_in_a_random_order():
    """Each epoch still trains every example once, in a seeded order, but a step's two sequences are
    of similar length, so neither of two ranks waits long for the other."""
    from tunewise.data.batching import GROUP_STEPS, step_indices, steps_per_epoch

    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(150, 580, (387,), generator=g).tolist()  # odd: the epoch's last step is short
    n, per_epoch = len(lengths), steps_per_epoch(len(lengths), 2)
    for epoch in (0, 1):
        grouped = [step_indices(n, 2, 0, epoch * per_epoch + k, lengths) for k in range(per_epoch)]
        plain = [step_indices(n, 2, 0, epoch * per_epoch + k) for k in range(per_epoch)]
        assert sorted(i for s in grouped for i in s) == list(range(n))  # every example once
        assert [len(s) for s in grouped] == [2] * (per_epoch - 1) + [1]  # the short step stays last
        assert _idle_share(grouped[:-1], lengths) < 0.01 < 0.08 < _idle_share(plain[:-1], lengths)
        first_span = [max(lengths[i] for i in s) for s in grouped[:GROUP_STEPS]]
        assert first_span != sorted(first_span, reverse=True)  # the steps are shuffled, not longest first
    assert step_indices(n, 2, 0, 0, lengths) != step_indices(n, 2, 0, per_epoch, lengths)  # a new order each epoch
    assert step_indices(n, 2, 0, 5, lengths) != step_indices(n, 2, 1, 5, lengths)  # and each seed


def test_training_takes_its_steps_from_group_by_length(tiny_model_dir, sql_data, tmp_path, monkeypatch):
    from tunewise.data.batching import step_indices

    seen, real = [], loop.rank_micro_batches

    def recorded(indices, lengths, *args):
        seen.append((indices, lengths))
        return real(indices, lengths, *args)

    monkeypatch.setattr(loop, "rank_micro_batches", recorded)
    loop.train(run_config(tiny_model_dir, sql_data, tmp_path / "g", max_steps=4, eval_every=100, save_every=100,
                          group_by_length=True))
    lengths = seen[0][1]
    assert len(lengths) == 24 and len(set(lengths)) > 1  # the training set's lengths, and they differ
    steps = [indices for indices, _ in seen[:4]]
    assert steps == [step_indices(len(lengths), 4, 0, k, lengths) for k in range(4)]
    assert steps != [step_indices(len(lengths), 4, 0, k) for k in range(4)]
