"""The training loop: read it top to bottom (setup is in session.py).

One optimizer step = `train.batch_size` sequences, split into length-grouped micro-batches. Each
micro-batch's loss is the *sum* over its trained tokens divided by the trained-token count of the
whole step, so accumulating micro-batches gives exactly the gradient of the full batch (the
torchtune normalisation; averaging per micro-batch would weight short examples more).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from ..config import Config
from ..data.batching import count_trained, micro_batches, step_indices
from . import checkpoint as ckpt
from .curves import plot_losses
from .guards import OverfitWatch, SpikeGuard, check_finite
from .loss import summed_loss
from .memory import peak_memory_mib, release_freed_memory
from .packing import is_packed, make_batch, real_tokens
from .runlog import RunLog
from .session import Session, start_run


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    best_step: int
    best_val_loss: float
    stopped_early: bool
    seconds: float
    trained_tokens: int


def train(config: Config, resume: bool = False, console: Console | None = None, device: str = "auto") -> TrainResult:
    console = console or Console()
    started = time.time()
    s = start_run(config, resume, console, device)
    tc, stopper, step = config.train, s.stopper, s.step
    trained_tokens, stopped_early = 0, False
    spikes, overfit = SpikeGuard(), OverfitWatch()
    s.model.train()
    with _progress(console) as progress:
        task = progress.add_task("train", total=s.total_steps, completed=step, loss="-", val="-", lr="-", tps="-")
        while step < s.total_steps and not stopped_early:
            event, step_tokens = train_step(s, step)
            step += 1
            trained_tokens += step_tokens
            s.history["train"].append(event)
            if step % tc.log_every == 0 or step == s.total_steps:
                s.log.log(**event)
            _warn(console, s.log, step, spikes.update(step, event["loss"]))
            progress.update(task, completed=step, loss=f"{event['loss']:.4f}", lr=f"{event['lr']:.2e}",
                            tps=f"{event['tokens_per_s']:.0f}")

            if step % tc.eval_every == 0 or step == s.total_steps:
                val_loss = validate(s, step)
                progress.update(task, val=f"{val_loss:.4f}")
                _warn(console, s.log, step, overfit.update(s.history["train"], s.history["eval"]))
                stopped_early = stopper.should_stop and step < s.total_steps
                if stopped_early:
                    console.print(f"early stopping at step {step}: val loss has not improved for "
                                  f"{stopper.bad_evals} evaluations (best {stopper.best_loss:.4f} "
                                  f"at step {stopper.best_step})")
            if step % tc.save_every == 0 or step == s.total_steps or stopped_early:
                ckpt.save_checkpoint(s.run, step, s.model, s.optimizer, s.scheduler,
                                     {"early_stopping": stopper.state(), "total_steps": s.total_steps}, s.scaler)

    seconds = time.time() - started
    plot_losses(s.run.metrics, s.run.loss_png)
    s.log.write_manifest(finished=datetime.now(timezone.utc).isoformat(), steps=step,
                         best_step=stopper.best_step, best_val_loss=stopper.best_loss)
    console.print(f"done: {step} steps in {seconds:.0f}s; best val loss {stopper.best_loss:.4f} at step "
                  f"{stopper.best_step}; adapter: {s.run.adapter}")
    return TrainResult(s.run.path, step, stopper.best_step, stopper.best_loss, stopped_early, seconds, trained_tokens)


def train_step(s: Session, step: int) -> tuple[dict, int]:
    """One optimizer step (the `step`-th, from 0); returns its metrics event and trained tokens."""
    tc = s.config.train
    tick = time.perf_counter()
    lengths = [len(x.input_ids) for x in s.data.train]
    indices = step_indices(len(s.data.train), tc.batch_size, tc.seed, step)
    batches = [make_batch([s.data.train[i] for i in group], s.pad_id, s.packed)
               for group in micro_batches(indices, lengths, tc.micro_batch_size, s.token_budget)]
    loss, step_tokens = accumulate_gradients(s.model, batches, s.accelerator, s.scaler)
    check_finite(loss, step + 1)  # before the update, so no NaN reaches the weights
    if s.scaler:
        s.scaler.unscale_(s.optimizer)  # clip the true gradients
    grad_norm = s.accelerator.clip_grad_norm_(s.model.parameters(), tc.max_grad_norm) if tc.max_grad_norm else None
    skipped = _update(s)
    if not skipped:  # a skipped update leaves the schedule where it was
        s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - tick
    tokens = sum(real_tokens(b) for b in batches)
    event = dict(event="train", step=step + 1, epoch=s.epoch(step + 1), loss=loss, lr=s.scheduler.get_last_lr()[0],
                 grad_norm=float(grad_norm) if grad_norm is not None and not skipped else None,
                 tokens_per_s=tokens / seconds, trained_tokens_per_s=step_tokens / seconds,
                 peak_mem_mib=round(peak_memory_mib(s.device)))
    if skipped:
        event["skipped"] = "fp16 gradients overflowed: no update, the gradient scale was lowered"
    return event, step_tokens


def _update(s: Session) -> bool:
    """The optimizer step; True when the fp16 gradient scaler skipped it (gradients overflowed)."""
    if s.scaler is None:
        s.optimizer.step()
        return False
    scale = s.scaler.get_scale()
    s.scaler.step(s.optimizer)
    s.scaler.update()
    return s.scaler.get_scale() < scale


def validate(s: Session, step: int) -> float:
    """Validation loss at `step`; the adapter is saved when it is the best so far."""
    release_freed_memory(s.device)  # see train/memory.py: once per eval, not per step
    val_loss = evaluate(s.model, s.data.val, s.pad_id, s.device, s.config.train.micro_batch_size, s.token_budget)
    improved = s.stopper.update(step, val_loss)
    s.history["eval"].append(dict(event="eval", step=step, epoch=s.epoch(step), val_loss=val_loss, best=improved))
    s.log.log(**s.history["eval"][-1])
    if improved:
        ckpt.save_adapter(s.model, s.run.adapter)
    return val_loss


def accumulate_gradients(model, batches: list[dict], accelerator, scaler=None) -> tuple[float, int]:
    """Backward over one optimizer step's micro-batches; return (mean loss per trained token, token count).

    Each micro-batch contributes sum(token losses) / (trained tokens of the whole step), so the
    accumulated gradient equals the full batch's gradient whatever the micro-batch split.
    """
    step_tokens = sum(count_trained(b) for b in batches)
    loss_sum = 0.0
    for batch in batches:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        micro_loss, _ = summed_loss(model, batch)
        scaled = micro_loss / step_tokens
        accelerator.backward(scaler.scale(scaled) if scaler else scaled)
        loss_sum += micro_loss.item()
    return loss_sum / step_tokens, step_tokens


@torch.no_grad()
def evaluate(model, examples, pad_id: int, device, micro_batch_size: int | str = "auto",
             token_budget: int | None = None) -> float:
    """Mean loss per trained token over the whole validation set (not a mean of batch means),
    in micro-batches of the run's own setting."""
    model.eval()
    lengths = [len(x.input_ids) for x in examples]
    packed = is_packed(model)
    total, count = 0.0, 0
    budget = {} if token_budget is None else {"token_budget": token_budget}
    for group in micro_batches(list(range(len(examples))), lengths, micro_batch_size, **budget):
        batch = {k: v.to(device) for k, v in make_batch([examples[i] for i in group], pad_id, packed).items()}
        loss, n = summed_loss(model, batch)
        total, count = total + loss.item(), count + n
    model.train()
    return total / max(count, 1)


def _warn(console: Console, log: RunLog, step: int, message: str | None) -> None:
    if message:  # as Text: values from configs and data are never read as rich markup
        console.print(Text.assemble(("warning: ", "yellow"), message))
        log.log(event="guard", step=step, message=message)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  val {task.fields[val]}  lr {task.fields[lr]}  {task.fields[tps]} tok/s"),
        TimeRemainingColumn(), console=console, transient=False,
    )
