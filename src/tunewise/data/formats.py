"""The shapes data comes in, each turned into tunewise's own (`messages`), with the file's keys in errors.

- messages: `{"messages": [{"role", "content"}, ...]}` (OpenAI's fine-tuning format)
- prompt_completion: `{"prompt", "completion"}`
- alpaca: `{"instruction", "input", "output"}`, optional `system` and `history` ([[user, assistant], ...]),
  as Alpaca and LLaMA-Factory write it; the user turn is the instruction, a newline, then the input
- sharegpt: `{"conversations": [{"from": "human"|"gpt"|"system", "value"}, ...]}`, optional `system`

`auto` picks the format from the first record whose keys name one and applies it to the whole
file, except that tunewise's own two shapes (messages, prompt/completion) may be mixed line by
line, as they always could. `data.columns` maps a format's field to the file's key
(`{messages: conversation}`), `data.roles` a file's role name to tunewise's (`{bot: assistant}`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import TunewiseError

FORMATS = ("messages", "prompt_completion", "alpaca", "sharegpt")
FIELDS = {
    "messages": ("messages", "role", "content"),
    "prompt_completion": ("prompt", "completion"),
    "alpaca": ("instruction", "input", "output", "system", "history"),
    "sharegpt": ("conversations", "from", "value", "system"),
}
# The key whose presence in a record says which format it is (alpaca: either of two).
SIGNS = {"messages": ("messages",), "prompt_completion": ("prompt", "completion"),
         "alpaca": ("instruction", "output"), "sharegpt": ("conversations",)}
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}
# Optional message keys that columnar files (parquet, arrow) write as null where a message lacks
# them: a struct column has every field in every row, so null there means absent.
OPTIONAL_MESSAGE_KEYS = ("weight", "reasoning_content", "tool_calls", "tool_call_id", "name")


@dataclass(frozen=True)
class DataSpec:
    """data.format, data.columns and data.roles: how to read a user's file."""
    format: str = "auto"
    columns: dict = field(default_factory=dict)
    roles: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.format not in ("auto", *FORMATS):
            raise TunewiseError(f"data.format: {self.format!r} is not one of auto, {', '.join(FORMATS)}")
        known = sorted({f for fmt in self.formats() for f in FIELDS[fmt]})
        for key, value in self.columns.items():
            if key not in known:
                of = "any format" if self.format == "auto" else f"{self.format} data"
                raise TunewiseError(f"data.columns: {key!r} is not a field of {of} (fields: {', '.join(known)})")
            if not isinstance(value, str) or not value:
                raise TunewiseError(f"data.columns.{key}: the file's key must be a string, got {value!r}")
        for name, role in self.roles.items():
            if role not in ROLES:
                raise TunewiseError(f"data.roles.{name}: {role!r} is not a role tunewise knows ({', '.join(ROLES)})")

    def cli_flags(self) -> str:
        """The same reading on the command line (`data check`, `preview`, `split`, `convert`)."""
        flags = [] if self.format == "auto" else [f"--format {self.format}"]
        flags += [f"--column {k}={v}" for k, v in self.columns.items()]
        flags += [f"--role {k}={v}" for k, v in self.roles.items()]
        return "".join(f" {f}" for f in flags)

    def formats(self) -> tuple[str, ...]:
        """The formats a record may be in: data.format, or those with every field data.columns names."""
        if self.format != "auto":
            return (self.format,)
        return tuple(f for f in FORMATS if set(self.columns) <= set(FIELDS[f])) or FORMATS

    def key(self, name: str) -> str:
        """The file's key for a format's field."""
        return self.columns.get(name, name)


def spec_of(data_config) -> DataSpec:
    """The DataSpec of a config's `data` section."""
    return DataSpec(data_config.format, dict(data_config.columns), dict(data_config.roles))


def detect(record: dict, spec: DataSpec) -> str | None:
    """The format whose identifying key the record has (the file's name for it), or None."""
    for fmt in spec.formats():
        if any(spec.key(k) in record for k in SIGNS[fmt]):
            return fmt
    return None


def unknown_format(record: dict) -> str:
    keys = ", ".join(repr(k) for k in list(record)[:8]) or "none"
    return (f"cannot tell the data format from this record's keys ({keys}): expected 'messages' (chat), "
            "'prompt'/'completion', alpaca's 'instruction'/'output' or sharegpt's 'conversations'; set "
            "data.format and, for other key names, data.columns (e.g. {messages: conversation})")


class Convert:
    """Turns one record of a format into the messages shape load.to_example validates. `fail(code,
    message)` raises the record's error; `names[i]` is what message i was called in the file."""

    def __init__(self, spec: DataSpec, columnar: bool):
        self.spec, self.columnar, self.fmt = spec, columnar, spec.format

    def __call__(self, fmt: str, record: dict, fail) -> tuple[dict, list[str]]:
        self.fmt = fmt
        return getattr(self, fmt)(record, fail)

    def _get(self, record: dict, name: str, fail, required: bool = True, kind=str):
        key = self.spec.key(name)
        value = record.get(key)
        if value is None:
            if required:
                has = ", ".join(repr(k) for k in list(record)[:8])
                fail("missing-key", f"missing {key!r}{self._mapped(name)}, which {self.fmt} data needs (this record "
                     f"has {has or 'no keys'})" if key not in record else f"{key!r}{self._mapped(name)} is null")
            return None
        if not isinstance(value, kind):
            fail("bad-type", f"{key!r}{self._mapped(name)} must be {'a string' if kind is str else 'a list'}, "
                 f"got {type(value).__name__}")
        return value

    def _mapped(self, name: str) -> str:
        return f" (data.columns.{name})" if name in self.spec.columns else ""

    def _role(self, value, default: dict) -> str | None:
        if not isinstance(value, str):
            return None
        return self.spec.roles.get(value, default.get(value))

    def _message(self, m, at: str, role_key: str, content_key: str, roles: dict, fail) -> dict:
        if not isinstance(m, dict):
            fail("message-not-object", f"{at} is {'null' if m is None else 'not an object'}")
        if m.get(role_key) is None:
            fail("missing-role", f"{at} has no {role_key!r}")
        role = self._role(m[role_key], roles)
        if role is None:
            known = sorted(set(roles) | set(self.spec.roles))
            fail("unknown-role", f"{at}: unknown {role_key} {m[role_key]!r} (known: {', '.join(known)}; map it "
                 f"with data.roles, e.g. {{{m[role_key]}: assistant}}, or --role {m[role_key]}=assistant)")
        content = m.get(content_key)
        if not isinstance(content, str) and not (m.get("tool_calls") and content is None):
            what = "missing" if content_key not in m else ("null" if content is None else type(content).__name__)
            fail("bad-content", f"{at}: {content_key!r} must be a string, got {what}")
        out = {k: v for k, v in m.items() if k not in (role_key, content_key)}
        if self.columnar:  # a struct column has every field in every row: null there means absent
            out = {k: v for k, v in out.items() if not (k in OPTIONAL_MESSAGE_KEYS and v is None)}
        return {**out, "role": role, "content": content}

    def messages(self, record: dict, fail) -> tuple[dict, list[str]]:
        key = self.spec.key("messages")
        if key not in record and "messages" not in self.spec.columns and ("prompt" in record or "completion" in record):
            return self.prompt_completion(record, fail)  # tunewise's own shapes mix line by line
        items = self._get(record, "messages", fail, kind=list)
        names = [f"{key}[{i}]" for i in range(len(items))]
        identity = {r: r for r in ROLES}
        converted = [self._message(m, names[i], self.spec.key("role"), self.spec.key("content"), identity, fail)
                     for i, m in enumerate(items)]
        return {**_rest(record), "messages": converted}, names

    def prompt_completion(self, record: dict, fail) -> tuple[dict, list[str]]:
        prompt, completion = (self._get(record, k, fail) for k in ("prompt", "completion"))
        names = [self.spec.key("prompt"), self.spec.key("completion")]
        return ({**_rest(record), "messages": [{"role": "user", "content": prompt},
                                               {"role": "assistant", "content": completion}]}, names)

    def alpaca(self, record: dict, fail) -> tuple[dict, list[str]]:
        instruction, output = self._get(record, "instruction", fail), self._get(record, "output", fail)
        extra = self._get(record, "input", fail, required=False)
        system = self._get(record, "system", fail, required=False)
        history = self._get(record, "history", fail, required=False, kind=list) or []
        messages, names = [], []
        if system:
            messages.append({"role": "system", "content": system})
            names.append(self.spec.key("system"))
        for i, pair in enumerate(history):
            at = f"{self.spec.key('history')}[{i}]"
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
                fail("bad-history", f"{at} must be a [user, assistant] pair of strings")
            messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
            names += [f"{at}[0]", f"{at}[1]"]
        messages += [{"role": "user", "content": f"{instruction}\n{extra}" if extra else instruction},
                     {"role": "assistant", "content": output}]
        names += [self.spec.key("instruction"), self.spec.key("output")]
        return {**_rest(record), "messages": messages}, names

    def sharegpt(self, record: dict, fail) -> tuple[dict, list[str]]:
        key = self.spec.key("conversations")
        turns = self._get(record, "conversations", fail, kind=list)
        system = self._get(record, "system", fail, required=False)
        names = [f"{key}[{i}]" for i in range(len(turns))]
        messages = [self._message(m, names[i], self.spec.key("from"), self.spec.key("value"), SHAREGPT_ROLES, fail)
                    for i, m in enumerate(turns)]
        if system and not (messages and messages[0]["role"] == "system"):
            messages.insert(0, {"role": "system", "content": system})
            names.insert(0, self.spec.key("system"))
        return {**_rest(record), "messages": messages}, names


def _rest(record: dict) -> dict:
    """What to_example reads besides the messages: meta and tools, where the record has them."""
    return {k: record[k] for k in ("meta", "tools") if record.get(k) is not None}
