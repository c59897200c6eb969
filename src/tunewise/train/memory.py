"""Host and device memory during training: free memory, peaks, and freed memory given back.

Giving freed host memory back to the system: PyTorch has no caching allocator for CPU tensors;
activations come from glibc malloc, which keeps freed memory in its heaps, and packed batches of
varying length fragment them, so the resident set grows from step to step (SQL benchmark, QLoRA:
2.3 GiB after the first step, 3.2 GiB after thirty, about 1 GiB live between steps). Measured
remedies all cost time on this 2-core machine (docs/benchmarks.md): `malloc_trim(0)` after every
step -230 to -330 MiB peak for +7% to +29% time (0.12-0.17 s for the trim, ~0.4 s of page faults
in the next step); a fixed 1 MiB mmap threshold -370 to -400 MiB for +15% to +45%; two
micro-batches a step -580 MiB for +28%. So the loop trims once after loading the model and
before each evaluation (whose allocations would otherwise land on top of the fragmented heap:
+190 MiB at the end of the benchmark run), not after every step; when memory is short, \
`micro_batch_size: auto` shrinks the
micro-batches instead (plan.micro_batch_tokens). Not glibc (or not CPU): nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import resource
from pathlib import Path

import torch


def device_type(device) -> str:
    return getattr(device, "type", str(device))


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # musl, macOS: no malloc_trim
        return None


def release_freed_memory(device) -> None:
    if device_type(device) != "cpu":
        return
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def available_bytes(device) -> int | None:
    """Memory a run can still use: free CUDA memory, or MemAvailable (within a cgroup limit) on CPU."""
    if device_type(device) == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        free = int(meminfo["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    try:  # a container's limit, when it is tighter than the machine's free memory
        limit, used = (Path("/sys/fs/cgroup", n).read_text().strip() for n in ("memory.max", "memory.current"))
        if limit != "max":
            free = min(free, int(limit) - int(used))
    except (OSError, ValueError):
        pass
    return free


def peak_memory_mib(device) -> float:
    """Peak memory so far: allocated GPU memory on CUDA, the process's peak resident set on CPU."""
    if device_type(device) == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
