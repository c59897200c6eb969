"""Where models run and in which dtype: the accelerator when there is one (`--device` to choose),
bf16 where the device has it, fp16 with a gradient scaler on GPUs without bf16 (T4, V100).

Every command that runs a model (train, eval, merge, chat) asks here, so the rule is one place.
"""

from __future__ import annotations

import torch

from .errors import TunewiseError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def pick_device(choice: str = "auto") -> torch.device:
    """`auto`: the GPU when CUDA sees one, else the CPU; `cuda` without one is refused."""
    if choice not in DEVICE_CHOICES:
        raise TunewiseError(f"--device {choice!r}: choose one of {', '.join(DEVICE_CHOICES)}")
    if choice == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if choice == "cuda":
        raise TunewiseError("--device cuda: no CUDA device is visible to PyTorch (torch.cuda.is_available() is "
                            "False); use --device cpu, or auto to take the GPU when there is one")
    return torch.device("cpu")


def bf16_supported(device: torch.device) -> bool:
    return device.type != "cuda" or torch.cuda.is_bf16_supported()


def compute_dtype(requested: str, device: torch.device) -> tuple[str, str | None]:
    """(the dtype to run in, a note when it differs from `model.dtype`).

    bfloat16 on a GPU without it becomes float16, trained with a gradient scaler (fp16's range is
    too small for unscaled gradients); the manifest records what ran."""
    if requested == "bfloat16" and not bf16_supported(device):
        name = torch.cuda.get_device_name(device)
        return "float16", (f"{name} has no bfloat16: model.dtype float16 with a gradient scaler instead "
                           "(set model.dtype: float32 for full precision)")
    return requested, None


def needs_grad_scaler(dtype: str) -> bool:
    return dtype == "float16"
