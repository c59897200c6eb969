"""The run's loss curve: train and val loss, the best checkpoint marked, overfitting shaded."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

from .guards import overfit_start

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in events if e["event"] == "train"], [e for e in events if e["event"] == "eval"]


def plot_losses(metrics_path: Path, out_png: Path) -> Path | None:
    """Train and val loss, the best checkpoint marked, the overfitting region shaded."""
    train, evals = read_metrics(metrics_path)
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot([e["step"] for e in train], [e["loss"] for e in train], color="#9bb7d4", lw=1, label="train loss")
    if evals:
        ax.plot([e["step"] for e in evals], [e["val_loss"] for e in evals], "o-", color="#d1495b", label="val loss")
        best = min(evals, key=lambda e: e["val_loss"])
        ax.scatter([best["step"]], [best["val_loss"]], s=160, marker="*", color="#edae49", zorder=5,
                   label=f"best checkpoint (step {best['step']})")
        start = overfit_start(train, evals)
        if start is not None:
            ax.axvspan(start, evals[-1]["step"], color="#d1495b", alpha=0.12, label="overfitting (val up, train down)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per trained token")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
