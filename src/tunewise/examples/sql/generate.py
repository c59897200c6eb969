#!/usr/bin/env python3
"""Write the text-to-SQL example: train/val/test JSONL, deterministic (seeded), every gold query
executed against its database while generating.

Each example's system prompt carries its schema's DDL; `meta.setup_sql` builds the database in an
in-memory SQLite so the `sql_exec` metric can execute model output. The three splits use
disjoint schemas, so the test score measures the skill on tables the model never saw.

    python examples/sql/generate.py [--out examples/sql] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from schemas import TEST, TRAIN, VAL, Schema  # noqa: E402

SYSTEM = ("You are a SQL expert. Write one SQLite query that answers the question. "
          "Reply with the query only.\n\nSchema:\n{ddl}")
PER_SCHEMA = {"train": 24, "val": 14, "test": 12}


def noun(column: str) -> str:
    return column.replace("_", " ")


def build_database(s: Schema, rng: random.Random) -> tuple[list[str], list[str], dict]:
    """Return (CREATE statements, INSERT statements, rows by table) for a schema."""
    creates, inserts, rows = [], [], {}
    if s.parent:
        p = s.parent
        creates.append(f"CREATE TABLE {p.table} (id INTEGER PRIMARY KEY, {p.name_col} TEXT, {p.cat.name} TEXT)")
        names = [f"{p.entity.title()} {chr(65 + i)}" for i in range(4)]
        rows[p.table] = [(i + 1, names[i], p.cat.values[i % len(p.cat.values)]) for i in range(4)]
    cols = [f"{s.name_col} TEXT"] + [f"{n.name} {'REAL' if n.real else 'INTEGER'}" for n in s.nums]
    cols += [f"{c.name} TEXT" for c in s.cats] + ([f"{s.date} TEXT"] if s.date else [])
    cols += [f"{s.parent.fk} INTEGER"] if s.parent else []
    creates.insert(len(creates), f"CREATE TABLE {s.table} (id INTEGER PRIMARY KEY, {', '.join(cols)})")
    n_rows = min(len(s.names), 14)
    columns = {}
    for num in s.nums:  # distinct values, so ORDER BY ... LIMIT has one right answer
        if num.real:
            columns[num.name] = [round(v, 2) for v in rng.sample([num.low + (num.high - num.low) * k / 997 for k in range(997)], n_rows)]
        else:
            columns[num.name] = rng.sample(range(int(num.low), int(num.high) + 1), n_rows)
    table_rows = []
    for i in range(n_rows):
        row = [i + 1, s.names[i]] + [columns[n.name][i] for n in s.nums]
        row += [rng.choice(c.values) for c in s.cats]
        if s.date:
            row.append((date(2015, 1, 1) + timedelta(days=rng.randrange(3650))).isoformat())
        if s.parent:
            row.append(rng.randint(1, 4))
        table_rows.append(tuple(row))
    rows[s.table] = table_rows
    for table, values in rows.items():
        for row in values:
            inserts.append(f"INSERT INTO {table} VALUES ({', '.join(_lit(v) for v in row)})")
    return creates, inserts, rows


def _lit(value) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def questions(s: Schema, rows: dict, rng: random.Random) -> list[tuple[str, str]]:
    """Every (question, gold SQL) template that applies to the schema, with a random phrasing each."""
    t, name, ent, pl = s.table, s.name_col, s.entity, s.plural
    nn = noun(name)
    data = rows[t]
    col_index = {c: i + 2 for i, c in enumerate([n.name for n in s.nums] + [c.name for c in s.cats] + ([s.date] if s.date else []))}
    pick = rng.choice
    out = []

    def value_of(column):
        return pick([r[col_index[column]] for r in data])

    out.append((pick([f"List all {pl}.", f"Show every {ent}.", f"Return all rows of the {t} table.",
                      f"Give me all the {pl} with all their columns."]), f"SELECT * FROM {t};"))
    out.append((pick(["How many {pl} are there?", "Count the {pl}.", "What is the total number of {pl}?",
                      "How many rows does the {t} table have?"]).format(pl=pl, t=t), f"SELECT COUNT(*) FROM {t};"))
    for num in s.nums:
        v = value_of(num.name)
        op, words = pick([(">", ["above", "greater than", "more than", "over"]), ("<", ["below", "less than", "under"]),
                          (">=", ["at least"]), ("<=", ["at most", "no more than"])])
        w = pick(words)
        out.append((pick([f"Which {pl} have a {num.noun} {w} {v}? Give their {nn}.",
                          f"List the {nn} of {pl} with {num.noun} {w} {v}.",
                          f"Find the {pl} whose {num.noun} is {w} {v} and show their {nn}.",
                          f"Show {nn} for every {ent} with a {num.noun} {w} {v}."]),
                    f"SELECT {name} FROM {t} WHERE {num.name} {op} {v};"))
        out.append((pick([f"Show the {nn} and {num.noun} of every {ent}.", f"List each {ent}'s {nn} and {num.noun}.",
                          f"Give the {nn} and the {num.noun} of all {pl}."]),
                    f"SELECT {name}, {num.name} FROM {t};"))
        fn, words = pick([("AVG", ["average", "mean"]), ("MAX", ["highest", "largest", "maximum"]),
                          ("MIN", ["lowest", "smallest", "minimum"]), ("SUM", ["total", "combined"])])
        w = pick(words)
        out.append((pick([f"What is the {w} {num.noun} of all {pl}?", f"Find the {w} {num.noun} across {pl}.",
                          f"Compute the {w} {num.noun} in the {t} table."]), f"SELECT {fn}({num.name}) FROM {t};"))
        k = pick([1, 2, 3, 5])
        desc = pick([True, False])
        order = "DESC" if desc else "ASC"
        hi = pick(["highest", "largest", "biggest"]) if desc else pick(["lowest", "smallest"])
        if k == 1:
            q = pick([f"Which {ent} has the {hi} {num.noun}? Show its {nn}.", f"Show the {nn} of the {ent} with the {hi} {num.noun}."])
        else:
            q = pick([f"List the {nn} of the {k} {pl} with the {hi} {num.noun}.",
                      f"Which {k} {pl} have the {hi} {num.noun}? Give their {nn}.",
                      f"Show the top {k} {pl} by {'highest' if desc else 'lowest'} {num.noun}, {nn} only."])
        out.append((q, f"SELECT {name} FROM {t} ORDER BY {num.name} {order} LIMIT {k};"))
        out.append((pick([f"List the {nn} and {num.noun} of all {pl}, sorted by {num.noun} from {'highest to lowest' if desc else 'lowest to highest'}.",
                          f"Show every {ent}'s {nn} and {num.noun}, ordered by {num.noun} {'descending' if desc else 'ascending'}."]),
                    f"SELECT {name}, {num.name} FROM {t} ORDER BY {num.name} {order};"))
    lo, hi_v = sorted(rng.sample([r[col_index[s.nums[0].name]] for r in data], 2))
    out.append((pick([f"Which {pl} have a {s.nums[0].noun} between {lo} and {hi_v}? Show their {nn}.",
                      f"List the {nn} of {pl} whose {s.nums[0].noun} is between {lo} and {hi_v}."]),
                f"SELECT {name} FROM {t} WHERE {s.nums[0].name} BETWEEN {lo} AND {hi_v};"))
    for cat in s.cats:
        v = value_of(cat.name)
        out.append((pick([f"List the {nn} of {pl} whose {cat.noun} is {v}.", f"Which {pl} have {cat.noun} '{v}'? Show their {nn}.",
                          f"Find the {nn} of every {ent} with {cat.noun} {v}."]),
                    f"SELECT {name} FROM {t} WHERE {cat.name} = '{v}';"))
        out.append((pick([f"How many {pl} have {cat.noun} {v}?", f"Count the {pl} whose {cat.noun} is '{v}'.",
                          f"What is the number of {pl} with {cat.noun} {v}?"]),
                    f"SELECT COUNT(*) FROM {t} WHERE {cat.name} = '{v}';"))
        out.append((pick([f"For each {cat.noun}, how many {pl} are there?", f"Count the {pl} per {cat.noun}.",
                          f"Show each {cat.noun} with its number of {pl}."]),
                    f"SELECT {cat.name}, COUNT(*) FROM {t} GROUP BY {cat.name};"))
        out.append((pick([f"List the distinct {cat.noun} values.", f"Which different {cat.noun}s appear in the {t} table?",
                          f"Show each {cat.noun} once."]), f"SELECT DISTINCT {cat.name} FROM {t};"))
        num = pick(s.nums)
        fn, w = pick([("AVG", "average"), ("MAX", "highest"), ("MIN", "lowest"), ("SUM", "total")])
        out.append((pick([f"What is the {w} {num.noun} for each {cat.noun}?", f"Show the {w} {num.noun} per {cat.noun}."]),
                    f"SELECT {cat.name}, {fn}({num.name}) FROM {t} GROUP BY {cat.name};"))
        out.append((pick([f"What is the {w} {num.noun} of {pl} whose {cat.noun} is {v}?",
                          f"Find the {w} {num.noun} among {pl} with {cat.noun} '{v}'."]),
                    f"SELECT {fn}({num.name}) FROM {t} WHERE {cat.name} = '{v}';"))
        nv = value_of(num.name)
        out.append((pick([f"List the {nn} of {pl} whose {cat.noun} is {v} and whose {num.noun} is above {nv}.",
                          f"Which {pl} with {cat.noun} '{v}' have a {num.noun} greater than {nv}? Show their {nn}."]),
                    f"SELECT {name} FROM {t} WHERE {cat.name} = '{v}' AND {num.name} > {nv};"))
    letter = pick([r[1][0] for r in data])
    out.append((pick([f"Which {pl} have a {nn} starting with '{letter}'?", f"List the {pl} whose {nn} begins with {letter}; show the {nn}."]),
                f"SELECT {name} FROM {t} WHERE {name} LIKE '{letter}%';"))
    if s.date:
        d = value_of(s.date)
        w, op = pick([("after", ">"), ("before", "<")])
        out.append((pick([f"List the {nn} of {pl} with {noun(s.date)} {w} {d}.", f"Which {pl} have a {noun(s.date)} date {w} {d}? Give their {nn}."]),
                    f"SELECT {name} FROM {t} WHERE {s.date} {op} '{d}';"))
    if s.parent:
        p = s.parent
        pn = noun(p.name_col)
        join = f"FROM {t} JOIN {p.table} ON {t}.{p.fk} = {p.table}.id"
        out.append((pick([f"List each {ent}'s {nn} together with the {pn} of its {p.entity}.",
                          f"Show the {nn} of every {ent} and the {pn} of its {p.entity}."]),
                    f"SELECT {t}.{name}, {p.table}.{p.name_col} {join};"))
        v = pick([r[2] for r in rows[p.table]])
        out.append((pick([f"Which {pl} belong to a {p.entity} whose {p.cat.noun} is {v}? Show their {nn}.",
                          f"List the {nn} of {pl} whose {p.entity} has {p.cat.noun} '{v}'."]),
                    f"SELECT {t}.{name} {join} WHERE {p.table}.{p.cat.name} = '{v}';"))
        out.append((pick([f"How many {pl} does each {p.entity} have? Show the {p.entity}'s {pn} and the count.",
                          f"Count the {pl} per {p.entity}, listing the {pn}."]),
                    f"SELECT {p.table}.{p.name_col}, COUNT(*) {join} GROUP BY {p.table}.{p.name_col};"))
    return out


def make_split(schemas: list[Schema], split: str, rng: random.Random) -> list[dict]:
    examples = []
    for s in schemas:
        creates, inserts, rows = build_database(s, rng)
        ddl = ";\n".join(creates) + ";"
        setup = ";\n".join(creates + inserts) + ";"
        db = sqlite3.connect(":memory:")
        db.executescript(setup)
        pool = questions(s, rows, rng)
        rng.shuffle(pool)
        seen = set()
        for question, sql in pool:
            if question in seen or len([e for e in examples if e["meta"]["schema"] == s.table]) >= PER_SCHEMA[split]:
                continue
            result = db.execute(sql).fetchall()  # every gold query runs; a broken template fails here
            if not result or result == [(0,)] or result == [(None,)]:
                continue  # an empty answer teaches nothing and scores a wrong query as right
            seen.add(question)
            examples.append({
                "messages": [{"role": "system", "content": SYSTEM.format(ddl=ddl)},
                             {"role": "user", "content": question},
                             {"role": "assistant", "content": sql}],
                "meta": {"setup_sql": setup, "schema": s.table},
            })
        db.close()
    rng.shuffle(examples)
    return examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, schemas in (("train", TRAIN), ("val", VAL), ("test", TEST)):
        examples = make_split(schemas, split, rng)
        with (out / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
            for ex in examples:
                handle.write(json.dumps(ex) + "\n")
        print(f"{split}: {len(examples)} examples from {len(schemas)} schemas -> {out / (split + '.jsonl')}")


if __name__ == "__main__":
    main()
