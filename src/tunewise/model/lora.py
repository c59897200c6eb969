"""LoRA adapters through PEFT, the format every tool reads."""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from ..config import LoraConfig as LoraSettings
from ..errors import TunewiseError
from .dropout import fuse_lora_dropout


def add_lora(model, settings: LoraSettings, gradient_checkpointing: bool = False):
    """Wrap `model` with trainable LoRA adapters; the base stays frozen in its own dtype.

    We do not call `prepare_model_for_kbit_training`: it upcasts every non-quantized weight to
    fp32, which doubles their memory for no gain; PEFT already keeps adapters in fp32.
    """
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(model, config)
    except ValueError as e:
        raise _bad_targets(e, settings) from None
    fuse_lora_dropout(model)  # same p; a cheaper mask, and no dropped copy kept (model/dropout.py)
    return model


def load_lora(model, adapter_dir, settings: LoraSettings, gradient_checkpointing: bool = False):
    """Wrap `model` with a saved adapter to train further (`train --from`).

    PEFT loads adapters frozen unless asked (`is_trainable=True`); the adapter's own r, alpha and
    targets are used (the caller checked they match `settings`), with this run's dropout.
    """
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    config = LoraConfig.from_pretrained(str(adapter_dir))
    config.lora_dropout = settings.dropout
    model = PeftModel.from_pretrained(model, str(adapter_dir), config=config, is_trainable=True)
    fuse_lora_dropout(model)
    return model


def base_model(model):
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def sixteen_bit_compute_dtype(model) -> torch.dtype | None:
    """The base's 16-bit compute dtype (its input embeddings': a 4-bit base keeps them in its compute
    dtype), or None for a 32-bit base. Training's adapter_precision and evaluation's cast share it."""
    dtype = base_model(model).get_input_embeddings().weight.dtype
    return dtype if dtype in (torch.bfloat16, torch.float16) else None


def adapters_in_compute_dtype(model) -> int:
    """Cast the LoRA weights of an inference model to the base's 16-bit compute dtype.

    PEFT loads adapters in fp32 and, in every adapted layer of every forward, copies the layer's
    input to fp32, runs both adapter matmuls in fp32 and casts back. Training ran the adapter matmuls
    in the base's 16-bit dtype (train/loss.py: adapter_precision), so evaluation now runs them in
    training's precision (tests/test_eval_precision.py: the logits of PEFT's forward under
    adapter_precision, exactly), and generation skips the copies: the 48 SQL test prompts' tuned
    answers 29.8 -> 27.1 s on 2 cores, 1 answer of 48 different, the same 30/48 correct. (Training's
    LoRA add is one addmm, model/lora_add.py, which rounds once where PEFT's forward here rounds
    twice.) A 32-bit base (merge's) is left alone. Returns how many tensors were cast."""
    dtype = sixteen_bit_compute_dtype(model)
    if dtype is None:
        return 0
    cast = 0
    for name, param in model.named_parameters():
        if "lora_" in name and param.dtype != dtype:
            param.data = param.data.to(dtype)
            cast += 1
    return cast


def _bad_targets(e: ValueError, settings: LoraSettings):
    return TunewiseError(f"lora.target_modules={settings.target_modules!r} does not fit this model: {e}")
