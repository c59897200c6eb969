"""Generation for evaluation: prompts that open alike share their prefix's forward, and get the
answers they get one at a time."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tunewise.evaluate.generate import generate, shared_prefixes

SCHEMA = ("You write SQLite. Schema:\nCREATE TABLE labs (id INTEGER PRIMARY KEY, name TEXT, field TEXT, head TEXT);\n"
          "CREATE TABLE grants (id INTEGER PRIMARY KEY, lab_id INTEGER, amount INTEGER, awarded_on TEXT);")
OTHER = "You answer in French. Keep it short, and never use more than ten words in a reply."
QUESTIONS = ["How many labs?", "Total grant amount per lab, largest first, with the lab's name",
             "Which heads run genomics labs?", "Grants awarded in 2024", "Average amount", "Name the labs"]


def test_prompts_asked_after_the_same_messages_share_the_tokens_they_all_open_with():
    a, b, c = [1] * 20 + [5, 6], [1] * 20 + [7], [1] * 20 + [5, 9, 9]  # a and c agree on 21
    assert shared_prefixes([a, b, c], ["s", "s", "s"], 16) == [20, 20, 20]
    longer_b = b + [7] * 4
    assert shared_prefixes([a, c, longer_b], ["s", "s", "s"], 16) == [20, 20, 20]  # all of them, not the first two
    assert shared_prefixes([a, c], ["s", "s"], 16) == [21, 21]
    # another schema that opens with the same instruction is another group
    other = [1] * 18 + [8] * 10
    assert shared_prefixes([a, b, other], ["s", "s", "t"], 16) == [20, 20, 0]
    whole = [1] * 20  # all of it is the others' prefix: keeps one token of its own
    assert shared_prefixes([a, b, whole], ["s"] * 3, 16) == [19, 19, 19]
    assert shared_prefixes([a, b], ["s", "s"], 21) == [0, 0]  # below the minimum
    assert shared_prefixes([a], ["s"], 16) == [0]


@pytest.fixture(scope="module")
def tiny(chatml_tokenizer):
    """A tiny random Llama whose greedy answers depend on the prompt: untied, with weights ten times
    the usual scale (at 0.02 it repeats the prompt's last token whatever came before)."""
    tok = chatml_tokenizer
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=False, initializer_range=0.2, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return LlamaForCausalLM(config).eval(), tok


def _conversations():
    rows = [[{"role": "system", "content": SCHEMA}, {"role": "user", "content": q}] for q in QUESTIONS]
    rows += [[{"role": "system", "content": OTHER}, {"role": "user", "content": q}] for q in QUESTIONS[:3]]
    rows.append([{"role": "user", "content": "Say hello."}])  # the template's own short opening only
    return rows


def _prefilled_tokens(model, run) -> tuple[list[str], int]:
    """run()'s answers, and how many prompt tokens the model's forwards were given (not decoding's)."""
    seen = []
    hook = model.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(kwargs["input_ids"].shape), with_kwargs=True)
    try:
        answers = run()
    finally:
        hook.remove()
    return answers, sum(rows * width for rows, width in seen if width > 1)


def test_shared_prefixes_give_each_prompt_its_unbatched_answer_for_fewer_prefilled_tokens(tiny):
    model, tokenizer = tiny
    prompts = _conversations()
    alone = [generate(model, tokenizer, [p], 12, batch_size=1)[0] for p in prompts]
    shared, shared_tokens = _prefilled_tokens(model, lambda: generate(model, tokenizer, prompts, 12, batch_size=4))
    # one batch: two prefixes of different lengths (the shorter left-padded) and a row with none
    one_batch = generate(model, tokenizer, prompts, 12, batch_size=len(prompts))
    plain, plain_tokens = _prefilled_tokens(
        model, lambda: generate(model, tokenizer, prompts, 12, batch_size=4, share_prefixes=False))
    assert len(set(alone)) > len(prompts) // 2 and all(alone)  # answers that depend on the prompt
    assert shared == alone
    assert one_batch == alone
    assert plain == alone
    assert shared_tokens < 0.6 * plain_tokens


def test_the_head_gets_a_contiguous_input_in_every_step(tiny):
    """generate's first step hands the head hidden_states[:, -1:], a view that torch's CPU bf16
    linear runs ~150x slower than a contiguous copy (evaluate/generate.py)."""
    model, tokenizer = tiny
    seen = []
    head = model.get_output_embeddings()
    hook = head.register_forward_hook(lambda _, args, out: seen.append(args[0].is_contiguous()))
    try:
        generate(model, tokenizer, _conversations()[:3], 4, batch_size=3)
    finally:
        hook.remove()
    assert len(seen) >= 4 and all(seen)
