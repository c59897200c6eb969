"""Load chat JSONL (`messages`) and prompt/completion JSONL, with file:line errors.

Files are streamed line by line (each line capped at MAX_LINE_BYTES) so a 10 GB file never sits
in memory at once. A byte-order mark, CRLF line ends and blank lines are legal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import TunewiseError

ROLES = ("system", "user", "assistant")
MAX_LINE_BYTES = 64 * 1024 * 1024


class DataError(TunewiseError):
    """One bad line: where it is (path, line), what class of problem (code), and what to do."""

    def __init__(self, path, line: int, code: str, message: str):
        self.path, self.line, self.code, self.detail = str(path), line, code, message
        super().__init__(f"{path}:{line}: {message}")


@dataclass
class Example:
    messages: list[dict]
    meta: dict = field(default_factory=dict)
    line: int = 0


def _raw_lines(handle, path) -> Iterator[tuple[int, bytes | None]]:
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


def iter_records(path: str | Path) -> Iterator[tuple[int, object | DataError]]:
    """Yield (line number, parsed JSON or the DataError for that line) for every non-blank line."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise TunewiseError(f"data file not found: {path}") from None
    except IsADirectoryError:
        raise TunewiseError(f"{path} is a directory, not a JSONL file") from None
    except OSError as e:
        raise TunewiseError(f"cannot read data file {path}: {e.strerror}") from None
    with handle:
        for number, raw in _raw_lines(handle, path):
            if raw is None:
                yield number, DataError(path, number, "line-too-long", f"line longer than {MAX_LINE_BYTES >> 20} MB")
                continue
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield number, DataError(path, number, "not-utf8",
                                        f"not UTF-8 (byte {e.start + 1} of the line); re-save the file as UTF-8")
                continue
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as e:
                yield number, DataError(path, number, "invalid-json", f"invalid JSON: {e.msg} at column {e.colno}")
            except RecursionError:
                yield number, DataError(path, number, "invalid-json", "JSON nested too deeply")


def to_example(obj: object, path: str | Path = "<data>", line: int = 0) -> Example:
    """Validate one parsed line and normalise prompt/completion into messages; raise DataError."""

    def fail(code: str, message: str):
        raise DataError(path, line, code, message)

    if not isinstance(obj, dict):
        fail("not-object", f"expected a JSON object, got {type(obj).__name__}")
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        fail("bad-meta", "'meta' must be an object")
    if "messages" not in obj and ("prompt" in obj or "completion" in obj):
        for key in ("prompt", "completion"):
            if not isinstance(obj.get(key), str):
                fail("bad-prompt-completion", f"'{key}' must be a string in prompt/completion data")
        if not obj["completion"].strip():
            fail("empty-assistant", "empty 'completion'; remove the example or write the answer")
        messages = [{"role": "user", "content": obj["prompt"]}, {"role": "assistant", "content": obj["completion"]}]
    elif "messages" in obj:
        messages = obj["messages"]
    else:
        fail("missing-messages", "missing 'messages' (chat format) or 'prompt'/'completion'")
    _check_messages(messages, fail)
    return Example(messages=[{"role": m["role"], "content": m["content"]} for m in messages], meta=meta, line=line)


def _check_messages(messages: object, fail) -> None:
    if not isinstance(messages, list):
        fail("messages-not-list", f"'messages' must be a list, got {type(messages).__name__}")
    if not messages:
        fail("empty-messages", "'messages' is empty")
    for i, m in enumerate(messages):
        at = f"messages[{i}]"
        if not isinstance(m, dict):
            fail("message-not-object", f"{at} is not an object")
        role = m.get("role")
        if role is None:
            fail("missing-role", f"{at} has no 'role'")
        if role not in ROLES:
            fail("unknown-role", f"{at}: unknown role {role!r} (use one of {', '.join(ROLES)})")
        content = m.get("content")
        if not isinstance(content, str):
            what = "missing" if "content" not in m else ("null" if content is None else type(content).__name__)
            fail("bad-content", f"{at}: 'content' must be a string, got {what}")
        if role == "assistant" and not content.strip():
            fail("empty-assistant", f"{at}: empty assistant content; remove the example or write the answer")
    if not any(m["role"] == "assistant" for m in messages):
        fail("no-assistant", "no assistant message, nothing to train on")
    if messages[-1]["role"] != "assistant":
        fail("last-not-assistant", f"the last message must be from the assistant (got {messages[-1]['role']!r})")


def iter_examples(path: str | Path) -> Iterator[Example | DataError]:
    """Every line as an Example or as its DataError (the doctor collects; loaders raise)."""
    for number, obj in iter_records(path):
        if isinstance(obj, DataError):
            yield obj
            continue
        try:
            yield to_example(obj, path, number)
        except DataError as e:
            yield e


def load_examples(path: str | Path) -> list[Example]:
    examples = []
    for item in iter_examples(path):
        if isinstance(item, DataError):
            raise item
        examples.append(item)
    if not examples:
        raise TunewiseError(f"{path}: no examples (the file is empty)")
    return examples
