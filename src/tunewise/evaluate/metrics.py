"""Task metrics: each scores one model output against the reference, 1.0 (right) or 0.0 (wrong).

`sql_exec` executes the model's raw output, as is, in an in-memory SQLite built from
`meta.setup_sql`, and compares rows with the reference's: as a list when the reference orders
rows (ORDER BY), as a multiset otherwise. Prose or markdown around the query fails to execute
and scores 0: the format is part of the task.
"""

from __future__ import annotations

import importlib
import json
import re
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Callable

from ..errors import TunewiseError

Metric = Callable[[str, str, dict], float]
ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)
MAX_SQL_STEPS = 2_000_000  # SQLite VM steps before a query is abandoned (runaway cross joins)


def exact_match(output: str, reference: str, meta: dict) -> float:
    return float(output.strip() == reference.strip())


def json_valid(output: str, reference: str, meta: dict) -> float:
    try:
        json.loads(output)
    except (ValueError, RecursionError):
        return 0.0
    return 1.0


def json_fields(output: str, reference: str, meta: dict) -> float:
    """0 unless the raw output is one JSON object; then the share of fields (the union of both
    objects' keys) whose value equals the reference's: strings compared case-insensitively and
    stripped, numbers as numbers (3 == 3.0), booleans and null exactly."""
    try:
        got, want = json.loads(output), json.loads(reference)
    except (ValueError, RecursionError):
        return 0.0
    if not isinstance(want, dict):
        raise TunewiseError("the json_fields metric needs a JSON object as the reference answer")
    if not isinstance(got, dict):
        return 0.0
    keys = got.keys() | want.keys()
    return sum(_same_value(got.get(k, _MISSING), want.get(k, _MISSING)) for k in keys) / max(len(keys), 1)


_MISSING = object()


def _same_value(a, b) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.strip().casefold() == b.strip().casefold()
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-9 * max(1.0, abs(b))
    return a == b


def regex_metric(pattern: str) -> Metric:
    try:
        compiled = re.compile(pattern, re.DOTALL)
    except re.error as e:
        raise TunewiseError(f"--metric regex:{pattern}: not a valid regular expression ({e})") from None
    return lambda output, reference, meta: float(compiled.fullmatch(output.strip()) is not None)


def read_only(action, *args) -> int:
    """SQLite authorizer for model output: reading only; no ATTACH (it could create files), no writes."""
    allowed = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
    return sqlite3.SQLITE_OK if action in allowed else sqlite3.SQLITE_DENY


def _rows(db: sqlite3.Connection, sql: str):
    steps = [0]

    def budget() -> int:
        steps[0] += 1
        return 1 if steps[0] * 1000 > MAX_SQL_STEPS else 0

    db.set_progress_handler(budget, 1000)
    return db.execute(sql).fetchall()


def sql_exec(output: str, reference: str, meta: dict) -> float:
    setup = meta.get("setup_sql")
    if not isinstance(setup, str):
        raise TunewiseError("the sql_exec metric needs meta.setup_sql (SQL that builds the database) in every example")
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(setup)
        expected = _rows(db, reference)
        db.set_authorizer(read_only)
        try:
            got = _rows(db, output.strip())
        except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError):
            return 0.0
    finally:
        db.close()
    if ORDER_BY.search(reference):
        return float(got == expected)
    return float(Counter(got) == Counter(expected))


BUILTIN: dict[str, Metric] = {"exact_match": exact_match, "sql_exec": sql_exec, "json_valid": json_valid,
                              "json_fields": json_fields}


def get_metric(name: str) -> Metric:
    """A builtin name, `regex:PATTERN`, or a user's `module:function` (imported only when named)."""
    if name in BUILTIN:
        return BUILTIN[name]
    if name.startswith("regex:"):
        return regex_metric(name[len("regex:"):])
    if re.fullmatch(r"[\w.]+:\w+", name):
        return _user_metric(name)
    raise TunewiseError(f"unknown metric '{name}': use one of {', '.join(BUILTIN)}, regex:PATTERN, or module:function")


def _user_metric(name: str) -> Metric:
    module_name, function = name.split(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise TunewiseError(f"--metric {name}: cannot import module '{module_name}' ({e})") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise TunewiseError(f"--metric {name}: '{module_name}' has no function '{function}'")
    return fn
