"""Golden tests for assistant-only labels on two real chat templates (ChatML, Llama-3 style)."""

import pytest

from tunewise.data.load import Example, to_example
from tunewise.data.masking import IGNORE, encode, encode_all
from tunewise.errors import TunewiseError

SINGLE = [
    {"role": "system", "content": "You are a SQL expert."},
    {"role": "user", "content": "Count users"},
    {"role": "assistant", "content": "SELECT COUNT(*) FROM users;"},
]
MULTI = SINGLE + [
    {"role": "user", "content": "Now only adults"},
    {"role": "assistant", "content": "SELECT COUNT(*) FROM users WHERE age >= 18;"},
]


def trained_text(tokenizer, enc) -> list[str]:
    """Decode each contiguous run of trained tokens."""
    runs, current = [], []
    for token, label in zip(enc.input_ids, enc.labels):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(r, skip_special_tokens=False) for r in runs]


def test_chatml_single_turn(chatml_tokenizer):
    enc = encode(chatml_tokenizer, Example(SINGLE), 512)
    assert trained_text(chatml_tokenizer, enc) == ["SELECT COUNT(*) FROM users;<|im_end|>"]


def test_chatml_multi_turn_trains_every_assistant_turn(chatml_tokenizer):
    enc = encode(chatml_tokenizer, Example(MULTI), 512)
    assert trained_text(chatml_tokenizer, enc) == [
        "SELECT COUNT(*) FROM users;<|im_end|>",
        "SELECT COUNT(*) FROM users WHERE age >= 18;<|im_end|>",
    ]


def test_llama3_single_and_multi_turn(llama3_tokenizer):
    single = encode(llama3_tokenizer, Example(SINGLE), 512)
    assert trained_text(llama3_tokenizer, single) == ["SELECT COUNT(*) FROM users;<|eot_id|>"]
    multi = encode(llama3_tokenizer, Example(MULTI), 512)
    assert trained_text(llama3_tokenizer, multi) == [
        "SELECT COUNT(*) FROM users;<|eot_id|>",
        "SELECT COUNT(*) FROM users WHERE age >= 18;<|eot_id|>",
    ]
    # exactly one BOS: the template writes it, the tokenizer must not add another
    assert multi.input_ids[0] == llama3_tokenizer.bos_token_id
    assert multi.input_ids[1] != llama3_tokenizer.bos_token_id


def test_prompt_completion_becomes_user_assistant(chatml_tokenizer):
    ex = to_example({"prompt": "Say hi", "completion": "hi"}, "f", 1)
    assert [m["role"] for m in ex.messages] == ["user", "assistant"]
    assert trained_text(chatml_tokenizer, encode(chatml_tokenizer, ex, 512)) == ["hi<|im_end|>"]


def test_truncation_is_counted(chatml_tokenizer):
    full = encode(chatml_tokenizer, Example(MULTI), 512)
    cut = encode(chatml_tokenizer, Example(MULTI), len(full.input_ids) - 5)
    assert cut.truncated and not full.truncated
    # the tail is the answer, <|im_end|> and the template's newline (not trained)
    lost = sum(1 for label in full.labels[-5:] if label != IGNORE)
    assert lost == 4
    assert cut.lost_trained_tokens == lost
    assert cut.n_trained == full.n_trained - lost


def test_no_trainable_tokens_is_refused(chatml_tokenizer):
    with pytest.raises(TunewiseError, match="no tokens would be trained"):
        encode_all(chatml_tokenizer, [Example(SINGLE, line=1)], max_seq_len=12, source="train.jsonl")


def test_prefix_inconsistent_template_is_refused(chatml_tokenizer):
    tok = chatml_tokenizer.__class__.from_pretrained(chatml_tokenizer.name_or_path)
    # renders the final assistant turn differently from earlier ones (like templates that strip
    # reasoning from past turns): the assistant span cannot be located by prefix rendering
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}"
        "{% if loop.last %}{{ ' [end]' }}{% else %}{{ '\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    with pytest.raises(TunewiseError, match="prefix-consistent"):
        encode(tok, Example(MULTI), 512, "train.jsonl:3")
