"""`train --from`: continue from an adapter on new data (a fresh optimizer and schedule).

The parent is a run directory (its adapter/), a run's adapter/ or checkpoints/step-N/, or a bare
PEFT adapter directory. Before any weight is loaded it is checked against the new config: the
same base model, r, alpha and target modules (the adapter's shapes and what it was trained on),
and, when the parent is a tunewise run, the same chat template. A mismatch is refused naming the
key. What is not checked for a bare adapter: the chat template (PEFT does not record it) and
`target_modules: all-linear` against the adapter's expanded list (PEFT expands it per model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import Config, flatten
from ..errors import TunewiseError
from ..rundir import RunDir


@dataclass
class Parent:
    adapter: Path
    run: RunDir | None  # the tunewise run the adapter came from, when there is one
    adapter_config: dict
    run_config: dict  # flattened config.yaml of the parent run ({} for a bare adapter)
    manifest: dict

    def record(self) -> dict:
        """manifest.json's `parent`: where the weights came from."""
        return {"adapter": str(self.adapter.resolve()), "run": str(self.run.path.resolve()) if self.run else None,
                "model": self.run_config.get("model.name") or self.adapter_config.get("base_model_name_or_path"),
                "data": self.manifest.get("data"), "chat_template_sha256": self.manifest.get("chat_template_sha256")}


def find_parent(path: str) -> Parent:
    given = Path(path)
    run = RunDir(given)
    adapter = run.adapter if run.is_tuned_run() else given
    if not (adapter / "adapter_config.json").is_file():
        raise TunewiseError(f"lora.init_from={path}: neither a run directory with adapter/ nor an adapter "
                            "directory (no adapter_config.json)")
    if not (adapter / "adapter_model.safetensors").is_file():
        raise TunewiseError(f"{adapter} has no adapter_model.safetensors; tunewise loads safetensors only")
    owner = _owning_run(adapter)
    run_config = flatten(yaml.safe_load(owner.config.read_text())) if owner else {}
    manifest = json.loads(owner.manifest.read_text()) if owner and owner.manifest.is_file() else {}
    return Parent(adapter, owner, json.loads((adapter / "adapter_config.json").read_text()), run_config, manifest)


def _owning_run(adapter: Path) -> RunDir | None:
    """The run of RUN/adapter or RUN/checkpoints/step-N."""
    for candidate in (adapter.parent, adapter.parent.parent):
        if RunDir(candidate).config.is_file() and (adapter.parent == candidate or adapter.parent.name == "checkpoints"):
            return RunDir(candidate)
    return None


def check_parent(parent: Parent, config: Config, source: str, template_sha256: str) -> None:
    """Refuse, naming the key, a config the adapter was not trained under."""
    lora, a = config.lora, parent.adapter_config
    checks = [("lora.r", a.get("r"), lora.r), ("lora.alpha", a.get("lora_alpha"), lora.alpha)]
    if parent.run_config:
        checks.append(("lora.target_modules", parent.run_config.get("lora.target_modules"), lora.target_modules))
        checks.append(("chat template (sha256)", parent.manifest.get("chat_template_sha256"), template_sha256))
    elif isinstance(lora.target_modules, list) and isinstance(a.get("target_modules"), list):
        checks.append(("lora.target_modules", sorted(a["target_modules"]), sorted(lora.target_modules)))
    for key, was, now in checks:
        if was is not None and was != now:
            raise TunewiseError(_mismatch(parent, key, was, now))
    base = parent.manifest.get("model_source") or a.get("base_model_name_or_path")
    if base and not _same_model(base, source):
        raise TunewiseError(f"--from {parent.adapter}: model.name resolves to {source}, but the adapter was "
                            f"trained on {base}; set model.name to the adapter's base model")


def _mismatch(parent: Parent, key: str, was, now) -> str:
    where = f"--from {parent.adapter}"
    if key.startswith("lora."):
        return (f"{where}: {key} is {was!r} in the adapter and {now!r} in this config; an adapter continues "
                f"only under the settings it was trained with: set {key}={was}")
    return (f"{where}: the {key} differs from the parent run's ({str(was)[:12]}... here {str(now)[:12]}...); "
            "continue with the tokenizer and template the adapter was trained with")


def _same_model(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a == b
