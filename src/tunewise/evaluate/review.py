"""The guide's manual evaluation, blind: a page where a person judges base and tuned answers
without knowing which is which, and the scoring that unblinds their judgements.

`write_review` shows each example's prompt and its two answers as "A" and "B" in an order drawn
per example (seeded), with the guide's three questions (correct? right format? any
hallucination?) as buttons. The page keeps the judgements in the browser (localStorage) and
downloads them as JSON. Which answer is the tuned one is written only to a key file beside the
page (never into it); `score` reads the downloaded judgements with that key.

Downloaded answers: `{"review_id": str, "key_file": str, "answers": {"<item>": {"A": {"correct":
bool, "format": bool, "hallucination": bool}, "B": {...}}}}` (questions not answered are absent).
"""

from __future__ import annotations

import json
import random
import secrets
from pathlib import Path

from ..data.load import load_examples
from ..errors import TunewiseError
from ..files import write_atomic
from .compare import compare
from .generate import prompt_messages

QUESTIONS = {"correct": "Correct?", "format": "Right format?", "hallucination": "Any hallucination?"}
SIDES = ("base", "tuned")


def review_inputs(run_dir: str | Path, data_path: str | Path, eval_json: str | Path | None = None,
                  device: str = "auto") -> tuple[dict, list[str]]:
    """Base and tuned answers for each example of `data_path` (generated now, or read from an
    earlier `tunewise eval --json` of the same data) and each example's context before its question."""
    examples = load_examples(data_path)
    contexts = ["\n\n".join(m["content"] for m in prompt_messages(e.messages)[:-1] if isinstance(m.get("content"), str))
                for e in examples]
    if eval_json is None:
        return compare(run_dir, data_path, "exact_match", device=device), contexts
    result = _read_json(eval_json, "evaluation")
    rows = result.get("examples")
    if not isinstance(rows, list) or len(rows) != len(examples):
        raise TunewiseError(f"{eval_json}: holds {len(rows) if isinstance(rows, list) else 'no'} examples, "
                            f"{data_path} has {len(examples)}; pass the data the evaluation ran on")
    for n, (row, example) in enumerate(zip(rows, examples)):
        if not isinstance(row, dict) or {"prompt", "reference", "base", "tuned"} - row.keys():
            raise TunewiseError(f"{eval_json}: example {n} lacks prompt, reference, base or tuned")
        if not str(row["prompt"]).endswith(str(prompt_messages(example.messages)[-1]["content"])):  # folded too
            raise TunewiseError(f"{eval_json}: example {n}'s prompt differs from {data_path}:{example.line}; "
                                "pass the data the evaluation ran on")
    return result, contexts


def blind(result: dict, contexts: list[str], seed: int | None = None) -> tuple[list[dict], dict]:
    """Page items (prompt, context, reference, answers A and B) and the key saying which side each
    letter is. `contexts[i]` is the text before example i's question (its system prompt). Without a
    seed one is drawn at random (and kept in the key): a known seed would let a reviewer rebuild the order."""
    seed = secrets.randbits(32) if seed is None else seed
    rng = random.Random(seed)
    review_id = secrets.token_hex(8)
    items, order = [], []
    for i, (row, context) in enumerate(zip(result["examples"], contexts)):
        sides = list(SIDES)
        rng.shuffle(sides)
        order.append(sides)
        items.append({"item": str(i), "context": context, "prompt": row["prompt"], "reference": row["reference"],
                      "answers": {"A": row[sides[0]], "B": row[sides[1]]}})
    key = {"review_id": review_id, "seed": seed, "data": result.get("data"), "run": result.get("run"),
           "order": {str(i): {"A": s[0], "B": s[1]} for i, s in enumerate(order)}}
    return items, key


def write_review(result: dict, contexts: list[str], out_dir: str | Path, seed: int | None = None) -> tuple[Path, Path]:
    """Write OUT/review.html and OUT/review-key.json; returns both paths."""
    out_dir = Path(out_dir)
    items, key = blind(result, contexts, seed)
    page, key_path = out_dir / "review.html", out_dir / "review-key.json"
    write_atomic(key_path, json.dumps(key, indent=2), private=True)  # the reviewer must not read it
    write_atomic(page, render_page(items, key["review_id"], str(key_path.resolve())))
    return page, key_path


def score(answers_path: str | Path, key_path: str | Path | None = None) -> dict:
    """Unblind judgements: per side, answered count and the share of yes for each question."""
    answers = _read_json(answers_path, "answers")
    key_path = key_path or answers.get("key_file")
    if not key_path:
        raise TunewiseError(f"{answers_path}: no key_file in it; pass --key REVIEW-KEY.json")
    key = _read_json(key_path, "review key")
    if answers.get("review_id") != key.get("review_id"):
        raise TunewiseError(f"{answers_path}: review_id {answers.get('review_id')!r} does not match the key "
                            f"{key_path} ({key.get('review_id')!r}); score each review with its own key")
    judged: dict[str, dict[str, list[bool]]] = {s: {q: [] for q in QUESTIONS} for s in SIDES}
    for item, letters in (answers.get("answers") or {}).items():
        if item not in key["order"]:
            raise TunewiseError(f"{answers_path}: item {item!r} is not in the review {key_path}")
        for letter, marks in letters.items():
            side = key["order"][item].get(letter)
            if side is None:
                raise TunewiseError(f"{answers_path}: item {item}: answer {letter!r} is neither A nor B")
            for question, value in marks.items():
                if question in QUESTIONS and isinstance(value, bool):
                    judged[side][question].append(value)
    return {side: {q: {"answered": len(v), "yes": sum(v), "share": sum(v) / len(v) if v else None}
                   for q, v in per_question.items()}
            for side, per_question in judged.items()} | {"items": len(key["order"])}


def _read_json(path: str | Path, what: str) -> dict:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TunewiseError(f"{path}: {what} file not found") from None
    except ValueError as e:
        raise TunewiseError(f"{path}: not a JSON {what} file ({e})") from None
    if not isinstance(value, dict):
        raise TunewiseError(f"{path}: a {what} file holds one JSON object")
    return value


def _script_json(value) -> str:
    """JSON safe inside a <script> element: no "</script>" or "<!--" can close or confuse it."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(items: list[dict], review_id: str, key_file: str) -> str:
    """Self-contained page; every text from data or a model is set with textContent, never as HTML."""
    setup = _script_json({"review_id": review_id, "key_file": key_file, "items": items, "questions": QUESTIONS})
    return PAGE.replace("__SETUP__", setup)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tunewise blind review</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 70rem; }
section { border: 1px solid #ccc; border-radius: 6px; padding: .8rem 1rem; margin-bottom: 1.2rem; }
pre { white-space: pre-wrap; margin: .2rem 0; font-size: .85rem; background: #f6f6f6; padding: .4rem; }
.answers { display: flex; gap: 1rem; } .answer { flex: 1; }
button { margin: .1rem; padding: .2rem .7rem; border: 1px solid #888; background: #fff; border-radius: 4px; }
button.chosen { background: #2a6; color: #fff; border-color: #2a6; }
.q { margin: .25rem 0; } #progress { font-weight: 600; }
</style></head><body>
<header><h1>Blind review</h1>
<p>Each example shows two answers, A and B, one from the base model and one from the tuned model, in
an order drawn per example. Judge each answer with the guide's three questions. Your choices stay in
this browser; download them when done and score them with
<code>tunewise review --score ANSWERS.json</code>.</p>
<p><span id="progress"></span> <button id="download">Download answers (JSON)</button></p></header>
<main id="items"></main>
<p><button id="download-end">Download answers (JSON)</button></p>
<script id="setup" type="application/json">__SETUP__</script>
<script>
const setup = JSON.parse(document.getElementById("setup").textContent);
const storeKey = "tunewise-review-" + setup.review_id;
let answers = JSON.parse(localStorage.getItem(storeKey) || "{}");

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function progress() {
  const total = setup.items.length * 2 * Object.keys(setup.questions).length;
  let done = 0;
  for (const item of Object.values(answers)) for (const a of Object.values(item)) done += Object.keys(a).length;
  document.getElementById("progress").textContent = "answered " + done + " of " + total + " questions";
}

function choose(item, letter, question, value) {
  answers[item] = answers[item] || {};
  answers[item][letter] = answers[item][letter] || {};
  answers[item][letter][question] = value;
  localStorage.setItem(storeKey, JSON.stringify(answers));
  for (const b of document.querySelectorAll(
      `button[data-item="${item}"][data-answer="${letter}"][data-question="${question}"]`)) {
    const on = b.dataset.value === String(value);
    b.classList.toggle("chosen", on);
    b.setAttribute("aria-pressed", on);
  }
  progress();
}

function questionRow(item, letter, question, label) {
  const row = el("div", undefined, "q");
  row.append(el("span", label + " "));
  for (const [text, value] of [["yes", true], ["no", false]]) {
    const b = el("button", text);
    Object.assign(b.dataset, {item: item, answer: letter, question: question, value: String(value)});
    const chosen = ((answers[item] || {})[letter] || {})[question] === value;
    b.classList.toggle("chosen", chosen);
    b.setAttribute("aria-pressed", chosen);
    b.addEventListener("click", () => choose(item, letter, question, value));
    row.append(b);
  }
  return row;
}

function render() {
  const main = document.getElementById("items");
  setup.items.forEach((it, n) => {
    const sec = el("section");
    sec.id = "item-" + it.item;
    sec.append(el("h2", "Example " + (n + 1) + " of " + setup.items.length));
    if (it.context) {
      const details = el("details");
      details.append(el("summary", "context (system prompt)"), el("pre", it.context));
      sec.append(details);
    }
    sec.append(el("h3", "Prompt"), el("pre", it.prompt));
    const ref = el("details");
    ref.append(el("summary", "reference answer"), el("pre", it.reference));
    sec.append(ref);
    const row = el("div", undefined, "answers");
    for (const letter of ["A", "B"]) {
      const card = el("div", undefined, "answer");
      card.append(el("h3", "Answer " + letter), el("pre", it.answers[letter]));
      for (const [q, label] of Object.entries(setup.questions)) card.append(questionRow(it.item, letter, q, label));
      row.append(card);
    }
    sec.append(row);
    main.append(sec);
  });
  progress();
}

function download() {
  const body = JSON.stringify({review_id: setup.review_id, key_file: setup.key_file, answers: answers}, null, 2);
  const link = el("a");
  link.href = URL.createObjectURL(new Blob([body], {type: "application/json"}));
  link.download = "review-answers-" + setup.review_id + ".json";
  document.body.append(link);
  link.click();
  link.remove();
}
for (const id of ["download", "download-end"]) document.getElementById(id).addEventListener("click", download);
render();
</script></body></html>
"""
