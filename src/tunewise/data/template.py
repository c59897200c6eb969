"""Render conversations with the tokenizer's own chat template.

`render` is the one place a chat template runs, for training targets, evaluation prompts and
chat alike, so what is trained and what is asked at inference come from the same call: the same
`tools`, the same folding of a system prompt into the first user turn.
"""

from __future__ import annotations

import hashlib

from ..errors import TunewiseError

FOLD_KEY = "data.fold_system_prompt"


def require_template(tokenizer, model_name: str = "the model") -> str:
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise TunewiseError(
            f"the tokenizer of {model_name} has no chat template; use an instruct/chat model "
            "or add a chat_template to its tokenizer_config.json"
        )
    return template if isinstance(template, str) else str(template)


def template_hash(tokenizer) -> str:
    return hashlib.sha256(require_template(tokenizer).encode()).hexdigest()


class TemplateCheckError(TunewiseError):
    """An example that cannot be trained right with this chat template (code names the rule)."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


def fold_system(messages: list[dict]) -> list[dict]:
    """The system prompt put at the start of the first user message, for templates without a
    system role (Gemma 2, older Mistral). Evaluation and chat fold the same way."""
    system = [m for m in messages if m["role"] == "system"]
    if not system:
        return messages
    rest = [dict(m) for m in messages if m["role"] != "system"]
    text = "\n\n".join(m["content"] for m in system)
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{text}\n\n{m['content']}"
            return rest
    return [{"role": "user", "content": text}, *rest]


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False, tools: list | None = None,
           where: str = "") -> str:
    """The chat template's text for `messages` (tools passed through, as at inference)."""
    try:
        return _apply(tokenizer, messages, add_generation_prompt, tools)
    except Exception as first:  # jinja raises its own TemplateError for role rules, TypeError for tools
        if tools is None:  # templates that loop over `tools` (Phi-4-mini) need a list, not None
            try:
                return _apply(tokenizer, messages, add_generation_prompt, [])
            except Exception:
                pass
        raise TemplateCheckError("template-refused", _refusal(tokenizer, messages, first, where)) from None


def _apply(tokenizer, messages, add_generation_prompt, tools) -> str:
    clean = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
    return tokenizer.apply_chat_template(clean, tools=tools, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def _refusal(tokenizer, messages, error: Exception, where: str) -> str:
    text = f"{where + ': ' if where else ''}the chat template refused this conversation: {error}"
    if any(m["role"] == "system" for m in messages):
        try:
            _apply(tokenizer, fold_system(messages), False, None)
        except Exception:
            return text
        text += (f". This template has no system role: set {FOLD_KEY}: true to put the system prompt at the "
                 "start of the first user message (evaluation and chat then do the same)")
    return text
