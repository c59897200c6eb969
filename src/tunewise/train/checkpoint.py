"""Checkpoints: a PEFT adapter plus optimizer, scheduler, RNG and data position, written atomically.

Everything is written to a temporary directory beside the target and renamed into place, so a
kill at any moment leaves the previous checkpoint intact. Optimizer state is read back with
`torch.load(weights_only=True)`: nothing in a run directory is executed on load.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path

import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file

from ..errors import TunewiseError

STATE = "training_state.pt"
META = "trainer_state.json"


def atomic_dir(target: Path, write) -> None:
    """Call write(tmp_dir), then rename tmp_dir to target (replacing an older target)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except OSError as e:
        raise TunewiseError(f"cannot write {target}: {e.strerror or e}; earlier checkpoints are kept") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_writable(run_dir: Path) -> None:
    """Fail at the start, with the path named, rather than after an hour of training."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkstemp(prefix=".write-test-", dir=run_dir)[1])
        probe.unlink()
    except OSError as e:
        raise TunewiseError(f"cannot write to output_dir {run_dir}: {e.strerror or e}") from None
    recover(run_dir / "adapter")


def recover(target: Path) -> None:
    """A kill between the two renames of atomic_dir leaves only the old copy: put it back."""
    old = target.with_name(f".{target.name}-old")
    if old.is_dir() and not target.exists():
        os.replace(old, target)


def save_adapter(model, target: Path) -> None:
    atomic_dir(target, lambda tmp: model.save_pretrained(tmp, safe_serialization=True))


def save_checkpoint(run_dir: Path, step: int, model, optimizer, scheduler, meta: dict) -> Path:
    target = run_dir / "checkpoints" / f"step-{step}"

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
            },
            tmp / STATE,
        )
        (tmp / META).write_text(json.dumps({"step": step, **meta}, indent=2))

    atomic_dir(target, write)
    return target


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = []
    for path in (run_dir / "checkpoints").glob("step-*"):
        match = re.fullmatch(r"step-(\d+)", path.name)
        if match and (path / META).is_file() and (path / STATE).is_file():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore adapter weights, optimizer, scheduler and RNG in place; return the saved metadata."""
    weights = load_file(str(path / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, weights)
    if getattr(result, "unexpected_keys", None):
        raise TunewiseError(f"checkpoint {path} does not match this model/LoRA config")
    state = torch.load(path / STATE, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(_as_tuple(state["python_rng"]))
    return json.loads((path / META).read_text())


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
