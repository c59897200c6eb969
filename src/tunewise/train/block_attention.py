"""Causal attention on the CPU for a packed row: each sequence in blocks of BLOCK queries.

A query block [s, e) of a sequence attends to that sequence's keys before e only (with a sliding
window, from s - window + 1 on), so most of the masked upper triangle is never computed. Without a
window only the block's own keys need a mask. Each block is two 16-bit matmuls (oneDNN's, the fast
ones on this CPU) and an fp32 softmax, as in transformers' eager attention. Like a flash kernel it
keeps only q, k and v for backward and recomputes each block's softmax there, bit for bit the same
weights.

Why not SDPA: PyTorch's CPU flash kernel runs at ~35-55 GFLOP/s in bf16 against ~350 for the
matmuls. One sequence of 380 tokens, 9 query heads over 3 key/value heads of 64, fwd+bwd, one
thread: 16.9 ms SDPA, 12.4 ms here; 8 sequences of 250-551 tokens on two threads, 96.2 ms SDPA one
sequence at a time, 52.6 ms here (docs/benchmarks.md, issue 23's sixth session).

Layout: queries as [kv_heads, N, groups, dim], so the `groups` query heads that share a key/value
head are, for any block of positions, one contiguous [block * groups, dim] matrix: one matmul per
key/value head, keys and values never repeated per query head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# Queries a block. In a training step without the profiler (benchmarks/profile_step.py --plain),
# 128 against 64 on one thread and 96 on two: 1.84-1.86 vs 1.89-1.90 s, 7.77-8.68 vs 7.88-9.20 s a step.
BLOCK = 128


def block_causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, lengths: tuple[int, ...],
                           scaling: float | None, window: int | None = None,
                           softcap: float | None = None) -> torch.Tensor:
    """query [1, heads, N, dim], key and value [1, kv_heads, N, dim] over the packed row whose
    sequences have `lengths` -> [1, N, heads, dim], the layout transformers' attention returns."""
    if sum(lengths) != query.shape[2]:
        raise ValueError(f"the packed row holds {query.shape[2]} positions, its layout {sum(lengths)}")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return _BlockCausal.apply(query, key, value, tuple(lengths), window, softcap, scale, BLOCK)


def _blocks(lengths: tuple[int, ...], block: int, window: int | None):
    """(first key, first query, end) of every query block: positions in the packed row."""
    start = 0
    for n in lengths:
        for s in range(start, start + n, block):
            first_key = start if window is None else max(start, s - window + 1)
            yield first_key, s, min(start + n, s + block)
        start += n


class _BlockCausal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, key, value, lengths, window, softcap, scale, block):
        _, heads, n, dim = query.shape
        kv_heads = key.shape[1]
        groups = heads // kv_heads
        q = torch.empty((kv_heads, n, groups, dim), dtype=query.dtype, device=query.device)
        torch.mul(query[0].view(kv_heads, groups, n, dim).transpose(1, 2), scale, out=q)  # scaled and laid out at once
        k, v = key[0].contiguous(), value[0].contiguous()
        ctx.save_for_backward(q, k, v)
        ctx.lengths, ctx.window, ctx.softcap, ctx.scale, ctx.block = lengths, window, softcap, scale, block
        out = torch.empty_like(q)
        for lo, s, e in _blocks(lengths, block, window):
            weights, _ = _weights(q, k, lo, s, e, window, softcap)
            out[:, s:e] = torch.matmul(weights.to(v.dtype), v[:, lo:e]).view(kv_heads, e - s, groups, dim)
        return out.transpose(0, 1).reshape(1, n, heads, dim)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        q, k, v = ctx.saved_tensors
        kv_heads, n, groups, dim = q.shape
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        grad = grad[0].reshape(n, kv_heads, groups, dim).transpose(0, 1).contiguous()  # laid out as q
        grad_q = torch.empty_like(q) if need_q else None
        # each block's share comes out of a 16-bit matmul; the shares are summed in fp32 and rounded once
        grad_k = torch.zeros(k.shape, dtype=torch.float32, device=k.device) if need_k else None
        grad_v = torch.zeros(v.shape, dtype=torch.float32, device=v.device) if need_v else None
        for lo, s, e in _blocks(ctx.lengths, ctx.block, ctx.window):
            weights, tanh = _weights(q, k, lo, s, e, ctx.window, ctx.softcap)
            rows = (kv_heads, (e - s) * groups, dim)
            grad_out = grad[:, s:e].reshape(rows)
            if need_v:
                grad_v[:, lo:e] += torch.matmul(weights.to(v.dtype).transpose(-2, -1), grad_out)
            if not (need_q or need_k):
                continue
            grad_weights = torch.matmul(grad_out, v[:, lo:e].transpose(-2, -1)).float()
            grad_scores = score_grad(weights, grad_weights, tanh).to(q.dtype)
            if need_q:
                grad_q[:, s:e] = torch.matmul(grad_scores, k[:, lo:e]).view(kv_heads, e - s, groups, dim)
            if need_k:
                grad_k[:, lo:e] += torch.matmul(grad_scores.transpose(-2, -1), q[:, s:e].reshape(rows))
        if need_q:  # back to the query's [1, heads, N, dim], through the scale
            grad_q = grad_q.mul_(ctx.scale).transpose(1, 2).reshape(1, kv_heads * groups, n, dim)
        if need_k:
            grad_k = grad_k.to(k.dtype)[None]
        if need_v:
            grad_v = grad_v.to(v.dtype)[None]
        return grad_q, grad_k, grad_v, None, None, None, None, None


def score_grad(weights: torch.Tensor, grad_weights: torch.Tensor, tanh: torch.Tensor | None) -> torch.Tensor:
    """The scores' gradient from fp32 softmax `weights` and their gradient, through a softcap's
    c * tanh(s / c) where `tanh` is given. Overwrites `weights` and `grad_weights`. Masked positions
    have weight 0, so their score gradient is 0 as well."""
    grad_weights -= (grad_weights * weights).sum(-1, keepdim=True)
    grad_scores = weights.mul_(grad_weights)
    return grad_scores if tanh is None else grad_scores.mul_(1 - tanh * tanh)


def _weights(q, k, lo: int, s: int, e: int, window: int | None, softcap: float | None):
    """fp32 softmax weights [kv_heads, (e - s) * groups, e - lo] of queries s..e-1 over keys lo..e-1,
    and with a softcap tanh(scores / c), which its backward needs."""
    kv_heads, _, groups, dim = q.shape
    scores = torch.matmul(q[:, s:e].reshape(kv_heads, (e - s) * groups, dim), k[:, lo:e].transpose(-2, -1))
    tanh = None
    if softcap is not None:  # Gemma 2's c * tanh(s / c) before the mask; in fp32 here (its eager code: 16 bits)
        tanh = torch.tanh(scores.float() / softcap)
        scores = tanh * softcap
    by_query = scores.view(kv_heads, e - s, groups, e - lo)
    queries = torch.arange(s, e, device=q.device)[:, None]
    if window is None:  # keys before the block are all visible: mask the block's own triangle only
        keys = torch.arange(s, e, device=q.device)[None, :]
        by_query[..., s - lo:].masked_fill_((keys > queries)[:, None], torch.finfo(scores.dtype).min)
    else:  # transformers' sliding window keeps keys with q - window < k <= q
        keys = torch.arange(lo, e, device=q.device)[None, :]
        by_query.masked_fill_(((keys > queries) | (keys <= queries - window))[:, None], torch.finfo(scores.dtype).min)
    return F.softmax(scores, dim=-1, dtype=torch.float32), tanh
