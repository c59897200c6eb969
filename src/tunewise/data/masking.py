"""Token ids and labels: loss on what the model generates at inference, nothing else.

data/targets.py decides which text of each example is trained (every trained assistant turn,
its reasoning, content and stop token); here that text is tokenized once, whole, and a token is
trained when it starts inside a trained segment. Labels are -100 everywhere else (system prompt,
user turns, tool results, template scaffolding, padding). Truncation to max_seq_len is counted
and reported by the caller, never silent.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import TunewiseError
from .load import Example
from .targets import Sequence, TargetOptions, build_sequences

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


def encode(tokenizer, example: Example, max_seq_len: int, where: str = "",
           options: TargetOptions = TargetOptions()) -> list[Encoded]:
    """One Encoded per sequence of the example (usually one; see data/targets.py)."""
    return [encode_sequence(tokenizer, seq, max_seq_len) for seq in build_sequences(tokenizer, example, options, where)]


def encode_sequence(tokenizer, sequence: Sequence, max_seq_len: int) -> Encoded:
    """Token ids as inference sees them: the text before each trained run is tokenized whole, as
    the inference prompt is, and the run on its own, as the model generates it after the prompt.
    Tokenizing prompt and answer together would let a token straddle the boundary (a prompt ending
    in a space, an answer starting with a word: " SELECT" is one token) and leave the answer's
    first token untrained, on a context the model never sees at inference (TRL tokenizes prompt
    and completion apart for the same reason)."""
    ids: list[int] = []
    labels: list[int] = []
    text = ""
    start = (0, 0)  # (character, token) where the last trained run began: tokenizing resumes there,
    for segment in sequence.segments:  # not from the start (a 200-turn chat would be quadratic)
        text += segment.text
        if segment.trained:
            new = _tokens(tokenizer, segment.text)
            if _decode(tokenizer, new) != segment.text:  # a tokenizer that adds a leading space
                new = _tail(tokenizer, text[start[0]:], ids[start[1]:]) or new
            start = (len(text) - len(segment.text), len(ids))
            labels += new
        else:
            new = _tail(tokenizer, text[start[0]:], ids[start[1]:]) or _tokens(tokenizer, segment.text)
            labels += [IGNORE] * len(new)
        ids += new
    full_trained = sum(1 for x in labels if x != IGNORE)
    truncated = len(ids) > max_seq_len
    overflow = max(0, len(ids) - max_seq_len)
    ids, labels = ids[:max_seq_len], labels[:max_seq_len]
    kept = sum(1 for x in labels if x != IGNORE)
    return Encoded(ids, labels, truncated, full_trained - kept, overflow)


def _tokens(tokenizer, text: str) -> list[int]:
    # The template already writes BOS and special tokens as text; adding them again would double BOS.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _tail(tokenizer, text: str, done: list[int]) -> list[int] | None:
    """The tokens `text` adds after `done`, when tokenizing it whole keeps `done` as its start."""
    whole = _tokens(tokenizer, text)
    return whole[len(done):] if whole[: len(done)] == done else None


@dataclass
class EncodeStats:
    examples: int = 0
    sequences: int = 0  # more than examples where turns had to be trained one per sequence
    truncated: int = 0
    lost_trained_tokens: int = 0
    trained_tokens: int = 0
    total_tokens: int = 0
    dropped_empty: int = 0

    def summary(self, name: str, max_seq_len: int) -> str:
        split = f" as {self.sequences} sequences (one per trained turn where the template needs it)" \
            if self.sequences != self.examples else ""
        text = (
            f"{name}: {self.examples} examples{split}, {self.total_tokens} tokens, "
            f"{self.trained_tokens} trained ({self.trained_tokens / max(self.total_tokens, 1):.0%})"
        )
        if self.truncated:
            text += (
                f"; {self.truncated} truncated to max_seq_len={max_seq_len}, losing "
                f"{self.lost_trained_tokens} assistant tokens"
            )
        if self.dropped_empty:
            text += f"; {self.dropped_empty} sequences dropped (no assistant tokens left after truncation)"
        return text


def encode_all(tokenizer, examples: list[Example], max_seq_len: int, source: str,
               options: TargetOptions = TargetOptions()) -> tuple[list[Encoded], EncodeStats]:
    stats = EncodeStats()
    out = []
    for ex in examples:
        kept = 0
        where = ex.where if ex.path != "<data>" else f"{source}:{ex.line}"  # generated examples have no file
        for enc in encode(tokenizer, ex, max_seq_len, where, options):
            stats.truncated += enc.truncated
            stats.lost_trained_tokens += enc.lost_trained_tokens
            if enc.n_trained == 0:
                stats.dropped_empty += 1
                continue
            kept += 1
            stats.trained_tokens += enc.n_trained
            stats.total_tokens += len(enc.input_ids)
            out.append(enc)
        stats.examples += kept > 0
        stats.sequences += kept
    if not out:
        raise TunewiseError(
            f"{source}: no tokens would be trained: every example has no assistant tokens within "
            f"max_seq_len={max_seq_len}. Raise data.max_seq_len or shorten the prompts."
        )
    return out, stats
