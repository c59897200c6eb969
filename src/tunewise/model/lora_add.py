"""The adapter's output added to the base layer's in one matmul: `addmm(base, A(x), B^T, alpha=scaling)`.

PEFT's LoRA forward is `result + lora_B(lora_A(dropout(x))) * scaling`, and its 4-bit layer
clones the base output first ("defensively", for older PyTorch). On a [tokens, out] output that
is three or four full passes over memory per adapted layer (clone, the [tokens, out] product of
lora_B, its multiplication by the scaling, the add), and their backward adds more. Seven adapted
layers a block, on outputs up to the MLP's width: in torch.profiler on the SQL benchmark (QLoRA,
8 sequences, 3,000 tokens a micro-batch) those copies, products and adds were 12% of a step.
`torch.addmm` computes the same sum with lora_B's product accumulated into the base output in
one pass, and its backward passes the gradient to the base output as it is.

The maths is PEFT's; the bf16 rounding is one rounding fewer (the product is not rounded
before the add). tests/test_conformance.py checks loss and gradients against the model's own
forward on every family, with this path on.

Only the plain case takes it: one active LoRA adapter (no DoRA or other variant, no lora_B
bias), not merged, adapters enabled, no per-example `adapter_names`, and either autocast on (the
training path of a 16-bit base, train/loss.py) or input, base output and adapter in one dtype.
Anything else calls PEFT's own forward, unchanged.
"""

from __future__ import annotations

import types

import torch
from peft.tuners.lora import LoraLayer


def _plain_adapter(layer, x: torch.Tensor, kwargs: dict) -> str | None:
    """The single vanilla adapter this call would apply, or None where PEFT's forward must run."""
    if layer.merged or layer.disable_adapters or kwargs.get("adapter_names") is not None:
        return None
    active = [a for a in layer.active_adapters if a in layer.lora_A]
    if len(active) != 1 or active[0] in layer.lora_variant or layer.lora_B[active[0]].bias is not None:
        return None
    weight = layer.lora_A[active[0]].weight
    if not torch.is_autocast_enabled(x.device.type) and x.dtype != weight.dtype:
        return None
    return active[0]


def _forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    name = _plain_adapter(self, x, kwargs)
    if name is None:
        return self._peft_forward(x, *args, **kwargs)
    result = self.base_layer(x, *args, **kwargs)
    down = self.lora_A[name](self.lora_dropout[name](x))
    flat = result.reshape(-1, result.shape[-1])
    if not torch.is_autocast_enabled(x.device.type):
        flat = flat.to(down.dtype)  # as PEFT: the sum in the adapter's dtype, returned in the base's
    summed = torch.addmm(flat, down.reshape(-1, down.shape[-1]), self.lora_B[name].weight.t(),
                         alpha=self.scaling[name])
    return summed.view(result.shape).to(result.dtype)


def fuse_lora_add(model) -> int:
    """Give every LoRA linear layer (16-bit or 4-bit base) the one-matmul add; return how many."""
    fused = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer) or not isinstance(module.get_base_layer(), torch.nn.Linear):
            continue
        if "_peft_forward" in module.__dict__:
            continue  # already fused
        module._peft_forward = module.forward
        module.forward = types.MethodType(_forward, module)
        fused += 1
    return fused
