#!/usr/bin/env python3
"""Packed attention's paths side by side, forward + backward: `_matmul_attention` (matmul + fp32
softmax, scores recomputed in backward) and PyTorch's SDPA (flash / memory-efficient kernels where
the device has them) on the padded [batch, heads, L, dim] grid `packed_attention` builds, and on the
CPU the block kernel (train/block_attention.py) on the packed row itself, each sequence in blocks of
queries. train/packing.py picks matmul for short batches on the CPU, the block kernel for longer
ones, and SDPA on a GPU; this shows why.

    python benchmarks/attention_paths.py      # on the GPU when one is visible, else the CPU
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from tunewise.train.block_attention import block_causal_attention  # noqa: E402
from tunewise.train.packing import PackedLayout, _matmul_attention  # noqa: E402

CASES = [  # (label, sequence lengths, heads, kv_heads, dim)
    ("SmolLM2-135M, 8 x 147 (SQL micro-batch)", [147] * 8, 9, 3, 64),
    ("SmolLM2-135M, 8 of 90-176", [176, 150, 90, 120, 160, 100, 130, 140], 9, 3, 64),
    ("SmolLM2-135M, 8 of 250-551 (SQL bench micro-batch)", [420, 300, 551, 250, 380, 400, 330, 393], 9, 3, 64),
    ("SmolLM2-135M, 1 x 380 (a quickstart rank's step)", [380], 9, 3, 64),
    ("SmolLM2-135M, 8 x 512", [512] * 8, 9, 3, 64),
    ("Llama-2-7B layer, 4 x 1024", [1024] * 4, 32, 32, 128),
]


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] > k.shape[1])


def paths(layout: PackedLayout, device: str) -> dict:
    """Each path from the packed row [1, heads, N, dim] to [1, N, heads, dim], as packed_attention runs it
    (the grid paths with their scatter and gather)."""
    def grid(kernel):
        return lambda q, k, v: layout.unpad(kernel(*(layout.pad(t) for t in (q, k, v))))

    def per_sequence_sdpa(q, k, v):  # the CPU's path before the block kernel
        outs, start = [], 0
        for n in layout.lengths:
            outs.append(sdpa(*(t[:, :, start:start + n] for t in (q, k, v))))
            start += n
        return torch.cat(outs, dim=2).transpose(1, 2)

    found = {"matmul": grid(lambda q, k, v: _matmul_attention(q, k, v, None, 0.0)), "SDPA": grid(sdpa)}
    if device == "cpu":
        found["SDPA per sequence"] = per_sequence_sdpa
        found["block"] = lambda q, k, v: block_causal_attention(q, k, v, layout.lengths, None)
    return found


def time_path(fn, q, k, v, device: str) -> tuple[float, float]:
    """(ms per forward + backward, peak MiB above the inputs on CUDA or nan)."""
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    grad = torch.randn_like(fn(q, k, v))
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
    print(f"{name}, torch {torch.__version__}, bf16, forward + backward, ms (peak MiB above the inputs on a GPU)")
    header = None
    for label, lengths, heads, kv, dim in CASES:
        if device == "cpu" and max(lengths) > 600:
            continue  # minutes on a small CPU
        layout = PackedLayout.from_lengths(lengths).to(device)
        # the packed row as training has it: [1, heads, N, dim] views of [1, N, heads, dim]
        q, k, v = (torch.randn(1, sum(lengths), h, dim, device=device, dtype=torch.bfloat16).transpose(1, 2)
                   .requires_grad_() for h in (heads, kv, kv))
        found = paths(layout, device)
        if header is None:
            header = list(found)
            print("| case | " + " | ".join(header) + " |\n|---|" + "---|" * len(header))
        cells = []
        for fn in found.values():
            ms, mib = time_path(fn, q, k, v, device)
            cells.append(f"{ms:.2f}" + (f" ({mib:.0f})" if device == "cuda" else ""))
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
