"""Checkpoints: a PEFT adapter plus optimizer, scheduler, RNG and data position, written atomically.

Everything is written to a temporary directory beside the target and renamed into place, so a
kill at any moment leaves the previous checkpoint intact. Optimizer state is read back with
`torch.load(weights_only=True)`: nothing in a run directory is executed on load.

Under FSDP (train/fsdp.py) each rank first writes its optimizer shard into a staging directory
beside the checkpoints; rank 0 moves the shards into its temporary directory before the rename, so
a checkpoint is complete with all of them or absent.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file

from ..errors import TunewiseError
from ..files import atomic_dir
from ..rundir import RunDir
from .distributed import Ranks
from .fsdp import load_optimizer_shard, save_optimizer_shard, shard_file

STATE = "training_state.pt"
META = "trainer_state.json"


def ensure_writable(run: RunDir) -> None:
    """Fail at the start, with the path named, rather than after an hour of training."""
    try:
        run.path.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkstemp(prefix=".write-test-", dir=run.path)[1])
        probe.unlink()
    except OSError as e:
        raise TunewiseError(f"cannot write to output_dir {run.path}: {e.strerror or e}") from None
    recover(run.adapter)
    for staged in run.checkpoints.glob(".step-*-optimizer"):  # shards of a save cut short by a kill
        shutil.rmtree(staged, ignore_errors=True)


def recover(target: Path) -> None:
    """A kill between the two renames of atomic_dir leaves only the old copy: put it back."""
    old = target.with_name(f".{target.name}-old")
    if old.is_dir() and not target.exists():
        os.replace(old, target)


def save_adapter(model, target: Path, state: dict | None = None) -> None:
    """A PEFT adapter; `state`: the full adapter weights when the model holds shards (FSDP)."""
    atomic_dir(target, lambda tmp: _write_adapter(model, tmp, state))


def _write_adapter(model, directory: Path, state: dict | None) -> None:
    model.save_pretrained(directory, safe_serialization=True, **({"state_dict": state} if state else {}))


def stage_optimizer_shard(run: RunDir, step: int, optimizer, rank: int) -> Path:
    """FSDP: this rank's optimizer shard, written where rank 0 will collect it for checkpoint `step`."""
    staging = run.checkpoints / f".step-{step}-optimizer"
    staging.mkdir(parents=True, exist_ok=True)
    save_optimizer_shard(optimizer, shard_file(staging, rank))
    return staging


def save_checkpoint(run: RunDir, step: int, model, optimizer, scheduler, meta: dict, rng: list[dict],
                    scaler=None, adapter_state: dict | None = None, shards: Path | None = None) -> Path:
    """`rng`: every rank's random generators (train/distributed.rng_states). Under FSDP,
    `adapter_state` is the gathered adapter and `shards` the staged optimizer shards (stage_optimizer_shard),
    which take the place of the whole optimizer state."""
    target = run.checkpoint(step)

    def write(tmp: Path) -> None:
        _write_adapter(model, tmp, adapter_state)
        if shards is not None:
            for shard in shards.iterdir():
                os.replace(shard, tmp / shard.name)
        torch.save(
            {
                "optimizer": optimizer.state_dict() if shards is None else None,
                "scheduler": scheduler.state_dict(),
                # dropout masks are drawn on the GPU in a GPU run, and per rank in a launch of several
                "rng": rng,
                "scaler": scaler.state_dict() if scaler is not None else None,
            },
            tmp / STATE,
        )
        (tmp / META).write_text(json.dumps({"step": step, **meta}, indent=2))

    atomic_dir(target, write)
    if shards is not None:
        shutil.rmtree(shards, ignore_errors=True)
    return target


def latest_checkpoint(run: RunDir) -> Path | None:
    """The newest complete checkpoint (one cut short by a kill lacks its state files)."""
    found = [path for _, path in run.checkpoint_steps() if (path / META).is_file() and (path / STATE).is_file()]
    return found[-1] if found else None


def check_launch(path: Path, ranks: Ranks) -> None:
    """FSDP optimizer state is in one shard per rank: it resumes only on as many processes as wrote it."""
    meta = json.loads((path / META).read_text())
    written = meta.get("world_size", 1)
    if (meta.get("strategy") == "fsdp" or ranks.sharded) and written != ranks.world:
        raise TunewiseError(f"--resume: checkpoint {path} was written by {written} process(es) under train.strategy "
                            f"fsdp, each with its shard of the optimizer state, and this launch has {ranks.world}: "
                            f"launch {written} processes (--nproc_per_node / --num_processes {written}) to resume it")


def load_adapter_weights(path: Path, model) -> None:
    """The checkpoint's adapter weights into `model`, before any sharding."""
    weights = load_file(str(path / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, weights)
    if getattr(result, "unexpected_keys", None):
        raise TunewiseError(f"checkpoint {path} does not match this model/LoRA config")


def load_checkpoint(path: Path, optimizer, scheduler, scaler=None, ranks: Ranks = Ranks()) -> tuple[dict, list[dict]]:
    """Restore optimizer and scheduler in place (the adapter: load_adapter_weights); return the saved
    metadata and every rank's random generators (train/distributed.restore_rng sets this rank's)."""
    # map_location: a checkpoint written on a GPU resumes on a machine without one too
    state = torch.load(path / STATE, weights_only=True, map_location="cpu")
    if ranks.sharded:
        load_optimizer_shard(optimizer, shard_file(path, ranks.rank))
    else:
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    return json.loads((path / META).read_text()), state["rng"]

