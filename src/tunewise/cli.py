"""Command line: parse, build the config, call the library, print. No logic lives here."""

from __future__ import annotations

import os
import sys
from typing import List, Optional

import typer
from rich.console import Console

from .errors import TunewiseError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune chat models with LoRA/QLoRA, correctly by default.")
console = Console()
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """tunewise: check data, train LoRA/QLoRA adapters, evaluate base vs tuned, merge, chat."""


def _quiet_libraries() -> None:
    """Library progress bars and advice are noise in front of a user; our own output says what matters."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging
    import warnings

    # bitsandbytes logs at import that it cannot fetch an optional CPU kernel from the hub; the
    # built-in kernel it falls back to is correct, so the warning only alarms users.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@app.command()
def train(
    config: str = typer.Argument(..., help="YAML config (see README)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Dotted overrides, e.g. train.max_steps=5 lora.r=8"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in output_dir."),
) -> None:
    """Train a LoRA or QLoRA adapter from a config."""
    from .config import load_config

    _quiet_libraries()
    cfg = load_config(config, overrides or [])
    from .train.loop import train as run_training

    run_training(cfg, resume=resume, console=console)


@app.command("eval")
def eval_cmd(
    run: str = typer.Option(..., "--run", help="Run directory (holds config.yaml and adapter/)."),
    data: str = typer.Option(..., "--data", help="Held-out JSONL; the last assistant message is the reference."),
    metric: str = typer.Option(..., "--metric", help="exact_match | sql_exec | json_valid | regex:PATTERN | module:function"),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write results as JSON here."),
    html_out: Optional[str] = typer.Option(None, "--html", help="Write a self-contained HTML report here."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
) -> None:
    """Score base and tuned models on the same held-out prompts (greedy decoding)."""
    _quiet_libraries()
    from .evaluate.compare import compare
    from .evaluate.metrics import get_metric
    from .evaluate.report import score_table, write_html, write_json

    get_metric(metric)  # fail on a bad metric before loading any model
    result = compare(run, data, metric, max_new_tokens, batch_size)
    console.print(score_table(result))
    from pathlib import Path

    if json_out:
        write_json(result, Path(json_out))
        console.print(f"JSON: {json_out}")
    if html_out:
        write_html(result, Path(html_out), Path(run) / "report" / "loss.png")
        console.print(f"HTML report: {html_out}")


@app.command()
def merge(
    run: str = typer.Argument(..., help="Run directory."),
    out: str = typer.Option(..., "--out", help="Directory for the merged model (must not exist or be empty)."),
) -> None:
    """Merge the run's adapter into a 16-bit base; check merged and adapter logits agree."""
    _quiet_libraries()
    from .export.merge import merge as do_merge

    parity = do_merge(run, out)
    console.print(f"merged model: {out} (adapter kept in {run}/adapter)")
    console.print(f"parity on {parity.examples} prompts: top-1 agreement {parity.top1_agreement:.1%}, "
                  f"max |logit diff| {parity.max_abs_diff:.3g}")


@app.command()
def chat(
    target: str = typer.Argument(..., help="A run directory, a model directory, or a model name."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Answer one prompt and exit."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1),
) -> None:
    """Chat with a tuned run or a model (greedy decoding)."""
    _quiet_libraries()
    from .chat import chat_loop, load_for_chat, reply

    model, tokenizer = load_for_chat(target)
    if prompt is not None:
        history = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        print(reply(model, tokenizer, history, max_new_tokens))
    else:
        chat_loop(model, tokenizer, system, console, max_new_tokens)


@app.command()
def quickstart(
    out: str = typer.Option("tunewise-quickstart", "--out", help="Where the run, merged model and reports go."),
) -> None:
    """The whole pipeline on the bundled model and the SQL example, in minutes on a CPU."""
    _quiet_libraries()
    from .quickstart import run_quickstart

    run_quickstart(out, console)


def main() -> None:
    try:
        app()
    except TunewiseError as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False, markup=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted; the last checkpoint is kept (resume with --resume)")
        sys.exit(130)


if __name__ == "__main__":
    main()
