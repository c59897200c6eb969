"""The run directory's layout, owned by one type: every module that reads or writes a run asks it.

```
runs/NAME/
  config.yaml  manifest.json  metrics.jsonl
  checkpoints/step-N/   adapter/   report/loss.png
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def lock(self) -> Path:
        """Held by the process that trains into this run (only rank 0 of a launch of several)."""
        return self.path / ".lock"

    @property
    def adapter(self) -> Path:
        return self.path / "adapter"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def loss_png(self) -> Path:
        return self.path / "report" / "loss.png"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step}"

    def checkpoint_steps(self) -> list[tuple[int, Path]]:
        """(step, directory) of every checkpoints/step-N, complete or not, in step order."""
        found = []
        for path in self.checkpoints.glob("step-*"):
            match = re.fullmatch(r"step-(\d+)", path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def holds_training(self) -> bool:
        """A checkpoint or an adapter is there: starting again would mix two runs."""
        return self.checkpoints.exists() or self.adapter.exists()

    def is_tuned_run(self) -> bool:
        """A finished (or stopped) run that chat and eval can load: its config and an adapter."""
        return self.config.is_file() and self.adapter.is_dir()
