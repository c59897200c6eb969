"""Batches: a seeded shuffle per epoch, fixed sequences per optimizer step, and micro-batches
grouped by length within a step.

Grouping by length only reorders sequences *inside* one optimizer step, and the loss is
normalised by the trained-token count of the whole step, so the optimisation trajectory is the
same whatever the micro-batch size (up to LoRA dropout's random masks, which are drawn per
micro-batch); it just pads less.

`train.group_by_length` (off by default, as in Hugging Face's Trainer) goes further and changes
which sequences share a step (epoch_order), so that the processes of a multi-process run, each
training its own share of a step, finish together.
"""

from __future__ import annotations

import functools
import math

import torch

from ..plan import CPU_TOKEN_CAP
from .masking import IGNORE, Encoded

# Padded tokens per micro-batch when micro_batch_size is "auto" and free memory or the model's
# shape is unknown: the CPU cap (a larger micro-batch is no faster there, only bigger).
AUTO_TOKEN_BUDGET = CPU_TOKEN_CAP


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    return math.ceil(n_examples / batch_size)


def step_indices(n_examples: int, batch_size: int, seed: int, step: int,
                 lengths: list[int] | None = None) -> list[int]:
    """Example indices of global optimizer step `step` (0-based): a pure function of its arguments,
    so a resumed run sees exactly the data an uninterrupted run would. With `lengths`
    (train.group_by_length), each step's sequences are of similar length (epoch_order)."""
    per_epoch = steps_per_epoch(n_examples, batch_size)
    epoch, k = divmod(step, per_epoch)
    order = epoch_order(n_examples, batch_size, seed * 100_003 + epoch, None if lengths is None else tuple(lengths))
    return order[k * batch_size : (k + 1) * batch_size]


# Steps whose sequences are sorted together under group_by_length (Hugging Face's LengthGroupedSampler
# sorts "megabatches" of 50 batches too): a wider span pairs closer lengths, a narrower one keeps
# the steps closer to random pairs.
GROUP_STEPS = 50


@functools.lru_cache(maxsize=2)  # one epoch's order serves all of its steps
def epoch_order(n_examples: int, batch_size: int, seed: int, lengths: tuple[int, ...] | None) -> list[int]:
    """A seeded shuffle of one epoch. With lengths: the shuffle is cut into spans of GROUP_STEPS
    steps, each span sorted by length and dealt into steps, and the full steps shuffled again (the
    last, short one stays last), so a step's sequences are of similar length but the epoch's order
    is still random. That is what makes several processes fast: a step waits for its slowest rank,
    and each rank's share of a step is its own sequences (the SQL example's random pairs of 150-579
    tokens leave 12% of two ranks' time idle, sorted spans 0.7%)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_examples, generator=g).tolist()
    if lengths is None:
        return order
    span = GROUP_STEPS * batch_size
    steps = []
    for start in range(0, n_examples, span):
        ranked = sorted(order[start : start + span], key=lambda i: lengths[i], reverse=True)
        steps += [ranked[j : j + batch_size] for j in range(0, len(ranked), batch_size)]
    short = [steps.pop()] if steps and len(steps[-1]) < batch_size else []  # only the epoch's last can be short
    shuffled = [steps[k] for k in torch.randperm(len(steps), generator=g).tolist()]
    return [i for step in shuffled + short for i in step]


def micro_batches(indices: list[int], lengths: list[int], micro_batch_size: int | str,
                  token_budget: int = AUTO_TOKEN_BUDGET) -> list[list[int]]:
    """Split one step's examples into micro-batches of similar length; with "auto", each holds at
    most `token_budget` padded tokens (the training loop sets it from free memory, plan.py)."""
    ordered = sorted(indices, key=lambda i: lengths[i], reverse=True)
    if micro_batch_size != "auto":
        m = int(micro_batch_size)
        return [ordered[i : i + m] for i in range(0, len(ordered), m)]
    groups, current = [], []
    for i in ordered:  # longest first, so the first member sets the padded width
        width = lengths[current[0]] if current else lengths[i]
        if current and width * (len(current) + 1) > token_budget:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


def collate(items: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest item; padding is masked out of attention and loss."""
    width = max(len(x.input_ids) for x in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        ids[row, :n] = torch.tensor(item.input_ids)
        labels[row, :n] = torch.tensor(item.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def count_trained(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that contribute to the loss after the causal shift (a label at position 0 predicts nothing)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())
