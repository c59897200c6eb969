"""Library internals tunewise touches: nothing at import, each private setting guarded by whether
the library still has it (a loud step-aside where not), and every one logged for manifest.json."""

import subprocess
import sys

import pytest
import torch

from tunewise.train import patches


def test_nothing_is_registered_in_transformers_at_import():
    code = ("import tunewise.train.loop, tunewise.train.patches\n"
            "from transformers import AttentionInterface\n"
            "from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS as masks\n"
            "print('tunewise_packed' in AttentionInterface(), 'tunewise_packed' in masks)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr


def test_the_4bit_layout_flag_is_set_where_bitsandbytes_has_it_and_stepped_aside_loudly_where_not(
        tiny_model_dir, lora_model):
    import bitsandbytes as bnb

    model = lora_model(tiny_model_dir, dtype="bfloat16", quantization="nf4")
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    speed = patches.apply_speed_paths(model)
    assert layers and all(getattr(m, patches.BNB_FLAG) is False for m in layers)
    assert patches.applied_patches()[0] == {"patch": f"bitsandbytes Linear4bit.{patches.BNB_FLAG} = False",
                                            "layers": len(layers)}
    assert not any("4-bit layout" in note for note in speed.notes)
    for layer in layers:  # a bitsandbytes that no longer reads the flag
        delattr(layer, patches.BNB_FLAG)
    speed = patches.apply_speed_paths(model)
    assert not any(hasattr(m, patches.BNB_FLAG) for m in layers)  # nothing set that nothing reads
    assert f"has no Linear4bit.{patches.BNB_FLAG}" in patches.applied_patches()[0]["off"]
    assert any(note.startswith("4-bit layout not kept: bitsandbytes") for note in speed.notes)


def test_the_ddp_hook_is_used_where_torch_has_it_and_stepped_aside_loudly_where_not(monkeypatch):
    module = torch.nn.Linear(2, 2)
    patches._LOG.clear()
    patches.ignore_frozen_in_ddp(module, ["weight", "bias"])
    assert set(module._ddp_params_and_buffers_to_ignore) == {"weight", "bias"}  # what torch's hook sets
    assert patches.applied_patches()[-1]["ignored"] == 2
    monkeypatch.delattr(torch.nn.parallel.DistributedDataParallel, patches.DDP_IGNORE)
    with pytest.warns(RuntimeWarning, match=f"no DistributedDataParallel.{patches.DDP_IGNORE}"):
        patches.ignore_frozen_in_ddp(torch.nn.Linear(2, 2), ["weight"])
    assert "broadcasts all 1 frozen base tensors" in patches.applied_patches()[-1]["off"]
