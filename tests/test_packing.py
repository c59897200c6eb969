"""Speed levers that must not change the maths: packed batches and the cheaper LoRA dropout."""

import pytest
import torch

from tunewise.data.batching import collate, count_trained
from tunewise.data.masking import IGNORE
from tunewise.model.dropout import FastDropout
from tunewise.train import packing
from tunewise.train.loss import summed_loss
from tunewise.train.packing import enable_packing, is_packed, pack

from .test_training import encoded, grads, lora_model


def _nonzero_adapters(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)


def test_packing_keeps_every_example_labels(chatml_tokenizer, sql_data):
    items = encoded(chatml_tokenizer, sql_data[0])[:5]
    batch = pack(items)
    assert batch["input_ids"].shape == (1, sum(len(x.input_ids) for x in items))  # not one pad token
    start = 0
    for item in items:
        n = len(item.input_ids)
        assert batch["input_ids"][0, start : start + n].tolist() == item.input_ids
        assert batch["position_ids"][0, start : start + n].tolist() == list(range(n))
        labels = batch["labels"][0, start : start + n].tolist()
        assert labels[0] == IGNORE and labels[1:] == item.labels[1:]
        start += n
    assert count_trained(batch) == count_trained(collate(items, chatml_tokenizer.pad_token_id))


@pytest.mark.parametrize("eager_max_len", [512, 0], ids=["matmul-attention", "sdpa"])
def test_packed_batch_gives_the_padded_loss_and_gradients(tiny_model_dir, chatml_tokenizer, sql_data,
                                                          monkeypatch, eager_max_len):
    monkeypatch.setattr(packing, "EAGER_MAX_LEN", eager_max_len)
    model = lora_model(tiny_model_dir)
    _nonzero_adapters(model)
    items = encoded(chatml_tokenizer, sql_data[0])[:6]
    assert len({len(x.input_ids) for x in items}) > 1, "equal lengths would hide padding mistakes"
    padded, n_padded = summed_loss(model, collate(items, chatml_tokenizer.pad_token_id))
    padded.backward()
    g_padded = grads(model)
    model.zero_grad()

    assert enable_packing(model) and is_packed(model)
    packed, n_packed = summed_loss(model, pack(items))
    packed.backward()
    assert n_packed == n_padded > 0
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-5)
    for name, g in grads(model).items():
        torch.testing.assert_close(g, g_padded[name], rtol=1e-4, atol=1e-6)


def test_packed_model_still_generates_like_the_library_default(tiny_model_dir, chatml_tokenizer, sql_data):
    """Unpacked calls (left-padded generation) fall back to transformers' SDPA path and mask."""
    model = lora_model(tiny_model_dir).eval()
    _nonzero_adapters(model)
    items = encoded(chatml_tokenizer, sql_data[0])[:3]
    width = max(len(x.input_ids) for x in items)
    ids = torch.tensor([[chatml_tokenizer.pad_token_id] * (width - len(x.input_ids)) + x.input_ids for x in items])
    mask = torch.tensor([[0] * (width - len(x.input_ids)) + [1] * len(x.input_ids) for x in items])
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
        enable_packing(model)
        after = model(input_ids=ids, attention_mask=mask).logits
    keep = mask.bool()
    torch.testing.assert_close(after[keep], before[keep])


def test_fast_dropout_keeps_the_rate_and_the_mean():
    drop = FastDropout(0.05).train()
    x = torch.ones(1000, 1000, dtype=torch.bfloat16, requires_grad=True)
    torch.manual_seed(0)
    y = drop(x)
    kept = (y != 0).float().mean().item()
    assert kept == pytest.approx(0.95, abs=0.002)  # 1e6 draws: 4 standard deviations is 0.0009
    assert y.float().mean().item() == pytest.approx(1.0, abs=0.005)  # survivors scaled by 1/keep
    y.sum().backward()
    assert torch.equal(x.grad != 0, y != 0)  # the gradient flows through the same mask
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # the global generator drives it: seeds and resume hold
    assert torch.equal(drop.eval()(x), x)


def test_lora_uses_fast_dropout(tiny_model_dir):
    model = lora_model(tiny_model_dir, dropout=0.1)
    drops = [m for m in model.modules() if isinstance(m, FastDropout)]
    assert drops and all(d.p == 0.1 for d in drops)
