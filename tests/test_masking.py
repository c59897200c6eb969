"""Golden tests for assistant-only labels on two real chat templates (ChatML, Llama-3 style)."""

import pytest

from tunewise.data.load import Example, to_example
from tunewise.data.masking import IGNORE, encode_all
from tunewise.data.masking import encode as encode_sequences
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


def encode(tokenizer, example, max_seq_len, where=""):
    """These conversations render as one sequence on both templates."""
    (enc,) = encode_sequences(tokenizer, example, max_seq_len, where)
    return enc


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
    # the sequence ends with the last trained run (the template's newline after it trains nothing),
    # so the 5 cut tokens are the answer's last 4 and <|im_end|>
    lost = sum(1 for label in full.labels[-5:] if label != IGNORE)
    assert lost == 5
    assert cut.lost_trained_tokens == lost
    assert cut.n_trained == full.n_trained - lost


def test_no_trainable_tokens_is_refused(chatml_tokenizer):
    with pytest.raises(TunewiseError, match="no tokens would be trained"):
        encode_all(chatml_tokenizer, [Example(SINGLE, line=1)], max_seq_len=12, source="train.jsonl")


def test_prefix_inconsistent_template_trains_each_turn_as_its_own_sequence(chatml_tokenizer):
    tok = chatml_tokenizer.__class__.from_pretrained(chatml_tokenizer.name_or_path)
    # renders the final assistant turn differently from earlier ones (like templates that strip
    # reasoning from past turns): no one rendering holds both turns as at inference
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}"
        "{% if loop.last and m['role'] == 'assistant' %}{{ ' [end]' }}{% endif %}{{ eos_token + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    first, second = encode_sequences(tok, Example(MULTI), 512, "train.jsonl:3")
    eos = tok.eos_token
    assert trained_text(tok, first) == [f"SELECT COUNT(*) FROM users; [end]{eos}"]
    assert trained_text(tok, second) == [f"SELECT COUNT(*) FROM users WHERE age >= 18; [end]{eos}"]
    # the second sequence's history is the inference prompt: the first answer without ' [end]'
    assert f"users;{eos}\nuser: Now only adults" in tok.decode(second.input_ids)
