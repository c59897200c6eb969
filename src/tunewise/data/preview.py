"""`tunewise data preview`: exactly what each example trains, as train builds it.

Each example becomes one or more sequences (data/targets.py), each a list of segments; a
segment is trained or not. The segments joined are exactly the text that is tokenized, so what
is shown here is what the loss sees (less truncation, which `data check` reports).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.text import Text

from .load import DataError, DataSpec, Reader, where
from .targets import TargetOptions, build_sequences
from .template import TemplateCheckError


def preview(path: str | Path, tokenizer, options: TargetOptions, line: int | None = None,
            spec: DataSpec | None = None) -> Iterator[dict]:
    """One JSON-ready object per example: its sequences, or the error that refuses it. `line` is the
    row (from 0) in parquet and arrow data."""
    found = False
    reader = Reader(path, spec)
    unit = {} if reader.source.unit == "line" else {"unit": "row"}  # `line` holds the row then
    for ex in reader:
        number = ex.line
        if line is not None and number != line:
            continue
        found = True
        if isinstance(ex, DataError):
            yield {"line": number, **unit, "error": {"code": ex.code, "message": ex.detail}}
            continue
        try:
            sequences = build_sequences(tokenizer, ex, options, ex.where)
        except TemplateCheckError as e:
            yield {"line": number, **unit, "error": {"code": e.code, "message": str(e)}}
            continue
        yield {"line": number, **unit, "sequences": [s.to_json() for s in sequences]}
    if line is not None and not found:
        place = "on this line" if not unit else "in this row"
        yield {"line": line, **unit, "error": {"code": "no-such-line", "message":
                                               f"{where(path, line, reader.source.unit)}: no example {place}"}}


def show(item: dict, console: Console) -> None:
    """Trained text highlighted, the rest dimmed; special tokens and newlines shown as written.
    Without a terminal (a pipe, a log) there is no colour: trained text is marked ⟦ ⟧ instead."""
    if "error" in item:
        console.print(Text.assemble(("refused ", "bold red"), (f"{item.get('unit', 'line')} {item['line']}: ", "bold"),
                                    f"[{item['error']['code']}] {item['error']['message']}"))
        return
    sequences = item["sequences"]
    note = f"{len(sequences)} sequences, one per trained turn" if len(sequences) > 1 else "1 sequence"
    console.print(Text(f"{item.get('unit', 'line')} {item['line']}: {note}", style="bold"))
    for k, seq in enumerate(sequences, 1):
        if len(sequences) > 1:
            console.print(Text(f"-- sequence {k}", style="bold"))
        text = Text()
        for seg in seq["segments"]:
            if seg["trained"]:
                text.append(seg["text"] if console.is_terminal else f"⟦{seg['text']}⟧", style="black on green")
            else:
                text.append(seg["text"], style="dim")
        console.print(text)
