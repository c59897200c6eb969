"""Check a GGUF export against the merged model in transformers, through llama.cpp itself.

For fixed conversations rendered by the model's own chat template: llama.cpp's token ids equal the
transformers tokenizer's (and both add a BOS, or neither); next-token logits agree (top-1 and
NMSE, llama.cpp's own measure: sum((a - b)^2) / sum(a^2)); greedy continuations are equal. The
transformers side runs in fp32 from the merged 16-bit weights, so what is measured is the GGUF
(its type and llama.cpp's kernels), not a second rounding.

llama-cpp-python compiles llama.cpp when pip installs it (`make install-export`), so it is an
optional dependency; without it the export is written unchecked only when asked (--no-verify).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import GenerationConfig

from ..data.template import render
from ..device import pick_device
from ..errors import TunewiseError
from ..model.load import load_model

try:
    import llama_cpp
except ImportError:  # optional: `make install-export` or pip install 'tunewise[export]'
    llama_cpp = None

INSTALL_HINT = ("llama-cpp-python is not installed, so the export cannot be checked: run `make install-export` "
                "(or pip install 'tunewise[export]'; it compiles llama.cpp, a few minutes once), "
                "or pass --no-verify to write the file unchecked")

PROMPTS = [  # digits, runs of spaces, code and non-ASCII text: where pre-tokenizers differ
    [{"role": "user", "content": "How many rows does the users table have? There are 12345 ids above 333."}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2 + 2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And  3 * 7?\n\n  Show   the steps."}],
    [{"role": "user", "content": "Write SQL: SELECT name FROM t WHERE x >= 10;  -- café, naïve, 東京"}],
]


@dataclass(frozen=True)
class Thresholds:
    top1: float   # next-token argmax agreement, at least
    nmse: float   # logit NMSE, at most
    tie: float    # a near tie: transformers' top two logits closer than this. Where they are farther
                  # apart, llama.cpp must pick the same token (DECISIVE of such positions) and greedy
                  # continuations must not part. Fixed per type: an allowance that grew with the
                  # measured logit error let a broken file pass both checks (a wrong q/k permutation,
                  # NMSE 0.35, had every position "near a tie" of its own error)


# llama.cpp's conversion checks accept NMSE < 1e-2; 16-bit files hold the merged weights exactly
# (bf16) or nearly (f16), so they are held far tighter. q8_0 rounds every weight to 8 bits, which
# moves a small model's logits by tenths to a whole logit (measured on the bundled model): its
# raw top-1 agreement is 94-98% there, all of the misses at near ties.
THRESHOLDS = {"f16": Thresholds(0.98, 1e-3, 0.02), "bf16": Thresholds(0.98, 1e-3, 0.02),
              "q8_0": Thresholds(0.90, 1e-2, 1.0)}
DECISIVE = 0.99


@dataclass
class Report:
    qtype: str
    prompts: int
    tokens_equal: int           # prompts whose token ids are equal
    bos_equal: bool             # llama.cpp adds a BOS exactly when transformers does
    template_equal: bool        # the GGUF's tokenizer.chat_template is the model's
    top1: float
    decisive: float             # top-1 agreement where transformers' lead is at least the type's tie
    nmse: float                 # worst prompt
    greedy_equal: int           # prompts whose greedy continuations are equal
    greedy_near_tie: int = 0    # of the others, those parting where transformers nearly tied
    clear: int = 0              # positions where transformers' lead is at least the type's tie
    notes: list[str] = field(default_factory=list)

    @property
    def thresholds(self) -> Thresholds:
        return THRESHOLDS[self.qtype]

    def failures(self) -> list[str]:
        t, out = self.thresholds, []
        if self.tokens_equal < self.prompts:
            out.append(f"token ids differ on {self.prompts - self.tokens_equal} of {self.prompts} prompts")
        if not self.bos_equal:
            out.append("llama.cpp and transformers disagree on adding a BOS token")
        if not self.template_equal:
            out.append("the GGUF's chat template is not the model's")
        if self.top1 < t.top1:
            out.append(f"top-1 agreement {self.top1:.1%} < {t.top1:.0%}")
        if self.decisive < DECISIVE:
            out.append(f"top-1 agreement where transformers' lead is >= {t.tie} {self.decisive:.1%} < {DECISIVE:.0%}")
        if self.nmse > t.nmse:
            out.append(f"logit NMSE {self.nmse:.2e} > {t.nmse:.0e}")
        if self.greedy_equal + self.greedy_near_tie < self.prompts:
            out.append(f"greedy generations part away from a near tie on "
                       f"{self.prompts - self.greedy_equal - self.greedy_near_tie} of {self.prompts} prompts")
        return out

    def lines(self) -> list[str]:
        t = self.thresholds
        greedy = f"{self.greedy_equal}/{self.prompts} equal"
        if self.greedy_near_tie:
            greedy += f", {self.greedy_near_tie} parting at a near tie"
        return [f"token ids equal: {self.tokens_equal}/{self.prompts} prompts; BOS rule equal: {self.bos_equal}; "
                f"chat template equal: {self.template_equal}",
                f"next-token top-1 agreement: {self.top1:.2%} (need >= {t.top1:.0%}); at the {self.clear} "
                f"positions where transformers' lead is >= {t.tie}: {self.decisive:.2%} (need >= {DECISIVE:.0%})",
                f"logit NMSE (worst prompt): {self.nmse:.2e} (need <= {t.nmse:.0e})",
                f"greedy generations: {greedy} (may part only where transformers' top two logits are "
                f"< {t.tie} apart)",
                *self.notes]


def available() -> bool:
    return llama_cpp is not None


def _llama(path: Path, n_ctx: int):
    if not available():
        raise TunewiseError(INSTALL_HINT)
    threads = max(1, min(8, os.cpu_count() or 1))
    try:
        return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, logits_all=True,
                               verbose=False, seed=0)
    except (ValueError, RuntimeError) as e:
        raise TunewiseError(f"llama.cpp cannot load {path}: {e}") from None


def _cpp_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


@torch.no_grad()
def _hf_logits(model, ids: list[int]) -> np.ndarray:
    device = next(model.parameters()).device
    return model(input_ids=torch.tensor([ids], device=device)).logits[0].float().cpu().numpy()


def _cpp_greedy(llm, ids: list[int], n: int, stops: set[int]) -> list[int]:
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        if token in stops:
            break
        llm.eval([token])
    return out


@torch.no_grad()
def _hf_greedy(model, ids: list[int], n: int, stops: set[int]) -> tuple[list[int], list[float]]:
    """Greedy tokens and, at each step, transformers' gap between its top two logits."""
    device = next(model.parameters()).device
    # a fresh config: the model's own generation_config may carry sampling or repetition settings
    config = GenerationConfig(do_sample=False, max_new_tokens=n, eos_token_id=sorted(stops), pad_token_id=min(stops),
                              output_scores=True, return_dict_in_generate=True)
    result = model.generate(torch.tensor([ids], device=device), generation_config=config,
                            attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device))
    out = result.sequences[0, len(ids):].tolist()
    gaps = [float(t[0] - t[1]) for t in (torch.topk(s[0].float(), 2).values for s in result.scores)]
    return out, gaps


def _parting(hf: list[int], cpp: list[int], gaps: list[float]) -> tuple[int, float]:
    """Where the two greedy paths first part, and transformers' top-two logit gap there."""
    first = next((i for i, (a, b) in enumerate(zip(hf, cpp)) if a != b), min(len(hf), len(cpp)))
    return first, gaps[first] if first < len(gaps) else float("inf")


@dataclass
class _Reference:
    """What transformers does on one prompt."""
    text: str
    ids: list[int]
    logits: np.ndarray
    greedy: list[int]
    gaps: list[float]


def _reference(model_dir: Path, tokenizer, stops: set[int], device: str, max_new_tokens: int) -> list[_Reference]:
    model = load_model(str(model_dir), "float32", device=pick_device(device))
    model.eval()
    out = []
    for conv in PROMPTS:
        text = render(tokenizer, conv, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append(_Reference(text, ids, _hf_logits(model, ids), *_hf_greedy(model, ids, max_new_tokens, stops)))
    return out


def verify(gguf_path: Path, model_dir: Path, tokenizer, qtype: str, stops: list[int], device: str = "auto",
           max_new_tokens: int = 32) -> Report:
    stop_set = set(stops)
    # transformers first, llama.cpp after: interleaved, torch's spinning OpenMP threads and
    # llama.cpp's slow each other's every step (measured: 0.4 s a token instead of 10 ms)
    references = _reference(model_dir, tokenizer, stop_set, device, max_new_tokens)
    llm = _llama(gguf_path, n_ctx=512)
    probe = tokenizer("hello")["input_ids"]
    report = Report(qtype, len(PROMPTS), 0, probe == llm.tokenize(b"hello", add_bos=True, special=True),
                    llm.metadata.get("tokenizer.chat_template") == tokenizer.chat_template, 0.0, 0.0, 0.0, 0)
    agree = total = clear_agree = clear = 0
    for n, ref in enumerate(references, 1):
        cpp_ids = llm.tokenize(ref.text.encode("utf-8"), add_bos=False, special=True)
        report.tokens_equal += ref.ids == cpp_ids
        if ref.ids != cpp_ids:
            first = next((i for i, (a, b) in enumerate(zip(ref.ids, cpp_ids)) if a != b),
                         min(len(ref.ids), len(cpp_ids)))
            report.notes.append(f"prompt {n}: token ids part at position {first}: transformers "
                                f"{ref.ids[first:first + 5]}, llama.cpp {cpp_ids[first:first + 5]}")
        # the logits of transformers' ids on both sides, so a tokenizer difference does not hide a weight one
        cpp = _cpp_logits(llm, ref.ids)
        same = ref.logits.argmax(-1) == cpp.argmax(-1)
        agree += int(same.sum())
        total += len(ref.ids)
        report.nmse = max(report.nmse, float(((ref.logits - cpp) ** 2).sum() / (ref.logits**2).sum()))
        top2 = np.sort(ref.logits, axis=-1)[:, -2:]
        lead = top2[:, 1] - top2[:, 0] >= report.thresholds.tie  # transformers' own margin, not the error's
        clear += int(lead.sum())
        clear_agree += int((same & lead).sum())
        cpp_out = _cpp_greedy(llm, ref.ids, max_new_tokens, stop_set)
        if ref.greedy == cpp_out:
            report.greedy_equal += 1
        else:
            step, gap = _parting(ref.greedy, cpp_out, ref.gaps)
            report.greedy_near_tie += gap < report.thresholds.tie
            report.notes.append(f"prompt {n}: greedy paths part at token {step + 1}, where transformers' top two "
                                f"logits are {gap:.2f} apart: transformers {tokenizer.decode(ref.greedy[step:])!r}, "
                                f"llama.cpp {tokenizer.decode(cpp_out[step:])!r}")
    report.top1 = agree / total
    report.decisive, report.clear = (clear_agree / clear if clear else 1.0), clear
    return report
