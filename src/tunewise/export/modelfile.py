"""An Ollama Modelfile for an exported GGUF, its TEMPLATE translated from the model's chat template.

Ollama runs Go templates, not Jinja, and guesses a template by edit distance when it cannot match
one (ollama#6823): a fine-tuned model then gets prompts it was never trained on. Here a template
is translated only when it is one of a few known styles, and the style is proved, not guessed:
each style has its Go template and a Python mirror of what that Go template renders (with Ollama's
rule that a Modelfile SYSTEM is used when a request has no system message), and the mirror must
render probe conversations exactly as the model's own Jinja template does. Anything else is
refused, naming the style it looks like.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..data.template import render
from ..errors import TunewiseError
from ..files import write_atomic

S, U1, A1, U2 = "SYSTEM-PROBE zeta", "USER-PROBE one", "ASSISTANT-PROBE alpha", "USER-PROBE two"
PROBES = [
    [{"role": "user", "content": U1}],
    [{"role": "system", "content": S}, {"role": "user", "content": U1}],
    [{"role": "system", "content": S}, {"role": "user", "content": U1}, {"role": "assistant", "content": A1},
     {"role": "user", "content": U2}],
    [{"role": "user", "content": U1}, {"role": "assistant", "content": A1}, {"role": "user", "content": U2}],
]
# what an untranslatable template looks like, to name it in the refusal
LOOKS_LIKE = [("<start_of_turn>", "Gemma"), ("<|turn>", "Gemma 4"), ("<｜User｜>", "DeepSeek"),
              ("<|user|>", "Zephyr/Phi/GLM (<|user|>)"), ("[INST]", "a Mistral [INST] variant"),
              ("<|start_header_id|>", "a Llama 3 variant"), ("<|im_start|>", "a ChatML variant"),
              ("### Instruction", "Alpaca"), ("<|User|>", "DeepSeek")]


@dataclass
class Style:
    name: str
    mirror: Callable[[list[dict], "Params"], str]  # what the Go template renders for these messages
    go: Callable[["Params"], str]
    params: Callable[[Callable[[list[dict]], str], str], "Params | None"]  # read from the HF renders


@dataclass
class Params:
    lead: str = ""            # text the Go template writes first (a BOS the tokenizer does not add itself)
    system_prefix: str = ""   # text the template puts before every system prompt (Llama 3.1's date header)
    default_system: str | None = None  # the system prompt the template uses when none is given
    eos: str = ""


def _with_system(messages: list[dict], system: str | None) -> list[dict]:
    """Ollama: a Modelfile SYSTEM becomes the first message when the request brings none."""
    if system is None or any(m["role"] == "system" for m in messages):
        return messages
    return [{"role": "system", "content": system}, *messages]


# --- ChatML (SmolLM2, Qwen2/2.5/3 without tools) ---

def _chatml_mirror(messages, p: Params) -> str:
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in _with_system(messages,
                                                                                              p.default_system))
    return p.lead + body + "<|im_start|>assistant\n"


def _chatml_go(p: Params) -> str:
    return (p.lead + "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
            "<|im_start|>assistant\n")


def _chatml_params(hf, lead) -> Params:
    found = re.match(re.escape(lead) + r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n", hf(PROBES[0]), re.S)
    return Params(lead, default_system=found.group(1) if found else None)


# --- Llama 3 (<|start_header_id|>), with or without 3.1's fixed system header ---

def _llama3_mirror(messages, p: Params) -> str:
    head = "<|start_header_id|>{}<|end_header_id|>\n\n"
    messages = _with_system(messages, p.default_system)
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    out = p.lead
    if system is not None or p.system_prefix:
        out += head.format("system") + p.system_prefix + (system or "") + "<|eot_id|>"
    for m in messages:
        if m["role"] != "system":
            out += head.format(m["role"]) + m["content"] + "<|eot_id|>"
    return out + head.format("assistant")


def _llama3_go(p: Params) -> str:
    head = "<|start_header_id|>{}<|end_header_id|>\n\n"
    system = head.format("system") + p.system_prefix + "{{ .System }}<|eot_id|>"
    if not p.system_prefix:
        system = "{{- if .System }}" + system + "{{ end }}"
    return (p.lead + system + "{{- range .Messages }}{{- if ne .Role \"system\" }}" + head.format("{{ .Role }}")
            + "{{ .Content }}<|eot_id|>{{ end }}{{ end }}" + head.format("assistant"))


def _llama3_params(hf, lead) -> Params | None:
    block = re.escape(lead) + r"<\|start_header_id\|>system<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>"
    given = re.match(block, hf(PROBES[1]), re.S)
    if not given or not given.group(1).endswith(S):
        return None
    prefix = given.group(1)[: -len(S)]
    default = re.match(block, hf(PROBES[0]), re.S)
    if default and default.group(1).startswith(prefix):
        rest = default.group(1)[len(prefix):]
        return Params(lead, prefix, rest if rest or not prefix else None)
    return Params(lead, prefix)


# --- Mistral [INST] (v0.3 / Nemo: the system prompt joins the last user message) ---

def _mistral_mirror(messages, p: Params) -> str:
    messages = _with_system(messages, p.default_system)
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    out = p.lead
    for i, m in enumerate(messages):
        if m["role"] == "user":
            last = i == len(messages) - 1
            out += f"[INST] {system}\n\n{m['content']}[/INST]" if last and system else f"[INST] {m['content']}[/INST]"
        elif m["role"] == "assistant":
            out += f" {m['content']}{p.eos}"
    return out


def _mistral_go(p: Params) -> str:
    return (p.lead + "{{- range $i, $_ := .Messages }}{{- if eq .Role \"user\" }}"
            "{{- if and (eq (len (slice $.Messages $i)) 1) $.System }}[INST] {{ $.System }}\n\n{{ .Content }}[/INST]"
            "{{- else }}[INST] {{ .Content }}[/INST]{{- end }}"
            "{{- else if eq .Role \"assistant\" }} {{ .Content }}" + p.eos + "{{- end }}{{- end }}")


def _mistral_params(hf, lead) -> Params:
    return Params(lead)


STYLES = [Style("ChatML", _chatml_mirror, _chatml_go, _chatml_params),
          Style("Llama 3", _llama3_mirror, _llama3_go, _llama3_params),
          Style("Mistral [INST]", _mistral_mirror, _mistral_go, _mistral_params)]


@dataclass
class Translation:
    style: str
    template: str       # Ollama Go template
    system: str | None  # the template's default system prompt, for SYSTEM


def translate(tokenizer, add_bos: bool) -> Translation:
    """The model's chat template as an Ollama Go template, or a TunewiseError naming its style."""
    hf = lambda messages: render(tokenizer, messages, add_generation_prompt=True)  # noqa: E731
    bos = tokenizer.bos_token or ""
    strip = bos if add_bos else ""
    hf_ollama = lambda messages: hf(messages).removeprefix(strip)  # noqa: E731 - Ollama adds that BOS itself
    # a BOS the template writes as text that the tokenizer does not add: the Go template writes it too
    leads = ["", bos] if bos and not add_bos else [""]
    for style in STYLES:
        for lead in leads:
            params = style.params(hf_ollama, lead)
            if params is None:
                continue
            params.eos = tokenizer.eos_token or ""
            if all(style.mirror(m, params) == hf_ollama(m) for m in PROBES):
                return Translation(style.name, style.go(params), params.default_system)
    sample = hf(PROBES[2])
    looks = next((name for marker, name in LOOKS_LIKE if marker in sample), "an unknown style")
    raise TunewiseError(
        f"the chat template looks like {looks}, which tunewise cannot translate to Ollama's Go template "
        f"(it translates {', '.join(s.name for s in STYLES)} exactly); it renders {sample[:160]!r}. "
        "Export without --modelfile and write the TEMPLATE by hand, or use llama.cpp, which runs the "
        "Jinja template stored in the GGUF")


def _quoted(text: str, what: str) -> str:
    if '"""' in text:
        raise TunewiseError(f'the {what} contains """, which a Modelfile cannot quote')
    return f'"""{text}"""'


def write_modelfile(path: Path, gguf_path: Path, translation: Translation, stops: list[str],
                    system: str | None) -> None:
    lines = [f"# Written by `tunewise export gguf`: the TEMPLATE is the model's chat template ({translation.style}),",
             "# checked against it on probe conversations. Create and run: ollama create NAME -f "
             f"{path.name} && ollama run NAME",
             f"FROM ./{gguf_path.name}",
             f"TEMPLATE {_quoted(translation.template, 'template')}"]
    if system is not None:
        lines.append(f"SYSTEM {_quoted(system, 'system prompt')}")
    lines += [f"PARAMETER stop {_go_string(s)}" for s in stops]
    write_atomic(path, "\n".join(lines) + "\n")


def _go_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
