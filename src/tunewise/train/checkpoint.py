"""Checkpoints: a PEFT adapter plus optimizer, scheduler, RNG and data position, written atomically.

Everything is written to a temporary directory beside the target and renamed into place, so a
kill at any moment leaves the previous checkpoint intact. Optimizer state is read back with
`torch.load(weights_only=True)`: nothing in a run directory is executed on load.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file

from ..errors import TunewiseError
from ..files import atomic_dir
from ..rundir import RunDir

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


def recover(target: Path) -> None:
    """A kill between the two renames of atomic_dir leaves only the old copy: put it back."""
    old = target.with_name(f".{target.name}-old")
    if old.is_dir() and not target.exists():
        os.replace(old, target)


def save_adapter(model, target: Path) -> None:
    atomic_dir(target, lambda tmp: model.save_pretrained(tmp, safe_serialization=True))


def save_checkpoint(run: RunDir, step: int, model, optimizer, scheduler, meta: dict, rng: list[dict],
                    scaler=None) -> Path:
    """`rng`: every rank's random generators (train/distributed.rng_states)."""
    target = run.checkpoint(step)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                # dropout masks are drawn on the GPU in a GPU run, and per rank in a launch of several
                "rng": rng,
                "scaler": scaler.state_dict() if scaler is not None else None,
            },
            tmp / STATE,
        )
        (tmp / META).write_text(json.dumps({"step": step, **meta}, indent=2))

    atomic_dir(target, write)
    return target


def latest_checkpoint(run: RunDir) -> Path | None:
    """The newest complete checkpoint (one cut short by a kill lacks its state files)."""
    found = [path for _, path in run.checkpoint_steps() if (path / META).is_file() and (path / STATE).is_file()]
    return found[-1] if found else None


def load_checkpoint(path: Path, model, optimizer, scheduler, scaler=None) -> tuple[dict, list[dict]]:
    """Restore adapter weights, optimizer and scheduler in place; return the saved metadata and
    every rank's random generators (train/distributed.restore_rng sets this rank's)."""
    weights = load_file(str(path / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, weights)
    if getattr(result, "unexpected_keys", None):
        raise TunewiseError(f"checkpoint {path} does not match this model/LoRA config")
    # map_location: a checkpoint written on a GPU resumes on a machine without one too
    state = torch.load(path / STATE, weights_only=True, map_location="cpu")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    return json.loads((path / META).read_text()), state["rng"]

