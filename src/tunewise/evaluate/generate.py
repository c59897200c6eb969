"""Batched greedy generation for evaluation and chat: left padding, same prompts for base and tuned."""

from __future__ import annotations

import torch

from ..data.template import render


def prompt_messages(messages: list[dict]) -> list[dict]:
    """The conversation up to (not including) the final assistant answer."""
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


@torch.no_grad()
def generate(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 128,
             batch_size: int = 16, on_batch=None, tools: list | None = None) -> list[str]:
    """Greedy completions for each conversation, batched by length (left-padded), in input order;
    `tools[i]` are conversation i's function definitions, rendered as in training."""
    tools = tools or [None] * len(conversations)
    texts = [render(tokenizer, c, True, t) for c, t in zip(conversations, tools)]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(texts)
    pad = tokenizer.pad_token_id
    eos = _stop_ids(model, tokenizer)
    model.eval()
    for start in range(0, len(order), batch_size):
        group = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in group)
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, i in enumerate(group):
            n = len(encoded[i])
            ids[row, width - n :] = torch.tensor(encoded[i])
            mask[row, width - n :] = 1
        device = next(model.parameters()).device
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, temperature=None, top_p=None, top_k=None,
                             pad_token_id=pad, eos_token_id=eos)
        for row, i in enumerate(group):
            outputs[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True).strip()
        if on_batch:
            on_batch(len(group))
    return outputs


def _stop_ids(model, tokenizer) -> list[int]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = ids if isinstance(ids, list) else [ids] if ids is not None else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids
