"""Failure categories: the guide's three manual questions, answered automatically where the metric allows.

For every answer an evaluation scores, the metric says *correct?*; a metric's failure check says
*right format?* and *any hallucination?*:

    check(output, reference, meta) -> Failures(format_ok, hallucination, detail)

`format_ok` and `hallucination` are True, False or None (None: this check cannot tell), and
`detail` is a short reason shown in reports ("no such column: doctor_fee"). Checks are looked up
by metric name in `CHECKS`; a metric without one gets `no_check` (both None). To give a new
metric its check, add it to `CHECKS` under the metric's name; a user's `module:function` metric
can carry one as the function's `failures` attribute. Checks must never raise on model output.

- `sql_exec`: right format = one SQL statement that SQLite parses (prepared with EXPLAIN against
  the example's database: nothing runs); hallucination = a table or column not in the schema
  (SQLite's own name resolution). For output that is not SQL (prose, markdown) the first query
  found inside it is checked for names, so a chatty base model's invented columns still count.
- `json_valid`: right format = valid JSON; hallucination = an object key (at any depth) that the
  reference's JSON does not have.
- `regex:PATTERN`: right format = the pattern matches (the metric is its own format check).
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Callable

from .metrics import MAX_SQL_STEPS, get_metric, read_only, regex_metric


@dataclass(frozen=True)
class Failures:
    format_ok: bool | None = None
    hallucination: bool | None = None
    detail: str = ""


FailureCheck = Callable[[str, str, dict], Failures]
UNKNOWN_NAME = re.compile(r"^no such (column|table): ")
NAME_ERRORS = re.compile(r"^(no such (column|table|function)|ambiguous column name): ")  # parsed, then unresolved
FENCED_SQL = re.compile(r"```(?:sql|sqlite)?\s*(.*?)```", re.IGNORECASE | re.DOTALL)
BARE_SQL = re.compile(r"\b(?:SELECT|WITH)\b.*?(?:;|$)", re.DOTALL)  # upper case: prose says "with"


def no_check(output: str, reference: str, meta: dict) -> Failures:
    return Failures()


def _prepare_error(db: sqlite3.Connection, sql: str) -> str | None:
    """SQLite's message when `sql` is not one statement it can prepare, None when it can."""
    if not sql.strip():
        return "empty answer"
    try:
        db.execute("EXPLAIN " + sql)  # parse and resolve names; the query itself never runs
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError) as e:
        return str(e)
    return None


def sql_failures(output: str, reference: str, meta: dict) -> Failures:
    setup = meta.get("setup_sql")
    if not isinstance(setup, str):
        return Failures()
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(setup)
        db.set_authorizer(read_only)  # a write statement is not the query asked for: a format failure
        db.set_progress_handler(lambda: 0, MAX_SQL_STEPS)
        error = _prepare_error(db, output.strip())
        if error is None:
            return Failures(True, False)
        if NAME_ERRORS.match(error):
            return Failures(True, bool(UNKNOWN_NAME.match(error)), error)
        embedded, name_error = _embedded_hallucination(db, output)
        return Failures(False, embedded, f"{error}; in the query inside: {name_error}" if name_error else error)
    finally:
        db.close()


def _embedded_hallucination(db: sqlite3.Connection, output: str) -> tuple[bool | None, str]:
    """Names checked in the first query inside prose or a markdown block: (invented name?, SQLite's
    message about it); (None, "") when no query inside parses."""
    candidates = [m.group(1) for m in FENCED_SQL.finditer(output)] + [m.group(0) for m in BARE_SQL.finditer(output)]
    for candidate in candidates:
        error = _prepare_error(db, candidate.strip())
        if error is None:
            return False, ""
        if NAME_ERRORS.match(error):
            return bool(UNKNOWN_NAME.match(error)), error
    return None, ""


def _keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def json_failures(output: str, reference: str, meta: dict) -> Failures:
    try:
        got = json.loads(output)
    except (ValueError, RecursionError) as e:
        return Failures(False, None, f"not JSON: {e}")
    try:
        expected = json.loads(reference)
    except (ValueError, RecursionError):
        return Failures(True, None)
    extra = sorted(_keys(got) - _keys(expected))
    return Failures(True, bool(extra), f"keys not in the reference: {', '.join(extra)}" if extra else "")


CHECKS: dict[str, FailureCheck] = {"sql_exec": sql_failures, "json_valid": json_failures, "json_fields": json_failures}


def failure_check(metric_name: str) -> FailureCheck:
    """The failure check for a metric name (as `--metric` takes it); `no_check` when it has none."""
    if metric_name in CHECKS:
        return CHECKS[metric_name]
    if metric_name.startswith("regex:"):
        matches = regex_metric(metric_name[len("regex:"):])
        return lambda output, reference, meta: Failures(bool(matches(output, reference, meta)), None)
    if ":" in metric_name:
        return getattr(get_metric(metric_name), "failures", no_check)
    return no_check


def _share(values: list) -> float | None:
    """Share of all answers for which the check said True (an answer it could not judge counts as
    False); None when it could judge none of them."""
    known = [v for v in values if v is not None]
    return sum(bool(v) for v in values) / len(values) if known else None


def add_failures(result: dict, metric_name: str, metas: list[dict]) -> dict:
    """Fill each example row's `{side}_format`, `{side}_hallucination`, `{side}_failure` and each
    side's summary `format` (share with the right format) and `hallucination` (share with an
    invented name) in an evaluation result, in place; returns it."""
    check = failure_check(metric_name)
    for row, meta in zip(result["examples"], metas):
        for side in ("base", "tuned"):
            found = check(row[side], row["reference"], meta)
            row[f"{side}_format"], row[f"{side}_hallucination"] = found.format_ok, found.hallucination
            row[f"{side}_failure"] = found.detail
    for side in ("base", "tuned"):
        result[side]["format"] = _share([r[f"{side}_format"] for r in result["examples"]])
        result[side]["hallucination"] = _share([r[f"{side}_hallucination"] for r in result["examples"]])
    return result


def failure_examples(result: dict, side: str, limit: int = 3) -> dict[str, list[dict]]:
    """Up to `limit` rows per category for one side: wrong (in the right format, no invented name:
    the logic failed), wrong format, hallucination."""
    rows = result["examples"]
    return {
        "wrong": [r for r in rows if r[f"{side}_ok"] < 1 and r.get(f"{side}_format") is not False
                  and not r.get(f"{side}_hallucination")][:limit],
        "format": [r for r in rows if r.get(f"{side}_format") is False][:limit],
        "hallucination": [r for r in rows if r.get(f"{side}_hallucination")][:limit],
    }
