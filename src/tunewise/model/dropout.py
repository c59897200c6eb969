"""LoRA dropout with a cheaper random mask on CPU.

PEFT applies dropout to every adapted layer's input (seven per transformer block). On CPU,
`torch.nn.functional.dropout` draws one 32-bit Mersenne-Twister float per element, and that
made up a quarter of a training step on the bundled model. Here each element is decided by 16
random bits instead (four per 64-bit draw from the same generator, so seeding and checkpointed
RNG state work unchanged): fwd+bwd on an 888 x 576 bf16 input takes 1.6 ms instead of 3.0 ms.

The keep probability is rounded to a multiple of 1/65536 (0.95 -> 62259/65536 = 0.949997) and
the survivors are scaled by the inverse of that exact probability, so the output stays unbiased.
On other devices (CUDA's Philox dropout is already fast) this is plain nn.Dropout.
"""

from __future__ import annotations

import torch
from torch import nn

_SPAN = 1 << 16


class FastDropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu" or not x.is_floating_point():
            return super().forward(x)
        kept = round(_SPAN * (1 - self.p))
        if kept == 0:  # p so close to 1 that nothing survives
            return torch.zeros_like(x)
        n = x.numel()
        draws = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
        bits = draws.view(torch.int16)[:n].view(x.shape)  # uniform over [-32768, 32767]
        return torch.where(bits < kept - _SPAN // 2, x * (_SPAN / kept), 0.0)


def use_fast_dropout(model) -> int:
    """Swap PEFT's LoRA dropout modules for FastDropout (same p); return how many were swapped."""
    swapped = 0
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if not isinstance(drops, nn.ModuleDict):
            continue
        for name, drop in list(drops.items()):
            if type(drop) is nn.Dropout:
                drops[name] = FastDropout(drop.p)
                swapped += 1
    return swapped
