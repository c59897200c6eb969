"""Held-out splits: one seeded shuffle for `tunewise data split` (files, lines copied byte for byte)
and for train's validation split when only data.train is given."""

from __future__ import annotations

import random
from pathlib import Path

from ..errors import TunewiseError
from ..files import write_atomic
from .convert import canonical, read_all, refuse_overwrite
from .load import DataSpec, Example
from .sources import open_source


def split_indices(n: int, sizes: list[int], seed: int) -> list[list[int]]:
    """A seeded shuffle of range(n) cut into consecutive parts of `sizes`, and the rest as the last part."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    parts, start = [], 0
    for size in sizes:
        parts.append(order[start : start + size])
        start += size
    return parts + [order[start:]]


def split_examples(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, val) with `fraction` of the examples held out, each in the file's order."""
    n_val = max(1, round(len(examples) * fraction))
    if n_val >= len(examples):
        raise TunewiseError(f"{len(examples)} examples are too few to hold out a validation split")
    val = set(split_indices(len(examples), [n_val], seed)[0])
    return [e for i, e in enumerate(examples) if i not in val], [e for i, e in enumerate(examples) if i in val]


def replay_count(n_train: int, fraction: float) -> int:
    """Replay examples that make `fraction` of the mixed training set (data.replay)."""
    return max(1, round(n_train * fraction / (1 - fraction)))


def split_file(path: str | Path, val_fraction: float, test_fraction: float, seed: int,
               out: str | Path, spec: DataSpec | None = None) -> dict[str, int]:
    """JSON Lines are split line by line, copied byte for byte; other inputs (a JSON array, parquet, a
    datasets directory) are read in their format and written as tunewise's JSONL (data convert)."""
    path = Path(path)
    if val_fraction + test_fraction >= 1:
        raise TunewiseError("--val-fraction plus --test-fraction must be below 1")
    lines = _lines(path) if open_source(path).is_jsonl else [canonical(e) for e in read_all(path, spec)[0]]
    n_val, n_test = round(len(lines) * val_fraction), round(len(lines) * test_fraction)
    val, test, train = split_indices(len(lines), [n_val, n_test], seed)
    parts = {name: [lines[i] for i in part] for name, part in (("val", val), ("test", test), ("train", train))}
    out = Path(out)
    refuse_overwrite(path, [out / f"{name}.jsonl" for name in parts])
    counts = {}
    for name, rows in parts.items():
        if name == "test" and not test_fraction:
            continue
        write_atomic(out / f"{name}.jsonl", "".join(r + "\n" for r in rows))
        counts[name] = len(rows)
    return counts


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise TunewiseError(f"{path}: not UTF-8; run `tunewise data check {path}` for the line") from None
