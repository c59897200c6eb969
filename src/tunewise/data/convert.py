"""`tunewise data convert`: any format tunewise reads, written as its own JSONL (`messages`), so a
user can see exactly what train reads. `data split` writes the same form for inputs that are not
JSON Lines (a JSON array, parquet, a datasets directory)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import TunewiseError
from ..files import write_atomic
from .load import DataError, DataSpec, Example, Reader

MAX_SHOWN = 10  # errors listed when a conversion is refused


def canonical(example: Example) -> str:
    """One JSONL line of tunewise's own shape; meta and tools kept where the record had them."""
    record = {"messages": example.messages}
    if example.meta:
        record["meta"] = example.meta
    if example.tools:
        record["tools"] = example.tools
    return json.dumps(record, ensure_ascii=False)


def read_all(path: str | Path, spec: DataSpec | None = None) -> tuple[list[Example], Reader]:
    """Every example, or a refusal listing the first errors (all of them are counted)."""
    reader = Reader(path, spec)
    examples, errors = [], []
    for item in reader:
        (errors if isinstance(item, DataError) else examples).append(item)
    if errors:
        shown = "\n  ".join(str(e) for e in errors[:MAX_SHOWN])
        more = f"\n  ... {len(errors) - MAX_SHOWN} more" if len(errors) > MAX_SHOWN else ""
        count = f"{len(errors)} record{'s' if len(errors) > 1 else ''} cannot be read"
        raise TunewiseError(f"{path}: {count} ({reader.describe()}):\n  {shown}{more}")
    if not examples:
        raise TunewiseError(f"{path}: no examples (the file is empty)")
    return examples, reader


def refuse_overwrite(source: str | Path, outputs: list[Path]) -> None:
    """Users' files are never modified: not the input file, nor a directory dataset's contents."""
    resolved = Path(source).resolve()
    for out in outputs:
        if out.resolve() == resolved:
            raise TunewiseError(f"--out: writing {out} would overwrite the input file {source}")
        if resolved in out.resolve().parents:
            raise TunewiseError(f"--out: writing {out} would add a file inside the input directory {source}")


def convert_file(path: str | Path, out: str | Path, spec: DataSpec | None = None) -> tuple[int, Reader]:
    """Write `path` as tunewise's JSONL at `out` (atomically: all or nothing); the user's file is only read."""
    out = Path(out)
    refuse_overwrite(path, [out])
    examples, reader = read_all(path, spec)
    write_atomic(out, "".join(canonical(e) + "\n" for e in examples))
    return len(examples), reader
