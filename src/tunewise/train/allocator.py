"""Give freed host memory back to the system between steps.

PyTorch has no caching allocator for CPU tensors: activations come from glibc malloc, which keeps
freed memory in its heaps. Each step's activations have other sizes (packed batches vary in
length), so the heap fragments and the resident set grows step after step: on the SQL benchmark
from 2.5 GiB after the first step to 3.5 GiB after thirty, with about 1 GiB really in use between
steps. `malloc_trim(0)` after each step returns the free pages; measured over 15 QLoRA steps it
cost 1 s in 48 s and lowered the peak from 3003 to 2742 MiB. Not glibc (or not CPU): nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # musl, macOS: no malloc_trim
        return None


def release_freed_memory(device) -> None:
    if getattr(device, "type", str(device)) != "cpu":
        return
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
