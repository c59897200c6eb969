"""Task metrics: each scores one model output against the reference, 1.0 (right) or 0.0 (wrong).

`sql_exec` executes the model's raw output, as is, in an in-memory SQLite built from
`meta.setup_sql`, and compares rows with the reference's: as a list when the reference's
top-level statement has an ORDER BY (found by parsing it with sqlglot: an ORDER BY inside a
subquery, a CTE or `RANK() OVER (ORDER BY ...)` does not order the result), as a multiset
otherwise. Prose or markdown around the query fails to execute and scores 0: the format is part
of the task. A metric may carry `check_reference(reference, meta)`, which evaluation runs on every
example before generating anything, so a broken reference is refused by line, not after an hour.
"""

from __future__ import annotations

import importlib
import json
import re
import sqlite3
import sys
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Callable

from ..errors import TunewiseError

Metric = Callable[[str, str, dict], float]
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
    objects' keys) whose value equals the reference's, at any depth: strings compared
    case-insensitively and stripped, numbers as numbers (3 == 3.0), booleans and null exactly,
    objects by the same keys and lists by the same length, value by value. Two empty objects are
    identical (1.0)."""
    try:
        got, want = json.loads(output), json.loads(reference)
    except (ValueError, RecursionError):
        return 0.0
    if not isinstance(want, dict):
        raise TunewiseError("the json_fields metric needs a JSON object as the reference answer")
    if not isinstance(got, dict):
        return 0.0
    keys = got.keys() | want.keys()
    if not keys:
        return 1.0
    return sum(_same_value(got.get(k, _MISSING), want.get(k, _MISSING)) for k in keys) / len(keys)


_MISSING = object()


def _same_value(a, b) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.strip().casefold() == b.strip().casefold()
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-9 * max(1.0, abs(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return False  # different JSON types (or a field missing on one side)


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


class OverBudget(sqlite3.OperationalError):
    """The query ran past MAX_SQL_STEPS (SQLite reports only 'interrupted')."""


def _rows(db: sqlite3.Connection, sql: str):
    steps = [0]

    def budget() -> int:
        steps[0] += 1
        return 1 if steps[0] * 1000 > MAX_SQL_STEPS else 0

    db.set_progress_handler(budget, 1000)
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:
        if steps[0] * 1000 > MAX_SQL_STEPS:
            raise OverBudget(f"ran past {MAX_SQL_STEPS:,} SQLite VM steps") from None
        raise


def _setup(meta: dict) -> str:
    setup = meta.get("setup_sql")
    if not isinstance(setup, str):
        raise TunewiseError("the sql_exec metric needs meta.setup_sql (SQL that builds the database) in every example")
    return setup


@lru_cache(maxsize=4096)
def _reference_rows(setup: str, reference: str) -> tuple[list, bool]:
    """The reference's rows and whether its top-level ORDER BY orders them; TunewiseError when
    the database cannot be built or the reference does not run within the step budget. Cached:
    every example's reference is run once per evaluation, not once per model."""
    db = sqlite3.connect(":memory:")
    try:
        try:
            db.executescript(setup)
        except sqlite3.Error as e:
            raise TunewiseError(f"meta.setup_sql fails in SQLite: {e}") from None
        try:
            rows = _rows(db, reference)
        except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError) as e:
            raise TunewiseError(f"the reference query fails in SQLite: {e}: {reference!r}") from None
    finally:
        db.close()
    return rows, _orders_rows(reference)


def _orders_rows(reference: str) -> bool:
    """True when the statement itself (not a subquery, CTE, window or aggregate in it) has ORDER BY."""
    import sqlglot  # imported here: the CLI imports this module for every command

    try:
        statement = sqlglot.parse_one(reference, read="sqlite")
    except sqlglot.errors.SqlglotError as e:
        raise TunewiseError(f"the reference query runs in SQLite, but sqlglot cannot parse it to tell whether "
                            f"its rows are ordered ({str(e).splitlines()[0]}): {reference!r}") from None
    return statement.args.get("order") is not None


def check_sql_reference(reference: str, meta: dict) -> None:
    _reference_rows(_setup(meta), reference)


def sql_exec(output: str, reference: str, meta: dict) -> float:
    expected, ordered = _reference_rows(_setup(meta), reference)
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(meta["setup_sql"])
        db.set_authorizer(read_only)
        try:
            got = _rows(db, output.strip())
        except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError):
            return 0.0
    finally:
        db.close()
    return float(got == expected if ordered else Counter(got) == Counter(expected))


sql_exec.check_reference = check_sql_reference


def check_references(metric: Metric, examples, references: list[str], data_path) -> None:
    """Run the metric's reference check (if it has one) on every example, before any generation;
    the first failure is refused with its file and line."""
    check = getattr(metric, "check_reference", None)
    if check is None:
        return
    for example, reference in zip(examples, references):
        if not isinstance(reference, str):
            continue  # no text to check (a tool call): evaluation refuses it by line where it scores
        try:
            check(reference, example.meta)
        except TunewiseError as e:
            raise TunewiseError(f"{data_path}:{example.line}: {e}") from None


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
