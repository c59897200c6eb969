"""Causal-LM loss on trained tokens only, summed (the caller divides by the step's token count).

Logits are computed only at positions whose next token is a label, in chunks, in fp32: the full
[batch, seq, vocab] logits tensor is never materialised. On SmolLM2 (vocab 49k) with short
prompts most positions are prompt tokens, so this skips most of the LM head.

With a frozen LM head (LoRA and QLoRA leave it alone) the loss's gradient with respect to the
hidden states is computed chunk by chunk in the forward pass, as Liger Kernel's fused linear
cross-entropy does, so no fp32 log-softmax is kept for backward: 2h bytes per trained position
instead of 4 x vocab (a 128k vocabulary: 512 KB -> 4 KB). The same FLOPs, moved from backward
to forward.
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
    if _frozen_linear(head):
        return _HeadCrossEntropy.apply(selected, head.weight, wanted, CHUNK), int(wanted.numel())
    total = hidden.new_zeros((), dtype=torch.float32)  # a head that trains: autograd's own chunks
    for start in range(0, wanted.numel(), CHUNK):
        logits = head(selected[start : start + CHUNK]).float()
        total = total + F.cross_entropy(logits, wanted[start : start + CHUNK], reduction="sum")
    return total, int(wanted.numel())


def _frozen_linear(head) -> bool:
    return type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad


class _HeadCrossEntropy(torch.autograd.Function):
    """sum(cross_entropy(hidden @ weight.T in fp32, targets)) over chunks of positions, with its
    gradient with respect to `hidden` computed in the forward pass and kept (2 bytes a value),
    instead of each chunk's fp32 log-softmax (4 bytes a vocabulary entry). The backward scales
    that gradient by the incoming one: the loss is a plain sum."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk):
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        for start in range(0, targets.numel(), chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk]
            log_probs = F.log_softmax(F.linear(h, weight).float(), dim=-1)
            total += -log_probs.gather(1, t[:, None]).sum()
            if grad is not None:
                probs = log_probs.exp_()  # d(loss)/d(logits) = softmax - one_hot(target)
                probs[torch.arange(t.numel(), device=t.device), t] -= 1
                grad[start : start + chunk] = probs.to(h.dtype) @ weight
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        (grad,) = ctx.saved_tensors
        return grad * grad_total.to(grad.dtype), None, None, None


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
