"""The run directory's records: config.yaml, manifest.json and metrics.jsonl."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path

from ..config import Config, dump_config

PACKAGES = ("tunewise", "torch", "transformers", "peft", "accelerate", "bitsandbytes", "safetensors")


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


class RunLog:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.metrics_path = run_dir / "metrics.jsonl"

    def write_config(self, config: Config) -> None:
        write_atomic(self.run_dir / "config.yaml", dump_config(config))

    def write_manifest(self, **fields) -> None:
        path = self.run_dir / "manifest.json"
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

