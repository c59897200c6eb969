"""AdamW over the trainable (adapter) parameters and a warmup + cosine/linear/constant schedule."""

from __future__ import annotations

import math

import torch
from transformers import get_scheduler


def make_optimizer(model, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def make_scheduler(optimizer, kind: str, warmup_ratio: float, total_steps: int):
    warmup = math.ceil(warmup_ratio * total_steps)
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[kind]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
