"""Which speed paths a model gets, decided when training starts: each is applied or steps aside
with one line saying why, and `SpeedPaths.record` goes into manifest.json.

The paths (packed attention, the lean SiLU MLP, the fused loss, the fused LoRA dropout, the LoRA
add in one matmul) patch transformers and PEFT internals that were written for Llama. A family
whose layers ask for something a path does not implement (a sliding window it ignored, a softcap,
a decoder layer that drops the packed layout) would train wrong with no error; here each path
first checks what it would touch, by source, by config or by one probe forward of eight tokens,
and otherwise leaves the model's own code in charge.

Nothing is patched or registered at import: packed attention is registered in transformers'
registries when a model is switched to it. Settings of library internals that are private (a
bitsandbytes flag, a DDP hook) go through guards here: each is applied only where the library
still has it, steps aside loudly where it does not, and every one applied or stepped aside is
logged for manifest.json's `patches` list.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from ..model.dropout import DroppedLinear
from ..model.lora import base_model
from ..model.lora_add import fuse_lora_add
from ..model.quant import count_4bit_linear, keep_training_layout
from .loss import fused_loss_blocker
from .packing import NAME, PackedLayout, PackingError, packed_forward, register
from .swiglu import enable_lean_mlp

BNB_FLAG = "support_avx512bf16_for_cpu"  # bitsandbytes' Linear4bit attribute (0.48-0.50)
DDP_IGNORE = "_set_params_and_buffers_to_ignore_for_model"  # torch's DistributedDataParallel, private
_LOG: list[dict] = []  # this run's patches, for manifest.json (cleared when a run's model is set up)


def _log(name: str, patch: "Patch", unit: str) -> None:
    _LOG.append({"patch": name, unit: patch.count} if patch.reason is None else {"patch": name, "off": patch.reason})


def applied_patches() -> list[dict]:
    """Every guarded patch of this run: what it set and how many modules, or why it stepped aside."""
    return list(_LOG)


@dataclass
class Patch:
    """How many modules a speed path changed, or why it stepped aside (then `count` is 0)."""

    count: int
    reason: str | None = None

    def __bool__(self) -> bool:
        return self.reason is None and self.count > 0


def enable_packing(model) -> Patch:
    """Switch a transformers model to packed attention, after a probe forward shows that every
    layer's attention receives the layout and asks for nothing the kernel lacks; otherwise the
    model keeps its attention and trains on padded batches, and the Patch says why."""
    base = base_model(model)
    if not getattr(type(base), "_supports_attention_backend", False):
        return Patch(0, "its attention does not go through transformers' AttentionInterface (remote code?)")
    reason = _config_blocker(base.config.get_text_config())
    if reason:
        return Patch(0, reason)
    reason = register()
    _log(f"transformers AttentionInterface and mask registries: {NAME!r}", Patch(1, reason), "registered")
    if reason:
        return Patch(0, reason)
    before = base.config._attn_implementation
    base.set_attn_implementation(NAME)
    layers, reason = _probe(base)
    if reason:
        base.set_attn_implementation(before)
    return Patch(layers, reason)


def _config_blocker(config) -> str | None:
    """Token mixing that attention arguments do not show: recurrent or chunked layers."""
    kinds = set(getattr(config, "layer_types", None) or []) - {"full_attention", "sliding_attention"}
    if kinds:
        return f"it has {', '.join(sorted(kinds))} layers, which packed attention does not cover"
    if getattr(config, "attention_chunk_size", None):
        return "its attention is chunked (attention_chunk_size), which packed attention does not implement"
    return None


def _probe(base) -> tuple[int, str | None]:
    """A packed forward of two short sequences; (attention layers that got the layout, reason)."""
    config = base.config.get_text_config()
    layout = PackedLayout.from_lengths([5, 3])
    device = base.get_input_embeddings().weight.device
    ids = (torch.arange(8, device=device) % config.vocab_size)[None]
    positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]], device=device)
    try:
        with torch.no_grad(), packed_forward() as seen:
            base.get_decoder()(input_ids=ids, position_ids=positions, packed_layout=layout.to(device), use_cache=False)
    except PackingError as e:
        return 0, str(e)
    except Exception as e:  # noqa: BLE001 - any failure of the patched forward: train with the model's own
        return 0, f"a packed probe forward failed ({type(e).__name__}: {e})"
    layers = getattr(config, "num_hidden_layers", 0)
    if seen.calls < max(layers, 1):
        return 0, f"only {seen.calls} of its {layers} layers go through packed attention"
    if getattr(config, "sliding_window", None) and not seen.windows:
        return 0, "its config sets sliding_window but no attention call receives it"
    return seen.calls, None


@dataclass
class SpeedPaths:
    packed: bool
    record: dict = field(default_factory=dict)  # for manifest.json
    notes: list[str] = field(default_factory=list)  # one printed line per path that stepped aside


def keep_4bit_layout(model) -> Patch:
    """model/quant.py's keep_training_layout, where this bitsandbytes still reads the flag it sets:
    setting an attribute bitsandbytes no longer reads would change nothing and say it did."""
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    if not layers:
        return Patch(0, "no 4-bit layers")
    if not all(hasattr(layer, BNB_FLAG) for layer in layers):
        return Patch(0, f"bitsandbytes {bnb.__version__} has no Linear4bit.{BNB_FLAG}, so tunewise cannot stop it "
                        "repacking 4-bit weights for its CPU kernel in eval mode; validation may then change "
                        "training on a CPU with AVX512-BF16 (measured with 0.50; model/quant.py)")
    return Patch(keep_training_layout(model))


def ignore_frozen_in_ddp(module: torch.nn.Module, names: list[str]) -> None:
    """Tell DDP (torch's private hook) to leave the frozen base alone; where this torch lacks the
    hook, DDP broadcasts and checks every base weight from rank 0 at start: slower, same result."""
    ddp = torch.nn.parallel.DistributedDataParallel
    if hasattr(ddp, DDP_IGNORE):
        getattr(ddp, DDP_IGNORE)(module, names)
        _log(f"torch DistributedDataParallel.{DDP_IGNORE}", Patch(len(names)), "ignored")
        return
    reason = (f"torch {torch.__version__} has no DistributedDataParallel.{DDP_IGNORE}: DDP broadcasts all "
              f"{len(names)} frozen base tensors from rank 0 at start instead of skipping them")
    warnings.warn(reason, RuntimeWarning, stacklevel=2)
    _log(f"torch DistributedDataParallel.{DDP_IGNORE}", Patch(0, reason), "ignored")


def apply_speed_paths(model) -> SpeedPaths:
    """Enable every speed path `model` can take (a PEFT model or a bare one); say why for the others.
    Starts this run's patch log; the 4-bit layout is kept first, before the probe forward."""
    _LOG.clear()
    layout = keep_4bit_layout(model)  # validation (and the probe below) must not repack 4-bit weights
    _log(f"bitsandbytes Linear4bit.{BNB_FLAG} = False", layout, "layers")
    packing = enable_packing(model)
    mlps = enable_lean_mlp(model)
    loss_blocker = fused_loss_blocker(model)
    lora_adds = fuse_lora_add(model)
    record = {
        "packed_attention": {"layers": packing.count} if packing else {"off": packing.reason},
        "lean_mlp": {"modules": mlps},
        "fused_loss": True if loss_blocker is None else {"off": loss_blocker},
        "fused_lora_dropout": {"modules": sum(isinstance(m, DroppedLinear) for m in model.modules())},
        "fused_lora_add": {"modules": lora_adds},
    }
    notes = [f"{what} off for this model: {why}; training takes the model's own code there"
             for what, why in (("packed attention", packing.reason), ("fused loss", loss_blocker)) if why]
    if layout.reason and count_4bit_linear(model):
        notes.append(f"4-bit layout not kept: {layout.reason}")
    return SpeedPaths(bool(packing), record, notes)
