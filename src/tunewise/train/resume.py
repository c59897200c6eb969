"""`train --resume` with settings that differ from the run's config.yaml: each key is either
refused (one message: the key, both values, why, what to do instead) or applied, and then said
exactly as it takes effect. Nothing is printed as changed that does not change.

Refused: what the checkpoint's weights or its data position depend on. The adapter loads only
under its own base, quantization, r and targets; its weights were trained at scale alpha/r (a new
alpha rescales them mid-run; `train --from` refuses it too); its data position is a step number in
an order drawn from the data, the validation split, the replay sample, the seed and the batch
size; and the best validation loss so far, which picks adapter/, was measured on the examples as
encoded (max_seq_len, fold_system_prompt, end_of_turn).
Applied: the rest, from the next step on. The optimizer's learning rate and weight decay come
back from the checkpoint, so `apply_hyperparameters` puts the config's in their place.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..config import Config, flatten
from ..errors import TunewiseError
from ..files import file_sha256
from ..rundir import RunDir

_LOADED = "the checkpoint's adapter cannot be loaded under another value"
_SCALE = ("the adapter was trained at scale lora.alpha / lora.r; another alpha rescales its trained weights in "
          "the middle of the run (train --from refuses it too)")
_PARENT = "the checkpoint's weights already continue from the first value; lora.init_from only starts a run"
_ORDER = ("the checkpoint's data position is a step number in the order drawn from the data, the validation "
          "split, the replay sample, train.seed, train.batch_size and train.group_by_length; another value "
          "would train some examples twice and skip others")
_ENCODING = ("the best validation loss so far, which picks adapter/, was measured on the examples as encoded "
             "under the first value; later losses would not compare with it")

_SHARDS = ("under fsdp the checkpoint's optimizer state is saved as one shard per process, under ddp whole; "
           "the other strategy cannot load it")

REFUSED = {
    "model.name": _LOADED, "model.quantization": _LOADED, "lora.r": _LOADED, "lora.target_modules": _LOADED,
    "lora.alpha": _SCALE, "lora.init_from": _PARENT,
    "data.train": _ORDER, "data.val": _ORDER, "data.val_fraction": _ORDER, "data.replay": _ORDER,
    "train.seed": _ORDER, "train.batch_size": _ORDER, "train.group_by_length": _ORDER, "data.format": _ORDER,
    "data.columns": _ORDER, "data.roles": _ORDER, "train.strategy": _SHARDS,
    "data.max_seq_len": _ENCODING, "data.fold_system_prompt": _ENCODING, "data.end_of_turn": _ENCODING,
}
# The learning-rate schedule: a change to any of these is reported with the lr the next step uses.
SCHEDULE = ("train.lr", "train.epochs", "train.max_steps", "train.scheduler", "train.warmup_ratio")
APPLIED = (*SCHEDULE, "train.weight_decay", "train.max_grad_norm", "train.eval_every", "train.save_every",
           "train.log_every", "train.early_stopping_patience", "train.gradient_checkpointing",
           "train.micro_batch_size", "train.report_to", "lora.dropout", "model.dtype", "model.trust_remote_code",
           "data.allow_small", "output_dir")


def key_class(key: str) -> str:
    """The table entry that decides `key` (data.replay.* is decided as data.replay, and so on)."""
    for group in ("data.replay", "data.columns", "data.roles"):  # a mapping is decided as a whole
        if key.startswith(group + "."):
            return group
    return key


def config_changes(run: RunDir, config: Config) -> list[tuple[str, object, object, str]]:
    """(key, before, after, note) for every setting that differs from the run's config.yaml, after
    refusing, before any weight is loaded, the first one that cannot change on resume."""
    if not run.config.is_file():
        return []
    before, after = flatten(yaml.safe_load(run.config.read_text())), flatten(config.model_dump(mode="json"))
    moved = _check_data_files(run, after)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    for key in (k for k in changed if k not in moved):
        why = REFUSED.get(key_class(key))
        if why is None and key_class(key) not in APPLIED:
            why = "tunewise does not know what changing it in the middle of a run does"
        if why:
            raise TunewiseError(f"--resume: {key} was {before.get(key)!r} in {run.config} and is {after.get(key)!r} "
                                f"now; {why}. Set {key}={_yaml(before.get(key))} back to resume, or train under "
                                f"the new value in a new run (output_dir=...; `train --from {run.path}` continues "
                                "this adapter there with a fresh optimizer and schedule)")
    return [(k, before.get(k), after.get(k), " (the same content)" if k in moved else "") for k in changed]


def _check_data_files(run: RunDir, after: dict) -> set[str]:
    """Data files are compared by content (manifest.json's sha256 at the run's start), not by path:
    a file edited in place is refused, and one moved or named from another directory is the same
    data. Returns the keys whose path changed but content did not."""
    if not run.manifest.is_file():
        return set()
    recorded = json.loads(run.manifest.read_text()).get("data") or {}
    moved = set()
    for name, record in recorded.items():
        key, path = f"data.{name}", after.get(f"data.{name}")
        if not (path and Path(path).is_file() and record.get("sha256")):
            continue  # another key, or no file: the path comparison decides
        now = file_sha256(path)
        if now != record["sha256"]:
            raise TunewiseError(f"--resume: {key} {path} is not the data the run started with (sha256 "
                                f"{record['sha256'][:12]}... in {run.manifest}, {now[:12]}... now); {_ORDER}. "
                                f"Restore the file to resume, or train on it in a new run (output_dir=...; "
                                f"`train --from {run.path}` continues this adapter there)")
        if path != record.get("path"):
            moved.add(key)
    return moved


def apply_hyperparameters(optimizer, scheduler, lr: float, weight_decay: float) -> None:
    """The config's lr and weight decay at the schedule's position. A checkpoint's optimizer state
    brings back its own (param_groups' lr, initial_lr, weight_decay) and its scheduler state the old
    base_lrs; the schedule's shape (total steps, warmup, kind) is this run's, because LambdaLR does
    not save its functions. With unchanged settings every value is the one loaded, bit for bit."""
    scheduler.base_lrs = [lr] * len(optimizer.param_groups)
    for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group.update(initial_lr=lr, lr=lr * factor(scheduler.last_epoch), weight_decay=weight_decay)


def describe(changes: list[tuple[str, object, object, str]], step: int, next_lr: float,
             total: tuple[int, int]) -> str:
    """What changed, as it takes effect: the schedule's keys with the lr step `step + 1` trains at."""
    said = ", ".join(f"{k}: {a!r} -> {b!r}{note}" for k, a, b, note in changes)
    line = f"resuming with settings that differ from the run's config.yaml, applied from step {step + 1}: {said}"
    if any(k in SCHEDULE for k, *_ in changes):
        was, now = total
        steps = f"{now} steps in all (was {was})" if was != now else f"{now} steps in all (unchanged)"
        line += f"; the schedule: {steps}, step {step + 1} trains at lr {next_lr:.6g}"
    return line


def _yaml(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
