"""Command line: parse, build the config, call the library, print. No logic lives here."""

from __future__ import annotations

import os
import sys
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from .config import DataConfig, LoraConfig, TrainConfig
from .errors import TunewiseError


def _default(section, key: str):
    """An option's default is the config's: one fact, one place (config.py)."""
    return section.model_fields[key].default


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune chat models with LoRA/QLoRA, correctly by default.")
console = Console()
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """tunewise: check data, train LoRA/QLoRA adapters, evaluate base vs tuned, merge, chat."""


def _one_process(command: str) -> None:
    """Refuse a command that loads a model and writes one result under a launch of several processes:
    each copy would run the whole command (N evaluations, N merges racing for one directory). Only
    `train` is distributed. Called in the command's body, so `--help` still works."""
    world = os.environ.get("WORLD_SIZE", "1").strip()
    if world.isdigit() and int(world) > 1:
        raise TunewiseError(f"tunewise {command} runs in one process, but WORLD_SIZE={world} says this is one of "
                            f"{world} launched processes; only `tunewise train` uses several. Run it without "
                            "accelerate launch or torchrun (where the job environment sets WORLD_SIZE for every "
                            f"command: WORLD_SIZE=1 tunewise {command} ...)")


# Library warnings known to be noise for a tunewise user, each with why; every other warning
# (attention implementation, dtype, device) is shown.
NOISE = (
    # torch's own TorchScript modules at import: nothing a user can do about it
    (DeprecationWarning, r"`torch\.jit\.script_method` is deprecated"),
    # PEFT calls transformers' old name for this; the user's code never does
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
)


def _quiet_libraries() -> None:
    """Progress bars and known noise off; library warnings a user needs stay on."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging
    import warnings

    # bitsandbytes logs at import that it cannot fetch an optional CPU kernel from the hub; the
    # built-in kernel it falls back to is correct, so the warning only alarms users.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    for category, message in NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()


DEVICE_HELP = "auto (the GPU when there is one) | cuda | cpu"
FOLD_HELP = ("Put the system prompt into the first user turn (data.fold_system_prompt), "
             "for templates without a system role.")
END_HELP = "Token that ends assistant turns where the template writes none (data.end_of_turn)."


FORMAT_HELP = "auto (from the first record) | messages | prompt_completion | alpaca | sharegpt (data.format)"
COLUMN_HELP = "FIELD=KEY: the file's key for a format's field, e.g. messages=conversation (data.columns; repeatable)"
ROLE_HELP = "NAME=ROLE: a role name in the file -> system|user|assistant|tool, e.g. bot=assistant (data.roles)"
DATA_FILE_HELP = "JSONL, a JSON array (.json), parquet (file or directory) or a datasets save_to_disk directory"


def _spec(fmt: str, columns: Optional[List[str]], roles: Optional[List[str]]):
    """data.format, data.columns and data.roles from the command line."""
    from .data.formats import DataSpec

    def pairs(items, option):
        out = {}
        for item in items or []:
            key, sep, value = item.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise TunewiseError(f"{option} {item!r}: give NAME=VALUE, e.g. {option} messages=conversation")
            out[key.strip()] = value.strip()
        return out

    return DataSpec(fmt, pairs(columns, "--column"), pairs(roles, "--role"))


data_app = typer.Typer(help="Check, preview, split and convert chat data.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    file: str = typer.Argument(..., help=f"Training data: {DATA_FILE_HELP}."),
    val: Optional[str] = typer.Option(None, "--val", help="Validation data, checked too and for leakage."),
    model: Optional[str] = typer.Option(None, "--model", help="Model whose tokenizer and chat template to check."),
    max_seq_len: int = typer.Option(_default(DataConfig, "max_seq_len"), "--max-seq-len", min=1),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    strict: bool = typer.Option(False, "--strict", help="Warnings fail the check too."),
    allow_small: bool = typer.Option(False, "--allow-small", help="Fewer than 50 examples is a warning, not an error."),
    fold_system_prompt: bool = typer.Option(False, "--fold-system-prompt", help=FOLD_HELP),
    end_of_turn: Optional[str] = typer.Option(None, "--end-of-turn", help=END_HELP),
    replay: Optional[str] = typer.Option(None, "--replay", help="data.replay.source: a JSONL file (checked too) or "
                                         "self; says how many examples train would mix in."),
    replay_fraction: float = typer.Option(0.05, "--replay-fraction", min=0.001, max=0.5,
                                          help="data.replay.fraction"),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    columns: Optional[List[str]] = typer.Option(None, "--column", help=COLUMN_HELP),
    roles: Optional[List[str]] = typer.Option(None, "--role", help=ROLE_HELP),
) -> None:
    """Find data and chat-template mistakes before training. Exit 0 usable, 1 errors, 2 usage.
    The first lines say each file's format and how it was chosen."""
    import json

    _quiet_libraries()
    from .data.doctor import check
    from .data.split import replay_count
    from .data.targets import TargetOptions

    spec = _spec(fmt, columns, roles)
    tokenizer, options = None, TargetOptions()
    if model:
        tokenizer, options = _tokenizer_and_options(model, fold_system_prompt, end_of_turn)
    report = check(file, val, tokenizer, max_seq_len if model else None, allow_small, options, spec)
    replay_report = check(replay, None, tokenizer, max_seq_len if model else None, True, options) \
        if replay and replay != "self" else None
    summary = None
    if replay:  # what train would mix in: the seeded sample's size, from the train file's count
        n = replay_count(report.stats.get("examples", {}).get(str(file), 0), replay_fraction)
        summary = {"source": replay, "fraction": replay_fraction, "examples": n}
    if as_json:
        out = report.to_json()
        if summary:
            out["replay"] = {**summary, "report": replay_report.to_json() if replay_report else None}
        print(json.dumps(out, indent=2))
    else:
        from .data.doctor_view import show

        show(report, console)
        if replay_report:
            show(replay_report, console)
        if summary:
            console.print(f"replay: train would mix {summary['examples']} examples from {replay} into every epoch "
                          f"({replay_fraction:.1%} of the mixed set), never into validation", highlight=False)
    errors = report.errors + (replay_report.errors if replay_report else 0)
    warnings = report.warnings + (replay_report.warnings if replay_report else 0)
    if errors or (strict and warnings):
        raise typer.Exit(1)


def _tokenizer_and_options(model: str, fold_system_prompt: bool, end_of_turn: Optional[str]):
    from .data.targets import target_options
    from .model.load import load_tokenizer, resolve_model

    source = resolve_model(model)
    tokenizer = load_tokenizer(source)
    return tokenizer, target_options(tokenizer, source, fold_system_prompt, end_of_turn)


@data_app.command("preview")
def data_preview(
    file: str = typer.Argument(..., help=f"Data to preview: {DATA_FILE_HELP}."),
    model: str = typer.Option(..., "--model", help="Model whose tokenizer and chat template to use."),
    line: Optional[int] = typer.Option(None, "--line", min=0, help="Only the example on this line (the row, from "
                                       "0, in parquet and arrow)."),
    limit: int = typer.Option(5, "--limit", min=1, help="Examples shown on a terminal (JSON lists all)."),
    as_json: bool = typer.Option(False, "--json", help="Print every example's sequences as JSON."),
    fold_system_prompt: bool = typer.Option(False, "--fold-system-prompt", help=FOLD_HELP),
    end_of_turn: Optional[str] = typer.Option(None, "--end-of-turn", help=END_HELP),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    columns: Optional[List[str]] = typer.Option(None, "--column", help=COLUMN_HELP),
    roles: Optional[List[str]] = typer.Option(None, "--role", help=ROLE_HELP),
) -> None:
    """Exactly what each example trains (trained text highlighted). Exit 1 if any example is refused."""
    import json

    _quiet_libraries()
    from .data.preview import preview, show

    spec = _spec(fmt, columns, roles)
    tokenizer, options = _tokenizer_and_options(model, fold_system_prompt, end_of_turn)
    items = preview(file, tokenizer, options, line, spec)
    refused = 0
    if as_json:
        examples = list(items)
        refused = sum("error" in x for x in examples)
        print(json.dumps({"examples": examples}, indent=2, ensure_ascii=False))
    else:
        for n, item in enumerate(items):
            refused += "error" in item
            if n < limit or line is not None:
                show(item, console)
        if refused:
            console.print(f"[bold red]{refused} examples refused[/]")
    if refused:
        raise typer.Exit(1)


@data_app.command("split")
def data_split(
    file: str = typer.Argument(..., help=f"Data to split: {DATA_FILE_HELP}."),
    val_fraction: float = typer.Option(..., "--val-fraction", min=0.0, max=0.9),
    test_fraction: float = typer.Option(0.0, "--test-fraction", min=0.0, max=0.9),
    seed: int = typer.Option(_default(TrainConfig, "seed"), "--seed"),
    out: str = typer.Option(..., "--out", help="Directory for train.jsonl, val.jsonl (and test.jsonl)."),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    columns: Optional[List[str]] = typer.Option(None, "--column", help=COLUMN_HELP),
    roles: Optional[List[str]] = typer.Option(None, "--role", help=ROLE_HELP),
) -> None:
    """Shuffle and split data; JSONL lines are copied byte for byte, other inputs are written as tunewise's
    JSONL (messages). The input is left untouched."""
    from .data.sources import open_source
    from .data.split import split_file

    spec = _spec(fmt, columns, roles)
    for name, n in split_file(file, val_fraction, test_fraction, seed, out, spec).items():
        console.print(f"{name}: {n} examples")
    if not open_source(file).is_jsonl:
        console.print(f"written as tunewise's JSONL (messages) in {out}", highlight=False)


@data_app.command("convert")
def data_convert(
    file: str = typer.Argument(..., help=f"Data to convert: {DATA_FILE_HELP}."),
    out: str = typer.Option(..., "--out", help="The JSONL file to write (tunewise's messages form)."),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    columns: Optional[List[str]] = typer.Option(None, "--column", help=COLUMN_HELP),
    roles: Optional[List[str]] = typer.Option(None, "--role", help=ROLE_HELP),
) -> None:
    """Write data in any format tunewise reads as the JSONL train reads (one `messages` object a line).
    Any unreadable record refuses the whole conversion (nothing is written)."""
    from .data.convert import convert_file

    n, reader = convert_file(file, out, _spec(fmt, columns, roles))
    console.print(reader.describe(), highlight=False, soft_wrap=True)
    console.print(f"{out}: {n} examples", highlight=False)


@app.command("plan")
def plan_cmd(
    model: str = typer.Option(..., "--model", help="A preset (llama-3.1-8b, ...), a model directory or a config.json."),
    method: str = typer.Option(..., "--method", help="full | lora | qlora"),
    seq_len: int = typer.Option(..., "--seq-len", min=1),
    batch: int = typer.Option(..., "--batch", min=1, help="Sequences per forward pass (micro-batch)."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing"),
    lora_r: int = typer.Option(_default(LoraConfig, "r"), "--lora-r", min=1),
    gpu_memory: Optional[str] = typer.Option(None, "--gpu-memory", help="e.g. 24GB: say whether it fits."),
    gpus: int = typer.Option(1, "--gpus", min=1, help="GPUs in the launch (accelerate launch --num_processes)."),
    strategy: str = typer.Option("ddp", "--strategy", help="ddp | fsdp, with --gpus above 1 (tunewise train's "
                                 "train.strategy)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Predict peak training memory of one GPU, broken down, and whether it fits."""
    import json

    from rich.table import Table

    from .plan import GIB, parse_size, plan, resolve_shape

    budget = parse_size(gpu_memory) if gpu_memory else None
    result = plan(resolve_shape(model), method, seq_len, batch, gradient_checkpointing, lora_r, budget,
                  gpus=gpus, strategy=strategy)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
        return
    table = Table(title=f"{method} on {model}: seq {seq_len} x batch {batch}"
                        + (" with gradient checkpointing" if gradient_checkpointing else "")
                        + (f", one of {gpus} GPUs ({strategy})" if gpus > 1 else ""))
    table.add_column("memory")
    table.add_column("GiB", justify="right")
    for name, size in result.breakdown.items():
        table.add_row(name, f"{size / GIB:.2f}")
    table.add_row("[bold]total (tensors)", f"[bold]{result.total_bytes / GIB:.2f}")
    table.add_row("framework overhead on a GPU (CUDA context)", f"{result.overhead_bytes / GIB:.2f}")
    console.print(table)
    if result.fits is not None:
        verdict = "[bold green]fits" if result.fits else "[bold red]does not fit"
        console.print(f"{verdict}[/] in {gpu_memory}; largest micro-batch at seq {seq_len}: {result.max_batch}; "
                      f"longest sequence at batch {batch}: {result.max_seq_len}")
        if result.advice:
            console.print(f"change first: {result.advice}")


@app.command("advise")
def advise_cmd(
    problem: Optional[str] = typer.Option(None, "--problem",
                                          help="|".join(["format", "domain", "latency", "privacy",
                                                         "knowledge", "documents", "instructions"])),
    examples: Optional[int] = typer.Option(None, "--examples", min=0, help="How many good examples you have."),
    tried_prompting: Optional[bool] = typer.Option(None, "--tried-prompting/--not-tried-prompting"),
) -> None:
    """Should you fine-tune? The guide's decision table as questions (or flags)."""
    from rich.prompt import Confirm, IntPrompt, Prompt

    from .advise import PROBLEMS, advise

    if problem is not None and problem not in PROBLEMS:
        raise TunewiseError(f"--problem {problem!r}: choose one of {', '.join(PROBLEMS)}")
    interactive = sys.stdin.isatty()
    if not interactive and None in (problem, examples, tried_prompting):
        raise TunewiseError("not a terminal: give --problem, --examples and --tried-prompting/--not-tried-prompting")
    if problem is None:
        for key, text in PROBLEMS.items():
            console.print(f"  [bold]{key}[/]: {text}")
        problem = Prompt.ask("What is the problem?", choices=list(PROBLEMS), console=console)
    if tried_prompting is None:
        tried_prompting = Confirm.ask("Have you already tried a better prompt and few-shot examples?", console=console)
    if examples is None:
        examples = IntPrompt.ask("How many good, reviewed examples do you have?", console=console)
    advice = advise(problem, examples, tried_prompting)
    console.print(f"[bold]Recommendation: {advice.approach}[/]")
    console.print(f"why: {advice.why}")
    console.print(f"next: {advice.next_step}")


@app.command()
def train(
    config: str = typer.Argument(..., help="YAML config (see README)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Dotted overrides, e.g. train.max_steps=5 lora.r=8"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in output_dir."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    init_from: Optional[str] = typer.Option(
        None, "--from", help="RUN_DIR|ADAPTER_DIR: continue from this adapter on new data, with a fresh optimizer "
        "and schedule (lora.init_from). With --resume: resume that continued run from its latest checkpoint."),
) -> None:
    """Train a LoRA or QLoRA adapter from a config."""
    from .config import load_config

    _quiet_libraries()
    cfg = load_config(config, [*(overrides or []), *([f"lora.init_from={init_from}"] if init_from else [])])
    from .train.loop import train as run_training

    run_training(cfg, resume=resume, console=console, device=device)


@app.command("eval")
def eval_cmd(
    run: str = typer.Option(..., "--run", help="Run directory (holds config.yaml and adapter/)."),
    data: str = typer.Option(..., "--data", help="Held-out JSONL; the last assistant message is the reference."),
    metric: str = typer.Option(..., "--metric",
                               help="exact_match | sql_exec | json_valid | json_fields | regex:PATTERN | "
                               "module:function"),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write results as JSON here."),
    html_out: Optional[str] = typer.Option(None, "--html", help="Write a self-contained HTML report here."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    probes: int = typer.Option(64, "--probes", min=0, max=100,
                               help="General probes for the forgetting check (0: off); base answers cached per base."),
    previous: Optional[str] = typer.Option(None, "--previous", help="Earlier task's run: its score before and after "
                                           "(default: the run this one continued, train --from)."),
    previous_data: Optional[str] = typer.Option(None, "--previous-data", help="Its held-out JSONL (default: "
                                                "what its last eval used)."),
    previous_metric: Optional[str] = typer.Option(None, "--previous-metric", help="Its metric (default: its "
                                                  "last eval's)."),
) -> None:
    """Score base and tuned models on the same held-out prompts (greedy decoding), and check forgetting."""
    _one_process("eval")
    _quiet_libraries()
    from .evaluate.compare import compare
    from .evaluate.forgetting import ForgettingOptions
    from .evaluate.forgetting_report import forgetting_table
    from .evaluate.metrics import get_metric
    from .evaluate.report import score_table, write_html, write_json

    get_metric(metric)  # fail on a bad metric before loading any model
    if previous_metric:
        get_metric(previous_metric)
    options = ForgettingOptions(probes, previous, previous_data, previous_metric)
    result = compare(run, data, metric, max_new_tokens, batch_size, device=device, forgetting=options)
    console.print(score_table(result))
    table = forgetting_table(result)
    if table:
        console.print(table)
    from pathlib import Path

    from .rundir import RunDir

    if json_out:
        write_json(result, Path(json_out))
        console.print(f"JSON: {json_out}")
    if html_out:
        write_html(result, Path(html_out), RunDir(run).loss_png)
        console.print(f"HTML report: {html_out}")


@app.command("review")
def review_cmd(
    run: Optional[str] = typer.Option(None, "--run", help="Run directory whose base and tuned answers to review."),
    data: Optional[str] = typer.Option(None, "--data", help="Held-out JSONL (the guide: 50-100 unseen examples)."),
    eval_json: Optional[str] = typer.Option(None, "--eval",
                                            help="Reuse the answers in this `tunewise eval --json` file of --data."),
    out: Optional[str] = typer.Option(None, "--out", help="Directory for review.html and its key (RUN/review)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the A/B order (default: a random one)."),
    score_file: Optional[str] = typer.Option(None, "--score", help="Downloaded answers JSON to unblind and score."),
    key: Optional[str] = typer.Option(None, "--key", help="The review's key (default: the one the answers name)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Blind manual review: a page to judge base and tuned answers unlabelled, then --score to unblind."""
    from pathlib import Path

    from rich.table import Table

    from .evaluate import review

    if score_file:
        if run or data:
            raise TunewiseError("--score scores a finished review; give it alone (with --key if needed)")
        scores = review.score(score_file, key)
        table = Table(title=f"blind review of {scores['items']} examples (share of yes among answered)")
        table.add_column("model")
        for label in review.QUESTIONS.values():
            table.add_column(label, justify="right")
        for side in review.SIDES:
            cells = [f"{s['share']:.1%} ({s['yes']}/{s['answered']})" if s["answered"] else "-"
                     for s in scores[side].values()]
            table.add_row(side, *cells)
        console.print(table)
        return
    if not run or not data:
        raise TunewiseError("give --run RUN_DIR and --data FILE to write a review page, or --score ANSWERS.json")
    _one_process("review")
    _quiet_libraries()
    result, contexts = review.review_inputs(run, data, eval_json, device)
    page, key_path = review.write_review(result, contexts, Path(out) if out else Path(run) / "review", seed)
    console.print(f"review page: {page} ({result['n']} examples; open it in a browser)")
    console.print(f"key (keep it from the reviewer): {key_path}")
    console.print("then: tunewise review --score review-answers-....json")


@app.command()
def merge(
    run: str = typer.Argument(..., help="Run directory."),
    out: str = typer.Option(..., "--out", help="Directory for the merged model (must not exist or be empty)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP + "; the CPU when the fp32 model does not fit"),
) -> None:
    """Merge the run's adapter into a 16-bit base; check merged and adapter logits agree."""
    _one_process("merge")
    _quiet_libraries()
    from .export.merge import merge as do_merge

    parity = do_merge(run, out, device=device)
    console.print(f"merged model: {out} (adapter kept in {run}/adapter; merged in fp32 on the {parity.device})")
    console.print(f"parity on {parity.examples} prompts: top-1 agreement {parity.top1_agreement:.1%}, "
                  f"max |logit diff| {parity.max_abs_diff:.3g}")


export_app = typer.Typer(help="Export a tuned model for other runtimes.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("gguf")
def export_gguf_cmd(
    source: str = typer.Argument(..., help="A run directory (merged first) or a merged model directory."),
    out: str = typer.Option(..., "--out", help="The GGUF file to write (FILE.gguf)."),
    qtype: str = typer.Option("f16", "--type", help="f16 | bf16 | q8_0"),
    modelfile: bool = typer.Option(False, "--modelfile", help="Also write an Ollama Modelfile beside it."),
    no_verify: bool = typer.Option(False, "--no-verify",
                                   help="Skip the llama.cpp check (for when llama-cpp-python is not installed)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Write a GGUF for llama.cpp and Ollama, checked against transformers through llama.cpp."""
    _one_process("export gguf")
    _quiet_libraries()
    from .export.to_gguf import export_gguf

    result = export_gguf(source, out, qtype, modelfile, not no_verify, device, log=console.print)
    if result.merge_parity is not None:
        console.print(f"merge parity: top-1 agreement {result.merge_parity.top1_agreement:.1%}")
    if result.report is None:
        console.print("[yellow]not checked[/] (--no-verify): install llama-cpp-python (`make install-export`) "
                      "to check the file against transformers")
    else:
        for line in result.report.lines():
            console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
        console.print("[green]checks passed[/]")
    size = result.path.stat().st_size / 2**20
    console.print(f"GGUF: {result.path} ({result.info.arch}, {result.info.qtype}, {size:.0f} MiB); "
                  f"run it: llama-cli -m {result.path} -cnv", soft_wrap=True)
    if result.modelfile is not None:
        console.print(f"Modelfile: {result.modelfile} ({result.translation.style} template); "
                      f"ollama create NAME -f {result.modelfile} && ollama run NAME", soft_wrap=True)


@app.command()
def chat(
    target: str = typer.Argument(..., help="A run directory, a model directory, or a model name."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Answer one prompt and exit."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Chat with a tuned run or a model (greedy decoding)."""
    _one_process("chat")
    _quiet_libraries()
    from .chat import chat_loop, load_for_chat, reply

    model, tokenizer, fold = load_for_chat(target, device)
    if prompt is not None:
        history = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        print(reply(model, tokenizer, history, max_new_tokens, fold))
    else:
        chat_loop(model, tokenizer, system, console, max_new_tokens, fold)


@app.command()
def quickstart(
    out: str = typer.Option("tunewise-quickstart", "--out", help="Where the run, merged model and reports go."),
    one_process: bool = typer.Option(False, "--one-process", help="Train in this process. On a CPU with 2+ cores "
                                     "the quickstart otherwise trains as 2 processes (DDP over gloo), faster there."),
) -> None:
    """The whole pipeline on the bundled model and the SQL example, in minutes on a CPU."""
    _one_process("quickstart")
    _quiet_libraries()
    from .quickstart import run_quickstart

    run_quickstart(out, console, one_process)


def main() -> None:
    try:
        app()
    except TunewiseError as e:
        # In a launch of several processes every rank reads the same config, data and checkpoints and
        # raises the same refusal: rank 0 says it once (the others still exit non-zero)
        if os.environ.get("RANK", "0").strip() in ("", "0"):
            # escaped: messages quote model and user text ("[/INST]", token id lists) that is not markup
            # soft_wrap: a path or command in the message stays on one line (copyable; grep finds it in logs)
            err_console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(1)
    except OSError as e:  # a full disk or a vanished file mid-run: say what and where, no traceback
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        err_console.print(f"[red]error:[/red] {e.strerror or e}{where}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted; the last checkpoint is kept (resume with --resume)")
        sys.exit(130)


if __name__ == "__main__":
    main()
