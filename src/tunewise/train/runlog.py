"""The run directory's records: config.yaml, manifest.json and metrics.jsonl."""

from __future__ import annotations

import json
import platform
import time
from importlib import metadata

from ..config import Config, dump_config
from ..files import write_atomic
from ..rundir import RunDir

PACKAGES = ("tunewise", "torch", "transformers", "peft", "accelerate", "bitsandbytes", "safetensors")


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


class RunLog:
    def __init__(self, run: RunDir):
        self.run = run
        self.metrics_path = run.metrics

    def write_config(self, config: Config) -> None:
        write_atomic(self.run.config, dump_config(config))

    def write_manifest(self, **fields) -> None:
        path = self.run.manifest
        manifest = json.loads(path.read_text()) if path.exists() else {}
        manifest.update(fields)
        manifest.setdefault("versions", versions())
        manifest.setdefault("python", platform.python_version())
        manifest.setdefault("platform", platform.platform())
        write_atomic(path, json.dumps(manifest, indent=2))

    def log(self, **event) -> None:
        event.setdefault("time", round(time.time(), 3))
        with self.metrics_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(event) + "\n")

    def read_events(self) -> list[dict]:
        """Every complete event; a line cut short by a kill mid-write is skipped."""
        if not self.metrics_path.exists():
            return []
        events = []
        for line in self.metrics_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events

    def truncate_after(self, step: int) -> None:
        """On resume, drop events logged after the checkpoint so metrics.jsonl reads like one run."""
        kept = [e for e in self.read_events() if e.get("step", 0) <= step]
        write_atomic(self.metrics_path, "".join(json.dumps(e) + "\n" for e in kept))

