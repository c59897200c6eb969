"""`tunewise quickstart`: data check, train, base vs tuned on unseen schemas, merge, one answer.

It runs the SQL example (package data: tunewise/examples/sql, also at examples/sql in a checkout)
on the bundled model and leaves
OUT/run, OUT/merged, OUT/eval.json and OUT/report.html (the test split: schemas never seen in
training), and OUT/eval-shift.json and OUT/report-shift.html (the style-shift split: other schemas
and questions from a second, independently written generator).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from .chat import reply
from .config import Config, dump_config, load_config
from .data.doctor import check
from .data.doctor_view import show
from .data.load import load_examples
from .device import pick_device
from .errors import TunewiseError
from .evaluate.compare import compare
from .evaluate.forgetting import ForgettingOptions
from .evaluate.forgetting_report import forgetting_table
from .evaluate.generate import prompt_messages
from .evaluate.metrics import get_metric
from .evaluate.report import score_table, write_html, write_json
from .export.merge import merge
from .model.load import load_model, load_tokenizer, resolve_model
from .rundir import RunDir
from .train.loop import train

BUNDLED_MODEL = "smollm2-135m-instruct"
# Generation for evaluation in batches of 32 prompts (tunewise eval's default is 16): on the CPU a
# decoding step's fixed costs (Python, dispatch, small kernels) are then paid for twice as many rows.
# Measured on 2 cores, the base model's 128-token answers to the 48 test prompts (wall, peak RSS of
# the process): batch 16 46.0 s 1785 MiB; 24 39.7 s 2326 MiB; 32 36.6 s 2663 MiB; 48 37.0 s 3867 MiB.
# 48 raised the quickstart's peak RSS from 5.0 to 6.6 GB; a whole quickstart at 32 peaked at 5.6 GB
# with training in its own process. With training in two child processes the largest process peaked
# at 3.1 GB; the two training ranks run together, rank 0 peaking at 2.9 GB (docs/benchmarks.md).
EVAL_BATCH = 32
EXAMPLE = Path(__file__).resolve().parent / "examples" / "sql"


def _example_dir() -> Path:
    if not all((EXAMPLE / name).is_file() for name in ("config.yaml", "test.jsonl", "shift.jsonl")):
        raise TunewiseError(
            f"the SQL example was not found at {EXAMPLE}; reinstall tunewise (the example ships "
            "inside the package)"
        )
    return EXAMPLE


def run_quickstart(out: str | Path, console: Console, one_process: bool = False) -> None:
    out = Path(out)
    if (out / "run").exists():
        raise TunewiseError(f"{out} already holds a quickstart; pass --out to choose another directory")
    example = _example_dir()
    started = time.time()

    config = load_config(example / "config.yaml", [f"output_dir={out / 'run'}"])
    config.data.train, config.data.val = str(example / "train.jsonl"), str(example / "val.jsonl")

    console.rule("1. data check (the same checks `tunewise data check` runs)")
    source = resolve_model(BUNDLED_MODEL)
    report = check(example / "train.jsonl", example / "val.jsonl", load_tokenizer(source), config.data.max_seq_len)
    show(report, console)
    if report.errors:
        raise TunewiseError("the example data failed its check; regenerate it with examples/sql/generate.py")

    processes, threads = training_processes(config, one_process)
    how = f", {processes} processes of {threads} thread{'s' * (threads > 1)} each" if processes > 1 else ""
    console.rule(f"2. train (LoRA on smollm2-135m-instruct{how})")
    if processes > 1:
        train_on_cpu_cores(config, processes, threads)
    else:
        train(config, console=console)

    for split, suffix, what in (("test", "", "schemas never seen in training"),
                                ("shift", "-shift", "other schemas, questions written by another generator")):
        console.rule(f"3. evaluate base vs tuned on the {split} split ({what})")
        # the forgetting check measures the adapter, not the split: once is enough
        options = None if split == "test" else ForgettingOptions(probes=0)
        result = compare(out / "run", example / f"{split}.jsonl", "sql_exec", batch_size=EVAL_BATCH,
                         forgetting=options)
        write_json(result, out / f"eval{suffix}.json")
        write_html(result, out / f"report{suffix}.html", RunDir(out / "run").loss_png)
        console.print(score_table(result))
        forgetting = forgetting_table(result)  # the general-probe drift every eval measures
        if forgetting:
            console.print(forgetting)

    console.rule("4. merge the adapter into a 16-bit base")
    parity = merge(out / "run", out / "merged")
    console.print(f"parity: top-1 agreement {parity.top1_agreement:.1%}, max |logit diff| {parity.max_abs_diff:.3g}")

    console.rule("5. ask the merged model one unseen question")
    ask_one(example / "test.jsonl", out / "merged", console)

    console.rule(f"done in {time.time() - started:.0f}s")
    for label, path in (("run directory", out / "run"), ("adapter", RunDir(out / "run").adapter),
                        ("merged model", out / "merged"), ("eval JSON", out / "eval.json"),
                        ("HTML report", out / "report.html"), ("style-shift report", out / "report-shift.html"),
                        ("loss curve", RunDir(out / "run").loss_png)):
        console.print(f"{label:>14}: {path}")
    console.print(f"try it: tunewise chat {out / 'run'}")
    console.print(f"review blind: tunewise review --run {out / 'run'} --data {example / 'test.jsonl'} "
                  f"--eval {out / 'eval.json'}")


def training_processes(config: Config, one_process: bool = False) -> tuple[int, int]:
    """(processes, threads each) for the quickstart's training. On a CPU with two or more cores,
    two processes (DDP over gloo, each step's sequences dealt between them as in any launch) train
    faster than one process with every core: 30 steps of the SQL example on 2 cores, four rounds
    alternating, 85.4 s for one process of 2 threads against 76.3 s for two of 1 on average
    (docs/benchmarks.md, issue 23). Each process runs its own Python and small kernels on its own
    core instead of both waiting on one thread's dispatch. A GPU, Windows (no gloo launch to rely
    on), an odd batch (each step's sequences are shared out evenly) or `one_process` keep one.
    Threads each: OMP_NUM_THREADS when the user set it, else half the cores this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if one_process or os.name == "nt" or pick_device().type != "cpu" or cores < 2 or config.train.batch_size % 2:
        return 1, cores
    threads = os.environ.get("OMP_NUM_THREADS", "").strip()
    return 2, int(threads) if threads.isdigit() and int(threads) > 0 else cores // 2


def train_on_cpu_cores(config: Config, processes: int, threads: int) -> None:
    """`tunewise train` on `processes` CPU processes (torch.distributed.run, a free local port), the
    config written to a temporary file; rank 0 prints the progress, as `tunewise train` does."""
    with tempfile.TemporaryDirectory(prefix="tunewise-quickstart-") as work:
        path = Path(work) / "config.yaml"
        path.write_text(dump_config(config))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   "-m", "tunewise.cli", "train", str(path), "--device", "cpu"]
        # a session of its own: the terminal's Ctrl-C reaches the launcher from _wait, exactly once
        code = _wait(subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": str(threads)},
                                      start_new_session=True))
    if code:
        raise TunewiseError(f"training stopped in its {processes}-process launch (the launcher exited with "
                            f"{code}; the training's own error is printed above). To train in one process "
                            "instead: tunewise quickstart --one-process --out ANOTHER_DIR")


def _wait(launcher: subprocess.Popen) -> int:
    """The launcher's exit code. On Ctrl-C (or a SIGTERM to the quickstart) the launcher gets one
    SIGINT and is left to stop its training processes: they run in sessions of their own, and only
    the launcher's shutdown (the signal, then SIGKILL after 30 s) ends them. Killing the launcher
    first, or a second signal during its shutdown, would leave them training."""
    previous = signal.signal(signal.SIGTERM, _interrupted)
    try:
        return launcher.wait()
    except KeyboardInterrupt:
        launcher.send_signal(signal.SIGINT)
        try:
            launcher.wait(timeout=60)
        except subprocess.TimeoutExpired:
            launcher.kill()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(signum, frame):
    raise KeyboardInterrupt


def ask_one(data: Path, merged_dir: Path, console: Console) -> bool:
    """The merged model answers the split's first question; its answer is executed as the eval
    scores it, so the demo says whether it was right rather than leaving the reader to judge."""
    sample = load_examples(data)[0]
    model = load_model(str(merged_dir), device=pick_device())
    answer = reply(model, load_tokenizer(str(merged_dir)), prompt_messages(sample.messages), 128)
    reference = sample.messages[-1]["content"]
    same = bool(get_metric("sql_exec")(answer, reference, sample.meta))
    console.print(f"question:  {sample.messages[-2]['content']}", highlight=False)
    console.print(f"answer:    {answer}", highlight=False)
    console.print(f"reference: {reference}", highlight=False)
    console.print(f"the answer returns the reference's rows: {'yes' if same else 'no'}", highlight=False)
    return same
