"""Everything before the first step, in the order it happens: the run directory checked, data
encoded and checked, model loaded with adapters and speed paths, optimizer and schedule, resume,
records written. `train()` in loop.py then only steps."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from rich.console import Console
from rich.text import Text

from ..config import Config
from ..data.batching import steps_per_epoch
from ..data.template import template_hash
from ..device import compute_dtype, needs_grad_scaler, pick_device
from ..errors import TunewiseError
from ..files import hold_lock, tree_sha256
from ..model.load import load_model, load_tokenizer, resolve_model
from ..model.lora import add_lora, load_lora
from ..rundir import RunDir
from . import checkpoint as ckpt
from . import trackers
from .distributed import Ranks, all_min, launch_ranks, restore_rng, wrap_loss
from .early_stop import EarlyStopping
from .memory import release_freed_memory
from .optim import make_optimizer, make_scheduler
from .patches import applied_patches, apply_speed_paths
from .replay import mix_replay
from .resume import apply_hyperparameters, config_changes, describe
from .runlog import RunLog
from .setup import Datasets, micro_batch_budget, prepare_data
from .warm_start import check_parent, find_parent


@dataclass
class Session:
    config: Config
    run: RunDir
    accelerator: Accelerator
    model: torch.nn.Module
    pad_id: int
    data: Datasets
    packed: bool
    token_budget: int
    total_steps: int
    optimizer: torch.optim.Optimizer
    scheduler: object
    stopper: EarlyStopping
    log: RunLog
    ranks: Ranks = field(default_factory=Ranks)
    forward: torch.nn.Module | None = None  # the loss, through accelerate's wrapper in a launch of several
    lock: object = None  # the run directory's lock, held by rank 0 while it trains
    console: Console | None = None  # quiet on every rank but 0
    dtype: str = "bfloat16"  # what runs: model.dtype, or float16 on a GPU without bfloat16
    scaler: torch.amp.GradScaler | None = None  # float16 only: gradients scaled so they do not underflow
    step: int = 0  # optimizer steps already taken (resumed runs)
    history: dict = field(default_factory=dict)  # train/eval events so far, for the guards

    @property
    def device(self):
        return self.accelerator.device

    def epoch(self, step: int) -> float:
        return round(step / steps_per_epoch(len(self.data.train), self.config.train.batch_size), 4)


def start_run(config: Config, resume: bool, console: Console, device_choice: str = "auto") -> Session:
    run = RunDir(config.output_dir)
    trackers.check_installed(config.train.report_to)  # refused before anything is loaded
    device = pick_device(device_choice)
    accelerator = make_accelerator(device, **trackers.accelerator_options(config, run))
    ranks = launch_ranks(accelerator, config)  # refusals before anything is loaded
    console = console if ranks.main else Console(quiet=True)  # one voice for the launch
    precision_note = _accelerate_precision_note(config)
    if ranks.engine == "FSDP":
        console.print(Text.assemble(("note: ", "yellow"), "accelerate's FSDP config is taken as train.strategy fsdp: "
                                    "tunewise shards each decoder layer with torch's fully_shard; the config's other "
                                    "FSDP settings are not used"))
    _check_run_dir(run, resume)
    changes = config_changes(run, config) if resume else []  # refusals before any weight is loaded
    dtype, dtype_note = compute_dtype(config.model.dtype, device)
    _check_sharding(ranks, config, dtype)
    lock = _claim(run, ranks)
    set_seed(config.train.seed)  # the same on every rank: the adapters start identical
    for note in (dtype_note, precision_note):
        if note:
            console.print(Text.assemble(("note: ", "yellow"), note))

    source = resolve_model(config.model.name)
    tokenizer = load_tokenizer(source, config.model.trust_remote_code)
    parent = find_parent(config.lora.init_from) if config.lora.init_from else None  # train --from
    if parent:
        check_parent(parent, config, source, template_hash(tokenizer))  # before any weight is loaded
    data = prepare_data(config, tokenizer, source)
    for line in [data.train_stats.summary("train", config.data.max_seq_len),
                 data.val_stats.summary("val", config.data.max_seq_len), *data.notes]:
        console.print(line)
    model, packed, speed_record = _model(config, source, dtype, accelerator.device, console, parent)
    data, replay_record = mix_replay(config, data, model, tokenizer, source, console)  # data.replay
    resume_from = _resume_weights(run, model, ranks) if resume else None  # before FSDP shards the weights
    forward = wrap_loss(accelerator, model, ranks)
    if ranks.rank:  # each rank draws its own dropout masks
        set_seed(config.train.seed + ranks.rank)
    token_budget, memory_warning = micro_batch_budget(config, model, data, accelerator.device)
    token_budget = all_min(accelerator, token_budget)  # one plan on every rank, or collectives mismatch
    if memory_warning:
        console.print(Text.assemble(("warning: ", "yellow"), memory_warning))

    tc = config.train
    total_steps = math.ceil(tc.epochs * steps_per_epoch(len(data.train), tc.batch_size))
    total_steps = min(total_steps, tc.max_steps) if tc.max_steps else total_steps
    optimizer = make_optimizer(model, tc.lr, tc.weight_decay)
    session = Session(config, run, accelerator, model, tokenizer.pad_token_id, data, packed, token_budget,
                      total_steps, optimizer, make_scheduler(optimizer, tc.scheduler, tc.warmup_ratio, total_steps),
                      EarlyStopping(tc.early_stopping_patience), RunLog(run, writes=ranks.main), ranks, forward,
                      lock, console, dtype, torch.amp.GradScaler(device.type) if needs_grad_scaler(dtype) else None)
    if resume:
        session.step = _resume(session, resume_from, console, changes)
    session.history = _history(session.log, session.step)
    _write_records(session, source, tokenizer, speed_record)
    session.log.write_manifest(parent=parent.record() if parent else None, replay=replay_record)
    trackers.start(accelerator, config, run)  # last: a run refused above leaves no tracker runs behind
    session.log.tracker = accelerator if config.train.report_to else None
    return session


def make_accelerator(device: torch.device, **options) -> Accelerator:
    """mixed_precision "no", whatever the accelerate config says: model.dtype sets the precision, and an
    fp16 config would have accelerate scale the loss with a GradScaler this loop never unscales.
    `options`: the trackers' (train/trackers.py)."""
    return Accelerator(cpu=device.type == "cpu", mixed_precision="no", **options)


def _accelerate_precision_note(config: Config) -> str | None:
    """accelerate's mixed precision from its config or `--mixed_precision`, which tunewise sets aside."""
    asked = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if asked == "no":
        return None
    return (f"accelerate's mixed_precision {asked} is not used: model.dtype ({config.model.dtype}) sets the "
            "precision, and a float16 model gets tunewise's own gradient scaler")


def _check_sharding(ranks: Ranks, config: Config, dtype: str) -> None:
    """What FSDP cannot take here, refused before any weight is loaded."""
    if not ranks.sharded:
        return
    if dtype == "float16":
        raise TunewiseError("train.strategy fsdp with model.dtype float16 (a GPU without bfloat16) is not supported: "
                            "the float16 gradient scaler is not verified on sharded gradients. Use "
                            "model.dtype=float32, or train.strategy=ddp")


def _claim(run: RunDir, ranks: Ranks):
    """Rank 0 makes the run directory and holds its lock: a second `tunewise train` into it, or a
    launch of several processes that accelerate did not join up, is refused rather than mixed in."""
    lock = None
    if ranks.main:
        ckpt.ensure_writable(run)
        lock = hold_lock(run.lock, f"output_dir {run.path}")
    return lock


def _model(config: Config, source: str, dtype: str, device, console: Console, parent=None):
    """The base model with LoRA adapters (new, or the parent's to continue) and every speed path it
    can take (each said if not)."""
    model = load_model(source, dtype, config.model.quantization, device, config.model.trust_remote_code)
    release_freed_memory(device)  # what loading and quantizing freed
    if parent:
        model = load_lora(model, parent.adapter, config.lora, config.train.gradient_checkpointing)
    else:
        model = add_lora(model, config.lora, config.train.gradient_checkpointing)
    speed = apply_speed_paths(model)  # each applied, or stepped aside with one line (train/patches.py)
    for note in speed.notes:
        console.print(Text.assemble(("note: ", "yellow"), note))
    return model, speed.packed, speed.record


def _write_records(s: Session, source: str, tokenizer, speed_record: dict) -> None:
    config = s.config
    s.log.write_config(config)
    s.log.write_manifest(
        model=config.model.name, model_source=source, chat_template_sha256=template_hash(tokenizer),
        data={k: {"path": p, "sha256": tree_sha256(p)} for k, p in
              (("train", config.data.train), ("val", config.data.val)) if p},
        started=datetime.now(timezone.utc).isoformat(), micro_batch_tokens=s.token_budget, packed=s.packed,
        speed_paths=speed_record, device=str(s.device), dtype=s.dtype, grad_scaler=s.scaler is not None,
        world_size=s.ranks.world, engine=s.ranks.engine, strategy=s.ranks.strategy, patches=applied_patches(),
    )


def _check_run_dir(run: RunDir, resume: bool) -> None:
    if run.holds_training() and not resume:
        raise TunewiseError(f"{run.path} already holds a run; pass --resume to continue it, "
                            "or set output_dir=... to start a new one")
    if resume and not run.holds_training():
        raise TunewiseError(f"--resume: {run.path} holds no checkpoint to resume from")


def _resume_weights(run: RunDir, model, ranks: Ranks):
    """The checkpoint to resume from, its adapter weights loaded into the unsharded model."""
    path = ckpt.latest_checkpoint(run)
    if path is None:
        raise TunewiseError(f"--resume: no complete checkpoint under {run.checkpoints}")
    ckpt.check_launch(path, ranks)
    ckpt.load_adapter_weights(path, model)
    return path


def _resume(s: Session, path, console: Console, changes: list) -> int:
    """Optimizer (this rank's shard under FSDP), schedule position, RNG and early stopping from the
    checkpoint whose weights `_resume_weights` loaded; the config's settings where they differ
    (train/resume.py), said as they take effect."""
    meta, rng = ckpt.load_checkpoint(path, s.optimizer, s.scheduler, s.scaler, s.ranks)
    apply_hyperparameters(s.optimizer, s.scheduler, s.config.train.lr, s.config.train.weight_decay)
    note = restore_rng(rng, s.ranks, s.device)
    if note:
        console.print(Text.assemble(("note: ", "yellow"), note))
    s.stopper.load(meta["early_stopping"])
    s.log.truncate_after(meta["step"])
    console.print(f"resumed from {path} (step {meta['step']})")
    if changes:  # shown, not logged as an event: metrics.jsonl keeps reading like one run
        total = (meta.get("total_steps", s.total_steps), s.total_steps)
        line = describe(changes, meta["step"], s.optimizer.param_groups[0]["lr"], total)
        console.print(Text.assemble(("note: ", "yellow"), line))
    return meta["step"]


def _history(log: RunLog, step: int) -> dict[str, list[dict]]:
    events = log.read_events()
    return {kind: [e for e in events if e.get("event") == kind and e.get("step", 0) <= step]
            for kind in ("train", "eval")}
