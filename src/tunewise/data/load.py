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

ROLES = ("system", "user", "assistant", "tool")
# Keys a message may carry besides role and content, as in OpenAI's fine-tuning format; all are
# passed to the chat template (weight is tunewise's: 0 marks an assistant turn as context only).
MESSAGE_KEYS = {"weight", "reasoning_content", "tool_calls", "tool_call_id", "name"}
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
    tools: list | None = None  # function definitions for the chat template (OpenAI's `tools`)


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
    tools = obj.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        fail("bad-tools", "'tools' must be a list of objects (function definitions)")
    return Example(messages=[_template_message(m) for m in messages], meta=meta, line=line, tools=tools or None)


def _template_message(m: dict) -> dict:
    out = {"role": m["role"], "content": m["content"]}
    out.update({k: m[k] for k in MESSAGE_KEYS if k in m})
    if out.get("tool_calls"):
        out["tool_calls"] = arguments_as_objects(out["tool_calls"])
    return out


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
        calls = m.get("tool_calls")
        if calls is not None and (role != "assistant" or not isinstance(calls, list) or not all(
                isinstance(c, dict) and isinstance((c.get("function") or c).get("name"), str) for c in calls)):
            fail("bad-tool-calls", f"{at}: 'tool_calls' must be a list of calls with a function name, on an "
                 "assistant message")
        content = m.get("content")
        if not isinstance(content, str) and not (calls and content is None):
            what = "missing" if "content" not in m else ("null" if content is None else type(content).__name__)
            fail("bad-content", f"{at}: 'content' must be a string, got {what}")
        if role == "assistant" and not (content or "").strip() and not calls:
            fail("empty-assistant", f"{at}: empty assistant content; remove the example or write the answer")
        _check_extras(m, role, at, fail)
    if not any(m["role"] == "assistant" for m in messages):
        fail("no-assistant", "no assistant message, nothing to train on")
    if not any(m["role"] == "assistant" and m.get("weight", 1) != 0 for m in messages):
        fail("nothing-trained", "every assistant message has \"weight\": 0; nothing to train on")
    if messages[-1]["role"] != "assistant":
        fail("last-not-assistant", f"the last message must be from the assistant (got {messages[-1]['role']!r})")


def arguments_as_objects(tool_calls: list) -> list:
    """OpenAI's format writes tool-call arguments as a JSON string; chat templates expect an object."""
    out = []
    for call in tool_calls:
        call = dict(call)
        if isinstance(call.get("function"), dict) and isinstance(call["function"].get("arguments"), str):
            try:
                call["function"] = {**call["function"], "arguments": json.loads(call["function"]["arguments"])}
            except json.JSONDecodeError:
                pass  # not JSON: passed as written
        out.append(call)
    return out


def _check_extras(m: dict, role: str, at: str, fail) -> None:
    if "weight" in m and (role != "assistant" or m["weight"] not in (0, 1) or isinstance(m["weight"], bool)):
        fail("bad-weight", f"{at}: 'weight' must be 0 (context only) or 1 (trained), on assistant messages only")
    if "reasoning_content" in m and (role != "assistant" or not isinstance(m["reasoning_content"], str)):
        fail("bad-reasoning", f"{at}: 'reasoning_content' must be a string, on assistant messages only")


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
