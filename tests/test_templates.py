"""Every template family trains what the model generates at inference, checked by one oracle.

The templates (conftest's `template_families`) are small Jinja templates that behave like each
family's published one, put on the bundled tokenizer with the family's special tokens. For every
conversation (system + one turn, one turn, system + two turns, plus reasoning and tool variants)
the oracle checks: the text before each trained run is exactly the inference prompt
`render(messages[:i], add_generation_prompt=True)`; the run holds the turn's content (and
reasoning) and ends with a token that stops generation; no system, user or tool-result text is
trained; every trained turn is trained exactly once and weight-0 turns never.
"""

import pytest

from tunewise.data.load import to_example
from tunewise.data.masking import encode
from tunewise.data.targets import TargetOptions, build_sequences, first_turn_prompt, target_options, template_messages
from tunewise.data.template import TemplateCheckError, render

# the texts conftest's conversations are written with (test_fixtures_are_what_the_tests_name checks)
SYS, Q1, A1, Q2, A2 = "SYSPROMPT zeta", "QUESTION one", "ANSWER alpha", "QUESTION two", "ANSWER beta"
R1, R2 = "REASONING first", "REASONING second"
CONVERSATION_NAMES = ("1", "system+1", "system+2")  # conftest's `conversations`
REASONING_VARIANTS = ("inline-think", "reasoning_content")  # conftest's `with_reasoning`

REASONING_FAMILIES = ("qwen3-strips-past-reasoning", "deepseek-r1-think-in-prompt")
# how each family must come out: one sequence for the whole conversation, or one per trained turn
MULTI_TURN_SEQUENCES = {"llama3-date-header": 1, "chatml-plain": 1, "glm-no-end-of-turn": 1,
                        "qwen3-strips-past-reasoning": 2, "deepseek-r1-think-in-prompt": 2,
                        "gemma4-thought-channel": 2, "mistral-v0.3-system-in-last-user": 2,
                        "command-r7b-trailing-header": 1, "phi3.5-eos-after-end": 1, "glm4.5-reasoning": 1}
FAMILY_NAMES = tuple(sorted(MULTI_TURN_SEQUENCES))  # conftest's `template_families`


def test_fixtures_are_what_the_tests_name(conversations, with_reasoning, template_families):
    """The parametrized names above cover every conversation and family, written with the texts above."""
    assert sorted(template_families) == list(FAMILY_NAMES) and set(REASONING_FAMILIES) <= set(FAMILY_NAMES)
    assert sorted(conversations) == list(CONVERSATION_NAMES) and sorted(with_reasoning) == list(REASONING_VARIANTS)
    assert [m["content"] for m in conversations["system+2"]] == [SYS, Q1, A1, Q2, A2]
    assert [m.get("reasoning_content") for m in with_reasoning["reasoning_content"]] == [None, R1, None, R2]


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
                # generation ends at the first stop token: nothing after it is ever generated
                assert not options.stop_ids & set(ids[:-1]), f"turn {i} trains past a stop token: {seg.text!r}"
                for other in messages:
                    if other["role"] != "assistant" and other["content"]:
                        assert other["content"] not in seg.text, f"{other['role']} text trained"
                trained_turns.append(i)
            before += seg.text
    expected = [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("weight", 1) != 0]
    assert sorted(trained_turns) == expected


@pytest.mark.parametrize("conversation", CONVERSATION_NAMES)
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_family_trains_what_inference_asks(chatml_tokenizer, tmp_path, family, conversation, family_tokenizer,
                                                 conversations):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, family)
    example = to_example({"messages": conversations[conversation]})
    sequences = build_sequences(tok, example, options)
    check_oracle(tok, example, options, sequences)
    if conversation == "system+2":
        assert len(sequences) == MULTI_TURN_SEQUENCES[family]
    encoded = encode(tok, example, 4096, "", options)  # the tokens train sees: each run in the loss
    assert len(encoded) == len(sequences) and all(e.n_trained > 0 for e in encoded)


@pytest.mark.parametrize("variant", REASONING_VARIANTS)
@pytest.mark.parametrize("family", REASONING_FAMILIES)
def test_reasoning_is_trained_where_the_model_writes_it(chatml_tokenizer, tmp_path, family, variant, family_tokenizer,
                                                        with_reasoning):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, family)
    example = to_example({"messages": with_reasoning[variant]})
    sequences = build_sequences(tok, example, options)
    check_oracle(tok, example, options, sequences)
    runs = [s.text for seq in sequences for s in seq.segments if s.trained]
    assert len(runs) == 2 and R1 in runs[0] and R2 in runs[1]
    assert all(r.count("</think>") == 1 and f"</think>\n\n{a}" in r for r, a in zip(runs, (A1, A2)))


def test_r1_without_reasoning_trains_the_empty_think_block(chatml_tokenizer, tmp_path, family_tokenizer, conversations):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "deepseek-r1-think-in-prompt")
    (seq,) = build_sequences(tok, to_example({"messages": conversations["1"]}), options)
    assert seq.segments[0].text.endswith("<｜Assistant｜><think>\n")
    assert seq.segments[1].text == f"\n</think>\n\n{A1}<｜end▁of▁sentence｜>"


def test_glm_trains_the_next_role_tag_as_its_stop_token(chatml_tokenizer, tmp_path, family_tokenizer, conversations):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "glm-no-end-of-turn")
    (seq,) = build_sequences(tok, to_example({"messages": conversations["system+2"]}), options)
    assert [s.text for s in seq.segments if s.trained] == [f"\n{A1}<|user|>", f"\n{A2}<|user|>"]


@pytest.mark.parametrize("family,ending", [("command-r7b-trailing-header", "<|END_OF_TURN_TOKEN|>"),
                                           ("phi3.5-eos-after-end", "<|end|>")])
def test_training_stops_at_the_first_stop_token(chatml_tokenizer, tmp_path, family_tokenizer, conversations, family,
                                                ending):
    """Command R7B renders the next assistant header after every turn's end, Phi-3.5 "\n" + EOS
    after <|end|>: neither is generated, so neither is trained."""
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, family)
    (seq,) = build_sequences(tok, to_example({"messages": conversations["system+2"]}), options)
    assert [s.text for s in seq.segments if s.trained] == [A1 + ending, A2 + ending]


@pytest.mark.parametrize("variant", ["plain", *REASONING_VARIANTS])
def test_glm45_trains_the_same_stop_token_with_or_without_reasoning(chatml_tokenizer, tmp_path, family_tokenizer,
                                                                     with_reasoning, variant):
    """GLM-4.5 drops reasoning from turns a user message follows; what ends a turn must not depend on it."""
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "glm4.5-reasoning")
    messages = [{"role": m["role"], "content": m["content"].split("</think>")[-1].strip()}
                for m in with_reasoning["inline-think"]] if variant == "plain" else with_reasoning[variant]
    example = to_example({"messages": messages})
    sequences = build_sequences(tok, example, options)
    check_oracle(tok, example, options, sequences)
    runs = [s.text for seq in sequences for s in seq.segments if s.trained]
    assert len(runs) == 2 and all(r.endswith(f"{a}<|user|>") for r, a in zip(runs, (A1, A2))), runs


def test_gemma4_refuses_reasoning_after_a_closed_thought_channel(chatml_tokenizer, tmp_path, family_tokenizer,
                                                                 with_reasoning):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "gemma4-thought-channel")
    with pytest.raises(TemplateCheckError) as err:
        build_sequences(tok, to_example({"messages": with_reasoning["reasoning_content"]}), options, "t.jsonl:4")
    assert err.value.code == "reasoning-not-trainable" and "t.jsonl:4" in str(err.value)


def test_reasoning_a_template_drops_is_refused(chatml_tokenizer, tmp_path, family_tokenizer, with_reasoning):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "chatml-plain")
    with pytest.raises(TemplateCheckError) as err:
        build_sequences(tok, to_example({"messages": with_reasoning["reasoning_content"]}), options, "t.jsonl:2")
    assert err.value.code == "reasoning-dropped"


# put before a template: one that refuses a system message
NO_SYSTEM = "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"


def test_template_without_system_role_names_its_message_and_the_fix(chatml_tokenizer, tmp_path, family_tokenizer,
                                                                    conversations):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "chatml-plain")
    tok.chat_template = NO_SYSTEM + tok.chat_template  # chatml-plain's
    with pytest.raises(TemplateCheckError) as err:
        build_sequences(tok, to_example({"messages": conversations["system+1"]}), options, "train.jsonl:7")
    message = str(err.value)
    assert "train.jsonl:7" in message and "System role not supported" in message
    assert "data.fold_system_prompt: true" in message
    folded = TargetOptions(options.stop_ids, fold_system_prompt=True)
    example = to_example({"messages": conversations["system+2"]})
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


def test_tool_calls_are_trained_and_tool_results_are_not(chatml_tokenizer, tmp_path, family_tokenizer):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "chatml-plain")
    tok.chat_template = TOOL_TEMPLATE
    example = to_example({"messages": TOOL_CHAT, "tools": TOOLS})
    (seq,) = build_sequences(tok, example, options)
    check_oracle(tok, example, options, [seq])
    runs = [s.text for s in seq.segments if s.trained]
    assert runs[0] == '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call><|im_end|>'
    assert "# Tools" in seq.segments[0].text and "TOOLRESULT" not in "".join(runs)


def test_template_that_needs_a_tools_list_gets_one(chatml_tokenizer, tmp_path, family_tokenizer, conversations):
    """Phi-4-mini's template loops over `tools` unguarded: None fails, an empty list renders."""
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "chatml-plain")
    tok.chat_template = "{% for t in tools %}{{ t | tojson }}{% endfor %}" + tok.chat_template  # chatml-plain's
    example = to_example({"messages": conversations["system+2"]})
    check_oracle(tok, example, options, build_sequences(tok, example, options))


def test_weight_zero_turns_are_context(chatml_tokenizer, tmp_path, family_tokenizer, conversations):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "chatml-plain")
    messages = [dict(m) for m in conversations["system+2"]]
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


def test_glm_tool_call_stops_on_the_tag_the_template_writes_next(chatml_tokenizer, tmp_path, family_tokenizer):
    """After a tool call GLM writes <|observation|>, not <|user|>: the run learns the real next tag."""
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "glm-no-end-of-turn")
    tok.chat_template = GLM_TOOLS
    example = to_example({"messages": TOOL_CHAT, "tools": TOOLS})
    (seq,) = build_sequences(tok, example, options)
    check_oracle(tok, example, options, [seq])
    runs = [s.text for s in seq.segments if s.trained]
    assert runs[0].endswith("<|observation|>") and runs[1] == f"\n{A1}<|user|>"


def test_trailing_whitespace_in_content_keeps_one_sequence(chatml_tokenizer, tmp_path, family_tokenizer, conversations):
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "glm-no-end-of-turn")
    messages = [dict(m) for m in conversations["system+2"]]
    messages[2]["content"] = A1 + "\n"
    (seq,) = build_sequences(tok, to_example({"messages": messages}), options)
    assert [s.text for s in seq.segments if s.trained][0] == f"\n{A1}\n<|user|>"


def test_inline_reasoning_whose_answer_quotes_the_question(chatml_tokenizer, tmp_path, family_tokenizer):
    """The answer repeats the user's words: the history anchor must be found before the answer."""
    tok, options = family_tokenizer(chatml_tokenizer, tmp_path, "deepseek-r1-think-in-prompt")
    answer = f"You asked: {Q1}. {A1}"
    example = to_example({"messages": [{"role": "user", "content": Q1},
                                       {"role": "assistant", "content": f"<think>\n{R1}\n</think>\n\n{answer}"}]})
    (seq,) = build_sequences(tok, example, options)
    assert seq.segments[1].text == f"{R1}\n</think>\n\n{answer}<｜end▁of▁sentence｜>"


def test_known_end_of_turn_tokens_stop_without_a_generation_config(chatml_tokenizer, conversations):
    """A model named by hub id offline has no generation_config at hand: Gemma's <end_of_turn>
    still counts as its stop token, so nothing is appended after it."""
    tok = chatml_tokenizer.__class__.from_pretrained(chatml_tokenizer.name_or_path)
    tok.add_tokens(["<start_of_turn>", "<end_of_turn>"], special_tokens=True)
    tok.chat_template = ("{% for m in messages %}{{ '<start_of_turn>' + m.role + '\n' + m.content + "
                         "'<end_of_turn>\n' }}"
                         "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>assistant\n' }}{% endif %}")
    options = target_options(tok, "google/not-cached-anywhere")
    (seq,) = build_sequences(tok, to_example({"messages": conversations["system+2"]}), options)
    assert [s.text for s in seq.segments if s.trained] == [f"{A1}<end_of_turn>", f"{A2}<end_of_turn>"]
