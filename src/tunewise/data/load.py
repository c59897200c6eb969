"""Examples from a user's data: any source (data/sources.py) in any format (data/formats.py), each
validated into tunewise's messages shape, every error naming its file and line (or row).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import TunewiseError
from .formats import ROLES, Convert, DataSpec, detect, unknown_format
from .sources import MAX_LINE_BYTES, DataError, Source, open_source, records, where

__all__ = ["DataError", "DataSpec", "Example", "MAX_LINE_BYTES", "Reader", "iter_examples", "load_examples",
           "to_example", "where"]

# Keys a message may carry besides role and content, as in OpenAI's fine-tuning format; all are
# passed to the chat template (weight is tunewise's: 0 marks an assistant turn as context only).
MESSAGE_KEYS = {"weight", "reasoning_content", "tool_calls", "tool_call_id", "name"}


@dataclass
class Example:
    messages: list[dict]
    meta: dict = field(default_factory=dict)
    line: int = 0  # the line, or for parquet and arrow the row (from 0)
    tools: list | None = None  # function definitions for the chat template (OpenAI's `tools`)
    path: str = "<data>"
    unit: str = "line"

    @property
    def where(self) -> str:
        return where(self.path, self.line, self.unit)


class Reader:
    """The examples of one file or directory, in data.format or, for `auto`, the format its first
    record names (then `format` and `detected_at` say which and where)."""

    def __init__(self, path: str | Path, spec: DataSpec | None = None):
        self.path, self.spec = str(path), spec or DataSpec()
        self.source: Source = open_source(path)
        only = self.spec.formats()  # data.format, or the one format whose fields data.columns names
        self.format = only[0] if len(only) == 1 else None
        self.detected_at: str | None = None
        self._convert = Convert(self.spec, self.source.columnar)

    def describe(self) -> str:
        """One line for the user: the format and how it was chosen."""
        if self.spec.format != "auto":
            return f"{self.path}: format {self.format} (data.format)"
        if self.detected_at is None and self.format:
            return f"{self.path}: format {self.format} (the one whose fields data.columns names)"
        if self.format is None:
            return f"{self.path}: format not detected (no record names one)"
        return f"{self.path}: format {self.format} (detected from {self.detected_at})"

    def __iter__(self) -> Iterator[Example | DataError]:
        for path, number, record in records(self.source):
            if isinstance(record, DataError):
                yield record
                continue
            try:
                yield self._example(record, path, number)
            except DataError as e:
                yield e

    def _example(self, record: object, path: str, number: int) -> Example:
        unit = self.source.unit
        if not isinstance(record, dict):
            return to_example(record, path, number, unit=unit)  # refused: not an object
        fmt = self.format or detect(record, self.spec)
        if fmt is None:
            raise DataError(path, number, "unknown-format", unknown_format(record), unit)
        if self.format is None:
            self.format = fmt  # said as `line 3`, or `FILE row 3` inside a directory of parquet files
            self.detected_at = f"{unit} {number}" if path == self.path else where(path, number, unit)
        if fmt in ("messages", "prompt_completion") and not (self.spec.columns or self.spec.roles
                                                             or self.source.columnar):
            return to_example(record, path, number)  # tunewise's own JSONL: validated as written

        def fail(code: str, message: str):
            raise DataError(path, number, code, message, unit)

        converted, names = self._convert(fmt, record, fail)
        return to_example(converted, path, number, names, unit)


def to_example(obj: object, path: str | Path = "<data>", line: int = 0, names: list[str] | None = None,
               unit: str = "line") -> Example:
    """Validate one record of tunewise's own shapes and normalise prompt/completion into messages;
    raise DataError. `names[i]` is what message i is called in the user's file (default messages[i])."""

    def fail(code: str, message: str):
        raise DataError(path, line, code, message, unit)

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
    _check_messages(messages, fail, names)
    tools = obj.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        fail("bad-tools", "'tools' must be a list of objects (function definitions)")
    return Example(messages=[_template_message(m) for m in messages], meta=meta, line=line, tools=tools or None,
                   path=str(path), unit=unit)


def _template_message(m: dict) -> dict:
    out = {"role": m["role"], "content": m["content"]}
    out.update({k: m[k] for k in MESSAGE_KEYS if k in m})
    if out.get("tool_calls"):
        out["tool_calls"] = arguments_as_objects(out["tool_calls"])
    return out


def _check_messages(messages: object, fail, names: list[str] | None = None) -> None:
    if not isinstance(messages, list):
        fail("messages-not-list", f"'messages' must be a list, got {type(messages).__name__}")
    if not messages:
        fail("empty-messages", "'messages' is empty")
    for i, m in enumerate(messages):
        at = names[i] if names and i < len(names) else f"messages[{i}]"
        if not isinstance(m, dict):
            fail("message-not-object", f"{at} is {'null' if m is None else 'not an object'}")
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


def iter_examples(path: str | Path, spec: DataSpec | None = None) -> Iterator[Example | DataError]:
    """Every record as an Example or as its DataError (the doctor collects; loaders raise)."""
    return iter(Reader(path, spec))


def load_examples(path: str | Path, spec: DataSpec | None = None) -> list[Example]:
    examples = []
    for item in iter_examples(path, spec):
        if isinstance(item, DataError):
            raise item
        examples.append(item)
    if not examples:
        raise TunewiseError(f"{path}: no examples (the file is empty)")
    return examples
