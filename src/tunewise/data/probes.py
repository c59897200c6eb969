"""The general probe set (tunewise/probes/general.jsonl) and the cache of a base model's own answers.

The set is split once and for all: the first MEASURE_SIZE prompts measure forgetting (the
evaluation's check), the rest are what `data.replay.source: self` trains on, so replay never
trains on the prompts that measure it, nor on another prompt of the same template (the same
question with other numbers or words: probes/generate.py).

A base model's greedy answers are cached once per base under `$TUNEWISE_CACHE/probe-answers/`
(default ~/.cache/tunewise): one JSON file per key, the key a hash of what makes the answers
what they are (the model's config.json, its weight files' names, sizes and first and last MiB,
the chat template, quantization and dtype, the generation length, the probe set's own hash, so a
new probe set never reads another's answers by id). Each file maps probe id ->
answer, so asking for more probes later generates only the missing ones.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import TunewiseError
from ..files import cache_dir, write_atomic

PROBES_FILE = Path(__file__).resolve().parents[1] / "probes" / "general.jsonl"
MEASURE_SIZE = 100  # probes p000-p099 measure forgetting; the rest may be replayed
ANSWER_TOKENS = 64  # greedy tokens per base answer: enough for a fact, a sum, a rewritten sentence


@dataclass(frozen=True)
class Probe:
    id: str
    kind: str
    prompt: str
    template: str = ""  # the prompt with its slots ("What is {a} + {b}?"): one side of the split only

    def messages(self) -> list[dict]:
        return [{"role": "user", "content": self.prompt}]


def load_probes() -> list[Probe]:
    if not PROBES_FILE.is_file():
        raise TunewiseError(f"the probe set was not found at {PROBES_FILE}; reinstall tunewise")
    return [Probe(**json.loads(line)) for line in PROBES_FILE.read_text(encoding="utf-8").splitlines() if line]


def measure_probes(n: int) -> list[Probe]:
    """The first `n` measuring probes (a mix of kinds: the file is shuffled)."""
    if not 0 < n <= MEASURE_SIZE:
        raise TunewiseError(f"--probes {n}: choose 1..{MEASURE_SIZE} (0 turns the forgetting check off)")
    return load_probes()[:n]


def replay_probes() -> list[Probe]:
    return load_probes()[MEASURE_SIZE:]


def base_key(source: str, template_sha256: str, variant: str, answer_tokens: int = ANSWER_TOKENS) -> str:
    """What identifies a base model's answers: its config and weight files (names, sizes), or its
    hub id; its chat template; how it runs (`variant`: quantization/dtype); how long answers may be;
    which probe set they answer (ids are positions in it)."""
    path = Path(source)
    parts = [f"template={template_sha256}", f"variant={variant}", f"tokens={answer_tokens}",
             f"probes={hashlib.sha256(PROBES_FILE.read_bytes()).hexdigest()}"]
    if (path / "config.json").is_file():
        parts.append((path / "config.json").read_text(encoding="utf-8"))
        parts += [_weights_fingerprint(f) for f in sorted(path.glob("*.safetensors"))]
    else:
        parts.append(f"hub={source}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def _weights_fingerprint(path: Path, span: int = 1 << 20) -> str:
    """Name, size, and a hash of the first and last MiB: two checkpoints of one architecture have
    the same names and sizes, and hashing whole multi-GB files at every evaluation would be slow."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(span)
        handle.seek(max(size - span, 0))
        tail = handle.read(span)
    return f"{path.name}:{size}:{hashlib.sha256(head + tail).hexdigest()}"


def answers_path(key: str) -> Path:
    return cache_dir() / "probe-answers" / f"{key}.json"


def read_answers(key: str) -> dict[str, str]:
    path = answers_path(key)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))["answers"]
    except (ValueError, KeyError, TypeError):
        return {}  # a damaged cache is regenerated, never trusted


def write_answers(key: str, source: str, answers: dict[str, str]) -> Path:
    path = answers_path(key)
    merged = {**read_answers(key), **answers}  # another process may have added some meanwhile
    write_atomic(path, json.dumps({"base": source, "answers": merged}, indent=1, ensure_ascii=False))
    return path
