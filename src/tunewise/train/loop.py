"""The training loop: read it top to bottom.

One optimizer step = `train.batch_size` sequences, split into length-grouped micro-batches. Each
micro-batch's loss is the *sum* over its trained tokens divided by the trained-token count of the
whole step, so accumulating micro-batches gives exactly the gradient of the full batch (the
torchtune normalisation; averaging per micro-batch would weight short examples more).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from rich.console import Console
from rich.text import Text
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..config import Config
from ..data.batching import count_trained, micro_batches, step_indices, steps_per_epoch
from ..data.template import template_hash
from ..errors import TunewiseError
from ..evaluate.report import plot_losses
from ..model.load import load_model, load_tokenizer, resolve_model
from ..model.lora import add_lora
from . import checkpoint as ckpt
from .early_stop import EarlyStopping
from .guards import OverfitWatch, SpikeGuard, check_finite
from .loss import summed_loss
from .memory import peak_memory_mib, release_freed_memory
from .optim import make_optimizer, make_scheduler
from .packing import is_packed, make_batch, real_tokens
from .runlog import RunLog, file_sha256
from .setup import micro_batch_budget, prepare_data
from .patches import apply_speed_paths


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    best_step: int
    best_val_loss: float
    stopped_early: bool
    seconds: float
    trained_tokens: int


def train(config: Config, resume: bool = False, console: Console | None = None) -> TrainResult:
    console = console or Console()
    run_dir = Path(config.output_dir)
    _check_run_dir(run_dir, resume)
    ckpt.ensure_writable(run_dir)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    set_seed(config.train.seed)
    started = time.time()

    source = resolve_model(config.model.name)
    tokenizer = load_tokenizer(source, config.model.trust_remote_code)
    data = prepare_data(config, tokenizer, source)
    for line in [data.train_stats.summary("train", config.data.max_seq_len),
                 data.val_stats.summary("val", config.data.max_seq_len), *data.notes]:
        console.print(line)

    model = load_model(source, config.model.dtype, config.model.quantization, accelerator.device,
                       config.model.trust_remote_code)
    release_freed_memory(accelerator.device)  # what loading and quantizing freed
    model = add_lora(model, config.lora, config.train.gradient_checkpointing)
    speed = apply_speed_paths(model)  # each applied, or stepped aside with one line (train/patches.py)
    for note in speed.notes:
        console.print(Text.assemble(("note: ", "yellow"), note))
    packed = speed.packed
    tc = config.train
    token_budget, memory_warning = micro_batch_budget(config, model, data, accelerator.device)
    if memory_warning:
        console.print(Text.assemble(("warning: ", "yellow"), memory_warning))
    total_steps = math.ceil(tc.epochs * steps_per_epoch(len(data.train), tc.batch_size))
    if tc.max_steps:
        total_steps = min(total_steps, tc.max_steps)
    optimizer = make_optimizer(model, tc.lr, tc.weight_decay)
    scheduler = make_scheduler(optimizer, tc.scheduler, tc.warmup_ratio, total_steps)
    stopper = EarlyStopping(tc.early_stopping_patience)

    log = RunLog(run_dir)
    step = _resume(run_dir, model, optimizer, scheduler, stopper, log, console) if resume else 0
    changes = _config_changes(run_dir, config) if resume else None
    if changes:  # shown, not logged as an event: metrics.jsonl keeps reading like one run
        console.print(Text.assemble(("warning: ", "yellow"), changes))
    log.write_config(config)
    log.write_manifest(
        model=config.model.name, model_source=source, chat_template_sha256=template_hash(tokenizer),
        data={k: {"path": p, "sha256": file_sha256(p)} for k, p in
              (("train", config.data.train), ("val", config.data.val)) if p},
        started=datetime.now(timezone.utc).isoformat(), micro_batch_tokens=token_budget, packed=packed,
        speed_paths=speed.record,
    )

    lengths = [len(x.input_ids) for x in data.train]
    pad_id = tokenizer.pad_token_id
    trained_tokens, stopped_early = 0, False
    spikes, overfit = SpikeGuard(), OverfitWatch()
    history = _history(log, step)  # train/eval events so far (resumed runs included), for the guards
    model.train()
    with _progress(console) as progress:
        task = progress.add_task("train", total=total_steps, completed=step, loss="-", val="-", lr="-", tps="-")
        while step < total_steps and not stopped_early:
            tick = time.perf_counter()
            indices = step_indices(len(data.train), tc.batch_size, tc.seed, step)
            batches = [make_batch([data.train[i] for i in group], pad_id, packed)
                       for group in micro_batches(indices, lengths, tc.micro_batch_size, token_budget)]
            loss, step_tokens = accumulate_gradients(model, batches, accelerator)
            check_finite(loss, step + 1)  # before the update, so no NaN reaches the weights
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), tc.max_grad_norm) if tc.max_grad_norm else None
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            seconds = time.perf_counter() - tick
            trained_tokens += step_tokens
            tokens = sum(real_tokens(b) for b in batches)
            lr = scheduler.get_last_lr()[0]
            epoch = round(step / steps_per_epoch(len(data.train), tc.batch_size), 4)
            event = dict(event="train", step=step, epoch=epoch, loss=loss, lr=lr,
                         grad_norm=float(grad_norm) if grad_norm is not None else None,
                         tokens_per_s=tokens / seconds, trained_tokens_per_s=step_tokens / seconds,
                         peak_mem_mib=round(peak_memory_mib(accelerator.device)))
            history["train"].append(event)
            if step % tc.log_every == 0 or step == total_steps:
                log.log(**event)
            _warn(console, log, step, spikes.update(step, loss))
            progress.update(task, completed=step, loss=f"{loss:.4f}", lr=f"{lr:.2e}", tps=f"{tokens / seconds:.0f}")

            if step % tc.eval_every == 0 or step == total_steps:
                release_freed_memory(accelerator.device)  # see train/memory.py: once per eval, not per step
                val_loss = evaluate(model, data.val, pad_id, accelerator.device)
                improved = stopper.update(step, val_loss)
                history["eval"].append(dict(event="eval", step=step, epoch=epoch, val_loss=val_loss, best=improved))
                log.log(**history["eval"][-1])
                progress.update(task, val=f"{val_loss:.4f}")
                if improved:
                    ckpt.save_adapter(model, run_dir / "adapter")
                _warn(console, log, step, overfit.update(history["train"], history["eval"]))
                stopped_early = stopper.should_stop and step < total_steps
                if stopped_early:
                    console.print(f"early stopping at step {step}: val loss has not improved for "
                                  f"{stopper.bad_evals} evaluations (best {stopper.best_loss:.4f} at step {stopper.best_step})")
            if step % tc.save_every == 0 or step == total_steps or stopped_early:
                ckpt.save_checkpoint(run_dir, step, model, optimizer, scheduler,
                                     {"early_stopping": stopper.state(), "total_steps": total_steps})

    seconds = time.time() - started
    plot_losses(log.metrics_path, run_dir / "report" / "loss.png")
    log.write_manifest(finished=datetime.now(timezone.utc).isoformat(), steps=step,
                       best_step=stopper.best_step, best_val_loss=stopper.best_loss)
    console.print(f"done: {step} steps in {seconds:.0f}s; best val loss {stopper.best_loss:.4f} at step "
                  f"{stopper.best_step}; adapter: {run_dir / 'adapter'}")
    return TrainResult(run_dir, step, stopper.best_step, stopper.best_loss, stopped_early, seconds, trained_tokens)


def accumulate_gradients(model, batches: list[dict], accelerator) -> tuple[float, int]:
    """Backward over one optimizer step's micro-batches; return (mean loss per trained token, token count).

    Each micro-batch contributes sum(token losses) / (trained tokens of the whole step), so the
    accumulated gradient equals the full batch's gradient whatever the micro-batch split.
    """
    step_tokens = sum(count_trained(b) for b in batches)
    loss_sum = 0.0
    for batch in batches:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        micro_loss, _ = summed_loss(model, batch)
        accelerator.backward(micro_loss / step_tokens)
        loss_sum += micro_loss.item()
    return loss_sum / step_tokens, step_tokens


@torch.no_grad()
def evaluate(model, examples, pad_id: int, device, micro_batch_size: int | str = "auto") -> float:
    """Mean loss per trained token over the whole validation set (not a mean of batch means)."""
    model.eval()
    lengths = [len(x.input_ids) for x in examples]
    packed = is_packed(model)
    total, count = 0.0, 0
    for group in micro_batches(list(range(len(examples))), lengths, micro_batch_size):
        batch = {k: v.to(device) for k, v in make_batch([examples[i] for i in group], pad_id, packed).items()}
        loss, n = summed_loss(model, batch)
        total, count = total + loss.item(), count + n
    model.train()
    return total / max(count, 1)


def _warn(console: Console, log: RunLog, step: int, message: str | None) -> None:
    if message:  # as Text: values from configs and data are never read as rich markup
        console.print(Text.assemble(("warning: ", "yellow"), message))
        log.log(event="guard", step=step, message=message)


def _config_changes(run_dir: Path, config: Config) -> str | None:
    """Resuming with other settings is allowed (say, more steps) but never silent."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    before, after = _flatten(yaml.safe_load(path.read_text())), _flatten(config.model_dump(mode="json"))
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if not changed:
        return None
    return "resuming with settings that differ from the run's config.yaml: " + ", ".join(
        f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in changed)


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _history(log: RunLog, step: int) -> dict[str, list[dict]]:
    events = log.read_events()
    return {kind: [e for e in events if e.get("event") == kind and e.get("step", 0) <= step] for kind in ("train", "eval")}


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    has_run = (run_dir / "checkpoints").exists() or (run_dir / "adapter").exists()
    if has_run and not resume:
        raise TunewiseError(f"{run_dir} already holds a run; pass --resume to continue it, "
                            "or set output_dir=... to start a new one")
    if resume and not has_run:
        raise TunewiseError(f"--resume: {run_dir} holds no checkpoint to resume from")


def _resume(run_dir, model, optimizer, scheduler, stopper, log, console) -> int:
    path = ckpt.latest_checkpoint(run_dir)
    if path is None:
        raise TunewiseError(f"--resume: no complete checkpoint under {run_dir / 'checkpoints'}")
    meta = ckpt.load_checkpoint(path, model, optimizer, scheduler)
    stopper.load(meta["early_stopping"])
    log.truncate_after(meta["step"])
    console.print(f"resumed from {path} (step {meta['step']})")
    return meta["step"]


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  val {task.fields[val]}  lr {task.fields[lr]}  {task.fields[tps]} tok/s"),
        TimeRemainingColumn(), console=console, transient=False,
    )
