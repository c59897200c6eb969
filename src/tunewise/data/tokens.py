"""Token-level and chat-template checks for the data doctor (needs the model's tokenizer)."""

from __future__ import annotations

import statistics
from array import array
from dataclasses import dataclass, field

from ..errors import TunewiseError
from .load import DataError, DataSpec, iter_examples
from .masking import IGNORE, encode
from .targets import TargetOptions
from .template import TemplateCheckError, require_template


@dataclass
class _Totals:
    """What the token checks keep over a file: lengths and counts, not text."""
    lengths: array = field(default_factory=lambda: array("I"))
    shares: array = field(default_factory=lambda: array("f"))
    truncated: int = 0
    lost: int = 0
    trained: int = 0
    eos_missing_line: tuple | None = None  # (file, line, unit) of the first such example


def token_checks(path: str, tokenizer, max_seq_len: int | None, report,
                 options: TargetOptions = TargetOptions(), spec: DataSpec | None = None) -> None:
    try:
        require_template(tokenizer)
    except TunewiseError as e:
        report.add("error", "no-chat-template", str(e))
        return
    ends = options.stops(tokenizer)
    totals = _Totals()
    for ex in iter_examples(path, spec):
        if isinstance(ex, DataError):
            continue  # already reported by the scan
        try:
            sequences = encode(tokenizer, ex, max_seq_len or 10**9, ex.where, options)
        except TemplateCheckError as e:
            report.add("error", e.code, str(e).split(": ", 1)[-1], ex.path, ex.line, ex.unit)
            continue
        except TunewiseError as e:
            report.add("error", "template-error", str(e), ex.path, ex.line, ex.unit)
            continue
        for enc in sequences:
            _sequence_checks(enc, tokenizer, max_seq_len, ends, report, totals, ex)
    if totals.eos_missing_line is not None:
        report.add("error", "end-of-turn-not-trained", "a trained turn does not end with a token that stops "
                   "generation, so the model never learns to stop; set data.end_of_turn to the model's stop token",
                   *totals.eos_missing_line)
    if totals.lengths:
        _length_stats(path, totals, max_seq_len, report)


def _sequence_checks(enc, tokenizer, max_seq_len, ends, report, totals: _Totals, ex) -> None:
    at = (ex.path, ex.line, ex.unit)
    totals.lengths.append(len(enc.input_ids) + enc.overflow)
    trained = enc.n_trained
    totals.trained += trained
    totals.shares.append(trained / max(len(enc.input_ids), 1))
    if enc.truncated:
        totals.truncated += 1
        totals.lost += enc.lost_trained_tokens
        report.add("warning", "truncated", f"longer than max_seq_len={max_seq_len}: "
                   f"{enc.lost_trained_tokens} assistant tokens would be cut", *at)
    if trained == 0:
        report.add("error", "no-trained-tokens", "no assistant tokens left to train on"
                   + (f" within max_seq_len={max_seq_len}" if max_seq_len else ""), *at)
    bos = tokenizer.bos_token_id
    if bos is not None and enc.input_ids[:2] == [bos, bos]:
        report.add("error", "double-bos", "the rendered text starts with two BOS tokens", *at)
    if not enc.truncated and trained and totals.eos_missing_line is None and not _turns_end_in_loss(enc, ends):
        totals.eos_missing_line = at
    if report.preview is None:
        report.preview = _preview(tokenizer, enc, ex)


def _turns_end_in_loss(enc, ends: set[int]) -> bool:
    """Every run of trained tokens must end with an end-of-turn token."""
    labels = enc.labels
    for i, label in enumerate(labels):
        last_of_run = label != IGNORE and (i + 1 == len(labels) or labels[i + 1] == IGNORE)
        if last_of_run and label not in ends:
            return False
    return True


def _length_stats(path, totals: _Totals, max_seq_len, report) -> None:
    lengths, shares = totals.lengths, totals.shares
    q = statistics.quantiles(lengths, n=100, method="inclusive") if len(lengths) > 1 else [lengths[0]] * 99
    report.stats.setdefault("tokens", {})[path] = {
        "examples": len(lengths), "p50": q[49], "p90": q[89], "p99": q[98], "max": max(lengths),
        "max_seq_len": max_seq_len, "truncated": totals.truncated,
        "assistant_tokens_lost_share": totals.lost / max(totals.trained + totals.lost, 1),
        "trained_share_min": min(shares), "trained_share_median": statistics.median(shares),
    }


def _preview(tokenizer, enc, ex) -> dict:
    pieces = []
    for token, label in zip(enc.input_ids, enc.labels):
        text = tokenizer.decode([token], skip_special_tokens=False)
        if pieces and pieces[-1][1] == (label != IGNORE):
            pieces[-1][0] += text
        else:
            pieces.append([text, label != IGNORE])
    return {"file": ex.path, "line": ex.line, "where": ex.where,
            "pieces": [{"text": t, "trained": bool(tr)} for t, tr in pieces]}
