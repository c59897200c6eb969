"""`data.replay`: a fraction of other data mixed into training, against catastrophic forgetting.

The guide: "optionally mix in 5-10% general instruction data". The source is either a JSONL file
(say, the previous task's training data; checked by the data doctor like data.train) or `self`:
the base model's own greedy answers to the bundled probe prompts that the forgetting check does
not use (data/probes.py), i.e. self-distillation, so no outside data is needed.

A fixed, seeded sample (train.seed) joins the training set after the validation split, so every
epoch sees it and validation never does; a replay example equal to a validation example is
dropped. The sample's size makes replay `fraction` of the mixed set: round(n * f / (1 - f)).
"""

from __future__ import annotations

import random
from dataclasses import replace

import torch
from rich.console import Console

from ..config import Config
from ..data.doctor import check
from ..data.load import Example, load_examples
from ..data.masking import encode
from ..data.probes import ANSWER_TOKENS, base_key, read_answers, replay_probes, write_answers
from ..data.split import replay_count
from ..data.targets import TargetOptions, target_options
from ..data.template import render, template_hash
from ..errors import TunewiseError
from .setup import Datasets

# Tokens short of the answer cap at which an answer counts as cut off (decoding and re-tokenizing
# the stripped text can differ from the generated ids by a token or two).
CUT_MARGIN = 4


def mix_replay(config: Config, data: Datasets, model, tokenizer, source: str,
               console: Console) -> tuple[Datasets, dict | None]:
    """The training set with replay mixed in (said on `console`), and manifest.json's `replay`
    record (None when off)."""
    replay = config.data.replay
    if replay is None:
        return data, None
    options = target_options(tokenizer, source, config.data.fold_system_prompt, config.data.end_of_turn)
    n_train = data.train_stats.examples
    wanted = replay_count(n_train, replay.fraction)
    rng = random.Random(config.train.seed)
    if replay.source == "self":
        pool = _self_examples(model, tokenizer, source, config, rng, wanted)
    else:
        pool = _file_examples(replay.source, tokenizer, config, options)
    rng.shuffle(pool)
    val = {tuple(x.input_ids) for x in data.val}
    picked, leaked = [], 0
    for example in pool:  # in the seeded order until enough are kept
        if len(picked) == wanted:
            break
        encoded = encode(tokenizer, example, config.data.max_seq_len, f"{replay.source}:{example.line}", options)
        if any(tuple(x.input_ids) in val for x in encoded):
            leaked += 1  # never train on a validation example
            continue
        if any(x.n_trained for x in encoded):
            picked.append([x for x in encoded if x.n_trained])
    sequences = [x for group in picked for x in group]
    share = len(picked) / (len(picked) + n_train)
    note = (f"replay: {len(picked)} examples from {replay.source} mixed into train "
            f"({share:.1%} of {len(picked) + n_train}; asked {replay.fraction:.1%})")
    if leaked:
        note += f"; {leaked} equal to validation examples left out"
    if len(picked) < wanted:
        note += f"; the source held only {len(picked)} usable examples of the {wanted} asked"
    record = {"source": replay.source, "fraction": replay.fraction, "examples": len(picked),
              "share": round(share, 4), "trained_tokens": sum(x.n_trained for x in sequences)}
    console.print(note)
    return replace(data, train=data.train + sequences), record


def _file_examples(path: str, tokenizer, config: Config, options: TargetOptions) -> list[Example]:
    report = check(path, None, tokenizer, config.data.max_seq_len, True, options)
    errors = [f"{f.where()}{f.message}" for f in report.findings if f.level == "error"]
    if errors:
        raise TunewiseError(f"data.replay.source: the data check found {report.errors} errors:\n  "
                            + "\n  ".join(errors[:10]))
    return load_examples(path)


def _self_examples(model, tokenizer, source: str, config: Config, rng: random.Random, wanted: int) -> list[Example]:
    """Probe prompts with the base model's own complete answers (generated once per base, then cached),
    in a seeded order until `wanted` are found. An answer that ran into the length cap is skipped:
    training it would teach the model to stop mid-sentence."""
    key = base_key(source, template_hash(tokenizer), f"{config.model.quantization}/{config.model.dtype}")
    answers = read_answers(key)
    cached = dict(answers)
    probes = replay_probes()
    rng.shuffle(probes)
    kept = []
    for probe in probes:
        if len(kept) == wanted:
            break
        if probe.id not in answers:
            answers[probe.id] = _base_answer(model, tokenizer, probe.messages())
        text = answers[probe.id]
        if text.strip() and len(tokenizer(text, add_special_tokens=False)["input_ids"]) < ANSWER_TOKENS - CUT_MARGIN:
            kept.append(Example(messages=[*probe.messages(), {"role": "assistant", "content": text}],
                                line=len(kept) + 1))
    if answers != cached:
        write_answers(key, source, answers)
    return kept


@torch.no_grad()
def _base_answer(model, tokenizer, messages: list[dict]) -> str:
    """The base model's greedy answer (adapter off), one prompt at a time: no padding to get wrong."""
    ids = tokenizer(render(tokenizer, messages, True), add_special_tokens=False, return_tensors="pt")["input_ids"]
    device = next(model.parameters()).device
    model.eval()
    try:
        with model.disable_adapter():
            out = model.generate(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device),
                                 max_new_tokens=ANSWER_TOKENS, do_sample=False, temperature=None, top_p=None,
                                 top_k=None, pad_token_id=tokenizer.pad_token_id)
    finally:
        model.train()
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
