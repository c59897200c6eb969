"""The forgetting check in the terminal table and the HTML report (evaluate/forgetting.py measures)."""

from __future__ import annotations

import html

from rich.table import Table


def forgetting_table(result: dict) -> Table | None:
    section = result.get("forgetting")
    if not section:
        return None
    table = Table(title="forgetting: general probes (base answers, teacher-forced)" if "kl_per_token" in section
                  else "forgetting: the earlier task", caption_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    if "kl_per_token" in section:
        table.add_row("probes scored / answer tokens", _scored(section))
    if section.get("kl_per_token") is not None:
        table.add_row("KL(base || tuned) per token", f"{section['kl_per_token']:.4f} nats")
        table.add_row("loss on base answers: base -> tuned",
                      f"{section['base_loss']:.3f} -> {section['tuned_loss']:.3f} ({section['loss_change']:+.3f})")
    prev = section.get("previous_task")
    if prev:
        table.add_row(f"earlier task {prev['metric']} on {prev['n']} held-out: before -> after",
                      f"{prev['before']:.1%} -> {prev['after']:.1%} ({prev['after'] - prev['before']:+.1%})")
    if section.get("verdict"):
        advice = f".\nThe guide's advice: {section['advice']}" if section["advice"] else ""
        table.caption = section["verdict"] + advice
    elif section.get("no_verdict"):
        table.caption = section["no_verdict"]
    return table


def _scored(section: dict) -> str:
    """Probes scored of those asked (a probe whose base answer is empty has no tokens to score)."""
    asked = section.get("asked", section["probes"])
    empty = f" ({asked - section['probes']} empty base answers)" if asked > section["probes"] else ""
    return f"{section['probes']} of {asked}{empty} / {section['tokens']}"


def forgetting_html(result: dict) -> str:
    section = result.get("forgetting")
    if not section:
        return ""
    e = html.escape
    rows = []
    if "kl_per_token" in section:
        rows.append(("probes scored / answer tokens", e(_scored(section))))
    if section.get("kl_per_token") is not None:
        rows += [("KL(base || tuned) per token", f"{section['kl_per_token']:.4f} nats"),
                 ("loss on the base's answers, base &rarr; tuned",
                  f"{section['base_loss']:.3f} &rarr; {section['tuned_loss']:.3f} ({section['loss_change']:+.3f})")]
    prev = section.get("previous_task")
    if prev:
        rows.append((f"earlier task: {e(prev['metric'])} on {prev['n']} examples of {e(prev['data'])}, "
                     "before &rarr; after", f"{prev['before']:.1%} &rarr; {prev['after']:.1%}"))
    body = "".join(f"<tr><td>{name}</td><td>{value}</td></tr>" for name, value in rows)
    words = ""
    if section.get("verdict"):
        advice = f" The guide's advice: {e(section['advice'])}." if section["advice"] else ""
        words = f"<p><strong>{e(section['verdict'])}.</strong>{advice}</p>"
    elif section.get("no_verdict"):
        words = f"<p><strong>{e(section['no_verdict'])}.</strong></p>"
    return f"<h2>Forgetting</h2><table>{body}</table>{words}"
