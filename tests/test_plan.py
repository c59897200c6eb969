"""Memory planner arithmetic on hand-computed cases, presets, the CLI's --json."""

import json
import subprocess
import sys

import pytest

from tunewise.errors import TunewiseError
from tunewise.plan import PRESETS, Shape, parse_size, plan, resolve_shape

# hidden 64, 2 layers, intermediate 128, 4 heads of 16, 2 kv heads (kv dim 32), vocab 100, tied
TINY = Shape(64, 2, 128, 4, 2, 100, tied=True)
# per layer: q 64*64 + k 64*32 + v 64*32 + o 64*64 + gate 64*128 + up 64*128 + down 128*64 = 36864
LINEAR = 2 * 36864
OTHER = 100 * 64 + 2 * 2 * 64 + 64  # tied embedding, two norms a layer, final norm = 6720


def test_parameter_counts():
    assert TINY.linear_params() == LINEAR and TINY.other_params() == OTHER
    assert PRESETS["llama-2-7b"].params() == pytest.approx(6.74e9, rel=0.01)
    assert PRESETS["llama-3.1-8b"].params() == pytest.approx(8.03e9, rel=0.01)
    assert PRESETS["llama-3.1-70b"].params() == pytest.approx(70.6e9, rel=0.01)
    assert PRESETS["qwen2.5-0.5b"].params() == pytest.approx(0.494e9, rel=0.01)
    assert PRESETS["smollm2-135m-instruct"].params() == pytest.approx(134.5e6, rel=0.01)


def test_full_fine_tuning_is_16_bytes_a_parameter_plus_activations():
    p = plan(TINY, "full", seq_len=10, batch=2)
    n = LINEAR + OTHER
    assert p.breakdown["weights (16-bit)"] == 2 * n
    assert p.breakdown["gradients (16-bit)"] == 2 * n
    assert p.breakdown["optimizer (fp32 master + Adam m, v)"] == 12 * n
    # per token per layer: 2*(6h + 3q + 2kv + 3i) + 8 = 2*(384 + 192 + 64 + 384) + 8 = 2056
    assert p.breakdown["activations"] == 20 * 2056 * 2
    # full fine-tuning trains the head: each position's fp32 log-softmax is kept, plus one chunk in flight
    assert p.breakdown["logits and loss (fp32, trained positions)"] == 20 * 100 * (4 + 10)
    forward = p.breakdown["activations"] + p.breakdown["logits and loss (fp32, trained positions)"]
    static = 16 * n - 2 * n  # weights, master, Adam; gradients (2n) peak apart from activations
    assert p.total_bytes == static + max(forward, 2 * n)


def test_lora_and_qlora():
    lora = plan(TINY, "lora", seq_len=10, batch=1, lora_r=4)
    # r * (in + out) summed over the 7 projections: 4 * (128 + 96 + 96 + 128 + 192 + 192 + 192) = 4096 a layer
    assert lora.breakdown["LoRA parameters (fp32)"] == 4 * 2 * 4096
    assert lora.breakdown["optimizer (Adam m, v, fp32)"] == 8 * 2 * 4096
    # LoRA inputs per layer: 64*3 + 64 + 64*2 + 128 = 512 values, a one-byte dropout mask each
    assert lora.breakdown["activations"] == 10 * 2 * (2056 + 512)
    q = plan(TINY, "qlora", seq_len=10, batch=1, lora_r=4)
    assert q.breakdown["weights (4-bit linear layers)"] == LINEAR // 2
    assert q.breakdown["quantization constants"] == LINEAR // 64 + 4 * (LINEAR // 16384)
    assert q.breakdown["weights (16-bit embeddings, head, norms)"] == 2 * OTHER
    assert q.total_bytes < lora.total_bytes


def test_gradient_checkpointing_keeps_layer_inputs_only():
    big = PRESETS["llama-2-7b"]
    plain = plan(big, "qlora", 2048, 4)
    ckpt = plan(big, "qlora", 2048, 4, gradient_checkpointing=True)
    assert ckpt.breakdown["activations (checkpointed layer inputs)"] == 2048 * 4 * 2 * 4096 * 32
    assert ckpt.total_bytes < plain.total_bytes / 2


def test_fit_and_advice():
    seven = PRESETS["llama-2-7b"]
    p = plan(seven, "qlora", 512, 1, gradient_checkpointing=True, gpu_memory=parse_size("10GB"))
    assert p.fits and p.max_batch >= 1 and p.advice is None
    full = plan(seven, "full", 512, 1, gpu_memory=parse_size("24GB"))
    assert full.fits is False and "QLoRA" in full.advice
    tight = plan(seven, "qlora", 1024, 64, gradient_checkpointing=True, gpu_memory=parse_size("24GB"))
    assert tight.fits is False and "micro-batch" in tight.advice and tight.max_batch >= 1
    assert plan(seven, "qlora", 1024, tight.max_batch, True, gpu_memory=parse_size("24GB")).fits
    assert not plan(seven, "qlora", 1024, tight.max_batch + 1, True, gpu_memory=parse_size("24GB")).fits
    long = plan(seven, "qlora", 4096, 1, gpu_memory=parse_size("24GB"))
    assert long.fits is False and "gradient_checkpointing" in long.advice


def test_presets_and_config_files(tmp_path, tiny_model_dir):
    for name in ("llama-2-7b", "llama-2-13b", "llama-3.1-8b", "llama-3.1-70b", "mistral-7b", "qwen2.5-7b",
                 "qwen2.5-0.5b", "llama-3.2-1b", "llama-3.2-3b"):
        assert resolve_shape(name).params() > 1e8
    assert resolve_shape(str(tiny_model_dir)).hidden == 64
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    with pytest.raises(TunewiseError, match="lacks 'num_hidden_layers'"):
        resolve_shape(str(tmp_path / "config.json"))
    with pytest.raises(TunewiseError, match="unknown model"):
        resolve_shape("gpt-5")
    assert parse_size("24GB") == 24 * 1024**3 and parse_size("512MiB") == 512 * 1024**2
    with pytest.raises(TunewiseError):
        parse_size("lots")


def test_cli_json_shape():
    proc = subprocess.run([sys.executable, "-m", "tunewise.cli", "plan", "--model", "llama-3.1-8b", "--method", "qlora",
                           "--seq-len", "1024", "--batch", "2", "--gradient-checkpointing", "--gpu-memory", "24GB",
                           "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["method"] == "qlora" and isinstance(data["total_bytes"], int)
    assert data["total_bytes"] <= sum(data["breakdown"].values()) and data["fits"] is True
    proc = subprocess.run([sys.executable, "-m", "tunewise.cli", "plan", "--model", "llama-3.1-8b", "--method", "dora",
                           "--seq-len", "1", "--batch", "1"], capture_output=True, text=True)
    assert proc.returncode == 1 and "--method 'dora'" in proc.stderr and "Traceback" not in proc.stderr


def test_checkpointed_peak_is_the_larger_phase_not_the_sum():
    p = plan(TINY, "lora", seq_len=10, batch=1, gradient_checkpointing=True, lora_r=4)
    b = p.breakdown
    inputs = b["activations (checkpointed layer inputs)"]
    assert inputs == 10 * 2 * 64 * 2  # each layer's bf16 input
    layer = b["activations (one layer recomputed)"]
    logits = b["logits and loss (fp32, trained positions)"]
    static = b["weights (16-bit)"] + b["LoRA parameters (fp32)"] + b["optimizer (Adam m, v, fp32)"]
    assert p.total_bytes == static + max(inputs + max(logits, layer), b["LoRA gradients (fp32)"])
    assert p.total_bytes < sum(b.values())


def test_auto_micro_batch_follows_free_memory():
    from tunewise.plan import CPU_TOKEN_CAP, GIB, GPU_TOKEN_CAP, micro_batch_tokens

    smol = PRESETS["smollm2-135m-instruct"]
    assert micro_batch_tokens(smol, "qlora", 200, 100 * GIB, on_gpu=False) == (CPU_TOKEN_CAP, True)
    assert micro_batch_tokens(smol, "qlora", 200, 1000 * GIB, on_gpu=True) == (GPU_TOKEN_CAP, True)
    tokens, fits = micro_batch_tokens(smol, "qlora", 200, 2 * GIB, on_gpu=True, trained_fraction=0.1)
    assert fits and 200 < tokens < CPU_TOKEN_CAP
    more, _ = micro_batch_tokens(smol, "qlora", 200, 4 * GIB, on_gpu=True, trained_fraction=0.1)
    assert more == pytest.approx(2 * tokens, rel=0.01)  # linear in free memory
    # checkpointing keeps one layer's activations: far more tokens in the same memory
    ckpt, _ = micro_batch_tokens(smol, "qlora", 200, 2 * GIB, True, 0.1, gradient_checkpointing=True)
    assert ckpt > 5 * tokens
    # a CPU keeps a smaller loss chunk in flight (plan.loss_chunk), so the same memory holds more tokens
    cpu, _ = micro_batch_tokens(smol, "qlora", 200, 2 * GIB, on_gpu=False)
    gpu, _ = micro_batch_tokens(smol, "qlora", 200, 2 * GIB, on_gpu=True)
    assert gpu < cpu < CPU_TOKEN_CAP
    # not even one sequence fits: one sequence per micro-batch, and the caller warns
    assert micro_batch_tokens(smol, "qlora", 4096, 100 * 2**20, on_gpu=True) == (4096, False)


def test_micro_batches_respect_the_token_budget():
    from tunewise.data.batching import micro_batches

    lengths = [100, 90, 80, 70, 60, 50]
    groups = micro_batches(list(range(6)), lengths, "auto", token_budget=250)
    assert all(lengths[g[0]] * len(g) <= 250 for g in groups)
    assert sorted(i for g in groups for i in g) == list(range(6))
    assert micro_batches(list(range(6)), lengths, "auto") == [list(range(6))]  # 6 x 100 under 8192


def test_loss_memory_beyond_one_chunk_is_the_kept_gradient():
    from tunewise.plan import LOSS_CHUNK as CHUNK  # train/loss.py computes in the same chunks

    logits = lambda tokens: plan(TINY, "lora", tokens, 1).breakdown["logits and loss (fp32, trained positions)"]
    assert logits(100) == 100 * (100 * 10 + 2 * 64)  # one chunk in flight + the kept hidden-state gradient
    # past one chunk each further position adds only its kept gradient (2h bytes; the head is frozen)
    assert logits(3 * CHUNK) - logits(2 * CHUNK) == CHUNK * 2 * 64


def test_several_gpus_ddp_adds_buckets_and_fsdp_shards():
    """Per GPU: DDP keeps the whole model plus a flat copy of the gradients for its all-reduce; FSDP
    keeps a quarter of weights, gradients and optimizer state on 4 GPUs, plus two gathered layers."""
    shape = resolve_shape("llama-3.1-8b")
    one = plan(shape, "full", 1024, 1, True)
    ddp = plan(shape, "full", 1024, 1, True, gpus=4, strategy="ddp")
    fsdp = plan(shape, "full", 1024, 1, True, gpus=4, strategy="fsdp")
    assert ddp.breakdown["DDP gradient buckets"] == one.breakdown["gradients (16-bit)"]
    assert ddp.total_bytes == one.total_bytes + one.breakdown["gradients (16-bit)"]
    for key in ("weights (16-bit)", "optimizer (fp32 master + Adam m, v)", "gradients (16-bit)"):
        assert fsdp.breakdown[key] == -(-one.breakdown[key] // 4)
    assert 0 < fsdp.breakdown["FSDP gathered layers (2 of them)"] < one.breakdown["weights (16-bit)"] / 4
    assert fsdp.breakdown["FSDP gathered embeddings and head"] == 2 * 2 * 128256 * 4096 + 2 * 4096  # untied
    assert fsdp.total_bytes < one.total_bytes / 3
    with pytest.raises(TunewiseError, match="--strategy 'zero'"):
        plan(shape, "lora", 1024, 1, gpus=2, strategy="zero")
