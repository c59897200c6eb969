#!/usr/bin/env python3
"""Where one training step's time goes, per op class (issue 23): torch.profiler over tunewise's own
step on the SQL benchmark's setup (bench_train.py (c): the first N SQL train examples, the bundled
model, QLoRA or LoRA r16 on all linear layers, 8 sequences a step).

Every profiled op's *self* time is put in one class, by name and input shapes:
  frozen matmul   mm/addmm/linear on the base's weight shapes (and, under QLoRA, their 4-bit dequantize)
  LoRA matmul     a matmul with the rank (16) as one of its dimensions, and the fused dropout mask
  attention       batched matmuls and the softmax of packed attention, SDPA
  loss            the LM head at trained positions and the fused cross-entropy (vocabulary-sized shapes)
  optimizer       everything under AdamW's step, grad clipping, zero_grad
  data            building the packed batch (make_batch) and its copy to the device
  norms/rotary/elementwise   the rest of aten (RMSNorm, rotary, SiLU, adds, casts, copies)
  python/dispatch the step's wall time not inside any profiled op (Python, autograd bookkeeping)

    .venv/bin/python benchmarks/profile_step.py --steps 3 [--quant none] [--examples 240] [--by-op]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_step.py --quant none --batch 1   # a quickstart rank
    .venv/bin/python benchmarks/profile_step.py --steps 10 --plain   # wall time only, no profiler

It also prints a step's minor page faults and kernel CPU time (getrusage over the profiled steps;
the profiler's own allocations are in them, so compare them between runs of this script only).
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parents[1]
SQL = ROOT / "examples" / "sql"
CLASSES = ["frozen matmul", "LoRA matmul", "attention", "loss", "norms/rotary/elementwise", "optimizer", "data",
           "python/dispatch"]
MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear"}


def config_file(work: Path, examples: int, quant: str, batch: int = 8) -> Path:
    lines = (SQL / "train.jsonl").read_text().splitlines()[:examples]
    (work / "train.jsonl").write_text("\n".join(lines) + "\n")
    config = {"model": {"name": "smollm2-135m-instruct", "quantization": quant},
              "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
              "data": {"train": str(work / "train.jsonl"), "val": str(SQL / "val.jsonl"), "max_seq_len": 2048,
                       "allow_small": True},
              "train": {"epochs": 1, "batch_size": batch, "lr": 2e-4, "eval_every": 10**6, "save_every": 10**6,
                        "seed": 0}, "output_dir": str(work / "run")}
    path = work / "config.yaml"
    path.write_text(json.dumps(config))
    return path


def classify(name: str, shapes: list, in_optimizer: bool, in_data: bool, rank: int, vocab: int,
             in_attention: bool = False) -> str:
    if in_optimizer:
        return "optimizer"
    if in_data:
        return "data"
    if in_attention:  # everything inside the CPU block kernel (train/block_attention.py), its softmax and masks too
        return "attention"
    dims = {d for s in shapes if isinstance(s, list) for d in s}
    if vocab in dims or "cross_entropy" in name or "log_softmax" in name or "logsumexp" in name:
        return "loss"
    if "dequantize" in name or "bitsandbytes" in name:
        return "frozen matmul"
    if name in MATMULS:
        if rank in dims:
            return "LoRA matmul"
        if name in ("aten::bmm", "aten::baddbmm") or any(isinstance(s, list) and len(s) >= 3 for s in shapes):
            return "attention"
        return "frozen matmul"
    if "randint" in name or "random_" in name:
        return "LoRA matmul"
    if "softmax" in name or "scaled_dot_product" in name or "flash_attention" in name:
        return "attention"
    return "norms/rotary/elementwise"


class Ranges:
    """The time ranges of every event with one of `labels`, sorted by start, for `inside`."""

    def __init__(self, events, *labels: str):
        spans = sorted((e.time_range.start, e.time_range.end) for e in events if e.name in labels)
        self.starts = [a for a, _ in spans]
        self.reach = list(itertools.accumulate((b for _, b in spans), max))  # the furthest end so far


def inside(event, ranges: Ranges) -> bool:
    """Whether the event lies within one of the ranges (nested or overlapping ones included)."""
    at = bisect.bisect_right(ranges.starts, event.time_range.start) - 1
    return at >= 0 and event.time_range.end <= ranges.reach[at]


def switch_off(path: str) -> None:
    """Run without one speed path, to measure what it gains (same process setup otherwise)."""
    from tunewise.train import patches

    if path == "lora_add":
        patches.fuse_lora_add = lambda model: 0
    else:
        raise SystemExit(f"--without: unknown speed path {path!r}")


def profile_steps(config_path: Path, steps: int, warmup: int,
                  plain: bool = False) -> tuple[dict, float, int, dict, dict]:
    from rich.console import Console

    from tunewise.config import load_config
    from tunewise.train import loop
    from tunewise.train.session import start_run

    config = load_config(config_path)
    s = start_run(config, False, Console(quiet=True), "cpu")
    s.forward.train()
    make_batch = loop.make_batch

    def labelled_make_batch(*args, **kwargs):
        with record_function("tunewise.data"):
            return make_batch(*args, **kwargs)

    loop.make_batch = labelled_make_batch
    clip = s.accelerator.clip_grad_norm_

    def labelled_clip(*args, **kwargs):
        with record_function("tunewise.clip"):
            return clip(*args, **kwargs)

    s.accelerator.clip_grad_norm_ = labelled_clip
    for step in range(warmup):
        loop.train_step(s, step)
    if plain:  # wall time only: the profiler's cost per op inflates paths made of many small ops
        tick = time.perf_counter()
        for step in range(warmup, warmup + steps):
            loop.train_step(s, step)
        return {}, time.perf_counter() - tick, steps, {}, {}
    vocab = s.model.get_input_embeddings().weight.shape[0]
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        before = resource.getrusage(resource.RUSAGE_SELF)
        tick = time.perf_counter()
        for step in range(warmup, warmup + steps):
            loop.train_step(s, step)
        wall = time.perf_counter() - tick
        after = resource.getrusage(resource.RUSAGE_SELF)
    # page faults and kernel time: fresh buffers above glibc's mmap threshold are faulted in page by page
    # (how the CPU loss chunk was found, plan.loss_chunk)
    kernel = {"minor page faults": (after.ru_minflt - before.ru_minflt) / steps,
              "kernel CPU s": (after.ru_stime - before.ru_stime) / steps}
    events = [e for e in prof.events() if e.device_type.name == "CPU"]
    optim = Ranges(events, "Optimizer.step#AdamW.step", "tunewise.clip")
    data = Ranges(events, "tunewise.data")
    attention = Ranges(events, "_BlockCausal", "_BlockCausalBackward")
    seconds: dict[str, float] = defaultdict(float)
    ops: dict[tuple, float] = defaultdict(float)
    for e in events:
        if e.name.startswith("tunewise.") or e.name.startswith("Optimizer."):
            continue  # labels, not ops: their self time is Python, counted below
        if not e.name.startswith("aten::") and "bitsandbytes" not in e.name:
            continue  # autograd nodes and other wrappers: their children are the ops
        cls = classify(e.name, e.input_shapes or [], inside(e, optim), inside(e, data), s.config.lora.r, vocab,
                       inside(e, attention))
        seconds[cls] += e.self_cpu_time_total / 1e6
        ops[(cls, e.name, str(e.input_shapes))] += e.self_cpu_time_total / 1e6
    seconds["python/dispatch"] = max(wall - sum(seconds.values()), 0.0)
    return seconds, wall, steps, ops, kernel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=240)
    parser.add_argument("--quant", default="nf4", choices=["nf4", "none"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="sequences a step (the quickstart trains 2)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--top", type=int, default=0, help="also list the N ops (name, shapes) that took longest")
    parser.add_argument("--by-op", action="store_true", help="also list each class's time by op name")
    parser.add_argument("--without", action="append", default=[], help="a speed path to switch off: lora_add")
    parser.add_argument("--json", help="write the table as JSON here too")
    parser.add_argument("--plain", action="store_true",
                        help="time the steps without the profiler: no table, --top or --by-op")
    args = parser.parse_args()
    for path in args.without:
        switch_off(path)
    work = Path(tempfile.mkdtemp(prefix="tunewise-profile-"))
    config = config_file(work, args.examples, args.quant, args.batch)
    seconds, wall, steps, ops, kernel = profile_steps(config, args.steps, args.warmup, args.plain)
    print(f"{steps} steps {'timed without the profiler' if args.plain else 'profiled'}, {wall:.2f} s wall "
          f"({wall / steps:.2f} s a step), "
          f"quant={args.quant}, "
          f"without {args.without or 'nothing'}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.plain:
        if args.json:
            Path(args.json).write_text(json.dumps({"wall": wall, "steps": steps, "profiled": False}))
        return
    print("| op class | s a step | share |\n|---|---|---|")
    for cls in CLASSES:
        print(f"| {cls} | {seconds[cls] / steps:.3f} | {seconds[cls] / wall:.1%} |")
    print(f"a step: {kernel['minor page faults']:.0f} minor page faults, "
          f"{kernel['kernel CPU s']:.2f} s of kernel CPU time")
    for (cls, name, shapes), t in sorted(ops.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"{t / steps:7.3f} s  {cls:<26} {name} {shapes[:150]}")
    if args.by_op:
        by_op: dict[tuple, float] = defaultdict(float)
        for (cls, name, _), t in ops.items():
            by_op[(cls, name)] += t
        for (cls, name), t in sorted(by_op.items(), key=lambda kv: -kv[1]):
            if t / steps >= 0.005:
                print(f"{t / steps:7.3f} s  {cls:<26} {name}")
    if args.json:
        Path(args.json).write_text(json.dumps({"wall": wall, "steps": steps, "seconds": dict(seconds), **kernel}))


if __name__ == "__main__":
    sys.exit(main())
