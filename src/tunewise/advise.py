"""`tunewise advise`: the guide's decision table as a few questions, ending in a recommendation."""

from __future__ import annotations

from dataclasses import dataclass

PROBLEMS = {
    "format": "the model ignores format instructions",
    "domain": "the model lacks domain terminology or reasoning",
    "latency": "latency is too high; you need a smaller, faster model",
    "privacy": "private data must stay out of third-party APIs",
    "knowledge": "the knowledge changes frequently",
    "documents": "answers must come from specific documents",
    "instructions": "the model just needs better instructions",
}


@dataclass
class Advice:
    approach: str
    why: str
    next_step: str


def advise(problem: str, examples: int, tried_prompting: bool) -> Advice:
    """The guide's table, in its order of precedence: cheap fixes first, fine-tuning last."""
    if problem == "knowledge":
        return Advice("RAG", "fine-tuning needs retraining every time the knowledge changes",
                      "index the documents and retrieve them into the prompt")
    if problem == "documents":
        return Advice("RAG", "fine-tuning does not inject passages; the model cannot quote documents it was tuned on",
                      "retrieve the relevant passages at question time")
    if problem == "instructions" or not tried_prompting:
        return Advice("improve the prompt first", "most problems are solved by a better system prompt in an "
                      "afternoon; fine-tuning is the last resort, not the first",
                      "write explicit instructions and a few examples; measure on 50-100 held-out cases")
    if examples < 50:
        return Advice("few-shot prompting", f"{examples} examples is not enough data: fine-tuning on fewer than "
                      "50 reliably gives poor results", "put the best examples in the prompt; collect more data")
    why = {"format": "consistent output format is where fine-tuning beats prompting",
           "domain": "deep domain adaptation needs the weights to change",
           "latency": "distilling the behaviour into a smaller model cuts latency",
           "privacy": "a local fine-tuned model keeps data in-house"}[problem]
    extra = " (100-500 curated examples is a realistic minimum)" if examples < 100 else ""
    approach = "fine-tune a smaller model" if problem == "latency" else (
        "fine-tune a local model" if problem == "privacy" else "fine-tune")
    return Advice(approach, why + extra, "tunewise data check train.jsonl --model MODEL, then tunewise train "
                  "config.yaml (LoRA r=16, lr 2e-4, 1-3 epochs), then tunewise eval against the base model")
