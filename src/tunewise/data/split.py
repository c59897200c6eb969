"""`tunewise data split`: a seeded shuffle into train/val(/test) files, lines copied byte for byte."""

from __future__ import annotations

import random
from pathlib import Path

from ..errors import TunewiseError
from ..files import write_atomic


def split_file(path: str | Path, val_fraction: float, test_fraction: float, seed: int, out: str | Path) -> dict[str, int]:
    path = Path(path)
    try:
        lines = [line for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except FileNotFoundError:
        raise TunewiseError(f"data file not found: {path}") from None
    except UnicodeDecodeError:
        raise TunewiseError(f"{path}: not UTF-8; run `tunewise data check {path}` for the line") from None
    if val_fraction + test_fraction >= 1:
        raise TunewiseError("--val-fraction plus --test-fraction must be below 1")
    random.Random(seed).shuffle(lines)
    n_val, n_test = round(len(lines) * val_fraction), round(len(lines) * test_fraction)
    parts = {"val": lines[:n_val], "test": lines[n_val:n_val + n_test], "train": lines[n_val + n_test:]}
    out = Path(out)
    if any((out / f"{name}.jsonl").resolve() == path.resolve() for name in parts):
        raise TunewiseError(f"--out {out} would overwrite the input file {path}")
    counts = {}
    for name, rows in parts.items():
        if name == "test" and not test_fraction:
            continue
        write_atomic(out / f"{name}.jsonl", "".join(r + "\n" for r in rows))
        counts[name] = len(rows)
    return counts
