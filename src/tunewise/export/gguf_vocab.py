"""The tokenizer half of a GGUF file: vocabulary, merges, pre-tokenizer, special tokens, chat template.

Written the way llama.cpp's convert_hf_to_gguf.py writes it (`_set_vocab_gpt2`, `_set_vocab_sentencepiece`),
from the model directory's tokenizer.json, with the `gguf` package's SpecialVocab for merges, special
token ids and the chat template. Two things differ, on purpose:

- The pre-tokenizer name (`tokenizer.ggml.pre`) is read from the loaded tokenizer's pre-tokenizer
  (its split regex; transformers 5 may replace tokenizer.json's by the model type's), not from a
  hash of token ids over llama.cpp's list of published vocabularies: the bundled SmolLM2
  tokenizer, rebuilt by transformers from a GGUF, splits like GPT-2 (no digit splitting) and would
  match no published hash. A pre-tokenizer we cannot name is refused.
- Whether BOS/EOS are added is taken from what the transformers tokenizer does, so llama.cpp and
  Ollama add a BOS exactly when transformers does (a doubled BOS is a classic export bug).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import gguf
from gguf.vocab import SpecialVocab

from ..errors import TunewiseError

# Split regexes as tokenizer.json files (and transformers' converters) write them -> llama.cpp's name.
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
           r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
           r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLITS = {_LLAMA3: "llama-bpe", _QWEN2: "qwen2", _TEKKEN: "tekken"}


@dataclass
class VocabInfo:
    model: str            # tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (sentencepiece-style)
    pre: str | None       # tokenizer.ggml.pre
    eos_ids: list[int]    # every token that ends a turn: the tokenizer's EOS and generation_config's
    add_bos: bool


def _steps(pre_tokenizer: dict | None) -> list[dict]:
    if not pre_tokenizer:
        return []
    if pre_tokenizer.get("type") == "Sequence":
        return pre_tokenizer.get("pretokenizers", [])
    return [pre_tokenizer]


def _describe(steps: list[dict]) -> str:
    return " + ".join(s.get("type", "?") for s in steps) or "none"


def pre_tokenizer_name(tokenizer_json: dict) -> str:
    """llama.cpp's name for a byte-level BPE tokenizer's pre-tokenizer, or a TunewiseError."""
    steps = _steps(tokenizer_json.get("pre_tokenizer"))
    types = [s.get("type") for s in steps]
    byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
    if types == ["ByteLevel"] and byte_level[0].get("use_regex", True):
        return "gpt-2"
    if (types == ["Digits", "ByteLevel"] and steps[0].get("individual_digits")
            and byte_level[0].get("use_regex", True)):
        return "smollm"  # GPT-2's split after single digits (SmolLM, StarCoder)
    splits = [s for s in steps if s.get("type") == "Split"]
    if len(splits) == 1 and types in (["Split", "ByteLevel"], ["Split"]):
        pattern = splits[0].get("pattern", {}).get("Regex")
        if pattern in SPLITS:
            return SPLITS[pattern]
    raise TunewiseError(
        f"tokenizer.json's pre-tokenizer ({_describe(steps)}) is not one llama.cpp is known to reproduce "
        f"(GPT-2, SmolLM, Llama 3, Qwen2, Tekken); tunewise will not write a GGUF that tokenizes differently"
    )


def is_sentencepiece_style(tokenizer_json: dict) -> bool:
    """Llama 2 / Mistral v0.1-0.3 tokenizers: BPE with byte fallback over '▁'-marked pieces."""
    model = tokenizer_json.get("model", {})
    return model.get("type") == "BPE" and bool(model.get("byte_fallback"))


def eos_ids(model_dir: Path, tokenizer) -> list[int]:
    """The tokenizer's EOS plus generation_config.json's eos_token_id list (Llama 3's <|eot_id|>, ...)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    config = model_dir / "generation_config.json"
    if config.is_file():
        extra = json.loads(config.read_text()).get("eos_token_id")
        ids += extra if isinstance(extra, list) else [extra] if extra is not None else []
    return list(dict.fromkeys(i for i in ids if i is not None))


def _bpe_tokens(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """As convert_hf_to_gguf's get_vocab_base: ids past the tokenizer padded, added tokens CONTROL
    when special, USER_DEFINED otherwise."""
    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _merge_ranks(tokenizer_json: dict) -> dict[str, int]:
    """piece -> rank of the first merge that makes it (merges are "a b" strings or [a, b] pairs)."""
    ranks: dict[str, int] = {}
    for rank, merge in enumerate(tokenizer_json["model"].get("merges", [])):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        ranks.setdefault(left + right, rank)
    return ranks


def _spm_tokens(tokenizer, tokenizer_json: dict, vocab_size: int) -> tuple[list[str], list[float], list[int]]:
    """Pieces, scores and types for llama.cpp's sentencepiece tokenizer, which merges the adjacent
    pair whose joined piece has the highest score: the score is minus the rank of the HF merge that
    makes the piece, so both merge in the same order (gguf's LlamaHfVocab writes -1000 for all)."""
    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added, ranks = tokenizer.added_tokens_decoder, _merge_ranks(tokenizer_json)
    unk = tokenizer_json["model"].get("unk_token")
    tokens, scores, types = [], [], []
    for i in range(vocab_size):
        piece = reverse.get(i)
        if piece is None:
            tokens.append(f"[PAD{i}]")
            scores.append(-1e9)
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(piece)
        scores.append(-float(ranks[piece]) if piece in ranks else 0.0 if len(piece) == 1 else -1e9)
        if piece == unk:
            types.append(gguf.TokenType.UNKNOWN)
        elif i in added:
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    return tokens, scores, types


def adds_token(tokenizer, token_id: int | None, first: bool) -> bool:
    """Whether the tokenizer puts this token first (BOS) or last (EOS) when encoding plain text."""
    if token_id is None:
        return False
    ids = tokenizer("hello")["input_ids"]
    return bool(ids) and ids[0 if first else -1] == token_id


def write_vocab(writer: gguf.GGUFWriter, model_dir: Path, tokenizer, vocab_size: int) -> VocabInfo:
    """Tokens, merges, special tokens and the chat template into `writer`; returns what was written."""
    if not (model_dir / "tokenizer.json").is_file() or not hasattr(tokenizer, "backend_tokenizer"):
        raise TunewiseError(f"{model_dir} has no tokenizer.json (a fast tokenizer); tunewise exports those only")
    # the tokenizer as loaded, not the file: transformers 5 rebuilds some pre-tokenizers from the
    # model type (a Qwen2 model gets Qwen2's split whatever tokenizer.json says)
    tokenizer_json = json.loads(tokenizer.backend_tokenizer.to_str())
    if len(tokenizer) > vocab_size:
        raise TunewiseError(f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only "
                            f"{vocab_size} rows ({model_dir}/config.json vocab_size)")
    if is_sentencepiece_style(tokenizer_json):
        info = VocabInfo("llama", None, eos_ids(model_dir, tokenizer),
                         adds_token(tokenizer, tokenizer.bos_token_id, True))
        tokens, scores, types = _spm_tokens(tokenizer, tokenizer_json, vocab_size)
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        first = tokenizer.convert_ids_to_tokens(tokenizer("hello", add_special_tokens=False)["input_ids"])[0]
        writer.add_add_space_prefix(first.startswith("\u2581"))  # "▁hello": a leading space is added
        merges = False
    else:
        info = VocabInfo("gpt2", pre_tokenizer_name(tokenizer_json), eos_ids(model_dir, tokenizer),
                         adds_token(tokenizer, tokenizer.bos_token_id, True))
        tokens, types = _bpe_tokens(tokenizer, vocab_size)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(info.pre)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        merges = True
    special = SpecialVocab(model_dir, load_merges=merges, n_vocab=vocab_size)
    if tokenizer.eos_token_id is not None:
        special.special_token_ids["eos"] = tokenizer.eos_token_id
    # llama.cpp stops on EOS and on EOT; the end-of-turn token (ChatML's <|im_end|>, Llama 3's
    # <|eot_id|>) goes in as EOT when it is not already the EOS
    others = [i for i in info.eos_ids if i != tokenizer.eos_token_id]
    if others:
        special.special_token_ids["eot"] = others[0]
    # whether BOS/EOS are added: from the tokenizer's behaviour, not guessed from files
    special.add_special_token = {"bos": info.add_bos, "eos": adds_token(tokenizer, tokenizer.eos_token_id, False)}
    special.add_to_gguf(writer, quiet=True)
    return info
