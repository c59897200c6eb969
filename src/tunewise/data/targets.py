"""Training targets: for every trained assistant turn, exactly what the model must generate at inference.

For turn i the untrained text before its trained run is the inference prompt,
`P_i = render(messages[:i], add_generation_prompt=True)`, and the run is what the model writes
after it: the turn's reasoning (if any), its content or tool calls, and a token that stops
generation. Usually the run is `render(messages[:i+1])` minus `P_i`. Three template families need
more than that, and are handled rather than refused:

* The generation prompt opens a think block (DeepSeek-R1 distills: `<｜Assistant｜><think>\\n`)
  while the rendered turn has none: the run is the reasoning (or nothing), the closing tag, then
  the turn as rendered. A prompt that closes an empty thought block itself (Gemma 4's thought
  channel) is followed by the turn as rendered.
* The template writes no end-of-turn token (GLM: the next role tag stops generation): the run
  gets the model's own stop token, the one the template writes next where that is a stop token
  (generation_config's eos_token_id lists the role tags for such models), else EOS, else
  `data.end_of_turn`.
* Rendering of earlier turns differs from their inference-time form (Qwen3 strips past
  reasoning, Mistral v0.3 moves the system prompt into the last user turn): one whole rendering
  cannot hold every turn as at inference, so each trained turn becomes its own sequence.

Where one rendering serves every turn (the common case) the conversation is one sequence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from transformers import GenerationConfig

from ..errors import TunewiseError
from .load import Example
from .template import TemplateCheckError, fold_system, render

SENTINEL = "TUNEWISE7F3A9SENTINEL"  # stands for a message's content while locating a turn's header
# (open, close) tags of reasoning blocks in generation prompts
THINK_TAGS = (("<think>", "</think>"), ("<|channel>thought", "<channel|>"), ("<seed:think>", "</seed:think>"))
END_KEY = "data.end_of_turn"
# end-of-turn tokens of the common chat families (ChatML, Llama 3, Phi-3, Gemma, Mistral/Llama 2)
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>", "<|endoftext|>")


@dataclass(frozen=True)
class TargetOptions:
    """How examples become sequences; the same for data check, data preview, train and eval."""

    stop_ids: frozenset[int] = frozenset()  # tokens that stop generation (generation_config + EOS)
    fold_system_prompt: bool = False
    end_of_turn: str | None = None  # a stop token to train where the template writes none

    def stops(self, tokenizer) -> frozenset[int]:
        return self.stop_ids or stop_ids_for(tokenizer)


@dataclass
class Segment:
    text: str
    trained: bool
    turn: int | None = None  # index of the assistant message a trained segment belongs to


@dataclass
class Sequence:
    segments: list[Segment] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments)

    def to_json(self) -> dict:
        return {"segments": [{"text": s.text, "trained": s.trained, **({"turn": s.turn} if s.trained else {})}
                             for s in self.segments]}


@dataclass
class _Turn:
    index: int
    prompt: str
    run: str


def stop_ids_for(tokenizer, generation_eos=None) -> frozenset[int]:
    """Token ids that end generation: generation_config's eos_token_id (int or list), EOS, and the
    end-of-turn tokens chat models stop on (for a model whose generation_config is not at hand)."""
    ids = set(generation_eos if isinstance(generation_eos, (list, tuple)) else
              [generation_eos] if generation_eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    for token in END_OF_TURN:  # token -> id -> token: present in the vocabulary (get_vocab is slow)
        found = tokenizer.convert_tokens_to_ids(token)
        if isinstance(found, int) and tokenizer.convert_ids_to_tokens(found) == token:
            ids.add(found)
    return frozenset(ids)


def target_options(tokenizer, source: str | None = None, fold_system_prompt: bool = False,
                   end_of_turn: str | None = None) -> TargetOptions:
    """Options for a model: its stop tokens (generation_config.json in its directory, and EOS)."""
    stops = set(stop_ids_for(tokenizer, _generation_eos(source)))
    if end_of_turn is not None:
        ids = tokenizer(end_of_turn, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise TunewiseError(f"{END_KEY}={end_of_turn!r} is not one token of this model's vocabulary "
                                f"({len(ids)} tokens); name a special token such as {tokenizer.eos_token!r}")
        stops.add(ids[0])
    return TargetOptions(frozenset(stops), fold_system_prompt, end_of_turn)


def _generation_eos(source: str | None):
    """eos_token_id of the model's generation_config.json: its directory, or the hub cache for an id."""
    if not source:
        return None
    local = Path(source) / "generation_config.json"
    try:
        if local.is_file():
            return json.loads(local.read_text()).get("eos_token_id")
        return GenerationConfig.from_pretrained(source).eos_token_id
    except (OSError, ValueError):
        return None  # not at hand (offline, no file): EOS and the known end-of-turn tokens


def template_messages(example: Example, options: TargetOptions) -> list[dict]:
    """The messages as the chat template sees them, at training and at inference alike."""
    return fold_system(example.messages) if options.fold_system_prompt else example.messages


def build_sequences(tokenizer, example: Example, options: TargetOptions, where: str = "") -> list[Sequence]:
    messages = template_messages(example, options)
    trained = [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("weight", 1) != 0]
    if not trained:
        raise TemplateCheckError("nothing-trained", f"{where}: every assistant message has weight 0; nothing to train")
    turns = [_turn(tokenizer, messages, i, example.tools, options, where) for i in trained]
    whole = turns[-1].prompt + turns[-1].run
    segments, pos = [], 0
    for t in turns:
        if len(t.prompt) < pos or not whole.startswith(t.prompt + t.run):
            return [Sequence([Segment(t.prompt, False), Segment(t.run, True, t.index)]) for t in turns]
        segments += [Segment(whole[pos : len(t.prompt)], False), Segment(t.run, True, t.index)]
        pos = len(t.prompt) + len(t.run)
    return [Sequence([s for s in segments if s.text])]


def _turn(tokenizer, messages: list[dict], i: int, tools, options: TargetOptions, where: str) -> _Turn:
    at = f"{where}: messages[{i}]"
    history, message = messages[:i], messages[i]
    prompt = render(tokenizer, history, True, tools, where) if i else first_turn_prompt(tokenizer, tools, at)
    upto = render(tokenizer, history + [message], False, tools, where)
    reasoning, content = split_reasoning(message)
    if upto.startswith(prompt):
        run = upto[len(prompt):]
    else:
        run = _run_after_open_prompt(tokenizer, history, message, prompt, upto, reasoning, tools, at)
    run = _with_stop_token(tokenizer, messages, i, prompt, run, tools, options, at)
    _check_run(run, message, reasoning, content, at)
    return _Turn(i, prompt, run)


def first_turn_prompt(tokenizer, tools, at: str = "") -> str:
    """What precedes an assistant message that opens the conversation: the template's header for it
    (an injected default system prompt included), since no prompt can be rendered from nothing."""
    text = render(tokenizer, [{"role": "assistant", "content": SENTINEL}], False, tools, at)
    if SENTINEL not in text:
        raise TemplateCheckError("assistant-first", (
            f"{at} is an assistant message with nothing before it, and this chat template does not render one; "
            "start with a user message or give it \"weight\": 0"))
    return text[: text.find(SENTINEL)]


def split_reasoning(message: dict) -> tuple[str, str]:
    """(reasoning, content): `reasoning_content`, or a leading <think>...</think> in the content."""
    content = message.get("content") or ""
    if isinstance(message.get("reasoning_content"), str):
        return message["reasoning_content"], content
    stripped = content.lstrip()
    if stripped.startswith("<think>") and "</think>" in stripped:
        inner, after = stripped[len("<think>"):].split("</think>", 1)
        return inner.strip("\n"), after.lstrip("\n")
    return "", content


def _run_after_open_prompt(tokenizer, history, message, prompt, upto, reasoning, tools, at) -> str:
    """The run when the inference prompt is not a prefix of the rendered turn.

    Both are compared after the last history message's content (the anchor), so a template that
    renders earlier text differently at inference (Mistral v0.3 puts the system prompt into the
    last user turn only when that turn ends the conversation) still yields the turn as generated.
    Then, past the turn's header, a generation prompt may open a think block or close an empty one.
    """
    probe = render(tokenizer, history + [{"role": "assistant", "content": SENTINEL}], False, tools, at)
    p_tail, u_tail, h_tail = prompt, upto, probe[: probe.find(SENTINEL)] if SENTINEL in probe else ""
    anchor = (history[-1].get("content") or "").strip() if history else ""
    content = split_reasoning(message)[1].strip()
    ends = (len(prompt), upto.rfind(content) if content else len(upto), len(h_tail))
    cuts = [text.rfind(anchor, 0, end) for text, end in zip((prompt, upto, h_tail), ends)] if anchor else [-1]
    if min(cuts) >= 0:
        p_tail, u_tail, h_tail = (t[c + len(anchor):] for t, c in zip((prompt, upto, h_tail), cuts))
    if u_tail.startswith(p_tail):
        return u_tail[len(p_tail):]
    if h_tail and p_tail.startswith(h_tail) and u_tail.startswith(h_tail):
        extra, body = p_tail[len(h_tail):], u_tail[len(h_tail):]
        for open_tag, close_tag in THINK_TAGS:
            if open_tag not in extra:
                continue
            if close_tag in extra.split(open_tag, 1)[1]:  # an empty thought block, closed by the prompt
                if reasoning.strip():
                    raise TemplateCheckError("reasoning-not-trainable", (
                        f"{at} has reasoning, but this template's generation prompt closes an empty thought "
                        f"block ({extra!r}), so the model never writes reasoning after it; remove the reasoning"))
                return body
            if extra.rstrip().endswith(open_tag) and open_tag not in body:
                # as such models write it: "<think>\n" (in the prompt) reasoning "\n</think>\n\n" answer
                thought = reasoning.strip("\n") + "\n" if reasoning.strip() else "\n"
                return thought + close_tag + "\n\n" + body.lstrip("\n")
    raise TemplateCheckError("generation-prompt-mismatch", (
        f"{at}: the generation prompt at inference ends with {prompt[-60:]!r}, but the template renders this "
        f"turn as {upto[-80:]!r}; tunewise cannot tell what the model writes after the prompt. Fix the chat "
        "template so both agree"))


def _with_stop_token(tokenizer, messages, i, prompt, run, tools, options: TargetOptions, at) -> str:
    """The run up to and including its first token that stops generation, or with one added where
    the template writes none. Generation ends at that token, so nothing the template writes after
    it is ever generated: not Phi-3.5's "\n" + EOS after <|end|>, not Command R7B's next
    assistant header after <|END_OF_TURN_TOKEN|>."""
    stops = options.stops(tokenizer)
    cut = _through_first_stop(tokenizer, run, stops)
    if cut is not None:
        return cut
    if options.end_of_turn:
        return run.rstrip() + options.end_of_turn
    after = _text_after_turn(tokenizer, messages, i, prompt + run, tools)
    following = tokenizer(after.lstrip(), add_special_tokens=False)["input_ids"][:1]
    if following and following[0] in stops:  # the next role tag stops generation (GLM)
        gap = after[: len(after) - len(after.lstrip())]
        return run + gap + tokenizer.decode(following, skip_special_tokens=False)
    if tokenizer.eos_token and tokenizer.eos_token_id in stops:
        return run.rstrip() + tokenizer.eos_token
    raise TemplateCheckError("no-end-of-turn", (
        f"{at}: the chat template ends this turn with no token that stops generation, and the model names no "
        f"stop token (no EOS); set {END_KEY} to the token the model should end its turns with"))


def _through_first_stop(tokenizer, run: str, stops: frozenset[int]) -> str | None:
    """`run` cut after its first stop token (None when it has none)."""
    encoded = tokenizer(run, add_special_tokens=False, return_offsets_mapping=True)
    for token, (_, end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
        if token in stops:
            return run[:end]
    return None


def _text_after_turn(tokenizer, messages, i, rendered: str, tools) -> str:
    """What the template writes after turn i, before the next message's content: the conversation's
    own next message (a tool result follows a tool call), else a user turn. Asked of the turn
    without its reasoning when the template drops reasoning from turns a user message follows
    (GLM-4.5): what ends a turn does not depend on its reasoning, and the same stop token must be
    trained with or without it."""
    follower = messages[i + 1] if i + 1 < len(messages) else {"role": "user", "content": SENTINEL}
    text = _render_or_none(tokenizer, messages[: i + 1] + [follower], tools)
    if text is None or not text.startswith(rendered):
        turn = messages[:i] + [_without_reasoning(messages[i])]
        text, rendered = _render_or_none(tokenizer, turn + [follower], tools), _render_or_none(tokenizer, turn, tools)
        if text is None or rendered is None or not text.startswith(rendered):
            return ""
    marker = (follower.get("content") or "").strip()
    end = text.find(marker, len(rendered)) if marker else -1
    return text[len(rendered) : end if end >= 0 else len(text)]


def _render_or_none(tokenizer, messages, tools) -> str | None:
    try:
        return render(tokenizer, messages, False, tools)
    except TemplateCheckError:
        return None


def _without_reasoning(message: dict) -> dict:
    content = split_reasoning(message)[1]
    return {k: v for k, v in message.items() if k != "reasoning_content"} | {"content": content}


def _check_run(run: str, message: dict, reasoning: str, content: str, at: str) -> None:
    if content.strip() and content.strip() not in run:
        raise TemplateCheckError("content-dropped", f"{at}: the chat template dropped this assistant message's content")
    for call in message.get("tool_calls") or []:
        name = (call.get("function") or call).get("name", "")
        if name and name not in run:
            raise TemplateCheckError("tool-calls-dropped", (
                f"{at}: the chat template does not render this message's tool_calls ({name!r}); "
                "use a model whose template supports tools"))
    if reasoning.strip() and reasoning.strip() not in run:
        raise TemplateCheckError("reasoning-dropped", (
            f"{at}: the chat template does not render this turn's reasoning, so it would not be trained; "
            "remove reasoning_content, or put the text in the content if the model should write it"))
