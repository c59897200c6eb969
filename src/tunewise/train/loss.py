"""Causal-LM loss on trained tokens only, summed (the caller divides by the step's token count).

Logits are computed only at positions whose next token is a label, in chunks, in fp32: the full
[batch, seq, vocab] logits tensor is never materialised. On SmolLM2 (vocab 49k) with short
prompts most positions are prompt tokens, so this skips most of the LM head.

With a frozen LM head (LoRA and QLoRA leave it alone) the loss's gradient with respect to the
hidden states is computed chunk by chunk in the forward pass, as Liger Kernel's fused linear
cross-entropy does, so no fp32 log-softmax is kept for backward: 2h bytes per trained position
instead of 4 x vocab (a 128k vocabulary: 512 KB -> 4 KB). The same FLOPs, moved from backward
to forward.

Calling the decoder and the head directly skips whatever the model's own forward does to the
logits after its head: Gemma 2/3's final-logit softcap, Cohere's `logit_scale`, Granite's
`logits_scaling`. `head_logits` reads the forward's source and applies the same map (in fp32, its
derivative in the fused gradient). A forward that does anything else between decoder and loss is
not guessed at: the loss then takes the model's own logits (all of them: the memory the fused
path saves is spent) and `fused_loss_blocker` says why.
"""

from __future__ import annotations

import functools
import inspect
import re
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft.helpers import disable_input_dtype_casting

from ..data.masking import IGNORE
from ..model.lora import base_model, sixteen_bit_compute_dtype
from ..plan import loss_chunk  # trained positions per LM-head chunk; the planner counts the same
from .packing import packed_forward


@contextmanager
def adapter_precision(model):
    """Run the fp32 LoRA adapters in the base's 16-bit dtype during training's forward.

    PEFT otherwise copies every adapted layer's input to fp32 and runs dropout and both adapter
    matmuls in fp32 (measured: 7% of a step in copies alone). Under autocast the adapter weights
    stay fp32 (the optimizer updates fp32 masters), only the matmuls run in 16-bit, as in any
    mixed-precision trainer. A 32-bit base is left alone.
    """
    dtype = sixteen_bit_compute_dtype(model)
    if dtype is None or not hasattr(model, "get_base_model"):
        with nullcontext():
            yield
        return
    device = base_model(model).get_input_embeddings().weight.device
    with torch.autocast(device.type, dtype=dtype), disable_input_dtype_casting(model):
        yield


class LossForward(torch.nn.Module):
    """The training loss as a module, so its forward can go through accelerate's wrapper.

    DDP arms its gradient all-reduce in the wrapper's forward, and FSDP gathers sharded weights
    there: a loss that called the decoder of the unwrapped model directly would leave each rank
    training on its own gradients (TRL#7245). One process uses it unwrapped.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> torch.Tensor:
        return summed_loss(self.model, batch)[0]


def summed_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Return (sum of token cross-entropies, number of trained tokens) for one micro-batch."""
    with adapter_precision(model):
        return _summed_loss(model, batch)


def _summed_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    base = base_model(model)
    logit_map = head_logits(base)
    # use_cache=False: a training forward has no use for a KV cache (transformers builds one by default)
    with packed_forward() if "layout" in batch else nullcontext():
        if isinstance(logit_map, str):  # a head we do not reproduce: the model's own logits
            return _sum_cross_entropy(model(**model_inputs(batch), use_cache=False).logits, batch["labels"])
        hidden = base.get_decoder()(**model_inputs(batch), use_cache=False).last_hidden_state
    head = base.get_output_embeddings()
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    selected = hidden[:, :-1][keep]
    wanted = targets[keep]
    chunk = loss_chunk(head.weight.shape[0], on_gpu=hidden.device.type == "cuda")  # as train/setup.py plans
    if _frozen_linear(head):
        return _HeadCrossEntropy.apply(selected, head.weight, wanted, chunk, logit_map), int(wanted.numel())
    total = hidden.new_zeros((), dtype=torch.float32)  # a head that trains: autograd's own chunks
    for start in range(0, wanted.numel(), chunk):
        logits = logit_map(head(selected[start : start + chunk]).float())
        total = total + F.cross_entropy(logits, wanted[start : start + chunk], reduction="sum")
    return total, int(wanted.numel())


def _sum_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    targets = labels[:, 1:]
    loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")
    return loss, int((targets != IGNORE).sum())


def _frozen_linear(head) -> bool:
    return type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad


@dataclass(frozen=True)
class LogitMap:
    """What a model's forward does to its head's output: `* mul`, `/ div`, then `cap * tanh(x / cap)`."""

    mul: float | None = None
    div: float | None = None
    cap: float | None = None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.mul is not None:
            logits = logits * self.mul
        if self.div is not None:
            logits = logits / self.div
        return logits if self.cap is None else torch.tanh(logits / self.cap) * self.cap

    def slope(self, logits: torch.Tensor) -> torch.Tensor | float:
        """d map(x) / dx at the head's outputs `logits`, elementwise."""
        scale = (self.mul if self.mul is not None else 1.0) / (self.div if self.div is not None else 1.0)
        if self.cap is None:
            return scale
        tanh = torch.tanh(logits * scale / self.cap)
        return (1 - tanh * tanh).mul_(scale)


# What a CausalLM's forward may do between its decoder's last hidden state and the loss, by its
# source with comments and whitespace removed: slice for `logits_to_keep` (a no-op in training),
# call the head, then one of these maps.
_SLICES = {"", "hidden_states=slice_logits_to_keep(hidden_states,logits_to_keep)",
           "ifhidden_states.shape[1]==(input_idsifinput_idsisnotNoneelseinputs_embeds).shape[1]:"
           "hidden_states=slice_logits_to_keep(hidden_states,logits_to_keep)"}
_SOFTCAP = "logits=logits/{c}logits=torch.tanh(logits)logits=logits*{c}"
_MAPS = {
    "": lambda m: LogitMap(),
    "ifself.config.final_logit_softcappingisnotNone:" + _SOFTCAP.format(c="self.config.final_logit_softcapping"):
        lambda m: LogitMap(cap=m.config.final_logit_softcapping),
    "if(final_logit_softcapping:=self.config.get_text_config().final_logit_softcapping)isnotNone:"
    + _SOFTCAP.format(c="final_logit_softcapping"):
        lambda m: LogitMap(cap=m.config.get_text_config().final_logit_softcapping),
    "logits=logits*self.logit_scale": lambda m: LogitMap(mul=m.logit_scale),
    "logits=logits/self.config.logits_scaling": lambda m: LogitMap(div=m.config.logits_scaling),
}


def head_logits(base) -> LogitMap | str:
    """The map `base`'s forward applies after its head, or why the fused loss cannot reproduce it."""
    kind = _map_kind(type(base))
    if kind is None:
        return (f"{type(base).__name__}'s forward does more between decoder and loss than a head "
                "and a known logit map (softcap, logit scale)")
    if getattr(base, "model", None) is not base.get_decoder():
        return f"{type(base).__name__}'s forward calls another module than its decoder"
    return _MAPS[kind](base)


def fused_loss_blocker(model) -> str | None:
    """Why the loss takes the model's own logits, or None: the fused loss reproduces them."""
    found = head_logits(base_model(model))
    return found if isinstance(found, str) else None


@functools.cache
def _map_kind(cls) -> str | None:
    try:
        source = inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return None
    flat = "".join(re.sub(r"#.*", "", source).split())
    match = re.search(r"=outputs(?:\.last_hidden_state|\[0\])(.*?)logits=self\.lm_head\(hidden_states\)(.*?)"
                      r"(?:loss=None|iflabelsisnotNone)", flat)
    if match is None or match.group(1) not in _SLICES or match.group(2) not in _MAPS:
        return None
    return match.group(2)


class _HeadCrossEntropy(torch.autograd.Function):
    """sum(cross_entropy(logit_map(hidden @ weight.T) in fp32, targets)) over chunks of positions,
    with its gradient with respect to `hidden` computed in the forward pass and kept (2 bytes a
    value), instead of each chunk's fp32 log-softmax (4 bytes a vocabulary entry). The backward
    scales that gradient by the incoming one: the loss is a plain sum."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, logit_map=LogitMap()):
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        for start in range(0, targets.numel(), chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk]
            raw = F.linear(h, weight).float()
            log_probs = F.log_softmax(logit_map(raw), dim=-1)
            total += -log_probs.gather(1, t[:, None]).sum()
            if grad is not None:
                probs = log_probs.exp_()  # d(loss)/d(logits) = softmax - one_hot(target)
                probs[torch.arange(t.numel(), device=t.device), t] -= 1
                if logit_map != LogitMap():  # then through the map: the chain rule
                    probs.mul_(logit_map.slope(raw))
                grad[start : start + chunk] = probs.to(h.dtype) @ weight
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        (grad,) = ctx.saved_tensors
        return grad * grad_total.to(grad.dtype), None, None, None, None


def model_inputs(batch: dict) -> dict:
    """Forward arguments of a padded batch (attention mask) or a packed one (positions, layout)."""
    if "layout" in batch:
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"],
                "packed_layout": batch["layout"]}
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

