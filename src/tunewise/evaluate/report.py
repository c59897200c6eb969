"""Reports: a rich table for the terminal and a self-contained HTML page (with the run's loss curve).

Every piece of text that comes from data or model output is escaped before it enters HTML.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from rich.table import Table

from ..files import write_atomic
from .forgetting_report import forgetting_html


def score_table(result: dict) -> Table:
    table = Table(title=f"{result['metric']} on {result['n']} held-out examples")
    table.add_column("model")
    table.add_column("score", justify="right")
    table.add_column("correct", justify="right")
    for key in ("base", "tuned"):
        correct = sum(r[f"{key}_ok"] for r in result["examples"])
        table.add_row(key, f"{result[key]['score']:.1%}", f"{correct:.0f}/{result['n']}")
    delta = result["tuned"]["score"] - result["base"]["score"]
    table.add_row("[bold]tuned - base", f"[bold]{delta:+.1%}", "")
    return table


def write_json(result: dict, path: Path) -> None:
    write_atomic(Path(path), json.dumps(result, indent=2))


def _cell(text: str, ok: float) -> str:
    mark = "ok" if ok >= 1 else "miss"
    return f'<td class="{mark}"><pre>{html.escape(text)}</pre></td>'


def render_html(result: dict, loss_png: Path | None = None) -> str:
    e = html.escape
    rows = "\n".join(
        f"<tr><td>{i + 1}</td><td><pre>{e(r['prompt'])}</pre></td><td><pre>{e(r['reference'])}</pre></td>"
        f"{_cell(r['base'], r['base_ok'])}{_cell(r['tuned'], r['tuned_ok'])}</tr>"
        for i, r in enumerate(result["examples"])
    )
    image = ""
    if loss_png and Path(loss_png).is_file():
        data = base64.b64encode(Path(loss_png).read_bytes()).decode()
        image = f'<h2>Loss curves</h2><img alt="train and validation loss" src="data:image/png;base64,{data}">'
    delta = result["tuned"]["score"] - result["base"]["score"]
    source = e(str(result.get('data', '')))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tunewise evaluation</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5rem; }}
td, th {{ border: 1px solid #ccc; padding: .35rem .5rem; vertical-align: top; text-align: left; }}
pre {{ white-space: pre-wrap; margin: 0; font-size: .85rem; max-width: 32rem; }}
td.ok {{ background: #e6f4ea; }} td.miss {{ background: #fdecea; }}
.score {{ font-size: 1.4rem; font-weight: 600; }}
</style></head><body>
<h1>Base vs tuned</h1>
<p>Metric <code>{e(result['metric'])}</code> on {result['n']} held-out examples from <code>{source}</code>.</p>
<table><tr><th>model</th><th>score</th></tr>
<tr><td>base</td><td class="score">{result['base']['score']:.1%}</td></tr>
<tr><td>tuned</td><td class="score">{result['tuned']['score']:.1%}</td></tr>
<tr><td>tuned - base</td><td class="score">{delta:+.1%}</td></tr></table>
{forgetting_html(result)}
{image}
<h2>Examples</h2>
<table><tr><th>#</th><th>prompt</th><th>reference</th><th>base</th><th>tuned</th></tr>
{rows}
</table></body></html>
"""


def write_html(result: dict, path: Path, loss_png: Path | None = None) -> None:
    write_atomic(Path(path), render_html(result, loss_png))
