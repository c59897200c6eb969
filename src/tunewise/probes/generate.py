"""Writes general.jsonl: the general probe set for the forgetting check (and for `replay: self`).

    python src/tunewise/probes/generate.py      # rewrites general.jsonl here, deterministically

Every prompt is written by this script (no outside data, so no licence to inherit): facts the
project states itself, arithmetic, rewriting, short instructions, classification, definitions,
letters and lists. The answers are never stored here: the forgetting check asks each base model
for its own greedy answers and caches them. Lines are shuffled (seed 0) so any prefix is a mix of
kinds; ids p000.. follow the shuffled order.
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


def _facts(rng):
    out = [f"What is the capital of {c}?" for c in COUNTRIES]
    out += [f"On which continent is {c}?" for c in rng.sample(COUNTRIES, 10)]
    return [("fact", p) for p in out + SCIENCE]


def _arithmetic(rng):
    out = []
    for _ in range(20):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        out.append(f"What is {a} + {b}?")
        out.append(f"What is {a} times {rng.randint(2, 12)}?")
    for _ in range(10):
        a, b = rng.randint(50, 500), rng.randint(1, 49)
        out.append(f"What is {a} minus {b}?")
    for _ in range(10):
        n, p = rng.randint(3, 12), rng.randint(2, 9)
        out.append(f"A pen costs {p} dollars. How much do {n} pens cost?")
    return [("arithmetic", p) for p in out]


def _rewriting(rng):
    return [("rewriting", r.format(s=s)) for s in SENTENCES for r in rng.sample(REWRITES, 4)]


def _instructions(rng):
    out = [i.format(t=t) for t in TOPICS for i in INSTRUCTIONS]
    out += [f"Name three {t}." for t in THINGS]
    out += [f"Write a short sentence using the word '{w}'." for w in WORDS[:10]]
    return [("instruction", p) for p in out]


def _language(rng):
    out = [f"What does the word '{w}' mean?" for w in WORDS]
    out += [f"Give a synonym for '{a}'." for a in ADJECTIVES]
    out += [f"What is the opposite of '{a}'?" for a in ADJECTIVES]
    out += [f"How many letters are in the word '{w}'?" for w in WORDS[10:]]
    out += [f"Is this review positive or negative? {r}" for r in REVIEWS]
    return [("language", p) for p in out]


def build(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    items = _facts(rng) + _arithmetic(rng) + _rewriting(rng) + _instructions(rng) + _language(rng)
    prompts = {}
    for kind, prompt in items:
        prompts.setdefault(prompt, kind)  # a repeated random sum is asked once
    rows = [{"kind": k, "prompt": p} for p, k in prompts.items()]
    rng.shuffle(rows)
    return [{"id": f"p{i:03d}", **row} for i, row in enumerate(rows)]


if __name__ == "__main__":
    rows = build()
    out = Path(__file__).resolve().parent / "general.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} prompts -> {out}")
