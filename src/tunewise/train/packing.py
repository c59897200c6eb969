"""Padding-free batches: a micro-batch's sequences laid end to end in one row.

The linear layers (nine tenths of a step's FLOPs) then run on real tokens only; right-padding a
batch of SQL examples to its longest member wastes about a quarter of them. Only attention needs
sequences apart: `packed_attention` either scatters queries, keys and values into a padded
[batch, heads, longest, dim] block, runs causal attention there and gathers the real positions
back, or (on the CPU, for longer batches) runs each sequence of the row on its own; either way no
token ever attends across a sequence boundary.

Position ids restart at 0 for every sequence (rotary embeddings see the same positions as in a
padded batch) and the first label of every sequence is ignored (the last token of one sequence
never learns to predict the first token of the next). tests/test_packing.py checks that a packed
micro-batch gives the same loss and gradients as the padded one.

Short sequences use a plain matmul-softmax attention (grouped-query heads stacked, keys and values
never copied per head): on the CPU it is faster than PyTorch's flash kernel at the lengths chat
data has (fwd+bwd of 8 x 147 tokens: 20 ms against 26 ms, bf16, `benchmarks/attention_paths.py`)
and its [batch, heads, L, L] weights are small there. On the CPU, batches longer than EAGER_MAX_LEN
take train/block_attention.py: each sequence on its own (no padded row is computed) in blocks of
queries that skip the masked triangle, in 27-45% less time than PyTorch's CPU flash kernel. Every batch
on a GPU uses SDPA, which dispatches to fused flash / memory-efficient kernels
that keep no scores (H200, 8 x 147 tokens: 0.23 ms against 0.97 ms, 9 against 21 MiB).

All three kernels apply what a layer passes with its call: a sliding window (Mistral, Qwen2/3,
Phi-3, Gemma 2/3) and Gemma's `scaling`; the matmul and block kernels also Gemma 2's attention-logit
softcap (SDPA has none, so on a GPU a softcapped layer takes the matmul path). Any other argument that changes the maths
(attention sinks, bidirectional layers) raises PackingError, and so does a layer reached by a
packed forward without its layout; train/patches.py probes for both before training and steps
aside, so a model either trains right packed or trains padded.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from ..data.batching import collate
from ..data.masking import IGNORE, Encoded
from ..model.lora import base_model
from .block_attention import block_causal_attention, score_grad

NAME = "tunewise_packed"
# Above this longest length the matmul path is slower than SDPA on the CPU as well (8 sequences,
# 9 heads of 64, bf16, fwd+bwd, 2 cores: 17 vs 23 ms at 160, 30 vs 22 ms at 192, 331 vs 123 ms at 512).
EAGER_MAX_LEN = 176


@dataclass
class PackedLayout:
    """Where each sequence lies in the packed row, as a zero-padded [batch, longest] grid."""

    dest: torch.Tensor  # [N] slot (b * longest + t) of every packed token in the padded grid
    lengths: tuple[int, ...]  # each sequence's length, in packed order

    @classmethod
    def from_lengths(cls, lengths: list[int]) -> "PackedLayout":
        longest = max(lengths)
        dest = torch.cat([torch.arange(n) + b * longest for b, n in enumerate(lengths)])
        return cls(dest, tuple(lengths))

    @property
    def batch(self) -> int:
        return len(self.lengths)

    @property
    def max_len(self) -> int:
        return max(self.lengths)

    def to(self, device) -> "PackedLayout":
        return PackedLayout(self.dest.to(device), self.lengths)

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        """[1, heads, N, dim] -> [B, heads, L, dim]: a scatter whose backward is a plain gather."""
        heads, _, dim = packed.shape[1:]
        grid = _Scatter.apply(packed[0], self.dest, self.batch * self.max_len)
        return grid.view(heads, self.batch, self.max_len, dim).transpose(0, 1)

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """[B, heads, L, dim] -> [1, N, heads, dim], the layout attention functions return."""
        rows = padded.transpose(1, 2).reshape(self.batch * self.max_len, padded.shape[1], padded.shape[3])
        return rows.index_select(0, self.dest).unsqueeze(0)


class _Scatter(torch.autograd.Function):
    """zeros(heads, slots, dim) with `rows` written at `dest` along dim 1, keeping only `dest`.

    `index_copy` computes the same, but autograd keeps its whole source for the backward (it needs
    only the source's shape): q, k and v a second time, 2 * (q + 2kv) bytes per token in every
    layer. Measured on random Llama layers: 53.2 -> 47.0 KB kept per token and layer (h 1024); by
    count, 3 GiB of a Llama-2-7B step of 4 x 1024 tokens. The backward is a gather
    (index_select), never an accumulating scatter."""

    @staticmethod
    def forward(ctx, rows, dest, slots):
        ctx.save_for_backward(dest)
        heads, _, dim = rows.shape
        return rows.new_zeros(heads, slots, dim).index_copy_(1, dest, rows)

    @staticmethod
    def backward(ctx, grad):
        (dest,) = ctx.saved_tensors
        return grad.index_select(1, dest), None, None


def pack(items: list[Encoded]) -> dict:
    """One row holding every item, with per-sequence position ids and no padding at all."""
    ids, labels, positions = [], [], []
    for item in items:
        ids.extend(item.input_ids)
        labels.extend([IGNORE, *item.labels[1:]])  # no prediction across the boundary
        positions.extend(range(len(item.input_ids)))
    return {
        "input_ids": torch.tensor([ids]),
        "labels": torch.tensor([labels]),
        "position_ids": torch.tensor([positions]),
        "layout": PackedLayout.from_lengths([len(x.input_ids) for x in items]),
    }


class PackingError(RuntimeError):
    """A packed forward that would train on wrong attention: raised, never run silently."""


@dataclass
class _Forward:
    """What `packed_forward` records while it lasts: the probe reads it, unpacked calls are told apart."""

    calls: int = 0
    windows: int = 0  # calls that received a sliding window


_active: list[_Forward] = []


@contextmanager
def packed_forward():
    """Marks a forward pass over a packed row: every attention call inside must carry its layout.

    A decoder layer that does not pass `**kwargs` on (Nemotron's) would otherwise run attention
    over the whole row, sequences attending to each other, with no error anywhere."""
    state = _Forward()
    _active.append(state)
    try:
        yield state
    finally:
        _active.pop()


# Attention arguments that do not change the maths of causal attention over one sequence.
_HARMLESS = {"position_ids", "cache_position", "use_cache", "cache", "past_key_values", "position_embeddings",
             "output_attentions", "layer_idx", "is_causal"}


def packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """An attention function for transformers' AttentionInterface (registered below)."""
    layout: PackedLayout | None = kwargs.pop("packed_layout", None)
    window, softcap = kwargs.pop("sliding_window", None), kwargs.pop("softcap", None)
    dropout = dropout if module.training else 0.0
    if layout is None:
        if _active:
            raise PackingError(f"{type(module).__name__} was called without its packed layout: its decoder "
                               "layer does not pass **kwargs on to attention")
        return _unpacked_attention(module, query, key, value, attention_mask, scaling, dropout, softcap, kwargs)
    _check_maths(module, kwargs)
    if _active:
        _active[-1].calls += 1
        _active[-1].windows += window is not None
    if window is not None and window >= layout.max_len:
        window = None  # no sequence is longer than the window: plain causal attention
    on_cpu = query.device.type == "cpu"
    if on_cpu and layout.max_len > EAGER_MAX_LEN and dropout == 0:  # attention dropout (rare) takes the grid
        return block_causal_attention(query, key, value, layout.lengths, scaling, window, softcap), None
    q, k, v = (layout.pad(t) for t in (query, key, value))
    if softcap is not None or (layout.max_len <= EAGER_MAX_LEN and on_cpu):
        out = _matmul_attention(q, k, v, scaling, dropout, window, softcap)  # SDPA has no softcap
    else:
        allowed = None if window is None else ~_blocked(layout.max_len, 1, window, q.device)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout, is_causal=window is None,
                                             scale=scaling, enable_gqa=q.shape[1] > k.shape[1])
    return layout.unpad(out), None


def _check_maths(module, kwargs: dict) -> None:
    """Refuse what this causal kernel does not implement (attention sinks, bidirectional layers, ...)."""
    unknown = sorted(k for k, v in kwargs.items() if k not in _HARMLESS and v is not None and v is not False)
    if unknown:
        raise PackingError(f"{type(module).__name__} passes {', '.join(unknown)} to attention, "
                           "which packed attention does not implement")
    if kwargs.get("is_causal") is False or getattr(module, "is_causal", True) is False:
        raise PackingError(f"{type(module).__name__} attends bidirectionally; packed attention is causal")


def _unpacked_attention(module, query, key, value, mask, scaling, dropout, softcap, kwargs):
    """Generation and other unpacked calls: transformers' SDPA with its mask, or, for a softcap
    (which SDPA refuses), the same maths as transformers' eager attention."""
    if softcap is None:
        return sdpa_attention_forward(module, query, key, value, mask, scaling=scaling, dropout=dropout, **kwargs)
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)  # as repeat_kv
    scores = _softcapped(torch.matmul(query, key.transpose(2, 3)) * (scaling or query.shape[-1] ** -0.5), softcap)
    if mask is None and query.shape[2] > 1:  # SDPA's is_causal case: keys cropped to the queries
        key, value, scores = key[:, :, : query.shape[2]], value[:, :, : query.shape[2]], scores[..., : query.shape[2]]
        mask = ~_blocked(query.shape[2], 1, None, query.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool else scores + mask
    weights = F.dropout(F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype), p=dropout)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), None


def _softcapped(scores: torch.Tensor, softcap: float | None) -> torch.Tensor:
    return scores if softcap is None else torch.tanh(scores / softcap) * softcap  # as Gemma 2's eager attention


def _blocked(length: int, groups: int, window: int | None, device) -> torch.Tensor:
    """[groups * L, L], True where a query may not look: later keys, and with a sliding window keys
    `window` or more places back (transformers' `kv_idx > q_idx - sliding_window` keeps the rest)."""
    pos = torch.arange(length, device=device)
    back = pos[:, None] - pos[None, :]
    blocked = back < 0
    if window is not None:
        blocked |= back >= window
    return blocked.repeat(groups, 1)


def _matmul_attention(q, k, v, scaling, dropout: float, window: int | None = None,
                      softcap: float | None = None) -> torch.Tensor:
    """Causal attention as two matmuls, grouped-query heads without copying keys and values: the
    query heads that share a key/value head are stacked along the length axis, so one
    [groups * L, L] score matrix per key/value head serves them all."""
    batch, heads, length, dim = q.shape
    kv_heads = k.shape[1]
    groups = heads // kv_heads
    scale = scaling if scaling is not None else dim**-0.5
    # scaled before the matmul: q is smaller than the scores (and 1/sqrt(64) is exact in bf16)
    stacked = (q * scale).reshape(batch, kv_heads, groups * length, dim)  # head h = kv * groups + g, as repeat_kv
    blocked = _blocked(length, groups, window, q.device)
    if dropout > 0:  # Llama-family configs train with attention_dropout=0; this is the rare case
        scores = _causal_scores(stacked, k, blocked, softcap)
        weights = F.dropout(F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype), p=dropout)
        return torch.matmul(weights, v).view(batch, heads, length, dim)
    return _CausalAttention.apply(stacked, k, v, blocked, softcap).view(batch, heads, length, dim)


def _causal_scores(stacked: torch.Tensor, k: torch.Tensor, blocked: torch.Tensor,
                   softcap: float | None = None) -> torch.Tensor:
    """[B, kv_heads, groups * L, L] scores (soft-capped if asked), masked where `blocked`."""
    scores = _softcapped(torch.matmul(stacked, k.transpose(2, 3)), softcap)
    return scores.masked_fill_(blocked, torch.finfo(scores.dtype).min)


class _CausalAttention(torch.autograd.Function):
    """softmax(q k^T, causal) @ v with the softmax in fp32, as transformers' eager attention does.

    Autograd would keep the fp32 weights (softmax's backward) and their 16-bit copy (the second
    matmul's): 6 bytes per score, 270 MiB of a forward pass on the SQL benchmark. This keeps only
    q, k and v, as a flash kernel does, and recomputes scores and softmax in backward, bit for bit
    the same weights: one more [L x L] matmul and softmax per layer (16 training steps took no
    longer) for none of the score memory. A softmax in 16 bits would save less, and it changed training
    (docs/benchmarks.md). With a softcap (Gemma 2), c * tanh(s / c), the backward multiplies by its
    derivative 1 - tanh^2.
    """

    @staticmethod
    def forward(ctx, stacked, k, v, blocked, softcap=None):
        ctx.save_for_backward(stacked, k, v, blocked)  # the mask is [groups * L, L] bools: small
        ctx.softcap = softcap
        weights = F.softmax(_causal_scores(stacked, k, blocked, softcap), dim=-1, dtype=torch.float32)
        return torch.matmul(weights.to(v.dtype), v)

    @staticmethod
    def backward(ctx, grad):
        stacked, k, v, blocked = ctx.saved_tensors
        weights = F.softmax(_causal_scores(stacked, k, blocked, ctx.softcap), dim=-1, dtype=torch.float32)
        grad_v = torch.matmul(weights.to(v.dtype).transpose(-2, -1), grad)
        grad_weights = torch.matmul(grad, v.transpose(-2, -1)).float()
        tanh = None
        if ctx.softcap is not None:  # through c * tanh(s / c)
            tanh = torch.tanh(torch.matmul(stacked, k.transpose(2, 3)).float() / ctx.softcap)
        grad_scores = score_grad(weights, grad_weights, tanh)
        grad_scores = grad_scores.to(v.dtype)
        return (torch.matmul(grad_scores, k), torch.matmul(grad_scores.transpose(-2, -1), stacked), grad_v,
                None, None)


def _mask(*args, **kwargs):
    """transformers' SDPA mask for unpacked calls (generation with left padding); none for a packed
    forward, whose attention ignores it (with no cache, transformers would otherwise build an
    [N, N] block-diagonal mask from the position ids)."""
    return None if _active else sdpa_mask(*args, **kwargs)


def register() -> str | None:
    """Register packed attention and its mask function under NAME in transformers' registries (done
    when a model is switched to it, not at import); the reason when this transformers lacks them."""
    registries = (AttentionInterface, ALL_MASK_ATTENTION_FUNCTIONS)
    if not all(callable(getattr(r, "register", None)) for r in registries):
        return "this transformers has no AttentionInterface.register / ALL_MASK_ATTENTION_FUNCTIONS.register"
    AttentionInterface.register(NAME, packed_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, _mask)
    return None


def is_packed(model) -> bool:
    base = base_model(model)
    return getattr(base.config, "_attn_implementation", None) == NAME


def make_batch(items: list[Encoded], pad_id: int, packed: bool) -> dict:
    return pack(items) if packed else collate(items, pad_id)


def real_tokens(batch: dict) -> int:
    """Tokens of a batch that are not padding."""
    return int(batch["input_ids"].numel()) if "layout" in batch else int(batch["attention_mask"].sum())
