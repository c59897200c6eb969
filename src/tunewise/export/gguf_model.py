"""A merged Hugging Face model directory as one GGUF file, with the `gguf` package.

What llama.cpp's convert_hf_to_gguf.py does for the families tunewise trains, and no more:
hyperparameters from config.json, tensor names through gguf's TensorNameMap, Llama's q/k rows
(weights and biases) permuted to GGML's rotary layout (Qwen uses the NEOX layout, unpermuted), norms and biases in f32,
matrices in the asked type (f16, bf16, or q8_0 through gguf.quants). Any other architecture is
refused by name rather than written half right.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from safetensors import safe_open

from ..errors import TunewiseError
from .gguf_vocab import VocabInfo, write_vocab


@dataclass(frozen=True)
class Family:
    arch: gguf.MODEL_ARCH
    permute_qk: bool  # HF's rotate-half layout -> GGML's interleaved one (llama arch only)


FAMILIES = {
    "LlamaForCausalLM": Family(gguf.MODEL_ARCH.LLAMA, True),
    "MistralForCausalLM": Family(gguf.MODEL_ARCH.LLAMA, True),
    "Qwen2ForCausalLM": Family(gguf.MODEL_ARCH.QWEN2, False),
    "Qwen3ForCausalLM": Family(gguf.MODEL_ARCH.QWEN3, False),
}
TYPES = {  # --type -> (GGUF file type, matrix type)
    "f16": (gguf.LlamaFileType.MOSTLY_F16, Q.F16),
    "bf16": (gguf.LlamaFileType.MOSTLY_BF16, Q.BF16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, Q.Q8_0),
}
ROPE_TYPES = ("default", "linear", "llama3")


@dataclass
class GgufInfo:
    arch: str
    qtype: str
    tensors: int
    vocab: VocabInfo


def read_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise TunewiseError(f"{model_dir} has no config.json; give a merged model directory or a run directory")
    return json.loads(path.read_text())


def family_of(config: dict, model_dir: Path) -> Family:
    names = config.get("architectures") or [config.get("model_type", "unknown")]
    if names[0] not in FAMILIES:
        supported = ", ".join(sorted(FAMILIES))
        raise TunewiseError(f"GGUF export supports {supported}; {model_dir}/config.json says "
                            f"architectures {names[0]!r}, which tunewise does not export")
    return FAMILIES[names[0]]


def refuse_sliding_window(model_dir: Path) -> None:
    """A model whose attention is limited to a window shorter than its context (Mistral v0.1,
    Qwen2/3 with use_sliding_window) is refused by name: the llama.cpp that tunewise checks with
    reads no window for the llama or qwen2 architectures (measured: a tiny Mistral and Qwen2 with an
    8-token window, the `{arch}.attention.sliding_window` key written or not, agree with transformers
    to NMSE < 5e-6 over the first 8 tokens and 0.29-0.36 after), so the file would attend past the window."""
    from transformers import AutoConfig  # transformers resolves use_sliding_window and layer_types

    config = AutoConfig.from_pretrained(str(model_dir))
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None) or []
    if not window or window >= config.max_position_embeddings:
        return  # no window, or one no sequence can exceed: full attention is the same attention
    if layer_types and "sliding_attention" not in layer_types:
        return
    raise TunewiseError(f"{model_dir}/config.json: sliding_window {window} (each token attends to the last {window} "
                        f"only) is not honoured by llama.cpp for this architecture, so a GGUF would give "
                        f"different answers past {window} tokens; tunewise does not export it")


def _rope(config: dict) -> dict:
    """transformers 5 keeps rope settings in rope_parameters; older files in rope_theta + rope_scaling."""
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    rope.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    rope["rope_type"] = rope.get("rope_type", rope.get("type", "default"))
    if rope["rope_type"] not in ROPE_TYPES:
        raise TunewiseError(f"config.json rope type {rope['rope_type']!r} is not exported to GGUF by tunewise "
                            f"(supported: {', '.join(ROPE_TYPES)})")
    return rope


def head_dim(config: dict) -> int:
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def _write_hparams(writer: gguf.GGUFWriter, config: dict, file_type: int) -> None:
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config.get("num_key_value_heads", config["num_attention_heads"]))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_rope_dimension_count(head_dim(config))
    writer.add_key_length(head_dim(config))
    writer.add_value_length(head_dim(config))
    rope = _rope(config)
    writer.add_rope_freq_base(rope["rope_theta"])
    if rope["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _llama3_rope_factors(config: dict) -> np.ndarray:
    """Llama 3.1's frequency-dependent rope scaling as the rope_freqs tensor llama.cpp reads
    (as convert_hf_to_gguf.py computes it)."""
    rope, dim = _rope(config), head_dim(config)
    freqs = 1.0 / (rope["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor, low, high = rope.get("factor", 8.0), rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_ctx = rope.get("original_max_position_embeddings", 8192)
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def _permute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """HF's rotate-half rows -> GGML's interleaved pairs, per head (convert_hf_to_gguf's LlamaModel.permute)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2) \
        .reshape(weight.shape)


def _hf_tensors(model_dir: Path):
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise TunewiseError(f"{model_dir} has no *.safetensors weights")
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)


def _encode(array: np.ndarray, matrix_type: Q) -> tuple[np.ndarray, Q]:
    """Norms and biases stay f32 (as in llama.cpp's converter); matrices take the asked type, q8_0
    falling back to f16 for rows not a multiple of its 32-value block."""
    if array.ndim == 1:
        return array, Q.F32
    if matrix_type == Q.Q8_0 and array.shape[-1] % 32:
        matrix_type = Q.F16
    return gguf.quants.quantize(array, matrix_type), matrix_type


def _write_tensors(writer: gguf.GGUFWriter, model_dir: Path, config: dict, family: Family, matrix_type: Q) -> int:
    names = gguf.get_tensor_name_map(family.arch, config["num_hidden_layers"])
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    count = 0
    if _rope(config)["rope_type"] == "llama3":
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", _llama3_rope_factors(config))
        count += 1
    for hf_name, tensor in _hf_tensors(model_dir):
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue  # llama.cpp reuses token_embd when output.weight is absent
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise TunewiseError(f"{model_dir}: tensor {hf_name!r} has no GGUF name for this architecture; "
                                "is this a plain (unmodified) model?")
        # a q/k bias is added to the projection's output rows, so it moves with them (as in convert_hf_to_gguf)
        if family.permute_qk and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            tensor = _permute(tensor, heads)
        elif family.permute_qk and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            tensor = _permute(tensor, kv_heads)
        data, kind = _encode(tensor.to(torch.float32).numpy(), matrix_type)
        writer.add_tensor(name, data, raw_dtype=kind)
        count += 1
    return count


def write_gguf(model_dir: Path, out: Path, qtype: str, tokenizer, name: str | None = None) -> GgufInfo:
    """Write `out` (the caller makes it atomic) from the merged model in `model_dir`; `name` is
    general.name (the run's name, not a temporary directory's)."""
    config = read_config(model_dir)
    family = family_of(config, model_dir)
    file_type, matrix_type = TYPES[qtype]
    writer = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[family.arch])
    try:
        writer.add_name(name or model_dir.name)
        _write_hparams(writer, config, file_type)
        vocab = write_vocab(writer, model_dir, tokenizer, config["vocab_size"])
        count = _write_tensors(writer, model_dir, config, family, matrix_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return GgufInfo(gguf.MODEL_ARCH_NAMES[family.arch], qtype, count, vocab)
