"""Speed and memory levers that must not change the maths: packed batches, the fused LoRA dropout,
the recomputed attention softmax and SiLU."""

import pytest
import torch
import torch.nn.functional as F

from tunewise.data.batching import collate, count_trained
from tunewise.data.masking import IGNORE
from tunewise.model.dropout import DroppedLinear, keep_mask
from tunewise.train import block_attention, packing, swiglu
from tunewise.train.loss import summed_loss
from tunewise.train.packing import PackedLayout, is_packed, pack
from tunewise.train.patches import enable_packing


def _nonzero_adapters(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)


def test_packing_keeps_every_example_labels(chatml_tokenizer, sql_data, encoded):
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


@pytest.mark.parametrize("eager_max_len", [512, 0], ids=["matmul-attention", "block-attention"])
def test_packed_batch_gives_the_padded_loss_and_gradients(tiny_model_dir, chatml_tokenizer, sql_data,
                                                          monkeypatch, eager_max_len, lora_model, encoded, grads):
    monkeypatch.setattr(packing, "EAGER_MAX_LEN", eager_max_len)
    monkeypatch.setattr(block_attention, "BLOCK", 16)  # several blocks a sequence
    calls = []
    monkeypatch.setattr(packing, "block_causal_attention",
                        lambda *a: calls.append(1) or block_attention.block_causal_attention(*a))
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
    assert bool(calls) == (eager_max_len == 0)  # the CPU's kernel for batches longer than EAGER_MAX_LEN
    assert n_packed == n_padded > 0
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-5)
    for name, g in grads(model).items():
        torch.testing.assert_close(g, g_padded[name], rtol=1e-4, atol=1e-6)


def test_packed_model_still_generates_like_the_library_default(tiny_model_dir, chatml_tokenizer, sql_data, lora_model,
                                                               encoded):
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


def saved_bytes(model, batch) -> int:
    """Bytes autograd keeps for backward in one training forward (each storage counted once)."""
    storages = {}

    def pack_hook(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t):
        summed_loss(model, batch)
    return sum(storages.values())


def test_keep_mask_keeps_the_rate_and_is_seeded():
    x = torch.empty(1000, 1000, dtype=torch.bfloat16)
    torch.manual_seed(0)
    keep, scale = keep_mask(x, 0.05)
    assert keep.float().mean().item() == pytest.approx(0.95, abs=0.002)  # 1e6 draws: 4 sd is 0.0009
    assert scale == pytest.approx(1 / 0.95, rel=1e-4)  # survivors scaled by 1/keep: unbiased
    torch.manual_seed(0)
    assert torch.equal(keep_mask(x, 0.05)[0], keep)  # the global generator drives it: seeds and resume hold


def test_dropped_linear_equals_dropout_then_linear():
    layer = torch.nn.Linear(64, 8, bias=False)
    reference = torch.nn.Linear(64, 8, bias=False)
    reference.load_state_dict(layer.state_dict())
    layer.__class__, layer.p = DroppedLinear, 0.2
    x = torch.randn(5, 7, 64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    torch.manual_seed(1)
    out = layer(x)
    torch.manual_seed(1)
    keep, scale = keep_mask(x, 0.2)
    expected = reference(x_ref * keep * scale)
    torch.testing.assert_close(out, expected)
    out.pow(2).sum().backward()
    expected.pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad)
    assert (x.grad == 0).sum() > 0 and torch.equal(x.grad == 0, keep == 0)  # no gradient through dropped inputs
    torch.testing.assert_close(layer.eval()(x), reference(x))  # eval: a plain Linear


def test_lora_dropout_is_fused_and_adapters_keep_their_keys(tiny_model_dir, chatml_tokenizer, sql_data, lora_model,
                                                            encoded):
    model = lora_model(tiny_model_dir, dropout=0.1)
    downs = [m for m in model.modules() if isinstance(m, DroppedLinear)]
    assert downs and all(d.p == 0.1 for d in downs)
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    plain = lora_model(tiny_model_dir, dropout=0.1)
    for m in plain.modules():  # undo the fusion: PEFT's own dropout modules and lora_A Linears
        if isinstance(m, DroppedLinear):
            m.__class__ = torch.nn.Linear
    for m in plain.modules():
        if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict):
            for name in m.lora_dropout:
                m.lora_dropout[name] = torch.nn.Dropout(0.1)
    assert model.state_dict().keys() == plain.state_dict().keys()  # saved adapters read as before
    model.train(), plain.train()
    batch = collate(encoded(chatml_tokenizer, sql_data[0])[:4], chatml_tokenizer.pad_token_id)
    # PEFT keeps a dropped copy of the input of each of the 7 adapters per block (6 x hidden + intermediate
    # values per token, fp32 here); fused, only the input itself, which the base layer keeps anyway
    cfg = model.get_base_model().config
    copies = batch["input_ids"].numel() * cfg.num_hidden_layers * (6 * cfg.hidden_size + cfg.intermediate_size) * 4
    assert saved_bytes(plain, batch) - saved_bytes(model, batch) >= 0.95 * copies


def test_recomputed_softmax_and_silu_give_autograd_gradients_with_less_kept():
    """_CausalAttention and _SiluMul against the plain autograd expressions, in bf16 as in training."""
    torch.manual_seed(0)
    stacked = torch.randn(2, 3, 12, 4, dtype=torch.bfloat16, requires_grad=True)  # 2 query heads per kv head
    k, v = (torch.randn(2, 3, 6, 4, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    causal = torch.ones(6, 6, dtype=torch.bool).triu(1).repeat(2, 1)
    gate, up = (torch.randn(9, 16, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    cases = [(lambda q, k, v: torch.matmul(F.softmax((q @ k.transpose(2, 3)).masked_fill(causal, -1e30), dim=-1,
                                                     dtype=torch.float32).to(v.dtype), v),
              lambda q, k, v: packing._CausalAttention.apply(q, k, v, causal), (stacked, k, v)),
             (lambda g, u: F.silu(g) * u, swiglu._SiluMul.apply, (gate, up))]
    for reference, ours, inputs in cases:
        outs, grads_, kept = [], [], []
        for fn in (reference, ours):
            for t in inputs:
                t.grad = None
            storages = set()
            with torch.autograd.graph.saved_tensors_hooks(lambda t, storages=storages:
                                                          storages.add(t.untyped_storage().data_ptr()) or t,
                                                          lambda t: t):
                out = fn(*inputs)
            out.float().pow(2).sum().backward()
            outs.append(out)
            grads_.append([t.grad.clone() for t in inputs])
            kept.append(storages - {t.untyped_storage().data_ptr() for t in inputs})
        assert torch.equal(outs[1], outs[0])
        for mine, theirs in zip(grads_[1], grads_[0]):
            assert torch.equal(mine, theirs)  # bit for bit, as the docstrings claim
        assert len(kept[1]) < len(kept[0])  # keeps only its inputs; autograd also keeps intermediates


def test_lean_mlp_only_touches_llama_style_silu_mlps(tiny_model_dir, lora_model):
    model = lora_model(tiny_model_dir)
    layers = model.get_base_model().config.num_hidden_layers
    assert swiglu.enable_lean_mlp(model) == layers

    class OtherMLP(torch.nn.Module):
        def forward(self, x):
            return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x)) + x

    assert not swiglu._is_gated_mlp(OtherMLP)
    other = lora_model(tiny_model_dir)
    other.get_base_model().config.hidden_act = "gelu"
    assert swiglu.enable_lean_mlp(other) == 0


def test_layout_pad_keeps_only_the_index_not_q_k_v():
    """pad() equals index_copy into zeros (values and gradient) but autograd keeps none of its input."""
    layout = PackedLayout.from_lengths([3, 5, 2])
    rows = torch.randn(1, 4, 10, 8, dtype=torch.bfloat16, requires_grad=True)
    reference = rows.detach().clone().requires_grad_()
    kept = set()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.add(t.untyped_storage().data_ptr()) or t,
                                                  lambda t: t):
        grid = layout.pad(rows)
    expected = reference.new_zeros(4, 15, 8).index_copy(1, layout.dest, reference[0]).view(4, 3, 5, 8).transpose(0, 1)
    assert torch.equal(grid, expected)
    assert torch.equal(grid[1, :, :5], rows[0, :, 3:8].detach()) and not grid[2, :, 2:].any()  # padding stays zero
    weight = torch.randn(3, 4, 5, 8)
    (grid.float() * weight).sum().backward()
    (expected.float() * weight).sum().backward()
    assert torch.equal(rows.grad, reference.grad)
    assert rows.untyped_storage().data_ptr() not in kept and len(kept) == 1  # the index alone
