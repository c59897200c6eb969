"""One run on several processes (`accelerate launch --num_processes N`, or torchrun): what changes.

The same sequences form each optimizer step as in one process (data/batching.step_indices); they
are dealt to the ranks by length, so each rank holds about the same tokens. Every rank splits its
share into the *same number* of micro-batches: each backward under DDP or FSDP is a collective, and
one rank with an extra micro-batch would wait forever for the others. A rank with too few sequences
repeats one with weight 0 (a forward and backward that add nothing).

Each micro-batch's loss is its summed token loss x world / (trained tokens of the step on *all*
ranks). DDP and FSDP average gradients over ranks, so the all-reduced gradient is exactly the
gradient one process would take over the whole batch, whatever the split.

Only rank 0 writes (run records, checkpoints, adapter, plots); every rank reads.
"""

from __future__ import annotations

import os
import random
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object
from torch.distributed.fsdp import FSDPModule

from ..config import Config
from ..data.batching import micro_batches
from ..errors import TunewiseError
from .fsdp import shard
from .loss import LossForward
from .patches import ignore_frozen_in_ddp

# Engines a run can take: one process, several on GPUs or CPUs (DDP, or FSDP by train.strategy), and
# accelerate's FSDP engine (an accelerate config with an FSDP section), taken as train.strategy fsdp.
SUPPORTED = {DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU, DistributedType.FSDP}


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    engine: str = "NO"  # accelerate's DistributedType: NO, MULTI_GPU, MULTI_CPU, FSDP
    strategy: str = "none"  # none (one process), ddp or fsdp

    @property
    def sharded(self) -> bool:
        return self.strategy == "fsdp"

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class MicroBatch:
    indices: list[int]
    weight: float = 1.0  # 0: a stand-in so this rank takes part in a collective; adds nothing


def launch_ranks(accelerator: Accelerator, config: Config) -> Ranks:
    """This process's place in the launch, or a refusal naming what cannot work. An accelerate
    config with an FSDP section means train.strategy fsdp (tunewise shards; train/fsdp.py)."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    engine = accelerator.distributed_type
    if launched > 1 and accelerator.num_processes == 1:
        raise TunewiseError(f"{launched} processes were launched (WORLD_SIZE={launched}) but accelerate set up "
                            "none of them to work together, so each would train alone into one output_dir. "
                            "Launch with `accelerate launch --num_processes N -m tunewise.cli train ...` "
                            "(or torchrun) and a working accelerate config")
    if engine not in SUPPORTED:
        raise TunewiseError(f"accelerate distributed_type {engine.value}: tunewise train runs one process or DDP "
                            "(`accelerate launch --multi_gpu --num_processes N`) or FSDP (train.strategy=fsdp); "
                            "DeepSpeed is not supported")
    world, batch = accelerator.num_processes, config.train.batch_size
    if batch % world:
        raise TunewiseError(f"train.batch_size {batch} does not divide among the {world} processes of this launch: "
                            f"set it to a multiple of {world} (each process then takes batch_size/{world} "
                            "sequences of every step)")
    if world == 1:
        strategy = "none"
    else:
        strategy = "fsdp" if engine == DistributedType.FSDP else config.train.strategy
    return Ranks(accelerator.process_index, world, engine.value, strategy)


def wrap_loss(accelerator: Accelerator, model, ranks: Ranks) -> torch.nn.Module:
    """The loss module training calls: as is in one process, sharded under FSDP (train/fsdp.py),
    else through accelerate's DDP wrapper.

    DDP is told to leave the frozen base alone: it would otherwise broadcast every base weight
    (a 4-bit model's too) from rank 0 at start, though all ranks loaded the same ones."""
    forward = LossForward(model)
    if accelerator.num_processes == 1:
        return forward
    if ranks.sharded:
        return shard(forward)
    frozen = [n for n, p in forward.named_parameters() if not p.requires_grad]
    frozen += [n for n, _ in forward.named_buffers()]
    ignore_frozen_in_ddp(forward, frozen)  # torch's private hook, guarded and logged (train/patches.py)
    return accelerator.prepare_model(forward, device_placement=False)


@contextmanager
def no_sync(accelerator: Accelerator, forward: torch.nn.Module):
    """Backward without the gradient exchange (every micro-batch of a step but the last).

    Under FSDP the trainable adapter weights are small, so their gradients are accumulated whole
    on each rank and reduce-scattered once a step, as DDP all-reduces once a step; accelerate
    does this for FSDP2 only under its own engine, which it never selects on CPUs."""
    if not isinstance(forward, FSDPModule):
        with accelerator.no_sync(forward):
            yield
        return
    forward.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        forward.set_requires_gradient_sync(True)


def rank_micro_batches(indices: list[int], lengths: list[int], micro_batch_size: int | str, token_budget: int,
                       ranks: Ranks) -> list[MicroBatch]:
    """This rank's micro-batches of one step (or of the validation set): its share of `indices`,
    split like a single process would, then evened out so every rank has the same count."""
    ordered = sorted(indices, key=lambda i: lengths[i], reverse=True)
    shares = [ordered[r :: ranks.world] for r in range(ranks.world)]  # dealt longest first: even tokens
    plans = [micro_batches(share, lengths, micro_batch_size, token_budget) if share else [] for share in shares]
    count = max(len(plan) for plan in plans)
    return _even_out(plans[ranks.rank], count, stand_in=ordered[-1])


def _even_out(groups: list[list[int]], count: int, stand_in: int) -> list[MicroBatch]:
    groups = [list(g) for g in groups]
    while len(groups) < count and any(len(g) > 1 for g in groups):
        largest = max(range(len(groups)), key=lambda k: len(groups[k]))
        group = groups[largest]
        groups[largest : largest + 1] = [group[: len(group) // 2], group[len(group) // 2 :]]
    found = [MicroBatch(g) for g in groups]
    return found + [MicroBatch([stand_in], 0.0)] * (count - len(found))


def all_sum(accelerator: Accelerator, *values: float) -> list[float]:
    """Each value summed over the ranks (as is, in one process)."""
    if accelerator.num_processes == 1:
        return list(values)
    summed = accelerator.reduce(torch.tensor(values, dtype=torch.float64, device=accelerator.device), "sum")
    return summed.tolist()


def all_min(accelerator: Accelerator, value: int) -> int:
    """The smallest of the ranks' values. Every rank must plan micro-batches with the same token
    budget (each plans all ranks' splits), and each measures its own free memory."""
    if accelerator.num_processes == 1:
        return value
    return int(accelerator.gather(torch.tensor([value], device=accelerator.device)).min())


def rng_states(accelerator: Accelerator) -> list[dict]:
    """Every rank's random generators, gathered in rank order (a collective: all ranks call it).
    Dropout masks are drawn per rank, so a resumed run needs each rank's own."""
    device = accelerator.device
    mine = {"torch": torch.get_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    return gather_object([mine]) if accelerator.num_processes > 1 else [mine]


def restore_rng(states: list[dict], ranks: Ranks, device: torch.device) -> str | None:
    """Set this rank's generators from a checkpoint; a note when the launch's size changed."""
    if len(states) != ranks.world:
        note = (f"the checkpoint was written by {len(states)} processes and this launch has {ranks.world}: the "
                "same data forms each step, but dropout masks will differ from the uninterrupted run")
    else:
        note = None
    state = states[ranks.rank % len(states)]
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    return note


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
