"""Writes train.jsonl, val.jsonl and test.jsonl for the JSON extraction example, deterministically.

    python examples/json/generate.py

Each example: a system prompt naming the fields to extract (with types), a short text, and the
answer as one compact JSON object with exactly those keys (null where the text does not say).
Eight record kinds; train uses five, val one other, test two others, so the test score measures
the skill on field sets the model never saw in training. All text is written here.
"""

import json
import random
from pathlib import Path

FIRST = ["Maria", "John", "Aiko", "Lars", "Fatima", "Diego", "Chen", "Olga", "Kwame", "Sofia", "Ravi", "Emma"]
LAST = ["Lopez", "Smith", "Tanaka", "Berg", "Haddad", "Silva", "Wang", "Petrova", "Mensah", "Rossi", "Patel", "Brown"]
CITIES = ["Porto", "Lyon", "Osaka", "Bergen", "Cairo", "Lima", "Toronto", "Krakow", "Accra", "Turin", "Pune", "Leeds"]
JOBS = ["nurse", "teacher", "carpenter", "pilot", "chef", "engineer", "librarian", "plumber", "baker", "dentist"]
COLORS = ["red", "blue", "black", "green", "white", "silver"]
ITEMS = ["backpack", "kettle", "lamp", "jacket", "headphones", "chair", "blender", "umbrella"]
VENUES = ["the town hall", "Riverside Park", "the Grand Theatre", "the old harbour", "the city library"]
EVENTS = ["jazz night", "book fair", "charity run", "film festival", "science talk", "food market"]
MONTHS = ["March", "April", "May", "June", "July", "August", "September", "October"]
TITLES = ["The Silent Harbor", "Winter Roads", "A Map of Stars", "Salt and Iron", "The Last Orchard", "Paper Birds"]
AIRLINES = ["SkyWays", "Nordic Air", "BlueJet", "Pacific Wings"]
DISHES = ["lentil soup", "mushroom risotto", "fish tacos", "apple pie", "vegetable curry", "banana bread"]
INGREDIENTS = ["lentils", "rice", "cod", "apples", "chickpeas", "bananas"]
DISTRICTS = ["Old Town", "Harbourside", "Northgate", "Parkview", "the university quarter"]

KINDS = {
    "person": ("name (string), age (integer), city (string), job (string)", [
        "{name}, {age}, lives in {city} and works as a {job}.",
        "Meet {name}: a {job} from {city}, {age} years old.",
        "At {age}, {name} left a job as a {job} to move to {city}.",
        "{name} ({age}) is a {job} based in {city}.",
    ]),
    "product": ("product (string), price (number), currency (string), color (string)", [
        "The {color} {product} is on sale for {price} {currency}.",
        "For {price} {currency} you get a {product} in {color}.",
        "New in stock: {product}, colour {color}, price {price} {currency}.",
    ]),
    "event": ("event (string), month (string), venue (string), attendees (integer)", [
        "The {event} at {venue} in {month} drew {attendees} visitors.",
        "About {attendees} people came to the {event}, held in {month} at {venue}.",
        "{venue} hosts the {event} this {month}; {attendees} tickets were sold.",
    ]),
    "book": ("title (string), author (string), year (integer), pages (integer)", [
        "'{title}' by {author} came out in {year} and runs to {pages} pages.",
        "{author} published {title} in {year}; it is {pages} pages long.",
        "A {pages}-page novel, {title} ({year}), is {author}'s best known work.",
    ]),
    "flight": ("airline (string), flight_number (string), origin (string), destination (string)", [
        "{airline} flight {flight_number} from {origin} to {destination} is delayed.",
        "Your booking: {flight_number} with {airline}, {origin} to {destination}.",
        "Boarding now: {airline} {flight_number}, departing {origin} for {destination}.",
    ]),
    "recipe": ("dish (string), servings (integer), minutes (integer), main_ingredient (string)", [
        "This {dish} serves {servings} and takes {minutes} minutes; the key is good {main_ingredient}.",
        "A {minutes}-minute {dish} for {servings} people, built around {main_ingredient}.",
    ]),
    "apartment": ("rooms (integer), rent (number), district (string), pets_allowed (boolean)", [
        "{rooms}-room flat in {district}, {rent} a month, {pets}.",
        "For rent in {district}: {rooms} rooms at {rent} per month ({pets}).",
    ]),
    "order": ("customer (string), item (string), quantity (integer), total (number)", [
        "{customer} ordered {quantity} units of {item} for a total of {total}.",
        "Order confirmed: {quantity} x {item} for {customer}, total {total}.",
    ]),
}
SPLITS = {"train": (["person", "product", "event", "book", "flight"], 240),
          "val": (["recipe"], 24), "test": (["apartment", "order"], 48)}
SYSTEM = ("Extract these fields from the text: {fields}. Reply with one JSON object with exactly "
          "these keys and nothing else; use null for a field the text does not give.")


def _values(kind: str, rng: random.Random) -> dict:
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    if kind == "person":
        return {"name": name, "age": rng.randint(19, 80), "city": rng.choice(CITIES), "job": rng.choice(JOBS)}
    if kind == "product":
        return {"product": rng.choice(ITEMS), "price": round(rng.uniform(5, 300), 2),
                "currency": rng.choice(["EUR", "USD", "GBP"]), "color": rng.choice(COLORS)}
    if kind == "event":
        return {"event": rng.choice(EVENTS), "month": rng.choice(MONTHS), "venue": rng.choice(VENUES),
                "attendees": rng.randint(40, 5000)}
    if kind == "book":
        return {"title": rng.choice(TITLES), "author": name, "year": rng.randint(1950, 2024),
                "pages": rng.randint(90, 900)}
    if kind == "flight":
        origin, destination = rng.sample(CITIES, 2)
        return {"airline": rng.choice(AIRLINES), "flight_number": f"{rng.choice('BNSP')}{rng.choice('AKJW')}"
                f"{rng.randint(100, 999)}", "origin": origin, "destination": destination}
    if kind == "recipe":
        i = rng.randrange(len(DISHES))
        return {"dish": DISHES[i], "servings": rng.randint(2, 8), "minutes": rng.choice([15, 20, 30, 45, 60, 90]),
                "main_ingredient": INGREDIENTS[i]}
    if kind == "apartment":
        return {"rooms": rng.randint(1, 5), "rent": rng.randrange(500, 3000, 50), "district": rng.choice(DISTRICTS),
                "pets_allowed": rng.random() < 0.5}
    return {"customer": name, "item": rng.choice(ITEMS), "quantity": rng.randint(2, 9),
            "total": round(rng.uniform(10, 900), 2)}


def example(kind: str, rng: random.Random) -> dict:
    fields, templates = KINDS[kind]
    values = _values(kind, rng)
    shown = {**values, "pets": "pets allowed" if values.get("pets_allowed") else "no pets"}
    text = rng.choice(templates).format(**shown)
    answer = json.dumps(values, ensure_ascii=False)
    return {"messages": [{"role": "system", "content": SYSTEM.format(fields=fields)},
                         {"role": "user", "content": text},
                         {"role": "assistant", "content": answer}], "meta": {"kind": kind}}


def build(seed: int = 0) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    out = {}
    for split, (kinds, n) in SPLITS.items():
        rows, seen = [], set()
        while len(rows) < n:
            row = example(kinds[len(rows) % len(kinds)], rng)
            key = row["messages"][1]["content"]
            if key not in seen:  # no repeated text within a split
                seen.add(key)
                rows.append(row)
        out[split] = rows
    return out


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    for split, rows in build().items():
        (here / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"{split}: {len(rows)} examples")
