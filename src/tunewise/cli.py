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
