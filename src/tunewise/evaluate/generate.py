"""Batched greedy generation for evaluation and chat: left padding, same prompts for base and tuned.

Prompts that start with the same tokens (one system prompt, schema or document for many questions)
share that prefix's forward: each distinct prefix in a batch is run once, its key/value cache copied
to the rows that start with it, and only each row's remainder is prefilled. A row reads
[pad][prefix][pad][remainder]: the attention mask hides both pads and generate's position ids (the
mask's running count) make the remainder continue from the prefix's last position, so every row
attends to what it would unbatched; only the rounding of differently shaped matmuls can differ, as
with any change of batch or padding.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from ..data.template import render

# Prompts share a prefix when at least this many of their first tokens agree: below it, the extra
# forward for the prefix costs more than it saves.
MIN_SHARED = 16


def prompt_messages(messages: list[dict]) -> list[dict]:
    """The conversation up to (not including) the final assistant answer."""
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


@torch.no_grad()
def generate(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 128,
             batch_size: int = 16, on_batch=None, tools: list | None = None, share_prefixes: bool = True) -> list[str]:
    """Greedy completions for each conversation, batched by length (left-padded), in input order;
    `tools[i]` are conversation i's function definitions, rendered as in training. With
    `share_prefixes`, prompts that open with the same tokens prefill that opening once (above)."""
    tools = tools or [None] * len(conversations)
    texts = [render(tokenizer, c, True, t) for c, t in zip(conversations, tools)]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    asked_after = [json.dumps([c[:-1], t], sort_keys=True, default=str) for c, t in zip(conversations, tools)]
    shared = shared_prefixes(encoded, asked_after) if share_prefixes and _can_share(model) else [0] * len(encoded)
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(texts)
    model.eval()
    with _contiguous_head_input(model):
        for start in range(0, len(order), batch_size):
            group = order[start : start + batch_size]
            answers = _generate_batch(model, tokenizer, [encoded[i] for i in group], [shared[i] for i in group],
                                      max_new_tokens)
            for i, answer in zip(group, answers):
                outputs[i] = answer
            if on_batch:
                on_batch(len(group))
    return outputs


def _generate_batch(model, tokenizer, prompts: list[list[int]], shared: list[int], max_new_tokens: int) -> list[str]:
    pad = tokenizer.pad_token_id
    device = next(model.parameters()).device
    batch = _Batch.build(prompts, shared, pad)
    cache = batch.prefix_cache(model, device)
    out = model.generate(input_ids=batch.ids.to(device), attention_mask=batch.mask.to(device),
                         max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                         pad_token_id=pad, eos_token_id=_stop_ids(model, tokenizer),
                         **({"cache": cache} if cache is not None else {}))
    return [tokenizer.decode(row[batch.width :], skip_special_tokens=True).strip() for row in out]


@contextmanager
def _contiguous_head_input(model):
    """The output head gets a contiguous input. generate's first step hands it the last position of
    each row, hidden_states[:, -1:], a [rows, 1, hidden] view with the rows' strides, and torch
    2.13's CPU bf16 linear takes a slow path for that view: 1.53 s against 0.010 s contiguous for
    SmolLM2's 49k-token head at 32 rows (2 threads), paid once per batch. Copying 32 rows is free."""
    head = model.get_output_embeddings()
    if head is None:
        yield
        return
    handle = head.register_forward_pre_hook(
        lambda _, args: tuple(a.contiguous() if torch.is_tensor(a) else a for a in args))
    try:
        yield
    finally:
        handle.remove()


def shared_prefixes(encoded: list[list[int]], groups: list, min_shared: int = MIN_SHARED) -> list[int]:
    """For each prompt, how many of its first tokens it shares with the prompts of its group (0: none).
    `groups[i]` names what prompt i is asked after (its earlier messages and tools): the prompts of a
    group share the tokens all of them open with, less one so that each keeps a token of its own to
    prefill (generate needs one for the first logits). Grouping by earlier messages, not by tokens
    alone, keeps one schema's questions together where several schemas open with the same sentence."""
    members: dict = {}
    for i, key in enumerate(groups):
        members.setdefault(key, []).append(i)
    shared = [0] * len(encoded)
    for group in members.values():
        if len(group) < 2:
            continue
        first = encoded[group[0]]
        common = min(_common_length(first, encoded[j]) for j in group[1:])
        length = min(common, min(len(encoded[j]) for j in group) - 1)
        for j in group:
            shared[j] = length if length >= min_shared else 0
    return shared


def _common_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _can_share(model) -> bool:
    """Only full-attention caches: a sliding-window or recurrent layer keeps a number of positions,
    not of real tokens, so padding between prefix and remainder would change what it keeps."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if getattr(model.config, "is_encoder_decoder", False):
        return False
    cache = DynamicCache(config=config)
    return not any(getattr(cache, "is_sliding", [])) and not any(getattr(cache, "is_linear", []))


@dataclass
class _Batch:
    """One batch's prompts as [pad][prefix][pad][remainder] rows; `prefixes` the distinct prefixes
    (token lists) and `row_prefix[r]` which one row r starts with (-1: none, its prefix part is all pad)."""

    ids: torch.Tensor
    mask: torch.Tensor
    prefixes: list[list[int]]
    row_prefix: list[int]
    prefix_width: int
    pad: int

    @property
    def width(self) -> int:
        return self.ids.shape[1]

    @classmethod
    def build(cls, prompts: list[list[int]], shared: list[int], pad: int) -> "_Batch":
        prefixes: list[list[int]] = []
        row_prefix = []
        for tokens, n in zip(prompts, shared):
            prefix = tokens[:n]
            if n and prefix not in prefixes:
                prefixes.append(prefix)
            row_prefix.append(prefixes.index(prefix) if n else -1)
        if not prefixes:  # nothing shared in this batch: plain left padding
            shared = [0] * len(prompts)
        width_p = max(len(p) for p in prefixes) if prefixes else 0
        width_r = max(len(t) - n for t, n in zip(prompts, shared))
        ids = torch.full((len(prompts), width_p + width_r), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (tokens, n) in enumerate(zip(prompts, shared)):
            rest = tokens[n:]
            ids[row, width_p - n : width_p] = torch.tensor(tokens[:n], dtype=torch.long)
            ids[row, ids.shape[1] - len(rest) :] = torch.tensor(rest, dtype=torch.long)
            mask[row, width_p - n : width_p] = 1
            mask[row, ids.shape[1] - len(rest) :] = 1
        return cls(ids, mask, prefixes, row_prefix, width_p, pad)

    def prefix_cache(self, model, device) -> DynamicCache | None:
        """Each distinct prefix's keys and values, from one left-padded forward, copied to its rows."""
        if not self.prefixes:
            return None
        width = self.prefix_width
        ids = torch.full((len(self.prefixes), width), self.pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for k, prefix in enumerate(self.prefixes):
            ids[k, width - len(prefix) :] = torch.tensor(prefix, dtype=torch.long)
            mask[k, width - len(prefix) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate numbers a left-padded row
        cache = DynamicCache(config=model.config)
        model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
              cache=cache, use_cache=True, logits_to_keep=1)
        # rows with no shared prefix take any prefix's entries: their mask hides them all
        cache.reorder_cache(torch.tensor([max(k, 0) for k in self.row_prefix], device=device))
        return cache


def _stop_ids(model, tokenizer) -> list[int]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = ids if isinstance(ids, list) else [ids] if ids is not None else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids
