"""The run directory's records: config.yaml, manifest.json and metrics.jsonl."""

from __future__ import annotations

import json
import platform
import time
from importlib import metadata

from ..config import Config, dump_config
from ..files import write_atomic
from ..rundir import RunDir
from .trackers import values

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
    """Reads for every rank; writes only where `writes` (rank 0 of a launch of several)."""

    def __init__(self, run: RunDir, writes: bool = True):
        self.run = run
        self.metrics_path = run.metrics
        self.writes = writes
        self.tracker = None  # the Accelerator whose trackers (train.report_to) get each event's numbers

    def write_config(self, config: Config) -> None:
        if self.writes:
            write_atomic(self.run.config, dump_config(config))

    def write_manifest(self, **fields) -> None:
        if not self.writes:
            return
        path = self.run.manifest
        manifest = json.loads(path.read_text()) if path.exists() else {}
        manifest.update(fields)
        manifest.setdefault("versions", versions())
        manifest.setdefault("python", platform.python_version())
        manifest.setdefault("platform", platform.platform())
        write_atomic(path, json.dumps(manifest, indent=2))

    def log(self, **event) -> None:
        if not self.writes:
            return
        event.setdefault("time", round(time.time(), 3))
        with self.metrics_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(event) + "\n")
        numbers = values(event) if self.tracker is not None else None
        if numbers:
            self.tracker.log(numbers, step=event["step"])

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
        if not self.writes:
            return
        kept = [e for e in self.read_events() if e.get("step", 0) <= step]
        write_atomic(self.metrics_path, "".join(json.dumps(e) + "\n" for e in kept))

