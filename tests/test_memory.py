"""Host memory between steps: freed activations go back to the system."""

import gc

import pytest
import torch

from tunewise.train.memory import _malloc_trim, release_freed_memory


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status")


@pytest.mark.skipif(_malloc_trim() is None, reason="not glibc: nothing to trim")
def test_release_freed_memory_returns_fragmented_heap_pages():
    # 64 KiB tensors come from malloc's heap (under the mmap threshold); keeping every 50th one alive
    # leaves the freed ones between live chunks, where free() alone never hands pages back
    kept, freed = [], []
    for i in range(4000):
        (kept if i % 50 == 0 else freed).append(torch.ones(16384))
    del freed
    gc.collect()
    before = _rss_mib()
    release_freed_memory(torch.device("cpu"))
    after = _rss_mib()
    assert before - after > 100, (before, after)
    assert all(float(t[0]) == 1.0 for t in kept)  # live tensors untouched


def test_release_is_a_no_op_off_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr("tunewise.train.memory._malloc_trim", lambda: calls.append(1))
    release_freed_memory(torch.device("meta"))
    assert calls == []
