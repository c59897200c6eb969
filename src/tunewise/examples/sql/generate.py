#!/usr/bin/env python3
"""Write the text-to-SQL example: train/val/test JSONL from this generator and a style-shift test
split (shift.jsonl) from an independently written one (shift.py), deterministic (seeded), every
gold query executed against its database while generating.

Each example's system prompt carries its schema's DDL (2 to 5 tables); `meta.setup_sql` builds
the database in an in-memory SQLite so the `sql_exec` metric can execute model output. Train, val
and test use disjoint schemas; shift.jsonl uses other schemas again and phrasings that share no
template with these. A training conversation asks three to six questions about one schema (a
schema's last one may ask fewer; every answer is trained; the schema is read once), val and test
ask one each. About half of the training
questions come wrapped in a request's opening or closing words ("One question: ...", "... Thanks!").

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
import shift  # noqa: E402
from schemas import TEST, TRAIN, VAL, Column, Domain, Table  # noqa: E402

SYSTEM = ("You are a SQL expert. Write one SQLite query that answers the question. "
          "Reply with the query only.\n\nSchema:\n{ddl}")
PER_DOMAIN = {"train": 44, "val": 12, "test": 12}
TURNS = {"train": (3, 4, 5, 6), "val": (1,), "test": (1,)}
FIRST = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Iris", "Jonas", "Kira", "Liam", "Maya",
         "Noah", "Olga", "Pablo", "Rosa", "Sami", "Tara", "Umar", "Vera", "Wes", "Yara", "Zoe"]
LAST = ["Chen", "Okafor", "Silva", "Novak", "Haddad", "Larsen", "Mendes", "Ito", "Kowal", "Reyes", "Berg", "Adeyemi"]
WORDS = ["Aurora", "Basalt", "Cedar", "Delta", "Ember", "Falcon", "Granite", "Harbor", "Indigo", "Juniper", "Kestrel",
         "Lotus", "Maple", "Nimbus", "Orchid", "Pioneer", "Quartz", "Raven", "Sierra", "Tundra", "Umber", "Vista",
         "Willow", "Zenith"]


# --- the database ------------------------------------------------------------------------------

def ddl_of(table: Table) -> str:
    cols = ["id INTEGER PRIMARY KEY"]
    for c in table.columns:
        ref = f" REFERENCES {c.args[0]}(id)" if c.kind == "fk" else ""
        cols.append(f"{c.name} {c.sql_type}{ref}")
    return f"CREATE TABLE {table.name} ({', '.join(cols)})"


def values_of(column: Column, n: int, sizes: dict, rng: random.Random) -> list:
    if column.kind == "name":
        pool = ([f"{f} {la}" for f in FIRST for la in LAST] if column.args[0] == "person"
                else [f"{w} {column.args[0]}" for w in WORDS])
        return rng.sample(pool, n)
    if column.kind == "cat":
        return [rng.choice(column.args) for _ in range(n)]
    if column.kind in ("int", "real"):  # distinct, so "the 3 highest" has one answer
        lo, hi = float(column.args[0]), float(column.args[1])
        if column.kind == "int":
            span = range(int(lo), int(hi) + 1)
            return rng.sample(span, n) if len(span) >= n else [rng.choice(span) for _ in range(n)]
        return [round(lo + (hi - lo) * k / 997, 2) for k in rng.sample(range(998), n)]
    if column.kind == "date":
        return [(date(2018, 1, 1) + timedelta(days=rng.randrange(2920))).isoformat() for _ in range(n)]
    if column.kind == "fk":
        return [rng.randint(1, sizes[column.args[0]]) for _ in range(n)]
    raise ValueError(column.kind)


def build(domain: Domain, rng: random.Random) -> tuple[str, str, dict[str, list[dict]]]:
    """(DDL, setup SQL, rows by table as dicts)"""
    sizes, rows, inserts = {}, {}, []
    for table in domain.tables:
        n = rng.randint(8, 12) if table.label else rng.randint(12, 18)
        sizes[table.name] = n
        columns = {c.name: values_of(c, n, sizes, rng) for c in table.columns}
        for c in table.columns:
            if c.nullable:
                for i in rng.sample(range(n), max(2, n // 3)):
                    columns[c.name][i] = None
        rows[table.name] = [{"id": i + 1, **{k: v[i] for k, v in columns.items()}} for i in range(n)]
        for row in rows[table.name]:
            inserts.append(f"INSERT INTO {table.name} VALUES ({', '.join(lit(v) for v in row.values())})")
    creates = [ddl_of(t) for t in domain.tables]
    return ";\n".join(creates) + ";", ";\n".join(creates + inserts) + ";", rows


def lit(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


# --- conditions: SQL and the ways a question says it --------------------------------------------

def condition(table: Table, rows: list[dict], rng: random.Random, prefix: str = "") -> tuple[str, str] | None:
    """(SQL condition, phrase) on one column of `table`; `prefix` qualifies the column ("t.")."""
    col = rng.choice([c for c in table.columns if c.kind != "fk"] or [None])
    if col is None:
        return None
    name, noun, pick = prefix + col.name, col.noun, rng.choice
    present = [r[col.name] for r in rows if r[col.name] is not None]
    if col.nullable and rng.random() < 0.5:
        if pick([True, False]):
            return f"{name} IS NULL", pick([f"with no {noun}", f"whose {noun} is missing", f"without {an(noun)}",
                                            f"where the {noun} is not recorded", f"lacking {an(noun)}"])
        return f"{name} IS NOT NULL", pick([f"that have {an(noun)}", f"whose {noun} is known", f"with {an(noun)} recorded",
                                            f"where {an(noun)} is filled in"])
    v = pick(present)
    if col.kind in ("int", "real"):
        op, words = pick([(">", ["above", "greater than", "more than", "over", "higher than"]),
                          ("<", ["below", "less than", "under", "lower than"]),
                          (">=", ["at least", "no less than"]), ("<=", ["at most", "no more than"])])
        w = pick(words)
        if rng.random() < 0.25:
            lo, hi = sorted(rng.sample(present, 2))
            return f"{name} BETWEEN {lo} AND {hi}", pick([f"with {an(noun)} between {lo} and {hi}",
                                                         f"whose {noun} is from {lo} to {hi}",
                                                         f"with {noun} in the range {lo} to {hi}"])
        return f"{name} {op} {v}", pick([f"with {an(noun)} {w} {v}", f"whose {noun} is {w} {v}", f"with {noun} {w} {v}",
                                         f"where the {noun} is {w} {v}"])
    if col.kind == "date":
        year = v[:4]
        kind = rng.random()
        if kind < 0.3:
            return f"strftime('%Y', {name}) = '{year}'", pick([f"with {an(noun)} in {year}", f"whose {noun} falls in {year}",
                                                               f"from {year} (by {noun})"])
        if kind < 0.6:
            lo, hi = sorted(rng.sample(present, 2))
            return f"{name} BETWEEN '{lo}' AND '{hi}'", pick([f"with {an(noun)} between {lo} and {hi}",
                                                             f"whose {noun} is from {lo} to {hi}",
                                                             f"with {noun} in the period {lo} to {hi}"])
        op, w = pick([(">", "after"), ("<", "before"), (">=", "on or after"), ("<=", "on or before")])
        return f"{name} {op} '{v}'", pick([f"with {an(noun)} {w} {v}", f"whose {noun} is {w} {v}", f"with {noun} {w} {v}"])
    if col.kind == "name" and (not prefix or rng.random() < 0.4):  # "names of X named Y" asks nothing
        letter = v[0]
        return f"{name} LIKE '{letter}%'", pick([f"whose {noun} starts with '{letter}'", f"with {an(noun)} beginning with {letter}",
                                                 f"whose {noun} begins with the letter {letter}"])
    others = sorted({x for x in present if x != v})
    if col.kind == "cat" and others and rng.random() < 0.25:
        w = pick(others)
        return f"{name} IN ('{v}', '{w}')", pick([f"whose {noun} is {v} or {w}", f"with {noun} {v} or {w}",
                                                  f"with {an(noun)} of either {v} or {w}"])
    if col.kind == "cat" and rng.random() < 0.15:
        return f"{name} <> '{v}'", pick([f"whose {noun} is not {v}", f"with {an(noun)} other than {v}"])
    return f"{name} = '{v}'", pick([f"whose {noun} is {v}", f"with {noun} {v}", f"where the {noun} is '{v}'",
                                    f"that have {v} as {noun}", f"with the {noun} {v}"])


def conditions(table: Table, rows: list[dict], rng: random.Random, prefix: str = "") -> tuple[str, str] | None:
    """One condition, or two joined by AND (never on the same column twice)."""
    first = condition(table, rows, rng, prefix)
    if first is None or rng.random() < 0.65:
        return first
    second = condition(table, rows, rng, prefix)
    if second is None or second[0].split()[0] == first[0].split()[0]:
        return first
    return f"{first[0]} AND {second[0]}", f"{first[1]} and {second[1]}"


# --- questions ------------------------------------------------------------------------------------

def an(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def plural(noun: str) -> str:
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def ask_list(what: str, pl: str, cond: str, rng: random.Random) -> str:
    """Ways to ask for `what` of `pl` satisfying `cond`: imperative, question, terse noun phrase."""
    return rng.choice([f"List the {what} of {pl} {cond}.", f"Show the {what} of all {pl} {cond}.",
                       f"Give me the {what} of every {pl[:-1] if pl.endswith('s') else pl} {cond}.",
                       f"What are the {what} of the {pl} {cond}?", f"Which {pl} {cond} are there? Show their {what}.",
                       f"Find {pl} {cond} and return their {what}.", f"{what} of {pl} {cond}",
                       f"{pl.capitalize()} {cond}: {what} only.", f"I need the {what} of {pl} {cond}."])


def untied(rows: list[dict], column: str) -> bool:
    """Values all distinct: ORDER BY on the column has one right answer."""
    values = [r[column] for r in rows]
    return None not in values and len(set(values)) == len(values)


def single_table(t: Table, rows: list[dict], rng: random.Random) -> tuple[str, str] | None:
    pick, pl, ent = rng.choice, t.name, t.entity
    label, cats = t.label, t.of("cat")
    nums = t.of("int", "real")
    kind = pick(["list", "list", "count", "agg", "group", "having", "top", "distinct", "count_distinct",
                 "above_avg", "project", "order", "star"])
    cond = conditions(t, rows, rng)
    if kind == "list" and label and cond:
        return ask_list(plural(label.noun), pl, cond[1], rng), \
            f"SELECT {label.name} FROM {pl} WHERE {cond[0]};"
    if kind == "star" and cond:
        return pick([f"Show all columns of the {pl} {cond[1]}.", f"Return every row of {pl} {cond[1]}.",
                     f"All details of {pl} {cond[1]}", f"Which {pl} {cond[1]} are there? Show everything about them."]), \
            f"SELECT * FROM {pl} WHERE {cond[0]};"
    if kind == "count":
        if cond and rng.random() < 0.75:
            return pick([f"How many {pl} are there {cond[1]}?", f"Count the {pl} {cond[1]}.",
                         f"number of {pl} {cond[1]}", f"What is the number of {pl} {cond[1]}?",
                         f"Tell me how many {pl} there are {cond[1]}."]), f"SELECT COUNT(*) FROM {pl} WHERE {cond[0]};"
        return pick([f"How many {pl} are there?", f"Count the {pl}.", f"total number of {pl}",
                     f"How many rows does the {pl} table have?"]), f"SELECT COUNT(*) FROM {pl};"
    if kind == "agg" and nums:
        num = pick(nums)
        fn, w = pick([("AVG", pick(["average", "mean"])), ("MAX", pick(["highest", "largest", "maximum"])),
                      ("MIN", pick(["lowest", "smallest", "minimum"])), ("SUM", pick(["total", "combined", "sum of the"]))])
        if cond and rng.random() < 0.5:
            return pick([f"What is the {w} {num.noun} of {pl} {cond[1]}?", f"{w} {num.noun} among {pl} {cond[1]}",
                         f"Compute the {w} {num.noun} for {pl} {cond[1]}."]), \
                f"SELECT {fn}({num.name}) FROM {pl} WHERE {cond[0]};"
        return pick([f"What is the {w} {num.noun} of all {pl}?", f"{w} {num.noun} of {pl}",
                     f"Find the {w} {num.noun} across all {pl}.", f"Compute the {w} {num.noun} in the {pl} table."]), \
            f"SELECT {fn}({num.name}) FROM {pl};"
    if kind == "group" and cats:
        cat = pick(cats)
        if nums and rng.random() < 0.5:
            num = pick(nums)
            fn, w = pick([("AVG", "average"), ("MAX", "highest"), ("MIN", "lowest"), ("SUM", "total")])
            return pick([f"For each {cat.noun}, what is the {w} {num.noun} of {pl}?", f"{w} {num.noun} per {cat.noun}",
                         f"Show every {cat.noun} with the {w} {num.noun} of its {pl}.",
                         f"Break down the {w} {num.noun} of {pl} by {cat.noun}."]), \
                f"SELECT {cat.name}, {fn}({num.name}) FROM {pl} GROUP BY {cat.name};"
        return pick([f"For each {cat.noun}, how many {pl} are there?", f"Count the {pl} per {cat.noun}.",
                     f"number of {pl} for each {cat.noun}", f"How many {pl} does each {cat.noun} have?",
                     f"Show each {cat.noun} with its number of {pl}."]), \
            f"SELECT {cat.name}, COUNT(*) FROM {pl} GROUP BY {cat.name};"
    if kind == "having" and cats:
        cat = pick(cats)
        k = rng.randint(1, 3)
        return pick([f"Which {cat.noun} values have more than {k} {pl}?", f"{plural(cat.noun)} shared by more than {k} {pl}",
                     f"List the {plural(cat.noun)} that appear for more than {k} {pl}.",
                     f"Find every {cat.noun} with over {k} {pl}."]), \
            f"SELECT {cat.name} FROM {pl} GROUP BY {cat.name} HAVING COUNT(*) > {k};"
    nums = [c for c in nums if untied(rows, c.name)] if kind in ("top", "order") else nums
    if kind == "top" and nums and label:
        num, k, desc = pick(nums), pick([1, 2, 3, 5]), pick([True, False])
        hi = pick(["highest", "largest", "biggest", "greatest"]) if desc else pick(["lowest", "smallest"])
        order = "DESC" if desc else "ASC"
        if k == 1:
            q = pick([f"Which {ent} has the {hi} {num.noun}?", f"{label.noun} of the {ent} with the {hi} {num.noun}",
                      f"Show the {label.noun} of the {ent} with the {hi} {num.noun}."])
        else:
            q = pick([f"Top {k} {pl} by {num.noun}{'' if desc else ' (lowest first)'}: {label.noun} only.",
                      f"List the {label.noun} of the {k} {pl} with the {hi} {num.noun}.",
                      f"Which {k} {pl} have the {hi} {num.noun}?", f"the {k} {pl} with the {hi} {num.noun}"])
        return q, f"SELECT {label.name} FROM {pl} ORDER BY {num.name} {order} LIMIT {k};"
    if kind == "distinct" and cats:
        cat = pick(cats)
        return pick([f"List the {plural(cat.noun)} of {pl} without repeats.", f"Which different {plural(cat.noun)} do {pl} have?",
                     f"distinct {cat.noun} values in {pl}", f"Show each {cat.noun} of the {pl} once.",
                     f"What {plural(cat.noun)} occur among the {pl}? No duplicates."]), f"SELECT DISTINCT {cat.name} FROM {pl};"
    if kind == "count_distinct" and cats:
        cat = pick(cats)
        return pick([f"How many different {plural(cat.noun)} do the {pl} have?", f"number of distinct {plural(cat.noun)} among {pl}",
                     f"Count the distinct {cat.noun} values in {pl}.", f"How many unique {plural(cat.noun)} are there among {pl}?"]), \
            f"SELECT COUNT(DISTINCT {cat.name}) FROM {pl};"
    if kind == "above_avg" and nums and label:
        num = pick(nums)
        above = pick([True, False])
        w = "above" if above else "below"
        return pick([f"Which {pl} have {an(num.noun)} {w} the average? Give their {label.noun}.",
                     f"{label.noun} of {pl} whose {num.noun} is {w} average",
                     f"List {pl} with {an(num.noun)} {w} the mean {num.noun} of all {pl}; show the {label.noun}."]), \
            f"SELECT {label.name} FROM {pl} WHERE {num.name} {'>' if above else '<'} (SELECT AVG({num.name}) FROM {pl});"
    if kind == "project":
        cols = rng.sample([c for c in t.columns if c.kind != "fk"], min(2, len([c for c in t.columns if c.kind != "fk"])))
        nouns = " and ".join(c.noun for c in cols)
        return pick([f"Show the {nouns} of every {ent}.", f"{nouns} of all {pl}", f"List each {ent}'s {nouns}.",
                     f"What are the {nouns} of the {pl}?"]), f"SELECT {', '.join(c.name for c in cols)} FROM {pl};"
    if kind == "order" and nums:
        num, desc = pick(nums), pick([True, False])
        shown = ([label] if label else []) + [num]
        nouns = " and ".join(c.noun for c in shown)
        way = pick(["highest first", "from highest to lowest", "in descending order"]) if desc else \
            pick(["lowest first", "from lowest to highest", "in ascending order"])
        return pick([f"List the {nouns} of all {pl}, sorted by {num.noun} {way}.", f"{nouns} of {pl} ordered by {num.noun}, {way}",
                     f"Show every {ent}'s {nouns}, {way} by {num.noun}."]), \
            f"SELECT {', '.join(c.name for c in shown)} FROM {pl} ORDER BY {num.name} {'DESC' if desc else 'ASC'};"
    return None


def join_two(d: Domain, rows: dict, rng: random.Random) -> tuple[str, str] | None:
    """A child table and the parent it references."""
    pairs = [(c, fk) for c in d.tables for fk in c.of("fk")]
    if not pairs:
        return None
    child, fk = rng.choice(pairs)
    parent = d.table(fk.args[0])
    pick, c, p = rng.choice, child.name, parent.name
    on = f"FROM {c} JOIN {p} ON {c}.{fk.name} = {p}.id"
    plabel, clabel = parent.label, child.label
    kind = pick(["pair", "filter", "group", "agg", "having", "none", "in"])
    # "a ward's doctors" reads as the parent owning the child; the fk noun says the role
    role = fk.noun if fk.noun != fk.name.replace("_", " ") else parent.entity
    if kind == "pair" and plabel and clabel:
        return pick([f"List each {child.entity}'s {clabel.noun} with the {plabel.noun} of its {role}.",
                     f"Show the {clabel.noun} of every {child.entity} and the {plabel.noun} of its {role}.",
                     f"{clabel.noun} of each {child.entity} together with its {role}'s {plabel.noun}"]), \
            f"SELECT {c}.{clabel.name}, {p}.{plabel.name} {on};"
    if kind == "filter":
        cond = condition(parent, rows[p], rng, f"{p}.")
        if not cond:
            return None
        if clabel and rng.random() < 0.6:
            return pick([f"Which {c} have {an(role)} {cond[1]}? Give their {clabel.noun}.",
                         f"List the {clabel.noun} of {c} whose {role} is one {cond[1]}.",
                         f"{clabel.noun} of {c} linked to {an(role)} {cond[1]}"]), \
                f"SELECT {c}.{clabel.name} {on} WHERE {cond[0]};"
        return pick([f"How many {c} have {an(role)} {cond[1]}?", f"Count the {c} whose {role} is one {cond[1]}.",
                     f"number of {c} for {p} {cond[1]}"]), f"SELECT COUNT(*) {on} WHERE {cond[0]};"
    if kind == "group" and plabel:
        return pick([f"How many {c} does each {parent.entity} have? Show the {plabel.noun} and the count.",
                     f"Count the {c} per {parent.entity}, listing the {plabel.noun}.",
                     f"number of {c} for each {parent.entity} ({plabel.noun})",
                     f"For each {parent.entity}, give its {plabel.noun} and how many {c} it has."]), \
            f"SELECT {p}.{plabel.name}, COUNT(*) {on} GROUP BY {p}.{plabel.name};"
    if kind == "agg" and plabel and child.of("int", "real"):
        num = pick(child.of("int", "real"))
        fn, w = pick([("AVG", "average"), ("SUM", "total"), ("MAX", "highest"), ("MIN", "lowest")])
        return pick([f"For each {parent.entity}, what is the {w} {num.noun} of its {c}? Show the {plabel.noun}.",
                     f"{w} {num.noun} of {c} per {parent.entity} {plabel.noun}",
                     f"Show every {parent.entity}'s {plabel.noun} with the {w} {num.noun} of its {c}."]), \
            f"SELECT {p}.{plabel.name}, {fn}({c}.{num.name}) {on} GROUP BY {p}.{plabel.name};"
    if kind == "having" and plabel:
        k = rng.randint(1, 2)
        return pick([f"Which {p} have more than {k} {c}? Give their {plabel.noun}.",
                     f"{plabel.noun} of {p} with over {k} {c}",
                     f"List the {p} that have at least {k + 1} {c}, by {plabel.noun}."]), \
            f"SELECT {p}.{plabel.name} {on} GROUP BY {p}.{plabel.name} HAVING COUNT(*) > {k};"
    if kind == "none" and plabel:
        return pick([f"Which {p} have no {c}? Give their {plabel.noun}.", f"{p} without any {c}: {plabel.noun} only",
                     f"List the {plabel.noun} of {p} that no {child.entity} refers to."]), \
            f"SELECT {plabel.name} FROM {p} WHERE id NOT IN (SELECT {fk.name} FROM {c} WHERE {fk.name} IS NOT NULL);"
    if kind == "in" and plabel:
        cond = condition(child, rows[c], rng)
        if not cond:
            return None
        return pick([f"Which {p} have at least one {child.entity} {cond[1]}? Give their {plabel.noun}.",
                     f"{plabel.noun} of {p} with {an(child.entity)} {cond[1]}",
                     f"List the {p} that have some {c} {cond[1]}; show the {plabel.noun}."]), \
            f"SELECT {plabel.name} FROM {p} WHERE id IN (SELECT {fk.name} FROM {c} WHERE {cond[0]});"
    return None


def join_three(d: Domain, rows: dict, rng: random.Random) -> tuple[str, str] | None:
    """A table with two references (a booking: flight and passenger), or a chain (track -> album -> artist)."""
    pick = rng.choice
    bridges = [(b, f1, f2) for b in d.tables for f1 in b.of("fk") for f2 in b.of("fk") if f1.args[0] < f2.args[0]]
    chains = [(a, f1, d.table(f1.args[0]), f2) for a in d.tables for f1 in a.of("fk")
              for f2 in d.table(f1.args[0]).of("fk")]
    if bridges and (not chains or rng.random() < 0.5):
        b, f1, f2 = pick(bridges)
        if pick([True, False]):
            f1, f2 = f2, f1
        p1, p2 = d.table(f1.args[0]), d.table(f2.args[0])
        if not (p1.label and p2.label):
            return None
        on = f"FROM {b.name} JOIN {p1.name} ON {b.name}.{f1.name} = {p1.name}.id JOIN {p2.name} ON {b.name}.{f2.name} = {p2.name}.id"
        if rng.random() < 0.4:
            return pick([f"For every {b.entity}, show the {p1.entity}'s {p1.label.noun} and the {p2.entity}'s {p2.label.noun}.",
                         f"{p1.label.noun} and {p2.label.noun} for each {b.entity}",
                         f"List each {b.entity} as its {p1.entity} {p1.label.noun} and {p2.entity} {p2.label.noun}."]), \
                f"SELECT {p1.name}.{p1.label.name}, {p2.name}.{p2.label.name} {on};"
        cond = condition(p2, rows[p2.name], rng, f"{p2.name}.")
        if not cond:
            return None
        return pick([f"Which {p1.name} have {an(b.entity)} with {an(p2.entity)} {cond[1]}? Give each {p1.label.noun} once.",
                     f"distinct {plural(p1.label.noun)} of {p1.name} with {b.name} for {p2.name} {cond[1]}",
                     f"List, without repeats, the {p1.label.noun} of {p1.name} that have {an(b.entity)} involving {an(p2.entity)} {cond[1]}."]), \
            f"SELECT DISTINCT {p1.name}.{p1.label.name} {on} WHERE {cond[0]};"
    if not chains:
        return None
    a, f1, mid, f2 = pick(chains)
    top = d.table(f2.args[0])
    if not a.label or top.name == a.name:
        return None
    on = f"FROM {a.name} JOIN {mid.name} ON {a.name}.{f1.name} = {mid.name}.id JOIN {top.name} ON {mid.name}.{f2.name} = {top.name}.id"
    cond = condition(top, rows[top.name], rng, f"{top.name}.")
    if top.label and rng.random() < 0.35:
        return pick([f"For each {top.entity}, how many {a.name} are there (through their {mid.name})? Show the {top.label.noun}.",
                     f"number of {a.name} per {top.entity} {top.label.noun}, going through {mid.name}"]), \
            f"SELECT {top.name}.{top.label.name}, COUNT(*) {on} GROUP BY {top.name}.{top.label.name};"
    if not cond:
        return None
    return pick([f"Which {a.name} belong to {an(mid.entity)} whose {top.entity} is one {cond[1]}? Give their {a.label.noun}.",
                 f"{a.label.noun} of {a.name} whose {mid.entity}'s {top.entity} is {cond[1]}",
                 f"List the {a.label.noun} of {a.name} under {top.name} {cond[1]} (via {mid.name})."]), \
        f"SELECT {a.name}.{a.label.name} {on} WHERE {cond[0]};"


# How people wrap a request around the question itself: a small model that only ever saw bare
# questions reads "Please ..." or a trailing "Thanks" as part of the question's meaning.
PREFIXES = ["Please answer this: ", "Can you help: ", "One question: ", "Using the schema: ", "Write a query: ",
            "Query needed: ", "Task: ", "From the database: ", "Hey! ", "SQL for this: ", "Help me with this: ",
            "Question: ", "For the report: "]
SUFFIXES = [" Thanks!", " Just the SQL.", " Only the query, please.", " (SQLite)", " Thank you.",
            " Keep it to one query.", " No explanation needed."]


def reword(q: str, rng: random.Random) -> str:
    """`q` as it is, or inside a request's opening and/or closing words (about half of the time)."""
    r = rng.random()
    if r < 0.5:
        return q
    if r < 0.8:
        q = rng.choice(PREFIXES) + q
    if r >= 0.7:
        q = q + rng.choice(SUFFIXES)
    return q


def question(d: Domain, rows: dict, rng: random.Random) -> tuple[str, str] | None:
    r = rng.random()
    if r < 0.5:
        t = rng.choice(d.tables)
        return single_table(t, rows[t.name], rng)
    if r < 0.8:
        return join_two(d, rows, rng)
    return join_three(d, rows, rng)


# --- splits -------------------------------------------------------------------------------------

def informative(result: list) -> bool:
    """An empty or all-null answer teaches nothing and scores a wrong query as right."""
    return bool(result) and result not in ([(0,)], [(None,)]) and len(result) < 40


def domain_pairs(d: Domain, n: int, rng: random.Random, ask=question) -> tuple[str, str, list[tuple[str, str]]]:
    """(DDL, setup SQL, n distinct (question, gold SQL) pairs, each gold query executed)."""
    ddl, setup, rows = build(d, rng)
    db = sqlite3.connect(":memory:")
    db.executescript(setup)
    pairs, seen = [], set()
    for _ in range(n * 60):
        if len(pairs) == n:
            break
        qa = ask(d, rows, rng)
        if qa is None or qa[1] in seen:
            continue
        if informative(db.execute(qa[1]).fetchall()):  # every gold query runs; a broken template fails here
            seen.add(qa[1])
            pairs.append((qa[0][0].upper() + qa[0][1:], qa[1]))
    db.close()
    return ddl, setup, pairs


def conversations(domains: list[Domain], split: str, rng: random.Random, per_domain: int, ask=question,
                  turns=(1,)) -> list[dict]:
    out = []
    for d in domains:
        ddl, setup, pairs = domain_pairs(d, per_domain, rng, ask)
        i = 0
        while i < len(pairs):
            k = rng.choice(turns)
            messages = [{"role": "system", "content": SYSTEM.format(ddl=ddl)}]
            for q, sql in pairs[i:i + k]:
                q = reword(q, rng) if split == "train" else q
                messages += [{"role": "user", "content": q}, {"role": "assistant", "content": sql}]
            out.append({"messages": messages, "meta": {"setup_sql": setup, "schema": d.name, "split": split}})
            i += k
    rng.shuffle(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # one random stream per split: resizing the training data leaves the test splits as they were
    splits = {split: conversations(domains, split, random.Random(f"{args.seed}:{split}"), PER_DOMAIN[split],
                                   turns=TURNS[split])
              for split, domains in (("train", TRAIN), ("val", VAL), ("test", TEST))}
    splits["shift"] = conversations(shift.DOMAINS, "shift", random.Random(f"{args.seed}:shift"), shift.PER_DOMAIN,
                                    ask=shift.question)
    for split, examples in splits.items():
        with (out / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
            for ex in examples:
                handle.write(json.dumps(ex) + "\n")
        answers = sum(m["role"] == "assistant" for ex in examples for m in ex["messages"])
        print(f"{split}: {len(examples)} conversations, {answers} questions -> {out / (split + '.jsonl')}")


if __name__ == "__main__":
    main()
