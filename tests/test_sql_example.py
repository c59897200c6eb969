"""The SQL example's data: committed files match the generator, every gold query runs on its own
database, the splits never share a schema, and the style-shift split shares no phrasing with training."""

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "tunewise" / "examples" / "sql"
SPLITS = ("train", "val", "test", "shift")
SYSTEM = ("You are a SQL expert. Write one SQLite query that answers the question. "
          "Reply with the query only.\n\nSchema:\n")


@pytest.fixture(scope="module")
def data():
    return {s: [json.loads(line) for line in (EXAMPLE / f"{s}.jsonl").read_text().splitlines()] for s in SPLITS}


def test_committed_files_are_what_the_generator_writes(tmp_path):
    subprocess.run([sys.executable, str(EXAMPLE / "generate.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    for split in SPLITS:
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (EXAMPLE / f"{split}.jsonl").read_bytes(), split


def test_every_gold_query_runs_and_has_an_answer(data):
    for split, rows in data.items():
        for row in rows:
            system = row["messages"][0]["content"]
            assert system.startswith(SYSTEM) and system.endswith(";")
            ddl = system[len(SYSTEM):]
            assert row["meta"]["setup_sql"].startswith(ddl[:-1])  # the prompt's schema is the database's
            assert 2 <= ddl.count("CREATE TABLE") <= 5
            db = sqlite3.connect(":memory:")
            db.executescript(row["meta"]["setup_sql"])
            for message in row["messages"][2::2]:
                rows_out = db.execute(message["content"]).fetchall()
                assert rows_out and rows_out not in ([(0,)], [(None,)]), (split, message["content"])
            db.close()


def test_splits_use_disjoint_schemas(data):
    schemas = {s: {r["meta"]["schema"] for r in rows} for s, rows in data.items()}
    for a in SPLITS:
        for b in SPLITS:
            assert a == b or not schemas[a] & schemas[b], (a, b)
    assert len(schemas["train"]) >= 20 and len(schemas["test"]) == 4 and len(schemas["shift"]) == 4


def test_training_covers_the_query_kinds(data):
    answers = [m["content"] for r in data["train"] for m in r["messages"] if m["role"] == "assistant"]
    kinds = {
        "three-table join": lambda q: q.count(" JOIN ") >= 2, "HAVING": lambda q: " HAVING " in q,
        "subquery": lambda q: "(SELECT " in q, "NULL check": lambda q: " IS NULL" in q or " IS NOT NULL" in q,
        "several conditions": lambda q: " AND " in q and "BETWEEN" not in q,
        "date range": lambda q: "BETWEEN '" in q or "strftime" in q,
        "COUNT DISTINCT": lambda q: "COUNT(DISTINCT" in q, "top N": lambda q: " LIMIT " in q,
        "DISTINCT": lambda q: "SELECT DISTINCT" in q, "GROUP BY": lambda q: "GROUP BY" in q,
    }
    for name, is_kind in kinds.items():
        assert sum(map(is_kind, answers)) >= 15, name
    assert sum(len(r["messages"]) > 3 for r in data["train"]) > 100  # conversations of several questions


def _skeletons(rows):
    """Each question with its schema words, values and numbers blanked: what the template wrote."""
    out = set()
    for row in rows:
        vocabulary = set(re.findall(r"[a-z]+", (row["meta"]["setup_sql"]).lower()))
        for message in row["messages"][1::2]:
            words = re.findall(r"[a-z]+|\d+", message["content"].lower())
            out.add(" ".join("_" if w in vocabulary or w.isdigit() else w for w in words))
    return out


def test_style_shift_shares_no_phrasing_with_training(data):
    train, shift = _skeletons(data["train"]), _skeletons(data["shift"])
    assert len(train) > 300 and len(shift) > 30  # many phrasings, not a handful of templates
    assert not train & shift, sorted(train & shift)[:5]

    def trigrams(skeletons):
        return {tuple(w) for s in skeletons for w in zip(*(s.split()[i:] for i in range(3))) if "_" not in w}

    shared = trigrams(train) & trigrams(shift)  # a few common word runs ("how many _" has blanks) at most
    assert len(shared) <= 0.1 * len(trigrams(shift)), sorted(shared)


def test_quickstart_demo_says_whether_its_answer_was_right(tiny_model_dir, monkeypatch):
    """The quickstart's last step executes the merged model's answer like the eval does: a random tiny
    model's answer is wrong, and an answer that returns the reference's rows is called right."""
    from rich.console import Console

    from tunewise import quickstart

    console = Console(record=True, width=200)
    assert quickstart.ask_one(EXAMPLE / "test.jsonl", tiny_model_dir, console) is False
    assert "returns the reference's rows: no" in console.export_text()
    first = json.loads((EXAMPLE / "test.jsonl").read_text().splitlines()[0])
    gold = first["messages"][-1]["content"]
    other_text = gold.replace("SELECT", "select").replace("FROM", "from")  # same rows, not the same string
    assert other_text != gold
    monkeypatch.setattr(quickstart, "reply", lambda *a, **k: other_text)
    assert quickstart.ask_one(EXAMPLE / "test.jsonl", tiny_model_dir, console) is True
    assert "returns the reference's rows: yes" in console.export_text()
