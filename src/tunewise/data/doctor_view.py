"""Rich rendering of a data doctor report: findings, statistics, and a highlighted preview."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def show(report, console: Console) -> None:
    for fmt in report.stats.get("format", {}).values():  # first: everything after reads the file this way
        console.print(fmt["described"], highlight=False, soft_wrap=True)
    for f in report.findings:
        console.print(Text.assemble((f"{f.level:<7} ", STYLE[f.level]), (f.where(), "bold"), f.message))
    for path, n in report.stats.get("examples", {}).items():
        console.print(f"{path}: {n} valid examples")
    for path, t in report.stats.get("tokens", {}).items():
        table = Table(title=f"tokens per example: {path}")
        for col in ("p50", "p90", "p99", "max", "limit", "truncated", "answer lost", "trained min/med"):
            table.add_column(col, justify="right")
        table.add_row(f"{t['p50']:.0f}", f"{t['p90']:.0f}", f"{t['p99']:.0f}", str(t["max"]), str(t["max_seq_len"]),
                      str(t["truncated"]), f"{t['assistant_tokens_lost_share']:.1%}",
                      f"{t['trained_share_min']:.0%} / {t['trained_share_median']:.0%}")
        console.print(table)
    if report.preview:
        p = report.preview
        console.print(Text(f"preview of {p['where']} (trained tokens highlighted):", style="bold"))
        text = Text()
        for piece in p["pieces"]:
            text.append(piece["text"], style="black on green" if piece["trained"] else "dim")
        console.print(text)
    verdict = "[bold red]errors: fix them before training" if report.errors else "[bold green]usable"
    console.print(f"{verdict}[/] ({report.errors} errors, {report.warnings} warnings)")
