"""Every template family trains what the model generates at inference, checked by one oracle.

The templates below are small Jinja templates written here that behave like each family's
published one, put on the bundled tokenizer with the family's special tokens. For every
conversation (system + one turn, one turn, system + two turns, plus reasoning and tool variants)
the oracle checks: the text before each trained run is exactly the inference prompt
`render(messages[:i], add_generation_prompt=True)`; the run holds the turn's content (and
reasoning) and ends with a token that stops generation; no system, user or tool-result text is
trained; every trained turn is trained exactly once and weight-0 turns never.
"""

import json

import pytest

from tunewise.data.load import to_example
from tunewise.data.masking import encode
from tunewise.data.targets import TargetOptions, build_sequences, first_turn_prompt, target_options, template_messages
from tunewise.data.template import TemplateCheckError, render

SYS, Q1, A1, Q2, A2 = "SYSPROMPT zeta", "QUESTION one", "ANSWER alpha", "QUESTION two", "ANSWER beta"
R1, R2 = "REASONING first", "REASONING second"

CONVERSATIONS = {
    "system+1": [{"role": "system", "content": SYS}, {"role": "user", "content": Q1},
                 {"role": "assistant", "content": A1}],
    "1": [{"role": "user", "content": Q1}, {"role": "assistant", "content": A1}],
    "system+2": [{"role": "system", "content": SYS}, {"role": "user", "content": Q1},
                 {"role": "assistant", "content": A1}, {"role": "user", "content": Q2},
                 {"role": "assistant", "content": A2}],
}
WITH_REASONING = {  # the same two turns with reasoning, once as a field and once inline
    "reasoning_content": [{"role": "user", "content": Q1},
                          {"role": "assistant", "content": A1, "reasoning_content": R1},
                          {"role": "user", "content": Q2},
                          {"role": "assistant", "content": A2, "reasoning_content": R2}],
    "inline-think": [{"role": "user", "content": Q1},
                     {"role": "assistant", "content": f"<think>\n{R1}\n</think>\n\n{A1}"},
                     {"role": "user", "content": Q2},
                     {"role": "assistant", "content": f"<think>\n{R2}\n</think>\n\n{A2}"}],
}

CHATML_BODY = ("{% for m in messages %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{% endfor %}"
               "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

FAMILIES = {
    # name: (template, special tokens, bos, eos, generation_config eos ids as tokens)
    "llama3-date-header": (
        "{{ bos_token }}{% if messages[0].role == 'system' %}{% set sys = messages[0].content %}"
        "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
        "{{ '<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: '"
        " + strftime_now('%d %b %Y') + '\n\n' + sys + '<|eot_id|>' }}"
        "{% for m in msgs %}{{ '<|start_header_id|>' + m.role + '<|end_header_id|>\n\n' + m.content | trim"
        " + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>", "<|eot_id|>", ["<|eot_id|>"]),
    "qwen3-strips-past-reasoning": (
        "{% set ns = namespace(last_user=-1) %}{% for m in messages %}{% if m.role == 'user' %}"
        "{% set ns.last_user = loop.index0 %}{% endif %}{% endfor %}"
        "{% for m in messages %}{% if m.role == 'assistant' %}{% set content = m.content %}{% set r = '' %}"
        "{% if m.reasoning_content is defined and m.reasoning_content is not none %}{% set r = m.reasoning_content %}"
        "{% elif '</think>' in content %}{% set r = content.split('</think>')[0].split('<think>')[-1].strip('\n') %}"
        "{% set content = content.split('</think>')[-1].lstrip('\n') %}{% endif %}"
        "{% if loop.index0 > ns.last_user and (loop.last or r) %}"
        "{{ '<|im_start|>assistant\n<think>\n' + r.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') "
        "+ '<|im_end|>\n' }}"
        "{% else %}{{ '<|im_start|>assistant\n' + content + '<|im_end|>\n' }}{% endif %}"
        "{% else %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
        ["<think>", "</think>"], None, "<|im_end|>", ["<|im_end|>", "<|endoftext|>"]),
    "deepseek-r1-think-in-prompt": (
        "{{ bos_token }}{% if messages[0].role == 'system' %}{{ messages[0].content }}{% endif %}"
        "{% for m in messages %}{% if m.role == 'user' %}{{ '<｜User｜>' + m.content }}"
        "{% elif m.role == 'assistant' %}{% set c = m.content %}{% if '</think>' in c %}"
        "{% set c = c.split('</think>')[-1] %}{% endif %}{{ '<｜Assistant｜>' + c + '<｜end▁of▁sentence｜>' }}"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\n' }}{% endif %}",
        ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"],
        "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", ["<｜end▁of▁sentence｜>"]),
    "gemma4-thought-channel": (
        "{{ bos_token }}{% for m in messages %}{{ '<|turn>' + ('model' if m.role == 'assistant' else m.role) + '\n'"
        " + m.content + '<turn|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|turn>model\n<|channel>thought\n<channel|>' }}{% endif %}",
        ["<bos>", "<|turn>", "<turn|>", "<|channel>", "<channel|>"], "<bos>", "<turn|>", ["<turn|>"]),
    "mistral-v0.3-system-in-last-user": (
        "{% if messages[0].role == 'system' %}{% set system = messages[0].content %}"
        "{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}"
        "{{ bos_token }}{% for m in loop_messages %}{% if m.role == 'user' %}"
        "{% if loop.last and system is defined %}{{ '[INST] ' + system + '\n\n' + m.content + '[/INST]' }}"
        "{% else %}{{ '[INST] ' + m.content + '[/INST]' }}{% endif %}"
        "{% elif m.role == 'assistant' %}{{ ' ' + m.content + eos_token }}{% endif %}{% endfor %}",
        ["<s>", "</s>", "[INST]", "[/INST]"], "<s>", "</s>", ["</s>"]),
    "glm-no-end-of-turn": (
        "[gMASK]<sop>{% for m in messages %}{{ '<|' + m.role + '|>\n' + m.content }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}",
        ["[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>", "<|endoftext|>"],
        None, "<|endoftext|>", ["<|endoftext|>", "<|user|>", "<|observation|>"]),
    "chatml-plain": (CHATML_BODY, [], None, "<|im_end|>", ["<|im_end|>"]),
}
REASONING_FAMILIES = ("qwen3-strips-past-reasoning", "deepseek-r1-think-in-prompt")
# how each family must come out: one sequence for the whole conversation, or one per trained turn
MULTI_TURN_SEQUENCES = {"llama3-date-header": 1, "chatml-plain": 1, "glm-no-end-of-turn": 1,
                        "qwen3-strips-past-reasoning": 2, "deepseek-r1-think-in-prompt": 2,
                        "gemma4-thought-channel": 2, "mistral-v0.3-system-in-last-user": 2}


def family_tokenizer(chatml_tokenizer, tmp_path, name):
    template, specials, bos, eos, stops = FAMILIES[name]
    tok = chatml_tokenizer.__class__.from_pretrained(chatml_tokenizer.name_or_path)
    tok.add_tokens(specials, special_tokens=True)
    if bos:
        tok.bos_token = bos
    tok.eos_token = eos
    tok.chat_template = template
    ids = [tok.convert_tokens_to_ids(t) for t in stops]
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": ids}))
    return tok, target_options(tok, str(tmp_path))


def check_oracle(tok, example, options, sequences):
    messages = template_messages(example, options)
    trained_turns = []
    for seq in sequences:
        before = ""
        for seg in seq.segments:
            if seg.trained:
                i = seg.turn
                prompt = render(tok, messages[:i], True, example.tools) if i else first_turn_prompt(tok, example.tools)
                assert before == prompt, f"turn {i}: not the inference prompt"
                message = messages[i]
                content = (message["content"] or "").split("</think>")[-1].strip()
                assert content in seg.text
                if message.get("reasoning_content"):
                    assert message["reasoning_content"] in seg.text
                ids = tok(seg.text, add_special_tokens=False)["input_ids"]
                assert ids[-1] in options.stop_ids, f"turn {i} does not end with a stop token: {seg.text!r}"
                for other in messages:
                    if other["role"] != "assistant" and other["content"]:
                        assert other["content"] not in seg.text, f"{other['role']} text trained"
                trained_turns.append(i)
            before += seg.text
    expected = [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("weight", 1) != 0]
    assert sorted(trained_turns) == expected


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_trains_what_inference_asks(chatml_tokenizer, tmp_path, family, conversation):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, family)
    example = to_example({"messages": CONVERSATIONS[conversation]})
    sequences = build_sequences(tok, example, options)
    check_oracle(tok, example, options, sequences)
    if conversation == "system+2":
        assert len(sequences) == MULTI_TURN_SEQUENCES[family]
    encoded = encode(tok, example, 4096, "", options)  # the tokens train sees: each run in the loss
    assert len(encoded) == len(sequences) and all(e.n_trained > 0 for e in encoded)


@pytest.mark.parametrize("variant", sorted(WITH_REASONING))
@pytest.mark.parametrize("family", REASONING_FAMILIES)
def test_reasoning_is_trained_where_the_model_writes_it(chatml_tokenizer, tmp_path, family, variant):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, family)
    example = to_example({"messages": WITH_REASONING[variant]})
    sequences = build_sequences(tok, example, options)
    check_oracle(tok, example, options, sequences)
    runs = [s.text for seq in sequences for s in seq.segments if s.trained]
    assert len(runs) == 2 and R1 in runs[0] and R2 in runs[1]
    assert all(r.count("</think>") == 1 and f"</think>\n\n{a}" in r for r, a in zip(runs, (A1, A2)))


def test_r1_without_reasoning_trains_the_empty_think_block(chatml_tokenizer, tmp_path):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "deepseek-r1-think-in-prompt")
    (seq,) = build_sequences(tok, to_example({"messages": CONVERSATIONS["1"]}), options)
    assert seq.segments[0].text.endswith("<｜Assistant｜><think>\n")
    assert seq.segments[1].text == f"\n</think>\n\n{A1}<｜end▁of▁sentence｜>"


def test_glm_trains_the_next_role_tag_as_its_stop_token(chatml_tokenizer, tmp_path):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "glm-no-end-of-turn")
    (seq,) = build_sequences(tok, to_example({"messages": CONVERSATIONS["system+2"]}), options)
    assert [s.text for s in seq.segments if s.trained] == [f"\n{A1}<|user|>", f"\n{A2}<|user|>"]


def test_gemma4_refuses_reasoning_after_a_closed_thought_channel(chatml_tokenizer, tmp_path):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "gemma4-thought-channel")
    with pytest.raises(TemplateCheckError) as err:
        build_sequences(tok, to_example({"messages": WITH_REASONING["reasoning_content"]}), options, "t.jsonl:4")
    assert err.value.code == "reasoning-not-trainable" and "t.jsonl:4" in str(err.value)


def test_reasoning_a_template_drops_is_refused(chatml_tokenizer, tmp_path):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "chatml-plain")
    with pytest.raises(TemplateCheckError) as err:
        build_sequences(tok, to_example({"messages": WITH_REASONING["reasoning_content"]}), options, "t.jsonl:2")
    assert err.value.code == "reasoning-dropped"


NO_SYSTEM = ("{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
             + CHATML_BODY)


def test_template_without_system_role_names_its_message_and_the_fix(chatml_tokenizer, tmp_path):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "chatml-plain")
    tok.chat_template = NO_SYSTEM
    with pytest.raises(TemplateCheckError) as err:
        build_sequences(tok, to_example({"messages": CONVERSATIONS["system+1"]}), options, "train.jsonl:7")
    message = str(err.value)
    assert "train.jsonl:7" in message and "System role not supported" in message
    assert "data.fold_system_prompt: true" in message
    folded = TargetOptions(options.stop_ids, fold_system_prompt=True)
    example = to_example({"messages": CONVERSATIONS["system+2"]})
    sequences = build_sequences(tok, example, folded)
    check_oracle(tok, example, folded, sequences)
    assert f"user\n{SYS}\n\n{Q1}" in sequences[0].text  # folded into the first user turn, untrained


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]
TOOL_CHAT = [
    {"role": "user", "content": Q1},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "TOOLRESULT minus four"},
    {"role": "assistant", "content": A1},
]
TOOL_TEMPLATE = (
    "{% if tools %}{{ '<|im_start|>system\n# Tools\n' }}{% for t in tools %}{{ t | tojson + '\n' }}{% endfor %}"
    "{{ '<|im_end|>\n' }}{% endif %}{% for m in messages %}"
    "{% if m.role == 'assistant' %}{{ '<|im_start|>assistant\n' + (m.content or '') }}"
    "{% for c in m.tool_calls or [] %}{{ '<tool_call>{\"name\": \"' + c.function.name + '\", \"arguments\": '"
    " + c.function.arguments | tojson + '}</tool_call>' }}{% endfor %}{{ '<|im_end|>\n' }}"
    "{% elif m.role == 'tool' %}{{ '<|im_start|>user\n<tool_response>' + m.content + '</tool_response><|im_end|>\n' }}"
    "{% else %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_tool_calls_are_trained_and_tool_results_are_not(chatml_tokenizer, tmp_path):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "chatml-plain")
    tok.chat_template = TOOL_TEMPLATE
    example = to_example({"messages": TOOL_CHAT, "tools": TOOLS})
    (seq,) = build_sequences(tok, example, options)
    check_oracle(tok, example, options, [seq])
    runs = [s.text for s in seq.segments if s.trained]
    assert runs[0] == '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call><|im_end|>'
    assert "# Tools" in seq.segments[0].text and "TOOLRESULT" not in "".join(runs)


def test_template_that_needs_a_tools_list_gets_one(chatml_tokenizer, tmp_path):
    """Phi-4-mini's template loops over `tools` unguarded: None fails, an empty list renders."""
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "chatml-plain")
    tok.chat_template = "{% for t in tools %}{{ t | tojson }}{% endfor %}" + CHATML_BODY
    example = to_example({"messages": CONVERSATIONS["system+2"]})
    check_oracle(tok, example, options, build_sequences(tok, example, options))


def test_weight_zero_turns_are_context(chatml_tokenizer, tmp_path):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "chatml-plain")
    messages = [dict(m) for m in CONVERSATIONS["system+2"]]
    messages[2]["weight"] = 0
    example = to_example({"messages": messages})
    (seq,) = build_sequences(tok, example, options)
    check_oracle(tok, example, options, [seq])
    assert [s.text for s in seq.segments if s.trained] == [f"{A2}<|im_end|>"] and A1 in seq.text


def test_assistant_first_trains_neither_header_nor_injected_system_prompt(chatml_tokenizer):
    """SmolLM2's own template injects a default system prompt before a conversation without one."""
    options = target_options(chatml_tokenizer)
    example = to_example({"messages": [{"role": "assistant", "content": A1}, {"role": "user", "content": Q1},
                                       {"role": "assistant", "content": A2}]})
    (seq,) = build_sequences(chatml_tokenizer, example, options)
    check_oracle(chatml_tokenizer, example, options, [seq])
    assert [s.text for s in seq.segments if s.trained] == [f"{A1}<|im_end|>", f"{A2}<|im_end|>"]
    assert "You are a helpful AI assistant" in seq.segments[0].text  # there, and not trained


GLM_TOOLS = ("[gMASK]<sop>{% for m in messages %}{% set role = 'observation' if m.role == 'tool' else m.role %}"
             "{{ '<|' + role + '|>\n' + (m.content or '') }}{% for c in m.tool_calls or [] %}"
             "{{ c.function.name + '\n' + c.function.arguments | tojson }}{% endfor %}{% endfor %}"
             "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")


def test_glm_tool_call_stops_on_the_tag_the_template_writes_next(chatml_tokenizer, tmp_path):
    """After a tool call GLM writes <|observation|>, not <|user|>: the run learns the real next tag."""
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "glm-no-end-of-turn")
    tok.chat_template = GLM_TOOLS
    example = to_example({"messages": TOOL_CHAT, "tools": TOOLS})
    (seq,) = build_sequences(tok, example, options)
    check_oracle(tok, example, options, [seq])
    runs = [s.text for s in seq.segments if s.trained]
    assert runs[0].endswith("<|observation|>") and runs[1] == f"\n{A1}<|user|>"


def test_trailing_whitespace_in_content_keeps_one_sequence(chatml_tokenizer, tmp_path):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "glm-no-end-of-turn")
    messages = [dict(m) for m in CONVERSATIONS["system+2"]]
    messages[2]["content"] = A1 + "\n"
    (seq,) = build_sequences(tok, to_example({"messages": messages}), options)
    assert [s.text for s in seq.segments if s.trained][0] == f"\n{A1}\n<|user|>"


def test_inline_reasoning_whose_answer_quotes_the_question(chatml_tokenizer, tmp_path):
    """The answer repeats the user's words: the history anchor must be found before the answer."""
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "deepseek-r1-think-in-prompt")
    answer = f"You asked: {Q1}. {A1}"
    example = to_example({"messages": [{"role": "user", "content": Q1},
                                       {"role": "assistant", "content": f"<think>\n{R1}\n</think>\n\n{answer}"}]})
    (seq,) = build_sequences(tok, example, options)
    assert seq.segments[1].text == f"{R1}\n</think>\n\n{answer}<｜end▁of▁sentence｜>"


def test_known_end_of_turn_tokens_stop_without_a_generation_config(chatml_tokenizer):
    """A model named by hub id offline has no generation_config at hand: Gemma's <end_of_turn>
    still counts as its stop token, so nothing is appended after it."""
    tok = chatml_tokenizer.__class__.from_pretrained(chatml_tokenizer.name_or_path)
    tok.add_tokens(["<start_of_turn>", "<end_of_turn>"], special_tokens=True)
    tok.chat_template = ("{% for m in messages %}{{ '<start_of_turn>' + m.role + '\n' + m.content + "
                         "'<end_of_turn>\n' }}"
                         "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>assistant\n' }}{% endif %}")
    options = target_options(tok, "google/not-cached-anywhere")
    (seq,) = build_sequences(tok, to_example({"messages": CONVERSATIONS["system+2"]}), options)
    assert [s.text for s in seq.segments if s.trained] == [f"{A1}<end_of_turn>", f"{A2}<end_of_turn>"]
