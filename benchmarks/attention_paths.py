#!/usr/bin/env python3
"""Packed attention's two paths side by side: `_matmul_attention` (matmul + fp32 softmax, scores
recomputed in backward) and PyTorch's SDPA (flash / memory-efficient kernels where the device has
them), forward + backward on the padded [batch, heads, L, dim] grid `packed_attention` builds.
train/packing.py picks matmul for short batches on the CPU and SDPA otherwise; this shows why.

    python benchmarks/attention_paths.py      # on the GPU when one is visible, else the CPU
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from tunewise.train.packing import _matmul_attention  # noqa: E402

CASES = [  # (label, batch, length, heads, kv_heads, dim)
    ("SmolLM2-135M, 8 x 147 (SQL micro-batch)", 8, 147, 9, 3, 64),
    ("SmolLM2-135M, 8 x 512", 8, 512, 9, 3, 64),
    ("Llama-2-7B layer, 4 x 1024", 4, 1024, 32, 32, 128),
]


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] > k.shape[1])


def time_path(fn, q, k, v, device: str) -> tuple[float, float]:
    """(ms per forward + backward, peak MiB above the inputs on CUDA or nan)."""
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    grad = torch.randn_like(q)
    for _ in range(3):
        fn(q, k, v).backward(grad)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < 1.0:
        fn(q, k, v).backward(grad)
        runs += 1
        sync()
    ms = (time.perf_counter() - start) / runs * 1e3
    return ms, (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else float("nan")


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{name}, torch {torch.__version__}, bf16, forward + backward")
    print("| case | matmul ms | SDPA ms | matmul peak MiB | SDPA peak MiB |")
    print("|---|---|---|---|---|")
    for label, b, length, heads, kv, dim in CASES:
        if device == "cpu" and length > 512:
            continue  # minutes on a small CPU, and the CPU path is SDPA there anyway
        q, k, v = (torch.randn(b, h, length, dim, device=device, dtype=torch.bfloat16, requires_grad=True)
                   for h in (heads, kv, kv))
        mm = time_path(lambda q, k, v: _matmul_attention(q, k, v, None, 0.0), q, k, v, device)
        fl = time_path(sdpa, q, k, v, device)
        print(f"| {label} | {mm[0]:.2f} | {fl[0]:.2f} | {mm[1]:.0f} | {fl[1]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
