"""The data doctor: every data and chat-template mistake found before training, with file:line.

`check()` streams each file once (bounded memory: per example it keeps a few hashes and lengths,
never the text), then runs dataset-level checks, then, given a tokenizer, the token-level and
chat-template checks. `tunewise data check` prints the report; `tunewise train` runs the same
checks and refuses to start on errors.
"""

from __future__ import annotations

import hashlib
import re
import statistics
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .load import DataError, DataSpec, Example, Reader, where
from .targets import TargetOptions
from .tokens import token_checks

MIN_EXAMPLES = 50  # the guide: below this, use few-shot prompting instead
FEW_EXAMPLES = 100  # the guide: 100-500 high-quality examples is a realistic minimum
MAX_LISTED = 20  # findings of one kind listed in full; the rest are counted


@dataclass
class Finding:
    level: str  # "error" | "warning" | "info"
    code: str
    message: str
    file: str | None = None
    line: int | None = None  # or, for parquet and arrow, the row (from 0)
    unit: str = "line"

    def to_json(self) -> dict:
        """`line` in JSON Lines and JSON arrays; `row` (and no line) in parquet and arrow."""
        out = asdict(self)
        if out.pop("unit") == "row":
            out["row"] = out.pop("line")
        return out

    def where(self) -> str:
        if self.line is not None:
            return f"{where(self.file, self.line, self.unit)}: "
        return f"{self.file}: " if self.file else ""


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    preview: dict | None = None
    _counts: Counter = field(default_factory=Counter, repr=False)

    def add(self, level: str, code: str, message: str, file=None, line=None, unit: str = "line") -> None:
        self._counts[(level, code)] += 1
        if self._counts[(level, code)] <= MAX_LISTED:
            self.findings.append(Finding(level, code, message, str(file) if file else None, line, unit))
        elif self._counts[(level, code)] == MAX_LISTED + 1:
            self.findings.append(Finding(level, code, f"... more '{code}' findings (counted in the summary)",
                                         None, None))

    @property
    def errors(self) -> int:
        return sum(n for (level, _), n in self._counts.items() if level == "error")

    @property
    def warnings(self) -> int:
        return sum(n for (level, _), n in self._counts.items() if level == "warning")

    def to_json(self) -> dict:
        return {"ok": self.errors == 0, "errors": self.errors, "warnings": self.warnings,
                "counts": {f"{level}:{code}": n for (level, code), n in sorted(self._counts.items())},
                "findings": [f.to_json() for f in self.findings], "stats": self.stats, "preview": self.preview}


def _norm(text: str) -> str:
    """Near-duplicate key: case, whitespace and punctuation do not make examples different."""
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).digest()


@dataclass
class _FileScan:
    """What one pass over a file keeps: hashes and lengths, not text."""
    path: str
    n: int = 0
    exact: dict = field(default_factory=dict)   # digest -> first (file, line)
    near: dict = field(default_factory=dict)    # digest -> first (file, line)
    prompts: dict = field(default_factory=dict)  # digest of the prompt part -> first (file, line)
    answer_chars: array = field(default_factory=lambda: array("I"))
    answer_at: list = field(default_factory=list)  # (file, line) of each answer: a directory has several files
    unit: str = "line"
    systems: Counter = field(default_factory=Counter)
    system_text: dict = field(default_factory=dict)
    no_system: int = 0


def _scan(path: str | Path, report: Report, spec: DataSpec | None = None) -> _FileScan:
    reader = Reader(path, spec)
    scan = _FileScan(str(path), unit=reader.source.unit)
    for item in reader:
        if isinstance(item, DataError):
            report.add("error", item.code, item.detail, item.path, item.line, item.unit)
            continue
        scan.n += 1
        _record(scan, item, report)
    report.stats.setdefault("format", {})[str(path)] = {"format": reader.format, "detected_at": reader.detected_at,
                                                        "described": reader.describe()}
    return scan


def _ref(first: tuple, ex: Example) -> str:
    """Where an earlier record is, said from `ex`: `line 3`, or `other.parquet row 3` in another file."""
    path, number = first
    return f"{ex.unit} {number}" if path == ex.path else where(path, number, ex.unit)


def _record(scan: _FileScan, ex: Example, report: Report) -> None:
    text = "\x1e".join(f"{m['role']}\x1f{m['content'] or ''}" for m in ex.messages)
    exact, near = _digest(text), _digest(_norm(text))
    at = (ex.path, ex.line)
    if exact in scan.exact:
        report.add("warning", "duplicate", f"exact duplicate of {_ref(scan.exact[exact], ex)}", ex.path, ex.line,
                   ex.unit)
    elif near in scan.near:
        report.add("warning", "near-duplicate", f"near duplicate (case/punctuation) of {_ref(scan.near[near], ex)}",
                   ex.path, ex.line, ex.unit)
    scan.exact.setdefault(exact, at)
    scan.near.setdefault(near, at)
    scan.prompts.setdefault(_digest(_norm("\x1e".join(m["content"] or "" for m in ex.messages[:-1]))), at)
    answer = ex.messages[-1]["content"] or ""
    scan.answer_chars.append(min(len(answer), 2**32 - 1))
    scan.answer_at.append(at)
    system = [m["content"] for m in ex.messages if m["role"] == "system"]
    if system:
        key = _digest(system[0])
        scan.systems[key] += 1
        scan.system_text.setdefault(key, system[0][:200])
    else:
        scan.no_system += 1
    _role_order(ex, report)


def _role_order(ex: Example, report: Report) -> None:
    roles = [m["role"] for m in ex.messages]
    if "system" in roles[1:]:
        report.add("warning", "role-order", "a system message after the first message", ex.path, ex.line, ex.unit)
    body = [r for r in roles if r not in ("system", "tool")]
    if body and body[0] != "user":
        report.add("warning", "role-order", "the conversation does not start with a user message", ex.path, ex.line,
                   ex.unit)
    if any(a == b for a, b in zip(body, body[1:])):
        report.add("warning", "role-order", "two consecutive messages from the same role", ex.path, ex.line, ex.unit)


def _dataset_checks(scan: _FileScan, report: Report, allow_small: bool) -> None:
    if scan.n == 0:
        report.add("error", "empty-file", "no valid examples", scan.path)
        return
    if scan.n < MIN_EXAMPLES:
        level = "warning" if allow_small else "error"
        report.add(level, "too-few-examples",
                   f"{scan.n} examples: below {MIN_EXAMPLES} fine-tuning reliably gives poor "
                   "results; use few-shot prompting instead (--allow-small, or data.allow_small: true, "
                   "to proceed anyway)", scan.path)
    elif scan.n < FEW_EXAMPLES:
        report.add("warning", "few-examples", f"{scan.n} examples: 100-500 curated examples is a realistic minimum",
                   scan.path)
    _system_prompt_checks(scan, report)
    _length_outliers(scan, report)


def _system_prompt_checks(scan: _FileScan, report: Report) -> None:
    if scan.systems and scan.no_system:
        report.add("warning", "system-prompt-mixed", f"{scan.no_system} examples have no system prompt and "
                   f"{sum(scan.systems.values())} have one; use the same system prompt you will use at inference",
                   scan.path)
    if len(scan.systems) > 1:
        texts = list(scan.system_text.values())
        prefix = _common_prefix(texts)
        if len(prefix) >= 30:
            report.add("info", "system-prompt-templated", f"{len(scan.systems)} distinct system prompts sharing the "
                       f"prefix {prefix[:60]!r}... (a template with per-example context)", scan.path)
        else:
            common = scan.systems.most_common(1)[0][1]
            report.add("warning", "system-prompt-differs", f"{len(scan.systems)} different system prompts (the most "
                       f"common is used by {common} of {scan.n}); the system prompt should match what you use "
                       "at inference",
                       scan.path)


def _common_prefix(texts: list[str]) -> str:
    first, last = min(texts), max(texts)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def _length_outliers(scan: _FileScan, report: Report) -> None:
    lengths = scan.answer_chars
    if len(lengths) < 20:
        return
    q = statistics.quantiles(lengths, n=4, method="inclusive")
    median = statistics.median(lengths)
    # Far outside the bulk on both scales: 3 IQRs beyond the quartiles and 5x off the median, so
    # naturally varied answers (a join is longer than a COUNT) are not flagged.
    high = max(q[2] + 3 * (q[2] - q[0]), 5 * median)
    low = min(q[0] - 3 * (q[2] - q[0]), median / 5)
    for n, (path, line) in zip(lengths, scan.answer_at):
        if n > high or n < low:
            report.add("warning", "length-outlier", f"response of {n} characters (typical {q[0]:.0f}-{q[2]:.0f}, "
                       f"median {median:.0f}); check it is not truncated or padded", path, line, scan.unit)
    report.stats.setdefault("response_chars", {})[scan.path] = {
        "min": min(lengths), "median": statistics.median(lengths), "max": max(lengths)}


def _leakage(train: _FileScan, val: _FileScan, report: Report) -> None:
    leaked = [at for key, at in val.prompts.items() if key in train.prompts]
    exact = [at for key, at in val.exact.items() if key in train.exact]
    for path, line in sorted(set(leaked) | set(exact)):
        report.add("warning", "train-val-overlap", f"this validation example's prompt also appears in {train.path}; "
                   "validation loss will be optimistic", path, line, val.unit)


def check(path: str | Path, val: str | Path | None = None, tokenizer=None, max_seq_len: int | None = None,
          allow_small: bool = False, options: TargetOptions = TargetOptions(), spec: DataSpec | None = None) -> Report:
    """All checks on a training file (and its validation file, for leakage), optionally with a tokenizer.
    `spec`: data.format, data.columns and data.roles (default: the format detected)."""
    report = Report()
    scans = [_scan(path, report, spec)]
    _dataset_checks(scans[0], report, allow_small)
    if val is not None:
        scans.append(_scan(val, report, spec))
        if scans[1].n == 0:
            report.add("error", "empty-file", "no valid examples", scans[1].path)
        _leakage(scans[0], scans[1], report)
    report.stats["examples"] = {s.path: s.n for s in scans}
    if tokenizer is not None:
        for scan in scans:
            token_checks(scan.path, tokenizer, max_seq_len, report, options, spec)
    return report
