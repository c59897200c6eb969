"""Token ids and labels: loss on assistant tokens only, every assistant turn, end-of-turn included.

Labels are -100 everywhere else (system prompt, user turns, template scaffolding, padding).
Truncation to max_seq_len is counted and reported by the caller, never silent.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from ..errors import TunewiseError
from .load import Example
from .template import assistant_spans

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    lost_trained_tokens: int = 0
    overflow: int = 0  # tokens cut by truncation

    @property
    def n_trained(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def encode(tokenizer, example: Example, max_seq_len: int, where: str = "") -> Encoded:
    text, spans = assistant_spans(tokenizer, example.messages, where)
    # The template already writes BOS and special tokens as text; adding them again would double BOS.
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    starts = [s for s, _ in spans]
    labels = []
    for token, (begin, _end) in zip(ids, offsets):
        k = bisect.bisect_right(starts, begin) - 1
        inside = k >= 0 and spans[k][0] <= begin < spans[k][1]
        labels.append(token if inside else IGNORE)
    full_trained = sum(1 for x in labels if x != IGNORE)
    truncated = len(ids) > max_seq_len
    overflow = max(0, len(ids) - max_seq_len)
    ids, labels = ids[:max_seq_len], labels[:max_seq_len]
    kept = sum(1 for x in labels if x != IGNORE)
    return Encoded(ids, labels, truncated, full_trained - kept, overflow)


@dataclass
class EncodeStats:
    examples: int = 0
    truncated: int = 0
    lost_trained_tokens: int = 0
    trained_tokens: int = 0
    total_tokens: int = 0
    dropped_empty: int = 0

    def summary(self, name: str, max_seq_len: int) -> str:
        text = (
            f"{name}: {self.examples} examples, {self.total_tokens} tokens, "
            f"{self.trained_tokens} trained ({self.trained_tokens / max(self.total_tokens, 1):.0%})"
        )
        if self.truncated:
            text += (
                f"; {self.truncated} truncated to max_seq_len={max_seq_len}, losing "
                f"{self.lost_trained_tokens} assistant tokens"
            )
        if self.dropped_empty:
            text += f"; {self.dropped_empty} dropped (no assistant tokens left after truncation)"
        return text


def encode_all(tokenizer, examples: list[Example], max_seq_len: int, source: str) -> tuple[list[Encoded], EncodeStats]:
    stats = EncodeStats()
    out = []
    for ex in examples:
        enc = encode(tokenizer, ex, max_seq_len, f"{source}:{ex.line}")
        stats.truncated += enc.truncated
        stats.lost_trained_tokens += enc.lost_trained_tokens
        if enc.n_trained == 0:
            stats.dropped_empty += 1
            continue
        stats.examples += 1
        stats.trained_tokens += enc.n_trained
        stats.total_tokens += len(enc.input_ids)
        out.append(enc)
    if not out:
        raise TunewiseError(
            f"{source}: no tokens would be trained: every example has no assistant tokens within "
            f"max_seq_len={max_seq_len}. Raise data.max_seq_len or shorten the prompts."
        )
    return out, stats
