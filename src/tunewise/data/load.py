"""Load chat JSONL (`messages`) and prompt/completion JSONL, with file:line errors.

Files are streamed line by line so a 10 GB file never sits in memory at once. A byte-order
mark, CRLF line ends and blank lines are legal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import TunewiseError

ROLES = ("system", "user", "assistant")


@dataclass
class Example:
    messages: list[dict]
    meta: dict = field(default_factory=dict)
    line: int = 0


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, object]]:
    """Yield (line number, parsed JSON) for every non-blank line; raise TunewiseError with file:line."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise TunewiseError(f"data file not found: {path}") from None
    except OSError as e:
        raise TunewiseError(f"cannot read data file {path}: {e.strerror}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise TunewiseError(
                    f"{path}:{number}: not UTF-8 (byte {e.start + 1} of the line); re-save the file as UTF-8"
                ) from None
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as e:
                raise TunewiseError(f"{path}:{number}: invalid JSON: {e.msg} at column {e.colno}") from None
            except RecursionError:
                raise TunewiseError(f"{path}:{number}: JSON nested too deeply") from None


def to_example(obj: object, where: str) -> Example:
    """Validate one parsed line and normalise prompt/completion into messages."""
    if not isinstance(obj, dict):
        raise TunewiseError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise TunewiseError(f"{where}: 'meta' must be an object")
    if "messages" not in obj and "prompt" in obj:
        for key in ("prompt", "completion"):
            if not isinstance(obj.get(key), str):
                raise TunewiseError(f"{where}: '{key}' must be a string in prompt/completion data")
        messages = [{"role": "user", "content": obj["prompt"]}, {"role": "assistant", "content": obj["completion"]}]
    elif "messages" in obj:
        messages = obj["messages"]
    else:
        raise TunewiseError(f"{where}: missing 'messages' (chat format) or 'prompt'/'completion'")
    _check_messages(messages, where)
    return Example(messages=[{"role": m["role"], "content": m["content"]} for m in messages], meta=meta)


def _check_messages(messages: object, where: str) -> None:
    if not isinstance(messages, list):
        raise TunewiseError(f"{where}: 'messages' must be a list, got {type(messages).__name__}")
    if not messages:
        raise TunewiseError(f"{where}: 'messages' is empty")
    for i, m in enumerate(messages):
        at = f"{where}: messages[{i}]"
        if not isinstance(m, dict):
            raise TunewiseError(f"{at} is not an object")
        role = m.get("role")
        if role is None:
            raise TunewiseError(f"{at} has no 'role'")
        if role not in ROLES:
            raise TunewiseError(f"{at}: unknown role {role!r} (use one of {', '.join(ROLES)})")
        content = m.get("content")
        if not isinstance(content, str):
            what = "missing" if "content" not in m else ("null" if content is None else type(content).__name__)
            raise TunewiseError(f"{at}: 'content' must be a string, got {what}")
        if role == "assistant" and not content.strip():
            raise TunewiseError(f"{at}: empty assistant content; remove the example or write the answer")
    if not any(m["role"] == "assistant" for m in messages):
        raise TunewiseError(f"{where}: no assistant message, nothing to train on")
    if messages[-1]["role"] != "assistant":
        raise TunewiseError(f"{where}: the last message must be from the assistant (got {messages[-1]['role']!r})")


def load_examples(path: str | Path) -> list[Example]:
    examples = []
    for number, obj in iter_json_lines(path):
        example = to_example(obj, f"{path}:{number}")
        example.line = number
        examples.append(example)
    if not examples:
        raise TunewiseError(f"{path}: no examples (the file is empty)")
    return examples
