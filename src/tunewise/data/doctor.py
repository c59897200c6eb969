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

from .load import DataError, Example, iter_examples
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
    line: int | None = None

    def where(self) -> str:
        return f"{self.file}:{self.line}: " if self.line else (f"{self.file}: " if self.file else "")


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    preview: dict | None = None
    _counts: Counter = field(default_factory=Counter, repr=False)

    def add(self, level: str, code: str, message: str, file=None, line=None) -> None:
        self._counts[(level, code)] += 1
        if self._counts[(level, code)] <= MAX_LISTED:
            self.findings.append(Finding(level, code, message, str(file) if file else None, line))
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
                "findings": [asdict(f) for f in self.findings], "stats": self.stats, "preview": self.preview}


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
    exact: dict = field(default_factory=dict)   # digest -> first line
    near: dict = field(default_factory=dict)    # digest -> first line
    prompts: dict = field(default_factory=dict)  # digest of the prompt part -> first line
    answer_chars: array = field(default_factory=lambda: array("I"))
    answer_lines: array = field(default_factory=lambda: array("I"))
    systems: Counter = field(default_factory=Counter)
    system_text: dict = field(default_factory=dict)
    no_system: int = 0


def _scan(path: str | Path, report: Report) -> _FileScan:
    scan = _FileScan(str(path))
    for item in iter_examples(path):
        if isinstance(item, DataError):
            report.add("error", item.code, item.detail, item.path, item.line)
            continue
        scan.n += 1
        _record(scan, item, report)
    return scan


def _record(scan: _FileScan, ex: Example, report: Report) -> None:
    text = "\x1e".join(f"{m['role']}\x1f{m['content'] or ''}" for m in ex.messages)
    exact, near = _digest(text), _digest(_norm(text))
    if exact in scan.exact:
        report.add("warning", "duplicate", f"exact duplicate of line {scan.exact[exact]}", scan.path, ex.line)
    elif near in scan.near:
        report.add("warning", "near-duplicate", f"near duplicate (case/punctuation) of line {scan.near[near]}",
                   scan.path, ex.line)
    scan.exact.setdefault(exact, ex.line)
    scan.near.setdefault(near, ex.line)
    scan.prompts.setdefault(_digest(_norm("\x1e".join(m["content"] or "" for m in ex.messages[:-1]))), ex.line)
    answer = ex.messages[-1]["content"] or ""
    scan.answer_chars.append(min(len(answer), 2**32 - 1))
    scan.answer_lines.append(ex.line)
    system = [m["content"] for m in ex.messages if m["role"] == "system"]
    if system:
        key = _digest(system[0])
        scan.systems[key] += 1
        scan.system_text.setdefault(key, system[0][:200])
    else:
        scan.no_system += 1
    _role_order(ex, scan.path, report)


def _role_order(ex: Example, path: str, report: Report) -> None:
    roles = [m["role"] for m in ex.messages]
    if "system" in roles[1:]:
        report.add("warning", "role-order", "a system message after the first message", path, ex.line)
    body = [r for r in roles if r not in ("system", "tool")]
    if body and body[0] != "user":
        report.add("warning", "role-order", "the conversation does not start with a user message", path, ex.line)
    if any(a == b for a, b in zip(body, body[1:])):
        report.add("warning", "role-order", "two consecutive messages from the same role", path, ex.line)


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
    for n, line in zip(lengths, scan.answer_lines):
        if n > high or n < low:
            report.add("warning", "length-outlier", f"response of {n} characters (typical {q[0]:.0f}-{q[2]:.0f}, "
                       f"median {median:.0f}); check it is not truncated or padded", scan.path, line)
    report.stats.setdefault("response_chars", {})[scan.path] = {
        "min": min(lengths), "median": statistics.median(lengths), "max": max(lengths)}


def _leakage(train: _FileScan, val: _FileScan, report: Report) -> None:
    leaked = [line for key, line in val.prompts.items() if key in train.prompts]
    exact = [line for key, line in val.exact.items() if key in train.exact]
    for line in sorted(set(leaked) | set(exact)):
        report.add("warning", "train-val-overlap", f"this validation example's prompt also appears in {train.path}; "
                   "validation loss will be optimistic", val.path, line)


def check(path: str | Path, val: str | Path | None = None, tokenizer=None, max_seq_len: int | None = None,
          allow_small: bool = False, options: TargetOptions = TargetOptions()) -> Report:
    """All checks on a training file (and its validation file, for leakage), optionally with a tokenizer."""
    report = Report()
    scans = [_scan(path, report)]
    _dataset_checks(scans[0], report, allow_small)
    if val is not None:
        scans.append(_scan(val, report))
        if scans[1].n == 0:
            report.add("error", "empty-file", "no valid examples", scans[1].path)
        _leakage(scans[0], scans[1], report)
    report.stats["examples"] = {s.path: s.n for s in scans}
    if tokenizer is not None:
        for scan in scans:
            token_checks(scan.path, tokenizer, max_seq_len, report, options)
    return report
