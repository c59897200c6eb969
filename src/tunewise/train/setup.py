"""Everything before the first step: data encoded and checked, model with adapters."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..config import Config
from ..data.load import Example, load_examples
from ..data.masking import EncodeStats, Encoded, encode_all
from ..data.template import require_template
from ..errors import TunewiseError

DEFAULT_VAL_FRACTION = 0.1  # the guide: a 10-20% validation split


@dataclass
class Datasets:
    train: list[Encoded]
    val: list[Encoded]
    train_stats: EncodeStats
    val_stats: EncodeStats
    notes: list[str]


def split_examples(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(examples) * fraction))
    if n_val >= len(examples):
        raise TunewiseError(f"{len(examples)} examples are too few to hold out a validation split")
    val = set(order[:n_val])
    return [e for i, e in enumerate(examples) if i not in val], [e for i, e in enumerate(examples) if i in val]


def prepare_data(config: Config, tokenizer) -> Datasets:
    require_template(tokenizer, config.model.name)
    data, notes = config.data, []
    train = load_examples(data.train)
    if data.val:
        val = load_examples(data.val)
    else:
        fraction = data.val_fraction or DEFAULT_VAL_FRACTION
        if data.val_fraction is None:
            notes.append(f"no data.val given: holding out {fraction:.0%} of {data.train} for validation")
        train, val = split_examples(train, fraction, config.train.seed)
    train_enc, train_stats = encode_all(tokenizer, train, data.max_seq_len, data.train)
    val_enc, val_stats = encode_all(tokenizer, val, data.max_seq_len, data.val or f"{data.train} (val split)")
    if len(train_enc) < 50:
        notes.append(f"only {len(train_enc)} training examples: the guide advises few-shot prompting under 50")
    return Datasets(train_enc, val_enc, train_stats, val_stats, notes)


def end_of_turn_trained(tokenizer, example: Encoded) -> bool:
    """The token that ends an assistant turn must be inside the loss, or the model never learns to stop."""
    eos_ids = {tokenizer.eos_token_id} | set(getattr(tokenizer, "added_tokens_encoder", {}).get(t, -1)
                                              for t in ("<|im_end|>", "<|eot_id|>", "<|end|>"))
    trained = [t for t in example.labels if t != -100]
    return bool(trained) and trained[-1] in eos_ids
