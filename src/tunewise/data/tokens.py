"""Token-level and chat-template checks for the data doctor (needs the model's tokenizer)."""

from __future__ import annotations

import statistics
from array import array

from ..errors import TunewiseError
from .load import DataError, iter_examples
from .masking import IGNORE, encode
from .template import TemplateCheckError, require_template

END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>", "<|endoftext|>")


def end_of_turn_ids(tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    return ids | {vocab[t] for t in END_OF_TURN if t in vocab}


def token_checks(path: str, tokenizer, max_seq_len: int | None, report) -> None:
    try:
        require_template(tokenizer)
    except TunewiseError as e:
        report.add("error", "no-chat-template", str(e))
        return
    limit = max_seq_len or 10**9
    ends = end_of_turn_ids(tokenizer)
    bos = tokenizer.bos_token_id
    lengths, shares = array("I"), array("f")
    truncated = lost = trained_total = 0
    eos_missing_line = None
    for ex in iter_examples(path):
        if isinstance(ex, DataError):
            continue  # already reported by the scan
        try:
            enc = encode(tokenizer, ex, limit, f"{path}:{ex.line}")
        except TemplateCheckError as e:
            report.add("error", e.code, str(e).split(": ", 1)[-1], path, ex.line)
            continue
        except TunewiseError as e:
            report.add("error", "template-error", str(e), path, ex.line)
            continue
        lengths.append(len(enc.input_ids) + enc.overflow)
        trained = enc.n_trained
        trained_total += trained
        shares.append(trained / max(len(enc.input_ids), 1))
        if enc.truncated:
            truncated += 1
            lost += enc.lost_trained_tokens
            report.add("warning", "truncated", f"longer than max_seq_len={max_seq_len}: "
                       f"{enc.lost_trained_tokens} assistant tokens would be cut", path, ex.line)
        if trained == 0:
            report.add("error", "no-trained-tokens", "no assistant tokens left to train on"
                       + (f" within max_seq_len={max_seq_len}" if max_seq_len else ""), path, ex.line)
        if bos is not None and enc.input_ids[:2] == [bos, bos]:
            report.add("error", "double-bos", "the rendered text starts with two BOS tokens", path, ex.line)
        if not enc.truncated and trained and eos_missing_line is None and not _turns_end_in_loss(enc, ends):
            eos_missing_line = ex.line
        if report.preview is None:
            report.preview = _preview(tokenizer, enc, path, ex.line)
    if eos_missing_line is not None:
        report.add("error", "end-of-turn-not-trained", "the end-of-turn/EOS token is not inside the loss, so the "
                   "model never learns to stop; the chat template must close assistant turns with it",
                   path, eos_missing_line)
    if lengths:
        _length_stats(path, lengths, shares, truncated, lost, trained_total, max_seq_len, report)


def _turns_end_in_loss(enc, ends: set[int]) -> bool:
    """Every run of trained tokens must end with an end-of-turn token."""
    labels = enc.labels
    for i, label in enumerate(labels):
        last_of_run = label != IGNORE and (i + 1 == len(labels) or labels[i + 1] == IGNORE)
        if last_of_run and label not in ends:
            return False
    return True


def _length_stats(path, lengths, shares, truncated, lost, trained_total, max_seq_len, report) -> None:
    q = statistics.quantiles(lengths, n=100, method="inclusive") if len(lengths) > 1 else [lengths[0]] * 99
    report.stats.setdefault("tokens", {})[path] = {
        "examples": len(lengths), "p50": q[49], "p90": q[89], "p99": q[98], "max": max(lengths),
        "max_seq_len": max_seq_len, "truncated": truncated,
        "assistant_tokens_lost_share": lost / max(trained_total + lost, 1),
        "trained_share_min": min(shares), "trained_share_median": statistics.median(shares),
    }


def _preview(tokenizer, enc, path, line) -> dict:
    pieces = []
    for token, label in zip(enc.input_ids, enc.labels):
        text = tokenizer.decode([token], skip_special_tokens=False)
        if pieces and pieces[-1][1] == (label != IGNORE):
            pieces[-1][0] += text
        else:
            pieces.append([text, label != IGNORE])
    return {"file": path, "line": line, "pieces": [{"text": t, "trained": bool(tr)} for t, tr in pieces]}
