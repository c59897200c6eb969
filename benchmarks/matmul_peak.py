#!/usr/bin/env python3
"""The machine's measured bf16 matmul peak, the denominator of model-FLOPs utilisation (issue 5).

Times torch.mm on large square shapes and on the bundled model's own shapes (a packed step is
about 950 tokens; hidden 576, MLP 1536) and reports the best GFLOP/s: on the CPU with all of
torch's threads, on a GPU (when one is visible) with CUDA's timing synchronised around the runs.
`python benchmarks/matmul_peak.py` prints one line per shape.
"""

from __future__ import annotations

import time

import torch

SHAPES = [(4096, 4096, 4096), (2048, 2048, 2048), (950, 576, 1536), (950, 1536, 576), (950, 576, 576)]
GPU_SHAPES = [(8192, 8192, 8192), *SHAPES]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def gflops(m: int, k: int, n: int, dtype=torch.bfloat16, seconds: float = 1.0, device: str = "cpu") -> float:
    a, b = torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10 if device == "cuda" else 1):  # launches are queued: sync once per batch of ten
            a @ b
            runs += 1
        sync()
    return 2 * m * k * n * runs / (time.perf_counter() - start) / 1e9


def measure(dtype=torch.bfloat16, device: str | None = None) -> dict[tuple[int, int, int], float]:
    device = device or default_device()
    shapes = GPU_SHAPES if device == "cuda" else SHAPES
    return {shape: gflops(*shape, dtype=dtype, device=device) for shape in shapes}


if __name__ == "__main__":
    device = default_device()
    where = torch.cuda.get_device_name() if device == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {device}: {where}")
    for dtype in (torch.bfloat16, torch.float32):
        results = measure(dtype, device)
        for (m, k, n), value in results.items():
            print(f"{str(dtype).removeprefix('torch.'):9} [{m}x{k}] @ [{k}x{n}]: {value:8.1f} GFLOP/s")
        print(f"{str(dtype).removeprefix('torch.'):9} peak: {max(results.values()):.1f} GFLOP/s")
