"""Writes general.jsonl: the general probe set for the forgetting check (and for `replay: self`).

    python src/tunewise/probes/generate.py      # rewrites general.jsonl here, deterministically

Every prompt is written by this script (no outside data, so no licence to inherit): facts the
project states itself, arithmetic, rewriting, short instructions, classification, definitions,
letters and lists. The answers are never stored here: the forgetting check asks each base model
for its own greedy answers and caches them.

Each prompt comes from a template (its `template` field: the prompt with its slots, `{a} + {b}`),
and every template belongs to one side only: the first MEASURE (100) lines measure forgetting, the
rest are what `replay: self` trains on. Replaying the base's answers to "What is 76 + 29?" would
teach the very skill that "What is 44 + 62?" measures and make forgetting read lower than it is.
Each side is shuffled (seed 0) so any prefix is a mix of kinds; ids p000.. follow the file order.
"""

import json
import random
from pathlib import Path

COUNTRIES = ["France", "Japan", "Brazil", "Canada", "Egypt", "India", "Kenya", "Mexico", "Norway", "Peru",
             "Spain", "Italy", "Germany", "Australia", "Argentina", "China", "Greece", "Portugal", "Sweden", "Chile"]
SCIENCE = ["Why is the sky blue?", "What gas do plants take in from the air?", "How many legs does a spider have?",
           "What is the boiling point of water at sea level in Celsius?", "What planet is closest to the sun?",
           "What is the largest ocean on Earth?", "What does a thermometer measure?", "What is H2O?",
           "Which organ pumps blood through the body?", "What causes day and night on Earth?",
           "How many days are in a leap year?", "What is the freezing point of water in Fahrenheit?",
           "Which is heavier, a kilogram of feathers or a kilogram of iron?", "What do bees make?",
           "What is the main gas in the air we breathe?", "How many continents are there?",
           "What is the speed of light, roughly?", "Why do we have seasons?", "What is photosynthesis?",
           "What is the tallest mountain in the world?"]
WORDS = ["library", "volcano", "bicycle", "democracy", "algorithm", "harvest", "glacier", "orchestra", "vaccine",
         "umbrella", "compass", "telescope", "recipe", "bridge", "museum", "battery", "island", "poem",
         "market", "cloud"]
ADJECTIVES = ["happy", "fast", "cold", "bright", "quiet", "strong", "angry", "small", "easy", "old"]
SENTENCES = ["the meeting was moved to friday because the room was booked",
             "our team finished the project two weeks early",
             "the cat knocked the glass off the table",
             "please send me the report before noon",
             "the new phone has a better camera but a weaker battery",
             "i think we should take the train instead of driving",
             "the restaurant was crowded so we ate at home",
             "she learned to play the piano in one year",
             "the weather forecast says it will rain tomorrow",
             "the company hired ten new engineers this spring",
             "he forgot his keys and had to wait outside",
             "the children planted tomatoes in the garden"]
REWRITES = ["Rewrite this sentence with correct capitalization and punctuation: {s}",
            "Make this sentence more formal: {s}",
            "Summarize in five words or fewer: {s}",
            "Rewrite this in the past tense: {s}",
            "Turn this into a question: {s}"]
REVIEWS = ["The food was cold and the waiter was rude.", "Absolutely loved this book, could not put it down!",
           "The hotel room was clean and the staff were friendly.", "Worst purchase I have made all year.",
           "The movie was fine, nothing special.", "Delivery was fast and the product works perfectly.",
           "The app keeps crashing when I open it.", "A wonderful concert with great sound."]
TOPICS = ["staying focused while studying", "saving money", "sleeping better", "learning a new language",
          "writing a clear email", "preparing for a job interview", "keeping plants alive", "running a first 5k"]
INSTRUCTIONS = ["Give three tips for {t}.", "Write one sentence of advice about {t}.",
                "List two common mistakes in {t}."]
THINGS = ["fruits", "colors", "animals that live in the sea", "musical instruments", "vegetables",
          "European capitals", "programming languages", "sports played with a ball"]


MEASURE = 100  # data/probes.MEASURE_SIZE


def _templates(rng) -> list[tuple[str, str, str, list[dict]]]:
    """(side, kind, template, slot values): every prompt of a template goes to one side."""
    science = rng.sample(SCIENCE, len(SCIENCE))
    sums = [{"a": rng.randint(2, 99), "b": rng.randint(2, 99)} for _ in range(20)]
    products = [{"a": rng.randint(2, 99), "b": rng.randint(2, 12)} for _ in range(20)]
    differences = [{"a": rng.randint(50, 500), "b": rng.randint(1, 49)} for _ in range(10)]
    pens = [{"p": rng.randint(2, 9), "n": rng.randint(3, 12)} for _ in range(10)]
    words, topics = [{"w": w} for w in WORDS], [{"t": t} for t in TOPICS]
    sentences, adjectives = [{"s": x} for x in SENTENCES], [{"a": a} for a in ADJECTIVES]
    return [
        ("measure", "fact", "What is the capital of {c}?", [{"c": c} for c in COUNTRIES]),
        *[("measure", "fact", q, [{}]) for q in science[:10]],
        ("measure", "arithmetic", "What is {a} + {b}?", sums),
        ("measure", "arithmetic", "A pen costs {p} dollars. How much do {n} pens cost?", pens),
        ("measure", "rewriting", REWRITES[0], sentences),
        ("measure", "rewriting", REWRITES[3], sentences),
        ("measure", "instruction", INSTRUCTIONS[0], topics),
        ("measure", "instruction", "Name three {t}.", [{"t": t} for t in THINGS]),
        ("measure", "language", "What does the word '{w}' mean?", words),
        ("measure", "language", "What is the opposite of '{a}'?", adjectives),
        ("replay", "fact", "On which continent is {c}?", [{"c": c} for c in COUNTRIES]),
        *[("replay", "fact", q, [{}]) for q in science[10:]],
        ("replay", "arithmetic", "What is {a} times {b}?", products),
        ("replay", "arithmetic", "What is {a} minus {b}?", differences),
        ("replay", "rewriting", REWRITES[1], sentences),
        ("replay", "rewriting", REWRITES[2], sentences),
        ("replay", "rewriting", REWRITES[4], sentences),
        ("replay", "instruction", INSTRUCTIONS[1], topics),
        ("replay", "instruction", INSTRUCTIONS[2], topics),
        ("replay", "instruction", "Write a short sentence using the word '{w}'.", words[:10]),
        ("replay", "language", "Give a synonym for '{a}'.", adjectives),
        ("replay", "language", "How many letters are in the word '{w}'?", words[10:]),
        ("replay", "language", "Is this review positive or negative? {r}", [{"r": r} for r in REVIEWS]),
    ]


def build(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    sides = {"measure": {}, "replay": {}}
    for side, kind, template, slots in _templates(rng):
        for values in slots:  # a repeated random sum is asked once
            sides[side].setdefault(template.format(**values), {"kind": kind, "template": template})
    rows = {side: [{**v, "prompt": p} for p, v in prompts.items()] for side, prompts in sides.items()}
    for side in rows.values():
        rng.shuffle(side)
    measure, replay = rows["measure"][:MEASURE], rows["replay"]  # the measuring prompts left over are dropped
    return [{"id": f"p{i:03d}", "kind": r["kind"], "template": r["template"], "prompt": r["prompt"]}
            for i, r in enumerate(measure + replay)]


if __name__ == "__main__":
    rows = build()
    out = Path(__file__).resolve().parent / "general.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} prompts -> {out}")
