#!/usr/bin/env python3
"""Measure real peak training memory and print it beside `tunewise plan`'s prediction.

Each point runs in its own process: build the model (the bundled one, or a randomly initialised
Llama of a given shape: memory does not depend on the weights), reset the kernel's peak-RSS mark
(/proc/self/clear_refs) once the model is loaded, run two training steps (the second has
optimizer state) through the forward `tunewise train` runs (packed batches, the lean MLP, the
fused LoRA dropout), and read the peak (VmHWM) minus the RSS before the model existed. On a GPU it
reads torch.cuda.max_memory_allocated instead (and reports the allocator's reserved peak beside
it). Full fine-tuning is run as mixed precision with fp32 master weights and fp32 Adam moments,
the accounting the planner uses.

    .venv/bin/python benchmarks/calibrate_memory.py            # CPU: bundled model + random shapes
    .venv/bin/python benchmarks/calibrate_memory.py --quick    # fewer points
    python benchmarks/calibrate_memory.py --gpu                # GPU: random Llama 3.2 1B and Llama 2 7B shapes
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

POINTS = [  # (model, method, seq_len, batch, gradient checkpointing)
    ("smollm2-135m-instruct", "lora", 256, 4, False),
    ("smollm2-135m-instruct", "qlora", 256, 4, False),
    ("smollm2-135m-instruct", "full", 256, 4, False),
    ("smollm2-135m-instruct", "lora", 512, 4, True),
    ("rand-h1024-l8", "lora", 512, 2, False),
    ("rand-h1024-l8", "qlora", 512, 2, False),
    ("rand-h1024-l8", "full", 256, 2, False),
    ("rand-h2048-l4", "qlora", 1024, 1, False),
    ("rand-h2048-l4", "lora", 256, 4, True),
]
# Issue 5's GPU rows: LoRA and QLoRA on randomly initialised 1B and 7B Llama shapes (memory does
# not depend on the weights), 4 x 1024 tokens a micro-batch, with and without checkpointing.
GPU_POINTS = [
    ("rand-llama-3.2-1b", "lora", 1024, 4, False),
    ("rand-llama-3.2-1b", "qlora", 1024, 4, False),
    ("rand-llama-3.2-1b", "qlora", 1024, 4, True),
    ("rand-llama-2-7b", "lora", 1024, 4, False),
    ("rand-llama-2-7b", "qlora", 1024, 4, False),
    ("rand-llama-2-7b", "qlora", 1024, 4, True),
    # the same micro-batch through stock transformers + PEFT (SDPA attention, PEFT's dropout and
    # fp32 adapter path, full-vocabulary logits in the model's loss): what tunewise saves
    ("rand-llama-2-7b", "lora+peft", 1024, 4, False),
    ("rand-llama-2-7b", "qlora+peft", 1024, 4, False),
]
# glibc raises its mmap threshold after large frees, after which freed activations stay in the heap
# and RSS stops tracking live tensors (measured: +900 MiB on the second step of a 135M LoRA run).
# A fixed threshold returns large blocks to the kernel on free, so VmHWM measures tensors.
CHILD_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
RANDOM = {"rand-h1024-l8": dict(hidden_size=1024, num_hidden_layers=8, intermediate_size=2816,
                                num_attention_heads=16, num_key_value_heads=4, vocab_size=32000),
          "rand-h2048-l4": dict(hidden_size=2048, num_hidden_layers=4, intermediate_size=5632,
                                num_attention_heads=16, num_key_value_heads=8, vocab_size=32000)}


def preset_config(preset: str) -> dict:
    """A LlamaConfig's keys for one of the planner's preset shapes."""
    from tunewise.plan import PRESETS

    s = PRESETS[preset]
    return dict(hidden_size=s.hidden, num_hidden_layers=s.layers, intermediate_size=s.intermediate,
                num_attention_heads=s.heads, num_key_value_heads=s.kv_heads, vocab_size=s.vocab,
                tie_word_embeddings=s.tied)


def rss() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def vm_hwm() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def measure(model_dir: str, method: str, seq_len: int, batch: int, ckpt: bool) -> dict:
    import torch

    from tunewise.config import LoraConfig
    from tunewise.data.masking import Encoded
    from tunewise.model.load import load_model
    from tunewise.model.lora import add_lora
    from tunewise.train.loss import summed_loss
    from tunewise.train.packing import make_batch
    from tunewise.train.patches import enable_packing
    from tunewise.train.swiglu import enable_lean_mlp

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    stock = method.endswith("+peft")
    method = method.removesuffix("+peft")
    base = rss()
    model = load_model(model_dir, "bfloat16", "nf4" if method == "qlora" else "none", device)
    packed = not stock and enable_packing(model)  # the forward `tunewise train` runs
    if not stock:
        enable_lean_mlp(model)
    if method == "full":
        if ckpt:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        master = [p.detach().float() for p in model.parameters()]
        optimizers = [torch.optim.AdamW([m], lr=1e-5) for m in master]
    else:
        model = stock_peft(model, ckpt) if stock else add_lora(model, LoraConfig(), ckpt)
        optimizers = [torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)]
    model.train()  # dropout and gradient checkpointing are active in train mode only
    rows = torch.randint(100, 1000, (batch, seq_len)).tolist()
    batch_ = {k: v.to(device) for k, v in make_batch([Encoded(r, r) for r in rows], 0, packed).items()}
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        open("/proc/self/clear_refs", "w").write("5")
    for _ in range(2):
        if stock:  # equal-length rows: no padding, every token trained
            model(input_ids=batch_["input_ids"], labels=batch_["labels"]).loss.backward()
        else:
            loss, n = summed_loss(model, batch_)
            (loss / n).backward()
        if method == "full":  # mixed precision: one parameter's fp32 grad at a time into its master copy
            for p, m, opt in zip(model.parameters(), master, optimizers):
                m.grad = p.grad.float()
                p.grad = None
                opt.step()
                m.grad = None
                p.data.copy_(m)
        else:
            optimizers[0].step()
            optimizers[0].zero_grad(set_to_none=True)
    if cuda:
        return {"peak": torch.cuda.max_memory_allocated(), "reserved": torch.cuda.max_memory_reserved()}
    return {"peak": vm_hwm() - base}


def stock_peft(model, ckpt: bool):
    """LoRA as a plain transformers + PEFT script sets it up, with tunewise's default settings."""
    from peft import LoraConfig, get_peft_model

    from tunewise.config import LoraConfig as Defaults

    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    d = Defaults()
    return get_peft_model(model, LoraConfig(r=d.r, lora_alpha=d.alpha, lora_dropout=d.dropout,
                                            target_modules=d.target_modules, task_type="CAUSAL_LM"))


def model_dir(name: str, root: Path) -> str:
    if not name.startswith("rand-"):
        from tunewise.model.load import resolve_model

        return resolve_model(name)
    path = root / name
    if not path.exists():
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        shape = RANDOM.get(name) or preset_config(name.removeprefix("rand-"))
        config = LlamaConfig(**{"tie_word_embeddings": False, **shape}, max_position_embeddings=4096)
        # built in bf16 where it will train: a 7B model initialised in fp32 on a CPU takes minutes
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = LlamaForCausalLM._from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(path)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--gpu", action="store_true", help="the 1B and 7B points (needs a GPU)")
    parser.add_argument("--models", help="only the points of these models (comma-separated)")
    parser.add_argument("--child", nargs=5)
    args = parser.parse_args()
    if args.child:
        directory, method, seq_len, batch, ckpt = args.child
        print(json.dumps(measure(directory, method, int(seq_len), int(batch), ckpt == "1")))
        return
    import torch

    from tunewise.plan import plan, resolve_shape

    root = Path(tempfile.mkdtemp(prefix="tunewise-calib-"))
    points = GPU_POINTS if args.gpu else POINTS[:4] if args.quick else POINTS
    if args.models:
        points = [p for p in points if p[0] in args.models.split(",")]
    where = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"{where}, torch {torch.__version__}; peak memory of two training steps, after loading")
    print(f"{'model':<22}{'method':<11}{'seq':>5}{'batch':>6}{'ckpt':>6}{'predicted MiB':>15}{'measured MiB':>14}"
          f"{'error':>8}{'reserved MiB':>14}")
    for name, method, seq_len, batch, ckpt in points:
        directory = model_dir(name, root)
        out = subprocess.run([sys.executable, __file__, "--child", directory, method, str(seq_len), str(batch),
                              "1" if ckpt else "0"], capture_output=True, text=True, env=CHILD_ENV)
        if out.returncode:
            tail = "\n    ".join(out.stderr.strip().splitlines()[-12:])
            print(f"{name} {method}: failed:\n    {tail}", flush=True)
            continue
        result = json.loads(out.stdout.strip().splitlines()[-1])
        measured, reserved = result["peak"], result.get("reserved")
        if method.endswith("+peft"):  # the planner describes tunewise's own forward only
            predicted_text, error_text = f"{'-':>15}", f"{'-':>8}"
        else:
            predicted = plan(resolve_shape(directory), method, seq_len, batch, ckpt).total_bytes
            predicted_text, error_text = f"{predicted / 2**20:>15.0f}", f"{(predicted - measured) / measured:>+8.1%}"
        reserved_text = f"{reserved / 2**20:>14.0f}" if reserved else ""
        print(f"{name:<22}{method:<11}{seq_len:>5}{batch:>6}{'yes' if ckpt else 'no':>6}{predicted_text}"
              f"{measured / 2**20:>14.0f}{error_text}{reserved_text}", flush=True)


if __name__ == "__main__":
    main()
