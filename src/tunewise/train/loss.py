"""Causal-LM loss on trained tokens only, summed (the caller divides by the step's token count).

Logits are computed only at positions whose next token is a label, in chunks, in fp32: the full
[batch, seq, vocab] logits tensor is never materialised. On SmolLM2 (vocab 49k) with short
prompts most positions are prompt tokens, so this skips most of the LM head.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from peft.helpers import disable_input_dtype_casting

from ..data.masking import IGNORE
from ..model.lora import base_model

CHUNK = 2048  # trained positions per LM-head chunk


def _parts(model):
    base = base_model(model)
    return base.get_decoder(), base.get_output_embeddings()


@contextmanager
def adapter_precision(model):
    """Run the fp32 LoRA adapters in the base's 16-bit dtype during training's forward.

    PEFT otherwise copies every adapted layer's input to fp32 and runs dropout and both adapter
    matmuls in fp32 (measured: 7% of a step in copies alone). Under autocast the adapter weights
    stay fp32 (the optimizer updates fp32 masters), only the matmuls run in 16-bit, as in any
    mixed-precision trainer. A 32-bit base is left alone.
    """
    embed = base_model(model).get_input_embeddings().weight
    if embed.dtype not in (torch.bfloat16, torch.float16) or not hasattr(model, "get_base_model"):
        with nullcontext():
            yield
        return
    with torch.autocast(embed.device.type, dtype=embed.dtype), disable_input_dtype_casting(model):
        yield


def summed_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Return (sum of token cross-entropies, number of trained tokens) for one micro-batch."""
    with adapter_precision(model):
        return _summed_loss(model, batch)


def _summed_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    decoder, head = _parts(model)
    hidden = decoder(**model_inputs(batch)).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    selected = hidden[:, :-1][keep]
    wanted = targets[keep]
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, wanted.numel(), CHUNK):
        logits = head(selected[start : start + CHUNK]).float()
        total = total + F.cross_entropy(logits, wanted[start : start + CHUNK], reduction="sum")
    return total, int(wanted.numel())


def model_inputs(batch: dict) -> dict:
    """Forward arguments of a padded batch (attention mask) or a packed one (positions, layout)."""
    if "layout" in batch:
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"],
                "packed_layout": batch["layout"]}
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def reference_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """The textbook computation (full logits, shift, sum); tests compare summed_loss against it."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    targets = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")
    return loss, int((targets != IGNORE).sum())
