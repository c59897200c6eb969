"""Every model family trains right: tunewise's training path against the model's own forward.

For tiny random models of each family (built from a config, fp32, no network) the loss and the
gradients of tunewise's path (speed paths applied as `train` applies them: packed micro-batches,
fused loss, lean MLP where it applies, fused LoRA dropout at p=0, through PEFT LoRA with nonzero
lora_B) must equal those of the model's own padded forward with `labels`, attention "eager" (the
textbook path: it applies softcaps that SDPA refuses). Sliding windows are 8 tokens and the
sequences 45 to 79, so a window that is ignored changes the loss; the Gemmas' weights are drawn
with std 0.2, not 0.02, so that scores and logits are large enough for their softcaps to bite
(ignoring either softcap of Gemma 2 measured 7 and 46 off a loss of 880 and 841).

Tolerances (fp32): loss rtol 1e-5 (a sum of ~72 token losses of ~10 each: 0.008 absolute; the
ignored Mistral window measured 1.6 off), gradients rtol 1e-4 plus atol 1e-5 of the
tensor's largest entry (fp32 rounding of an entry that nearly cancels: Gemma 3 measured 1.4e-6
absolute, 4e-4 relative, on one of 512). The lean MLP claims "bit for bit the same" gradients: checked with
torch.equal.

Every test runs on the CPU and, where CUDA is visible (the device machine, benchmarks/device/issue14.sh),
again on the GPU: there packed attention takes SDPA's kernels for every batch without a softcap.
"""

import pytest
import torch
import transformers as tf
from peft.tuners.lora import LoraLayer

from tunewise.config import Config
from tunewise.data.batching import collate
from tunewise.model.lora import add_lora
from tunewise.train import block_attention, packing
from tunewise.train.block_attention import block_causal_attention
from tunewise.train.loss import summed_loss
from tunewise.train.packing import PackingError, pack, packed_attention, packed_forward
from tunewise.train.patches import apply_speed_paths
from tunewise.train.swiglu import enable_lean_mlp

WINDOW = 8
NO_CUDA = not torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(NO_CUDA, reason="needs CUDA (the device machine)"))]
FAMILIES = {  # name: (config class, model class, family settings, lean MLP modules expected)
    "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, {}, 2),
    "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM,  # layer 1 slides, layer 0 does not
              {"use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1}, 2),
    "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM, {"head_dim": 16}, 2),
    "mistral": (tf.MistralConfig, tf.MistralForCausalLM, {"sliding_window": WINDOW}, 2),
    "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM,
               {"head_dim": 16, "sliding_window": WINDOW, "attn_logit_softcapping": 5.0,
                "final_logit_softcapping": 3.0, "query_pre_attn_scalar": 24, "initializer_range": 0.2}, 0),
    "gemma3": (tf.Gemma3TextConfig, tf.Gemma3ForCausalLM,
               {"head_dim": 16, "sliding_window": WINDOW, "layer_types": ["sliding_attention", "full_attention"],
                "final_logit_softcapping": 3.0, "query_pre_attn_scalar": 24, "initializer_range": 0.2}, 0),
    "phi3": (tf.Phi3Config, tf.Phi3ForCausalLM, {"sliding_window": WINDOW}, 0),  # fused gate_up: own MLP
    "cohere": (tf.CohereConfig, tf.CohereForCausalLM, {"logit_scale": 0.5}, 2),
    "granite": (tf.GraniteConfig, tf.GraniteForCausalLM, {"logits_scaling": 2.0}, 2),
    "nemotron": (tf.NemotronConfig, tf.NemotronForCausalLM, {}, 0),  # layers drop **kwargs
}


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


def on(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def tiny_model(name: str, vocab: int, pad_id: int, device="cpu"):
    config_cls, model_cls, settings, _ = FAMILIES[name]
    config = config_cls(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                        pad_token_id=pad_id, attn_implementation="eager", **settings)
    torch.manual_seed(0)
    lora = Config.model_validate({"data": {"train": "x"}}).lora.model_copy(update={"dropout": 0.0})
    model = add_lora(model_cls(config).float().to(device), lora)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    return model


@pytest.fixture(scope="module")
def items(chatml_tokenizer, tmp_path_factory, sql_example, write_jsonl, encoded):
    path = write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", [sql_example(i, 1 + i % 2) for i in range(4)])
    found = encoded(chatml_tokenizer, path)
    assert min(len(x.input_ids) for x in found) > 4 * WINDOW and len({len(x.input_ids) for x in found}) > 1
    return found


def own_loss_and_grads(model, batch, grads):
    """The model's own forward with `labels` (mean over trained tokens) times the count: a sum."""
    model.zero_grad()
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                use_cache=False)
    n = int((batch["labels"][:, 1:] != -100).sum())
    (out.loss * n).backward()
    return (out.loss * n).detach(), grads(model)


def tunewise_loss_and_grads(model, batch, grads):
    model.zero_grad()
    loss, _ = summed_loss(model, batch)
    loss.backward()
    return loss.detach(), grads(model)


PACKED = [name for name in FAMILIES if name != "nemotron"]


# eager_max_len 512: the matmul path over the padded grid; 0: on the CPU the block kernel (blocks of 16
# queries, or 5, fewer than the window of 8), on a GPU SDPA's kernels where there is no softcap
@pytest.mark.parametrize("name, eager_max_len, block", [(name, 512, 16) for name in FAMILIES] +
                         [(name, 0, 16) for name in PACKED] + [("mistral", 0, 5), ("gemma2", 0, 5)])
def test_training_path_matches_the_models_own_forward(name, eager_max_len, block, items, chatml_tokenizer, monkeypatch,
                                                     grads, device):
    if device.type == "cuda" and block != 16:
        pytest.skip("the block kernel is the CPU's; on a GPU this case repeats the one with blocks of 16")
    monkeypatch.setattr(packing, "EAGER_MAX_LEN", eager_max_len)
    monkeypatch.setattr(block_attention, "BLOCK", block)
    calls = []
    monkeypatch.setattr(packing, "block_causal_attention", lambda *a: calls.append(1) or block_causal_attention(*a))
    model = tiny_model(name, len(chatml_tokenizer), chatml_tokenizer.pad_token_id, device)
    padded = on(collate(items, chatml_tokenizer.pad_token_id), device)
    want, want_grads = own_loss_and_grads(model, padded, grads)

    speed = apply_speed_paths(model)
    calls.clear()  # the probe's packed forward went through it too
    assert speed.record["lean_mlp"] == {"modules": FAMILIES[name][3]}
    assert speed.record["fused_loss"] is True
    assert speed.record["fused_lora_add"] == {"modules": sum(isinstance(m, LoraLayer) for m in model.modules())} != {
        "modules": 0}
    if name == "nemotron":  # stepped aside with its reason, and trains padded
        assert not speed.packed and "without its packed layout" in speed.record["packed_attention"]["off"]
        assert speed.notes == [f"packed attention off for this model: {speed.record['packed_attention']['off']}; "
                               "training takes the model's own code there"]
    else:
        assert speed.packed and speed.record["packed_attention"] == {"layers": 2} and not speed.notes
    got, got_grads = tunewise_loss_and_grads(model, on(pack(items), device) if speed.packed else padded, grads)
    assert bool(calls) == (speed.packed and eager_max_len == 0 and device.type == "cpu")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    assert got_grads.keys() == want_grads.keys()
    for key, g in got_grads.items():
        scale = float(want_grads[key].abs().max())  # fp32 sums of sums: an entry that nearly cancels is noise
        torch.testing.assert_close(g, want_grads[key], rtol=1e-4, atol=1e-5 * scale,
                                   msg=lambda m, key=key: f"{key}: {m}")


def test_lean_mlp_gradients_are_bit_for_bit(items, chatml_tokenizer, grads, device):
    """swiglu.py's docstring: "gradients are bit for bit the same"."""
    model = tiny_model("llama", len(chatml_tokenizer), chatml_tokenizer.pad_token_id, device)
    batch = on(collate(items, chatml_tokenizer.pad_token_id), device)
    plain, plain_grads = tunewise_loss_and_grads(model, batch, grads)
    assert enable_lean_mlp(model) == 2
    lean, lean_grads = tunewise_loss_and_grads(model, batch, grads)
    assert torch.equal(lean, plain)
    assert all(torch.equal(lean_grads[k], plain_grads[k]) for k in plain_grads)


def test_attention_sinks_step_aside_with_the_reason(items, chatml_tokenizer):
    """gpt-oss passes `s_aux` (attention sinks), which the packed kernel does not implement."""
    config = tf.GptOssConfig(vocab_size=len(chatml_tokenizer), hidden_size=64, intermediate_size=64, head_dim=16,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, num_local_experts=2,
                             num_experts_per_tok=1, sliding_window=WINDOW, attn_implementation="eager")
    torch.manual_seed(0)
    model = tf.GptOssForCausalLM(config).float()
    speed = apply_speed_paths(model)
    assert not speed.packed and "s_aux" in speed.record["packed_attention"]["off"]
    assert model.config._attn_implementation == "eager"  # the model's own attention, untouched
    assert len(speed.notes) == 1 and "s_aux" in speed.notes[0]


def test_packed_call_without_its_layout_raises():
    """Inside a packed forward a missing layout raises; outside it (generation) attention runs."""
    module = torch.nn.Module()
    q, k, v = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    module.num_key_value_groups, module.is_causal = 2, True
    with packed_forward(), pytest.raises(PackingError, match="without its packed layout"):
        packed_attention(module, q, k, v, None)
    out, _ = packed_attention(module, q, k, v, None)
    assert out.shape == (1, 6, 4, 8)


def test_unpacked_calls_keep_the_models_own_attention(items, chatml_tokenizer, device):
    """After packing is enabled, a left-padded call (generation) gives the eager logits, softcap included."""
    model = tiny_model("gemma2", len(chatml_tokenizer), chatml_tokenizer.pad_token_id, device).eval()
    width = max(len(x.input_ids) for x in items)
    pad = chatml_tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(x.input_ids)) + x.input_ids for x in items], device=device)
    mask = torch.tensor([[0] * (width - len(x.input_ids)) + [1] * len(x.input_ids) for x in items], device=device)
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
        assert apply_speed_paths(model).packed
        after = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(after[mask.bool()], before[mask.bool()], rtol=1e-5, atol=1e-5)


def test_training_forward_builds_no_cache_and_no_mask(items, chatml_tokenizer, monkeypatch, device):
    """use_cache=False, and a packed forward builds no [N, N] mask (its attention ignores masks)."""
    model = tiny_model("mistral", len(chatml_tokenizer), chatml_tokenizer.pad_token_id, device)
    assert apply_speed_paths(model).packed
    masks, caches = [], []
    monkeypatch.setattr(packing, "sdpa_mask", lambda *a, **k: masks.append(1))
    decoder = model.get_base_model().get_decoder()
    decoder.register_forward_pre_hook(lambda m, a, kw: caches.append(kw.get("use_cache")), with_kwargs=True)
    summed_loss(model, on(pack(items), device))
    assert caches == [False] and masks == []


def eager_per_sequence(q, k, v, lengths, scale, window=None, softcap=None):
    """transformers' eager attention (fp32 softmax) on each sequence of a packed row alone -> [1, N, heads, dim]."""
    groups, outs, start = q.shape[1] // k.shape[1], [], 0
    for n in lengths:
        rows = slice(start, start + n)
        scores = torch.matmul(q[:, :, rows], k[:, :, rows].repeat_interleave(groups, 1).transpose(2, 3)) * scale
        scores = scores if softcap is None else torch.tanh(scores / softcap) * softcap
        pos = torch.arange(n, device=q.device)
        allowed = pos[None, :] <= pos[:, None]
        if window is not None:
            allowed &= pos[None, :] > pos[:, None] - window  # transformers' mask
        weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1, dtype=torch.float32).to(q.dtype)
        outs.append(torch.matmul(weights, v[:, :, rows].repeat_interleave(groups, 1)).transpose(1, 2))
        start += n
    return torch.cat(outs, 1)


def packed_qkv(lengths, heads, kv_heads, device, dtype=torch.float32):
    """q, k, v of a packed row as transformers hands them over: [1, heads, N, dim] views of [1, N, heads, dim]."""
    torch.manual_seed(0)
    return [torch.randn(1, sum(lengths), h, 8, device=device, dtype=dtype).transpose(1, 2).requires_grad_()
            for h in (heads, kv_heads, kv_heads)]


@pytest.mark.parametrize("heads, kv_heads", [(4, 2), (4, 4), (4, 1)])
@pytest.mark.parametrize("window", [None, 3, WINDOW])
@pytest.mark.parametrize("softcap", [None, 5.0])
def test_block_attention_over_a_packed_row_matches_autograd_per_sequence(softcap, window, heads, kv_heads, device,
                                                                        monkeypatch):
    """The block kernel (blocks of 5 queries: windows shorter and longer than a block, a sequence of one
    token) against plain autograd of eager attention on each sequence alone, values and gradients;
    and autograd keeps only its q, k and v (as the kernel's docstring says)."""
    monkeypatch.setattr(block_attention, "BLOCK", 5)
    lengths = (13, 1, 3, 20)
    q, k, v = packed_qkv(lengths, heads, kv_heads, device)
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        out = block_causal_attention(q, k, v, lengths, 0.3, window, softcap)
    want = eager_per_sequence(q, k, v, lengths, 0.3, window, softcap)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    weight = torch.randn_like(want)
    got_grads = torch.autograd.grad((out * weight).sum(), (q, k, v))
    for got, expected in zip(got_grads, torch.autograd.grad((want * weight).sum(), (q, k, v))):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert sorted(t.numel() for t in kept) == sorted(t.numel() for t in (q, k, v))  # its own copies of q, k, v only


def test_block_attention_in_bf16_is_as_close_as_the_matmul_path(device):
    """In bf16, as in training: the block kernel's error against fp64 eager attention is no larger than that
    of the matmul path on the padded grid (the same casts: 16-bit scores, fp32 softmax, 16-bit weights)."""
    lengths = (70, 1, 33, 130)
    q, k, v = packed_qkv(lengths, 9, 3, device, torch.bfloat16)
    weight = torch.randn(1, sum(lengths), 9, 8, device=device)
    layout = packing.PackedLayout.from_lengths(list(lengths)).to(device)

    def grid(q, k, v, lengths, scale):
        return layout.unpad(packing._matmul_attention(*(layout.pad(t) for t in (q, k, v)), scale, 0.0))

    results = {}
    for name, fn in {"exact": eager_per_sequence, "block": block_causal_attention, "matmul": grid}.items():
        inputs = [t.detach().double().requires_grad_() if name == "exact" else t for t in (q, k, v)]
        out = fn(*inputs, lengths, 0.125)
        grads_ = torch.autograd.grad((out * weight).sum(), inputs)
        results[name] = [out.detach().double(), *(g.double() for g in grads_)]
    for block, matmul, exact in zip(results["block"], results["matmul"], results["exact"]):
        error = float((block - exact).norm() / exact.norm())
        assert 0 < error <= 1.25 * float((matmul - exact).norm() / exact.norm()) and error < 0.01


@pytest.mark.parametrize("softcap", [None, 5.0])
def test_matmul_attention_window_and_softcap_match_autograd(softcap, device):
    """The recomputing kernel against plain autograd of the same expression (eager attention's)."""
    torch.manual_seed(0)
    q = torch.randn(2, 4, 20, 8, device=device, requires_grad=True)
    k, v = (torch.randn(2, 2, 20, 8, device=device, requires_grad=True) for _ in range(2))
    out = packing._matmul_attention(q, k, v, 0.3, 0.0, WINDOW, softcap)
    scores = torch.matmul(q, k.repeat_interleave(2, 1).transpose(2, 3)) * 0.3
    scores = scores if softcap is None else torch.tanh(scores / softcap) * softcap
    pos = torch.arange(20, device=device)
    allowed = (pos[None, :] <= pos[:, None]) & (pos[None, :] > pos[:, None] - WINDOW)  # transformers' mask
    want = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ v.repeat_interleave(2, 1)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    weight = torch.randn_like(want)
    got_grads = torch.autograd.grad((out * weight).sum(), (q, k, v))
    for got, expected in zip(got_grads, torch.autograd.grad((want * weight).sum(), (q, k, v))):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
