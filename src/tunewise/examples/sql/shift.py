"""The style-shift test split: a second question writer, kept apart from generate.py's.

It shares no phrasing template with the training generator (conversational requests, questions
that lead with the condition, "I need"/"could you"/"pull up" forms, comparative wording) and uses
its own domains, none of which appear in train, val or test. Only the schema notation and the
database builder are shared: a user's schema is DDL whatever the wording. The score on this split
says whether the tuned model learned SQL or only the training generator's sentences.
"""

from __future__ import annotations

import random

from schemas import D, Domain, T, Table

PER_DOMAIN = 12

DOMAINS = [
    D("marina",
      T("owners owner", "name:name(person); phone:cat(mobile,landline)?|phone type; since:date|customer since"),
      T("boats boat", "name:name(Star)|boat name; owner_id:fk(owners); length_m:real(4,30)|length in meters; built:int(1960,2023)|build year; kind:cat(sail,motor,rowing)|boat type"),
      T("trips trip", "boat_id:fk(boats); left_on:date|departure date; returned_on:date?|return date; fuel_cost:real(0,900)|fuel cost; crew:int(1,12)|crew size")),
    D("conference",
      T("rooms room", "name:name(Hall)|room name; capacity:int(20,900); floor:int(0,5)"),
      T("speakers speaker", "name:name(person); company:cat(Acme,Globex,Initech,Umbrella); country:cat(Brazil,Japan,Kenya,Norway); fee:int(0,9000)|speaker fee"),
      T("talks talk", "title:name(Keynote)|title; speaker_id:fk(speakers); room_id:fk(rooms); scheduled_on:date|date; minutes:int(15,90)|length in minutes; track:cat(data,web,security)")),
    D("brewery",
      T("beers beer", "name:name(Ale)|beer name; style:cat(lager,stout,IPA,porter); abv:real(3,12)|alcohol percentage; launched_on:date|launch date"),
      T("pubs pub", "name:name(Tavern)|pub name; town:cat(Derry,Kilkenny,Tralee); opened:int(1850,2020)|opening year"),
      T("shipments shipment", "beer_id:fk(beers); pub_id:fk(pubs); shipped_on:date|shipping date; kegs:int(1,40)|number of kegs; invoice:real(80,6000)|invoice amount; paid_on:date?|payment date")),
    D("podcast",
      T("hosts host", "name:name(person); city:cat(Austin,Leeds,Perth); started_on:date|start date"),
      T("shows show", "name:name(Hour)|show name; host_id:fk(hosts); category:cat(news,comedy,science,history); rating:real(1,5)|listener rating"),
      T("episodes episode", "title:name(Chapter)|title; show_id:fk(shows); aired_on:date|air date; minutes:int(10,180)|length in minutes; downloads:int(100,500000)")),
]


def _cond(t: Table, rows: list[dict], rng: random.Random, prefix: str = "") -> tuple[str, str] | None:
    """(SQL condition, wording) in this writer's own words."""
    cols = [c for c in t.columns if c.kind != "fk"]
    if not cols:
        return None
    c = rng.choice(cols)
    col, noun = prefix + c.name, c.noun
    seen = [r[c.name] for r in rows if r[c.name] is not None]
    v = rng.choice(seen)
    if c.nullable and rng.random() < 0.5:
        return f"{col} IS NULL", rng.choice([f"where nobody filled in the {noun}", f"that are still missing a {noun}",
                                             f"where {noun} is blank"])
    if c.kind in ("int", "real"):
        if rng.random() < 0.5:
            return f"{col} > {v}", rng.choice([f"where {noun} exceeds {v}", f"when the {noun} tops {v}",
                                               f"where {noun} is bigger than {v}"])
        return f"{col} < {v}", rng.choice([f"where {noun} stays under {v}", f"where {noun} falls short of {v}",
                                           f"when the {noun} is smaller than {v}"])
    if c.kind == "date":
        r = rng.random()
        if r < 0.35:
            return f"{col} >= '{v[:4]}-01-01' AND {col} <= '{v[:4]}-12-31'", rng.choice(
                [f"during {v[:4]} (going by {noun})", f"where the {noun} is sometime in {v[:4]}"])
        if r < 0.7:
            lo, hi = sorted(rng.sample(seen, 2))
            return f"{col} BETWEEN '{lo}' AND '{hi}'", rng.choice([f"where {noun} lies between {lo} and {hi}",
                                                                  f"dated ({noun}) {lo} through {hi}"])
        return f"{col} > '{v}'", rng.choice([f"where the {noun} comes after {v}", f"where {noun} is later than {v}"])
    if c.kind == "name":
        return f"{col} = '{v}'", rng.choice([f"called {v}", f"named '{v}'"])
    return f"{col} = '{v}'", rng.choice([f"where {noun} equals {v}", f"in the {v} {noun}", f"tagged {v} for {noun}"])


def _single(t: Table, rows: list[dict], rng: random.Random) -> tuple[str, str] | None:
    pl, label, nums, cats = t.name, t.label, t.of("int", "real"), t.of("cat")
    cond = _cond(t, rows, rng)
    kind = rng.choice(["filter", "count", "agg", "group", "having", "top", "distinct", "ndistinct", "avgcmp"])
    if kind == "filter" and label and cond:
        return rng.choice([f"Could you pull up the {label.noun} for {pl} {cond[1]}?",
                           f"I'm after {pl} {cond[1]} - just the {label.noun}, please.",
                           f"Looking at {pl} {cond[1]}, what {label.noun}s come up?"]), \
            f"SELECT {label.name} FROM {pl} WHERE {cond[0]}"
    if kind == "count" and cond:
        return rng.choice([f"Quick headcount: {pl} {cond[1]}?", f"Tell me the tally of {pl} {cond[1]}.",
                           f"How big is the set of {pl} {cond[1]}? A single number please."]), \
            f"SELECT COUNT(*) FROM {pl} WHERE {cond[0]}"
    if kind == "agg" and nums:
        n = rng.choice(nums)
        fn, w = rng.choice([("SUM", "add up"), ("AVG", "average out"), ("MAX", "find the peak of"),
                            ("MIN", "find the floor of")])
        return rng.choice([f"Please {w} the {n.noun} across our {pl}.", f"Across {pl}, {w} the {n.noun} for me."]), \
            f"SELECT {fn}({n.name}) FROM {pl}"
    if kind == "group" and cats:
        c = rng.choice(cats)
        return rng.choice([f"Break {pl} down by {c.noun} and give the size of each group.",
                           f"I'd like a per-{c.noun} tally of {pl}."]), \
            f"SELECT {c.name}, COUNT(*) FROM {pl} GROUP BY {c.name}"
    if kind == "having" and cats:
        c, k = rng.choice(cats), rng.randint(1, 3)
        return rng.choice([f"Only the {c.noun} groups of {pl} bigger than {k}, please - which are they?",
                           f"Among {pl}, which {c.noun} shows up in more than {k} rows?"]), \
            f"SELECT {c.name} FROM {pl} GROUP BY {c.name} HAVING COUNT(*) > {k}"
    if kind == "top" and label and [n for n in nums if len({r[n.name] for r in rows}) == len(rows)]:
        n, k = rng.choice([n for n in nums if len({r[n.name] for r in rows}) == len(rows)]), rng.choice([2, 3, 4])
        desc = rng.random() < 0.5
        word = rng.choice(["leading", "top-ranked"]) if desc else rng.choice(["bottom", "last-placed"])
        return rng.choice([f"Rank {pl} on {n.noun} and hand me the {word} {k} ({label.noun} is enough).",
                           f"Who are the {word} {k} {pl} when sorted by {n.noun}? I want the {label.noun}."]), \
            f"SELECT {label.name} FROM {pl} ORDER BY {n.name} {'DESC' if desc else 'ASC'} LIMIT {k}"
    if kind == "distinct" and cats:
        c = rng.choice(cats)
        return rng.choice([f"Every {c.noun} our {pl} use, listed a single time each.",
                           f"Dedupe the {c.noun} column of {pl} for me."]), f"SELECT DISTINCT {c.name} FROM {pl}"
    if kind == "ndistinct" and cats:
        c = rng.choice(cats)
        return rng.choice([f"Across {pl}, how many separate {c.noun} values exist?",
                           f"Give the variety count of {c.noun} in {pl}."]), f"SELECT COUNT(DISTINCT {c.name}) FROM {pl}"
    if kind == "avgcmp" and nums and label:
        n = rng.choice(nums)
        return rng.choice([f"Which {pl} beat the typical (mean) {n.noun}? {label.noun} only.",
                           f"Flag the {pl} sitting over the mean {n.noun}; I need their {label.noun}."]), \
            f"SELECT {label.name} FROM {pl} WHERE {n.name} > (SELECT AVG({n.name}) FROM {pl})"
    return None


def _joined(d: Domain, rows: dict, rng: random.Random) -> tuple[str, str] | None:
    links = [(c, f) for c in d.tables for f in c.of("fk")]
    child, fk = rng.choice(links)
    parent = d.table(fk.args[0])
    c, p, pl_label, c_label = child.name, parent.name, parent.label, child.label
    on = f"FROM {c} JOIN {p} ON {c}.{fk.name} = {p}.id"
    kind = rng.choice(["via_parent", "per_parent", "busy", "idle", "chain"])
    if kind == "via_parent" and c_label:
        cond = _cond(parent, rows[p], rng, f"{p}.")
        if cond:
            return rng.choice([f"Thinking of {p} {cond[1]}: which of their {c} do we have? {c_label.noun}, please.",
                               f"For {p} {cond[1]}, pull up the related {c} ({c_label.noun})."]), \
                f"SELECT {c}.{c_label.name} {on} WHERE {cond[0]}"
    if kind == "per_parent" and pl_label:
        nums = child.of("int", "real")
        if nums and rng.random() < 0.5:
            n = rng.choice(nums)
            return rng.choice([f"Sum the {n.noun} of {c}, one line per {parent.entity} {pl_label.noun}.",
                               f"Per {parent.entity} (by {pl_label.noun}), what do the {c} total in {n.noun}?"]), \
                f"SELECT {p}.{pl_label.name}, SUM({c}.{n.name}) {on} GROUP BY {p}.{pl_label.name}"
        return rng.choice([f"Tally {c} for every {parent.entity}; show the {pl_label.noun} next to the tally.",
                           f"Each {parent.entity}'s {pl_label.noun} plus how many {c} point at it."]), \
            f"SELECT {p}.{pl_label.name}, COUNT(*) {on} GROUP BY {p}.{pl_label.name}"
    if kind == "busy" and pl_label:
        k = rng.randint(1, 2)
        return rng.choice([f"Which {p} are linked to more than {k} {c}? Their {pl_label.noun} is fine.",
                           f"Spot the {p} carrying over {k} {c} each, by {pl_label.noun}."]), \
            f"SELECT {p}.{pl_label.name} {on} GROUP BY {p}.{pl_label.name} HAVING COUNT(*) > {k}"
    if kind == "idle" and pl_label:
        return rng.choice([f"Are there {p} that never appear in {c}? Give me their {pl_label.noun}.",
                           f"Find {p} with zero {c} attached ({pl_label.noun})."]), \
            f"SELECT {pl_label.name} FROM {p} WHERE id NOT IN (SELECT {fk.name} FROM {c})"
    if kind == "chain":
        for other in child.of("fk"):
            if other is fk:
                continue
            third = d.table(other.args[0])
            if not (pl_label and third.label):
                continue
            cond = _cond(third, rows[third.name], rng, f"{third.name}.")
            if not cond:
                continue
            on3 = f"{on} JOIN {third.name} ON {c}.{other.name} = {third.name}.id"
            return rng.choice([f"Which {p} show up in {c} together with {third.name} {cond[1]}? One {pl_label.noun} per {parent.entity}.",
                               f"Going through {c}, name the {p} tied to {third.name} {cond[1]} - no duplicates."]), \
                f"SELECT DISTINCT {p}.{pl_label.name} {on3} WHERE {cond[0]}"
    return None


def question(d: Domain, rows: dict, rng: random.Random) -> tuple[str, str] | None:
    if rng.random() < 0.5:
        t = rng.choice(d.tables)
        return _single(t, rows[t.name], rng)
    return _joined(d, rows, rng)
