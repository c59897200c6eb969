"""FSDP (`train.strategy: fsdp`): torch's `fully_shard` (FSDP2) on each decoder layer and the root.

Every parameter, the frozen base included, is split along its first dimension over the ranks
(a DTensor); a layer's weights are gathered whole just before it runs and freed after, and its
gradients are reduce-scattered (averaged) back into shards. The loss module (train/loss.LossForward)
is the root, so the embeddings, final norm and LM head are gathered in its forward, where the fused
loss reads the head's weight.

Saving: the adapter is small, so every rank gathers its full tensors (a collective) and rank 0
writes a plain PEFT adapter. The optimizer state is not gathered: each rank writes its own shard
into the checkpoint (`optimizer-rank-R.pt`), so `--resume` needs the same number of processes.

Why torch's API and not accelerate's FSDP2 support: accelerate (1.16) sets its FSDP engine only
for GPU-like devices (state.py), so on CPUs it cannot be selected or tested, and its prepare wraps
by class name, not the decoder layers of the PEFT model tunewise holds. The rest of the loop
(backward, gradient clipping, reductions) still goes through accelerate, which handles DTensors.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from ..errors import TunewiseError
from ..model.lora import base_model


def shard(forward: torch.nn.Module) -> torch.nn.Module:
    """Shard each decoder layer, then the root (what is left: embeddings, final norm, head)."""
    for layer in decoder_layers(forward):
        fully_shard(layer)
    fully_shard(forward)
    return forward


def decoder_layers(forward: torch.nn.Module) -> list[torch.nn.Module]:
    layers = getattr(base_model(forward.model).get_decoder(), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        raise TunewiseError(f"train.strategy fsdp: {type(base_model(forward.model)).__name__} has no decoder "
                            "`layers` list to shard one by one; use train.strategy ddp")
    return list(layers)


def local_bytes(module: torch.nn.Module) -> int:
    """Bytes of parameters this rank holds (its shards under FSDP)."""
    return sum(_local(p).numel() * p.element_size() for p in module.parameters())


def full_adapter_state(model) -> dict[str, torch.Tensor]:
    """Every trainable parameter whole, by the PEFT model's own names. A collective: every rank
    calls it, in the same order."""
    return {name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().cpu()
            for name, p in model.named_parameters() if p.requires_grad}


def shard_file(directory: Path, rank: int) -> Path:
    return directory / f"optimizer-rank-{rank}.pt"


def save_optimizer_shard(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """This rank's optimizer state: its shards of the moments, as plain tensors."""
    state = optimizer.state_dict()
    state["state"] = {i: {k: _local(v) for k, v in s.items()} for i, s in state["state"].items()}
    torch.save(state, path)


def load_optimizer_shard(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """The inverse of save_optimizer_shard: each moment shard put back as a DTensor shaped like its parameter."""
    state = torch.load(path, weights_only=True, map_location="cpu")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, values in state["state"].items():
        param = params[int(i)]
        if isinstance(param, DTensor):
            values.update({k: DTensor.from_local(v.to(param.device), param.device_mesh, param.placements,
                                                 shape=param.shape, stride=param.stride())
                           for k, v in values.items() if torch.is_tensor(v) and v.dim() == param.dim()})
    optimizer.load_state_dict(state)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t
