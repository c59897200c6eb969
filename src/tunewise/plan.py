"""Memory planner: predicted peak training memory for full, LoRA and QLoRA, before launch.

The model is described by its shape (from a config.json, the bundled model, or a preset). Every
term is the size of tensors that really exist at the peak of a training step (the end of the
forward pass, when all saved activations are alive), in bytes:

- weights: 16-bit; for QLoRA the linear layers are 4-bit NF4 (0.5 byte/param) plus quantization
  constants (double quantization: an 8-bit absmax per 64 weights, an fp32 absmax per 256 blocks),
  while embeddings, LM head and norms stay 16-bit.
- full fine-tuning uses the standard mixed-precision Adam accounting: 16-bit weights and grads,
  fp32 master weights and two fp32 Adam moments (16 bytes/param in all).
- LoRA parameters, their gradients and their Adam moments are fp32 (16 bytes/param).
- the peak is the largest phase of a step (see `_peak`), not the sum of every term.
- activations: what one decoder layer saves for backward per token (see `_layer_activation_bytes`),
  times layers; with gradient checkpointing only each layer's input is kept, plus one layer's
  activations while it is recomputed.
- logits/loss: tunewise computes logits only at trained positions, in fp32 chunks of
  `LOSS_CHUNK` positions on a GPU (fewer on a CPU: `loss_chunk`; train/loss.py); the planner
  assumes every position is trained unless told otherwise (`trained_fraction`).
Framework overhead (CUDA context, allocator slack, the Python process) is not a tensor and is
listed separately.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import TunewiseError

GIB = 1024**3
CUDA_OVERHEAD = int(0.5 * GIB)  # CUDA context + allocator slack, typical on a recent driver
LOSS_CHUNK = 2048  # trained positions per LM-head chunk on a GPU: train/loss.py computes these, the planner counts them
CPU_CHUNK_BYTES = 16 * 2**20  # a CPU chunk's fp32 logits at most: see loss_chunk
CPU_CHUNK_MIN = 64  # but at least this many positions: see loss_chunk


def loss_chunk(vocab: int, on_gpu: bool) -> int:
    """Trained positions per LM-head chunk of the loss (train/loss.py).

    On a CPU a chunk's fp32 logits are kept within 16 MiB (85 positions at SmolLM2's 49k vocabulary).
    glibc serves an allocation above its mmap threshold (at most 32 MiB) from pages mapped for it and
    unmaps them when it is freed, so the SQL benchmark's one chunk of ~1000 positions (~200 MB of fp32
    logits) faulted its buffers in again on every step: 133-222k page faults a step, against 6-125k
    in 16 MiB chunks, and 210-430 MiB more peak RSS. The loss alone took 610-641 ms against 476-493;
    a whole step was not measurably faster (docs/benchmarks.md, issue 23). A GPU's caching allocator
    has no such cost.

    At least 64 positions, though: each chunk's two matmuls read the whole head (vocab x hidden), and
    a CPU that does ~400 bf16 GFLOP/s from ~15 GB/s of memory needs ~30 rows a read to be limited by
    arithmetic rather than by that read. A 256k vocabulary would otherwise get 16-row chunks."""
    if on_gpu:
        return LOSS_CHUNK
    return min(LOSS_CHUNK, max(CPU_CHUNK_MIN, CPU_CHUNK_BYTES // (4 * vocab)))


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool = False
    head_dim: int | None = None

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def linears(self) -> list[tuple[int, int]]:
        """(in, out) of the seven projections of one decoder layer."""
        h, i, q, kv = self.hidden, self.intermediate, self.heads * self.hd, self.kv_heads * self.hd
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    def linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linears())

    def other_params(self) -> int:
        embed = self.vocab * self.hidden
        return embed * (1 if self.tied else 2) + self.layers * 2 * self.hidden + self.hidden

    def params(self) -> int:
        return self.linear_params() + self.other_params()


PRESETS: dict[str, Shape] = {
    "llama-2-7b": Shape(4096, 32, 11008, 32, 32, 32000),
    "llama-2-13b": Shape(5120, 40, 13824, 40, 40, 32000),
    "llama-3.1-8b": Shape(4096, 32, 14336, 32, 8, 128256),
    "llama-3.1-70b": Shape(8192, 80, 28672, 64, 8, 128256),
    "llama-3.2-1b": Shape(2048, 16, 8192, 32, 8, 128256, tied=True),
    "llama-3.2-3b": Shape(3072, 28, 8192, 24, 8, 128256, tied=True),
    "mistral-7b": Shape(4096, 32, 14336, 32, 8, 32000),
    "qwen2.5-0.5b": Shape(896, 24, 4864, 14, 2, 151936, tied=True),
    "qwen2.5-7b": Shape(3584, 28, 18944, 28, 4, 152064),
    "smollm2-135m-instruct": Shape(576, 30, 1536, 9, 3, 49152, tied=True),
}


def shape_from_config(config: dict) -> Shape:
    try:
        return Shape(hidden=config["hidden_size"], layers=config["num_hidden_layers"],
                     intermediate=config["intermediate_size"], heads=config["num_attention_heads"],
                     kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
                     vocab=config["vocab_size"], tied=bool(config.get("tie_word_embeddings", False)),
                     head_dim=config.get("head_dim"))
    except KeyError as e:
        raise TunewiseError(f"config.json lacks {e.args[0]!r}; "
                            "the planner needs a Llama-shaped decoder config") from None


def resolve_shape(model: str) -> Shape:
    if model in PRESETS:
        return PRESETS[model]
    path = Path(model)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        try:
            return shape_from_config(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise TunewiseError(f"{path}: not valid JSON ({e.msg})") from None
    raise TunewiseError(f"unknown model '{model}': give a preset ({', '.join(PRESETS)}), "
                        "a model directory, or a config.json")


@dataclass
class Plan:
    method: str
    breakdown: dict[str, int]
    total_bytes: int
    overhead_bytes: int
    fits: bool | None = None
    budget_bytes: int | None = None
    max_batch: int | None = None
    max_seq_len: int | None = None
    advice: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _layer_activation_bytes(s: Shape, method: str, lora_dropout: bool) -> int:
    """Bytes one decoder layer keeps for backward, per token, in tunewise's training forward.

    Saved for backward, counted in 16-bit values: the fp32 inputs of the two RMSNorms (4h) and
    their 16-bit outputs, which the projections after them keep (2h); q, k, v in the padded grid
    attention runs on, and the attention output twice, padded (kept by SDPA's kernel; the CPU's
    kernels keep none, so there this is 2q bytes on the safe side) and packed (o_proj's
    input): 3q + 2kv; gate and up outputs and their product (3i: SiLU is recomputed,
    train/swiglu.py); two fp32 RMS statistics. LoRA adapters run in 16 bits on their layer's own
    input, which is kept anyway; with dropout > 0 each adapter adds a one-byte mask per input
    value (model/dropout.py keeps no dropped copy). Checked against the tensors autograd keeps in
    random Llama layers (docs/benchmarks.md); not counted: RoPE's cos/sin and the 16-bit casts of
    the adapter weights, which do not grow with tokens.
    """
    q, kv = s.heads * s.hd, s.kv_heads * s.hd
    base = 2 * (6 * s.hidden + 3 * q + 2 * kv + 3 * s.intermediate) + 2 * 4
    if method == "full" or not lora_dropout:
        return base
    return base + sum(a for a, _ in s.linears())


def plan(shape: Shape, method: str, seq_len: int, batch: int, gradient_checkpointing: bool = False,
         lora_r: int = 16, gpu_memory: int | None = None, trained_fraction: float = 1.0,
         lora_dropout: bool = True, gpus: int = 1, strategy: str = "ddp") -> Plan:
    """Peak memory of one GPU; `batch` is its micro-batch. With several GPUs, DDP keeps a full copy
    of the model on each plus its gradient buckets; FSDP shards weights, gradients and optimizer
    state over the GPUs and gathers one layer's weights at a time."""
    if method not in ("full", "lora", "qlora"):
        raise TunewiseError(f"--method {method!r}: choose full, lora or qlora")
    if strategy not in ("ddp", "fsdp"):
        raise TunewiseError(f"--strategy {strategy!r}: choose ddp or fsdp")
    tokens = seq_len * batch
    b = {}
    if method == "qlora":
        n = shape.linear_params()
        b["weights (4-bit linear layers)"] = n // 2
        b["quantization constants"] = n // 64 + 4 * (n // (64 * 256))
        b["weights (16-bit embeddings, head, norms)"] = 2 * shape.other_params()
    else:
        b["weights (16-bit)"] = 2 * shape.params()
    if method == "full":
        b["gradients (16-bit)"] = 2 * shape.params()
        b["optimizer (fp32 master + Adam m, v)"] = 12 * shape.params()
    else:
        lora = shape.layers * sum(lora_r * (a + o) for a, o in shape.linears())
        b["LoRA parameters (fp32)"] = 4 * lora
        b["LoRA gradients (fp32)"] = 4 * lora
        b["optimizer (Adam m, v, fp32)"] = 8 * lora
    per_layer = _layer_activation_bytes(shape, method, lora_dropout and method != "full")
    if gradient_checkpointing:
        b["activations (checkpointed layer inputs)"] = tokens * 2 * shape.hidden * shape.layers
        b["activations (one layer recomputed)"] = tokens * per_layer
    else:
        b["activations"] = tokens * per_layer * shape.layers
    b["logits and loss (fp32, trained positions)"] = _logit_bytes(shape, int(tokens * trained_fraction),
                                                                  head_trains=method == "full")
    if gpus > 1:
        _spread(b, shape, gpus, strategy)
    total = _peak(b)
    result = Plan(method, b, total, CUDA_OVERHEAD)
    if gpu_memory is not None:
        _fit(result, shape, method, seq_len, batch, gradient_checkpointing, lora_r, gpu_memory, trained_fraction,
             lora_dropout, gpus, strategy)
    return result


def _spread(b: dict[str, int], shape: Shape, gpus: int, strategy: str) -> None:
    """One GPU's share of a launch of `gpus` processes, in place."""
    grads = sum(v for k, v in b.items() if "gradients" in k)
    if strategy == "ddp":  # all-reduce buckets: a flat copy of the gradients (gradient_as_bucket_view off)
        b["DDP gradient buckets"] = grads
        return
    lasting = [k for k in b if k.startswith(("weights", "quantization", "LoRA", "optimizer", "gradients"))]
    whole = sum(b[k] for k in lasting if k.startswith(("weights", "quantization")))
    for k in lasting:
        b[k] = -(-b[k] // gpus)
    # the root group (embeddings, head, final norm: 16-bit) is gathered for the whole step; of the
    # decoder layers, the one being computed and the next one, prefetched
    root = 2 * (shape.other_params() - shape.layers * 2 * shape.hidden)
    b["FSDP gathered layers (2 of them)"] = 2 * (whole - root) // max(shape.layers, 1)
    b["FSDP gathered embeddings and head"] = root


CPU_TOKEN_CAP = 8192  # on CPU a larger micro-batch is no faster, only bigger
GPU_TOKEN_CAP = 65536


def micro_batch_tokens(shape: Shape, method: str, longest: int, free_bytes: int, on_gpu: bool,
                       trained_fraction: float = 1.0, lora_dropout: bool = True,
                       gradient_checkpointing: bool = False) -> tuple[int, bool]:
    """Tokens per micro-batch for `train.micro_batch_size: auto`, from the memory left once the model
    is loaded: activations per token (as `plan` counts them) and trained logits, with a quarter
    of `free_bytes` held back for gradients, optimizer state and allocator slack. Returns
    (tokens, fits): tokens is at least the longest sequence (one sequence per micro-batch is the
    least we can do) and at most a speed cap; fits is False when even that one sequence is
    predicted not to fit."""
    layer = _layer_activation_bytes(shape, method, lora_dropout and method != "full")
    if gradient_checkpointing:
        per_token = 2 * shape.hidden * shape.layers + layer
    else:
        per_token = shape.layers * layer
    usable = 0.75 * free_bytes
    # the loss (see _logit_bytes): 2h bytes kept per trained position, and 10 bytes a logit for
    # the positions of the one chunk being worked on
    kept = per_token + 2 * trained_fraction * shape.hidden
    fit = int(usable / (kept + 10 * trained_fraction * shape.vocab))
    chunk = loss_chunk(shape.vocab, on_gpu)
    if trained_fraction * fit > chunk:
        fit = int(max(usable - 10 * shape.vocab * chunk, 0) / kept)
    cap = GPU_TOKEN_CAP if on_gpu else CPU_TOKEN_CAP
    return max(longest, min(fit, cap)), fit >= longest


def _logit_bytes(shape: Shape, trained: int, head_trains: bool = False) -> int:
    """The loss's memory for `trained` positions. The chunk being worked on holds its 16-bit and
    fp32 logits and their log-softmax or gradient (10 bytes a logit, at most LOSS_CHUNK
    positions). With a frozen head (LoRA, QLoRA) the gradient with respect to the hidden state is
    computed in the forward pass and kept (2h bytes a position, train/loss.py); when the head
    trains (full fine-tuning) every chunk's fp32 log-softmax is kept instead (4 bytes a logit)."""
    kept = 4 * shape.vocab if head_trains else 2 * shape.hidden
    return kept * trained + 10 * shape.vocab * min(trained, LOSS_CHUNK)


def _peak(b: dict[str, int]) -> int:
    """The largest of the phases of a step, on top of what lives throughout (weights, optimizer).

    Without checkpointing, saved activations and logits peak together at the end of the forward
    pass. With checkpointing, the logits are freed by the loss's backward before the last layer
    is recomputed, so the layer inputs are joined either by the logits or by one recomputed layer.
    Gradients fill up during backward as activations are freed, so they are a phase of their own.
    """
    logits = sum(v for k, v in b.items() if k.startswith("logits"))
    inputs = b.get("activations (checkpointed layer inputs)", 0)
    layer = b.get("activations (one layer recomputed)", 0)
    saved = b.get("activations", 0)
    grads = sum(v for k, v in b.items() if "gradients" in k)
    static = sum(b.values()) - logits - inputs - layer - saved - grads
    return static + max(saved + logits, inputs + max(logits, layer), grads)


def _fit(result: Plan, shape, method, seq_len, batch, ckpt, lora_r, budget, frac, dropout, gpus, strategy) -> None:
    usable = budget - CUDA_OVERHEAD
    result.budget_bytes, result.fits = budget, result.total_bytes <= usable
    def total(s, bb, c=ckpt, m=method):
        return plan(shape, m, s, bb, c, lora_r, None, frac, dropout, gpus, strategy).total_bytes

    result.max_batch = max((bb for bb in range(1, 1025) if total(seq_len, bb) <= usable), default=0)
    result.max_seq_len = max((s for s in range(128, 131073, 128) if total(s, batch) <= usable), default=0)
    if result.fits:
        result.advice = None
    elif total(seq_len, 1) <= usable:
        result.advice = (f"lower the micro-batch to {result.max_batch} (train.micro_batch_size); the optimizer step "
                         "still sees the same batch through gradient accumulation")
    elif not ckpt and total(seq_len, 1, True) <= usable:
        result.advice = "enable train.gradient_checkpointing (about 20% slower, far less activation memory)"
    elif method != "qlora" and total(seq_len, 1, True, "qlora") <= usable:
        result.advice = "use QLoRA (model.quantization=nf4) with gradient checkpointing"
    else:
        result.advice = f"shorten sequences to {result.max_seq_len} tokens (data.max_seq_len) or use a larger GPU"


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise TunewiseError(f"--gpu-memory {text!r}: use a size such as 24GB or 80GiB")
    scale = {"": 1, "K": 1024, "M": 1024**2, "G": GIB, "T": 1024**4}[match.group(2).upper()]
    return int(float(match.group(1)) * scale)
