"""QLoRA's 4-bit base: NF4 with double quantization and bf16 compute, through bitsandbytes."""

from __future__ import annotations

import bitsandbytes as bnb
import torch
from transformers import BitsAndBytesConfig


def nf4_config() -> BitsAndBytesConfig:
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def count_4bit_linear(model) -> int:
    """How many linear layers hold 4-bit weights (tests use it to prove QLoRA really quantized)."""
    return sum(1 for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
