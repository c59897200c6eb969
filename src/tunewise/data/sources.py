"""Where records come from, each with the place a user finds it: `file:line` in JSON Lines and JSON
arrays, `file row N` in parquet and arrow (rows counted from 0, as `dataset[N]` and pandas' `iloc`).

- JSON Lines (.jsonl, or a .json file not starting with `[`): streamed line by line, each line capped
  at MAX_LINE_BYTES, so a 10 GB file never sits in memory. A byte-order mark, CRLF line ends and
  blank lines are legal.
- a JSON array (.json starting with `[`): read whole, parsed one element at a time by the standard
  library's decoder so each element keeps its line.
- parquet (a file, or a directory of *.parquet files, each named in its own errors): pyarrow, in
  batches.
- a `datasets` save_to_disk directory, or one .arrow file: the `datasets` library (memory-mapped).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import TunewiseError

MAX_LINE_BYTES = 64 * 1024 * 1024
BATCH_ROWS = 256  # parquet rows converted to Python at a time


def where(path, number: int, unit: str = "line") -> str:
    """How a user finds a record: `file:line`, or `file row N`."""
    return f"{path}:{number}" if unit == "line" else f"{path} row {number}"


class DataError(TunewiseError):
    """One bad record: where it is (path, line or row), what class of problem (code), and what to do."""

    def __init__(self, path, line: int, code: str, message: str, unit: str = "line"):
        self.path, self.line, self.code, self.detail, self.unit = str(path), line, code, message, unit
        super().__init__(f"{where(path, line, unit)}: {message}")


@dataclass(frozen=True)
class Source:
    path: Path
    kind: str  # jsonl | json | parquet | parquet-dir | dataset | arrow

    @property
    def unit(self) -> str:
        return "line" if self.kind in ("jsonl", "json") else "row"

    @property
    def columnar(self) -> bool:
        """Struct columns: a field missing from one message is null in that row."""
        return self.unit == "row"

    @property
    def is_jsonl(self) -> bool:
        return self.kind == "jsonl"


def open_source(path: str | Path) -> Source:
    """What kind of data `path` holds; a missing path or an unreadable directory is refused here."""
    path = Path(path)
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
            raise TunewiseError(f"{path} holds a datasets DatasetDict (splits: {', '.join(splits)}); point at one "
                                f"split, e.g. {path / (splits[0] if splits else 'train')}")
        if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
            return Source(path, "dataset")
        if any(path.glob("*.parquet")):
            return Source(path, "parquet-dir")
        raise TunewiseError(f"{path} is a directory with neither *.parquet files nor a datasets save_to_disk "
                            "dataset (state.json, dataset_info.json)")
    if not path.exists():
        raise TunewiseError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return Source(path, "parquet")
    if suffix == ".arrow":
        return Source(path, "arrow")
    if suffix == ".json" and _first_byte(path) == b"[":
        return Source(path, "json")
    return Source(path, "jsonl")


def _first_byte(path: Path) -> bytes:
    with _open(path) as handle:
        head = handle.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip()
    return head[:1]


def _open(path: Path):
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise TunewiseError(f"data file not found: {path}") from None
    except IsADirectoryError:
        raise TunewiseError(f"{path} is a directory, not a data file") from None
    except OSError as e:
        raise TunewiseError(f"cannot read data file {path}: {e.strerror}") from None


def records(source: Source) -> Iterator[tuple[str, int, object]]:
    """(file to name, line or row, parsed record or its DataError) for every record."""
    reader = {"jsonl": _jsonl, "json": _json_array, "parquet": _parquet, "parquet-dir": _parquet_dir,
              "dataset": _dataset, "arrow": _dataset}[source.kind]
    yield from reader(source.path)


def _raw_lines(handle) -> Iterator[tuple[int, bytes | None]]:
    """Yield (line number, bytes), or (line number, None) for a line over MAX_LINE_BYTES (skipped)."""
    number = 0
    while True:
        raw = handle.readline(MAX_LINE_BYTES)
        if not raw:
            return
        number += 1
        if len(raw) == MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (chunk := handle.readline(MAX_LINE_BYTES)) and not chunk.endswith(b"\n"):
                pass
            yield number, None
            continue
        yield number, raw


def _jsonl(path: Path) -> Iterator[tuple[str, int, object]]:
    with _open(path) as handle:
        for number, raw in _raw_lines(handle):
            if raw is None:
                yield str(path), number, DataError(path, number, "line-too-long",
                                                   f"line longer than {MAX_LINE_BYTES >> 20} MB")
                continue
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield str(path), number, DataError(path, number, "not-utf8", f"not UTF-8 (byte {e.start + 1} of "
                                                   "the line); re-save the file as UTF-8")
                continue
            if text.strip():
                yield str(path), number, _parse(text, path, number)


def _parse(text: str, path: Path, number: int) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return DataError(path, number, "invalid-json", f"invalid JSON: {e.msg} at column {e.colno}")
    except RecursionError:
        return DataError(path, number, "invalid-json", "JSON nested too deeply")


def _json_array(path: Path) -> Iterator[tuple[str, int, object]]:
    """Each element of a top-level JSON array with the line it starts on. An error in the JSON itself
    ends the file there: after it nothing can be told apart."""
    with _open(path) as handle:
        data = handle.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        yield str(path), line, DataError(path, line, "not-utf8", "not UTF-8; re-save the file as UTF-8")
        return
    decoder, pos, line = json.JSONDecoder(), 0, 1

    def move(to: int) -> None:  # keeps `line` the line of `pos`
        nonlocal pos, line
        line, pos = line + text.count("\n", pos, to), to

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    move(skip(text.index("[") + 1))
    while text[pos : pos + 1] != "]":
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            yield str(path), e.lineno, DataError(path, e.lineno, "invalid-json", f"invalid JSON: {e.msg} at "
                                                 f"column {e.colno}")
            return
        except RecursionError:
            yield str(path), line, DataError(path, line, "invalid-json", "JSON nested too deeply")
            return
        yield str(path), line, value
        move(skip(end))
        if text[pos : pos + 1] == ",":
            move(skip(pos + 1))
        elif text[pos : pos + 1] != "]":
            yield str(path), line, DataError(path, line, "invalid-json", "invalid JSON array: expected ',' or ']' "
                                             "after an element")
            return
    if text[pos + 1 :].strip():
        yield str(path), line, DataError(path, line, "invalid-json", "invalid JSON array: text after its closing ']'")


def _parquet(path: Path) -> Iterator[tuple[str, int, object]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise TunewiseError(f"{path}: not a readable parquet file ({e})") from None
    row = 0
    for batch in table.iter_batches(batch_size=BATCH_ROWS):
        for record in batch.to_pylist():
            yield str(path), row, record
            row += 1


def _parquet_dir(path: Path) -> Iterator[tuple[str, int, object]]:
    for file in sorted(path.glob("*.parquet")):
        yield from _parquet(file)


def _dataset(path: Path) -> Iterator[tuple[str, int, object]]:
    import datasets
    import pyarrow as pa

    try:
        dataset = datasets.Dataset.from_file(str(path)) if path.is_file() else datasets.load_from_disk(str(path))
    except (pa.ArrowException, OSError, ValueError) as e:
        raise TunewiseError(f"{path}: not a readable datasets dataset ({e})") from None
    for row, record in enumerate(dataset):
        yield str(path), row, record
