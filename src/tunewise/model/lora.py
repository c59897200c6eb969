"""LoRA adapters through PEFT, the format every tool reads."""

from __future__ import annotations

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


def _bad_targets(e: ValueError, settings: LoraSettings):
    return TunewiseError(f"lora.target_modules={settings.target_modules!r} does not fit this model: {e}")
