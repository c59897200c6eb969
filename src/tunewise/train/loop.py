"""The training loop: read it top to bottom (setup is in session.py).

One optimizer step = `train.batch_size` sequences, split into length-grouped micro-batches. Each
micro-batch's loss is the *sum* over its trained tokens divided by the trained-token count of the
whole step, so accumulating micro-batches gives exactly the gradient of the full batch (the
torchtune normalisation; averaging per micro-batch would weight short examples more).

In a launch of several processes the step's sequences are shared among the ranks, the token count
is the whole step's on all ranks, and only rank 0 writes (train/distributed.py).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
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
from . import trackers
from .curves import plot_losses
from .distributed import MicroBatch, all_sum, no_sync, rank_micro_batches, rng_states
from .fsdp import full_adapter_state
from .guards import OverfitWatch, SpikeGuard, check_finite
from .loss import LossForward
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
    started = time.time()
    s = start_run(config, resume, console or Console(), device)
    try:
        return _steps(s, started)
    finally:  # a stopped run's tracker runs are closed too (TensorBoard flushed, the MLflow run ended)
        trackers.finish(s.accelerator)


def _steps(s: Session, started: float) -> TrainResult:
    """Every step from the session's to the end, with evaluations, checkpoints and the guards."""
    config = s.config
    console, tc, stopper, step = s.console, config.train, s.stopper, s.step
    trained_tokens, stopped_early = 0, False
    spikes, overfit = SpikeGuard(), OverfitWatch()
    s.forward.train()
    with _progress(console, s.ranks.main) as progress:
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
                save(s, step)

    seconds = time.time() - started
    if s.ranks.main:
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
    loss, step_tokens, tokens = step_gradients(s, step)
    check_finite(loss, step + 1)  # before the update, so no NaN reaches the weights
    if s.scaler:
        s.scaler.unscale_(s.optimizer)  # clip the true gradients
    grad_norm = s.accelerator.clip_grad_norm_(s.forward.parameters(), tc.max_grad_norm) if tc.max_grad_norm else None
    lr = s.optimizer.param_groups[0]["lr"]  # what this update uses (the scheduler's step below sets the next one)
    skipped = _update(s)
    if not skipped:  # a skipped update leaves the schedule where it was
        s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - tick
    event = dict(event="train", step=step + 1, epoch=s.epoch(step + 1), loss=loss, lr=lr,
                 grad_norm=float(grad_norm) if grad_norm is not None and not skipped else None,
                 tokens_per_s=tokens / seconds, trained_tokens_per_s=step_tokens / seconds,
                 peak_mem_mib=round(peak_memory_mib(s.device)))
    if skipped:
        event["skipped"] = "fp16 gradients overflowed: no update, the gradient scale was lowered"
    return event, step_tokens


def step_gradients(s: Session, step: int) -> tuple[float, int, int]:
    """The `step`-th step's gradients, all-reduced over the ranks; returns (loss per trained token,
    trained tokens, tokens), each over the whole step."""
    tc = s.config.train
    lengths = [len(x.input_ids) for x in s.data.train]
    indices = step_indices(len(s.data.train), tc.batch_size, tc.seed, step,  # the whole step, all ranks
                           lengths if tc.group_by_length else None)
    plan = rank_micro_batches(indices, lengths, tc.micro_batch_size, s.token_budget, s.ranks)
    batches = [make_batch([s.data.train[i] for i in m.indices], s.pad_id, s.packed) for m in plan]
    loss, step_tokens = accumulate_gradients(s.forward, batches, s.accelerator, s.scaler, [m.weight for m in plan])
    (tokens,) = all_sum(s.accelerator, sum(real_tokens(b) for b, m in zip(batches, plan) if m.weight))
    return loss, step_tokens, int(tokens)


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
    val_loss = validation_loss(s)
    improved = s.stopper.update(step, val_loss)  # the same on every rank: the loss is reduced over all
    s.history["eval"].append(dict(event="eval", step=step, epoch=s.epoch(step), val_loss=val_loss, best=improved))
    s.log.log(**s.history["eval"][-1])
    if improved:
        state = full_adapter_state(s.model) if s.ranks.sharded else None  # a collective under FSDP
        if s.ranks.main:
            ckpt.save_adapter(s.model, s.run.adapter, state)
    return val_loss


def validation_loss(s: Session) -> float:
    """Mean loss per trained token over the whole validation set (not a mean of batch means),
    each rank taking a share, in micro-batches of the run's own setting."""
    val = s.data.val
    plan = rank_micro_batches(list(range(len(val))), [len(x.input_ids) for x in val],
                              s.config.train.micro_batch_size, s.token_budget, s.ranks)
    total, count = all_sum(s.accelerator, *loss_sums(s.forward, val, plan, s.pad_id, s.device, s.packed))
    return total / max(count, 1)


def save(s: Session, step: int) -> None:
    """A checkpoint, written by rank 0 with every rank's random generators (and, under FSDP, the
    gathered adapter and every rank's optimizer shard)."""
    rng = rng_states(s.accelerator)  # a collective: every rank takes part
    adapter, shards = None, None
    if s.ranks.sharded:
        adapter = full_adapter_state(s.model)  # a collective too
        shards = ckpt.stage_optimizer_shard(s.run, step, s.optimizer, s.ranks.rank)
        s.accelerator.wait_for_everyone()  # every shard on disk before rank 0 collects them
    if s.ranks.main:
        ckpt.save_checkpoint(s.run, step, s.model, s.optimizer, s.scheduler,
                             {"early_stopping": s.stopper.state(), "total_steps": s.total_steps,
                              "world_size": s.ranks.world, "strategy": s.ranks.strategy}, rng, s.scaler,
                             adapter, shards)


def accumulate_gradients(forward, batches: list[dict], accelerator, scaler=None,
                         weights: list[float] | None = None) -> tuple[float, int]:
    """Backward over one optimizer step's micro-batches; return (mean loss per trained token, token count),
    both over the whole step (all ranks).

    Each micro-batch contributes sum(token losses) x world / (trained tokens of the whole step), so
    the accumulated (and, over ranks, averaged) gradient equals the full batch's whatever the split.
    `forward` is the loss module (train/loss.LossForward, wrapped by accelerate in a launch of
    several); a weight of 0 marks a stand-in micro-batch that adds nothing.
    """
    weights = weights or [1.0] * len(batches)
    world = accelerator.num_processes
    (step_tokens,) = all_sum(accelerator, sum(count_trained(b) for b, w in zip(batches, weights) if w))
    loss_sum = 0.0
    for i, (batch, weight) in enumerate(zip(batches, weights)):
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        last = i == len(batches) - 1
        with nullcontext() if last else no_sync(accelerator, forward):  # gradients cross ranks once per step
            micro_loss = forward(batch) * weight
            scaled = micro_loss * world / step_tokens
            accelerator.backward(scaler.scale(scaled) if scaler else scaled)
        loss_sum += micro_loss.item()
    (loss_sum,) = all_sum(accelerator, loss_sum)
    return loss_sum / step_tokens, int(step_tokens)


def loss_sums(forward, examples, plan: list[MicroBatch], pad_id: int, device, packed: bool) -> tuple[float, int]:
    """(summed token loss, trained tokens) over this rank's micro-batches of `examples`, no gradients."""
    forward.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for m in plan:
            batch = {k: v.to(device) for k, v in make_batch([examples[i] for i in m.indices], pad_id, packed).items()}
            loss = forward(batch)
            if m.weight:
                total, count = total + loss.item(), count + count_trained(batch)
    forward.train()
    return total, count


def evaluate(model, examples, pad_id: int, device, micro_batch_size: int | str = "auto",
             token_budget: int | None = None) -> float:
    """Mean loss per trained token of a PEFT model over `examples` (not a mean of batch means), in one
    process, in micro-batches of the run's own setting."""
    lengths = [len(x.input_ids) for x in examples]
    budget = {} if token_budget is None else {"token_budget": token_budget}
    plan = [MicroBatch(g) for g in micro_batches(list(range(len(examples))), lengths, micro_batch_size, **budget)]
    total, count = loss_sums(LossForward(model), examples, plan, pad_id, device, is_packed(model))
    return total / max(count, 1)


def _warn(console: Console, log: RunLog, step: int, message: str | None) -> None:
    if message:  # as Text: values from configs and data are never read as rich markup
        console.print(Text.assemble(("warning: ", "yellow"), message))
        log.log(event="guard", step=step, message=message)


def _progress(console: Console, shown: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  val {task.fields[val]}  lr {task.fields[lr]}  {task.fields[tps]} tok/s"),
        TimeRemainingColumn(), console=console, transient=False, disable=not shown,
    )
