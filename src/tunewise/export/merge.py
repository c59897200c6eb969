"""Merge a run's adapter into a 16-bit copy of its base model, and prove the merge is faithful.

The base is always loaded from its 16-bit weights for merging, never 4-bit, even for QLoRA runs:
folding LoRA deltas into quantized weights would round them away. The merge itself is computed in
fp32 (W + scale * B @ A, rounded once to 16-bit when saved), and the parity check compares the
fp32 adapter model with the fp32 merged model: it verifies the merge, not bf16 rounding noise
(which alone flips about 5% of next-token argmaxes on near-ties, measured on the SQL run). This
needs 4 bytes per parameter of memory while merging. The adapter directory is left untouched.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.template import render
from ..device import pick_device
from ..errors import TunewiseError
from ..evaluate.compare import load_run_config, load_tuned
from ..files import atomic_dir
from ..model.load import DTYPES, resolve_model


@dataclass
class Parity:
    max_abs_diff: float
    top1_agreement: float
    examples: int
    device: str = "cpu"  # where the fp32 merge ran

    @property
    def ok(self) -> bool:
        return self.top1_agreement >= 0.99


PARITY_PROMPTS = [
    [{"role": "user", "content": "How many rows does the users table have?"}],
    [{"role": "user", "content": "Write a haiku about autumn."}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2 + 2?"}],
]


@torch.no_grad()
def _logits(model, tokenizer, conversations) -> list[torch.Tensor]:
    out = []
    device = next(model.parameters()).device
    for conv in conversations:
        ids = tokenizer(render(tokenizer, conv, add_generation_prompt=True), add_special_tokens=False,
                        return_tensors="pt")["input_ids"]
        out.append(model(input_ids=ids.to(device)).logits[0].float().cpu())
    return out


def _merge_device(run_dir, device: torch.device, asked: str = "auto") -> torch.device:
    """The GPU when the fp32 base (4 bytes a parameter) fits in its free memory with a fifth to
    spare, else the CPU; `--device cuda` is taken as asked."""
    if device.type != "cuda" or asked == "cuda":
        return device
    source = Path(resolve_model(load_run_config(run_dir).model.name))
    weights = sum(f.stat().st_size for f in source.glob("*.safetensors")) if source.is_dir() else 0
    fp32_bytes = 2 * weights  # 16-bit checkpoints; an fp32 one is over-counted, which only errs to the CPU
    return device if weights and 1.2 * fp32_bytes < torch.cuda.mem_get_info(device)[0] else torch.device("cpu")


def merge(run_dir: str | Path, out_dir: str | Path, conversations=None, device: str = "auto") -> Parity:
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise TunewiseError(f"{out_dir} exists and is not empty; choose another --out")
    # quantization="none", fp32: a QLoRA run's adapter is merged into the unquantized base, in fp32
    # on the GPU when the fp32 model fits there, else on the CPU
    where = _merge_device(run_dir, pick_device(device), device)
    model, tokenizer, config = load_tuned(run_dir, quantization="none", device=where.type, dtype="float32")
    conversations = conversations or PARITY_PROMPTS
    with_adapter = _logits(model, tokenizer, conversations)
    merged = model.merge_and_unload()
    after = _logits(merged, tokenizer, conversations)
    diffs = [(a - b).abs().max().item() for a, b in zip(with_adapter, after)]
    agree = [(a.argmax(-1) == b.argmax(-1)).float().mean().item() for a, b in zip(with_adapter, after)]
    parity = Parity(max(diffs), sum(agree) / len(agree), len(conversations), where.type)
    if not parity.ok:
        raise TunewiseError(f"merged model disagrees with the adapter (top-1 agreement {parity.top1_agreement:.1%}); "
                            "not saving it. Keep using the adapter.")

    merged = merged.to(DTYPES[config.model.dtype])

    def write(tmp: Path) -> None:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)  # includes the chat template

    if out_dir.exists():
        shutil.rmtree(out_dir)
    atomic_dir(out_dir, write)
    return parity
