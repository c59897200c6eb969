#!/usr/bin/env python3
"""The machine's measured bf16 matmul peak, the denominator of model-FLOPs utilisation (issue 5).

Times torch.mm on large square shapes and on the bundled model's own shapes (a packed step is
about 950 tokens; hidden 576, MLP 1536) with all of torch's threads, and reports the best
GFLOP/s. `python benchmarks/matmul_peak.py` prints one line per shape.
"""

from __future__ import annotations

import time

import torch

SHAPES = [(4096, 4096, 4096), (2048, 2048, 2048), (950, 576, 1536), (950, 1536, 576), (950, 576, 576)]


def gflops(m: int, k: int, n: int, dtype=torch.bfloat16, seconds: float = 1.0) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * m * k * n * runs / (time.perf_counter() - start) / 1e9


def measure(dtype=torch.bfloat16) -> dict[tuple[int, int, int], float]:
    return {shape: gflops(*shape, dtype=dtype) for shape in SHAPES}


if __name__ == "__main__":
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for dtype in (torch.bfloat16, torch.float32):
        results = measure(dtype)
        for (m, k, n), value in results.items():
            print(f"{str(dtype).removeprefix('torch.'):9} [{m}x{k}] @ [{k}x{n}]: {value:6.1f} GFLOP/s")
        print(f"{str(dtype).removeprefix('torch.'):9} peak: {max(results.values()):.1f} GFLOP/s")
