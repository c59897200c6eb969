"""Shared fixtures: real tokenizers and chat templates, a tiny random Llama built from a config.

The SmolLM2 tokenizer comes from the bundled model (converted once and cached under
~/.cache/tunewise, or $TUNEWISE_CACHE); nothing touches the network.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


@pytest.fixture(scope="session")
def smol_dir() -> Path:
    from tunewise.model.load import resolve_model

    return Path(resolve_model("smollm2-135m-instruct"))


@pytest.fixture(scope="session")
def chatml_tokenizer(smol_dir):
    from tunewise.model.load import load_tokenizer

    return load_tokenizer(str(smol_dir))


@pytest.fixture(scope="session")
def llama3_tokenizer(smol_dir):
    """The SmolLM2 vocabulary with Llama-3's special tokens and chat template."""
    from tunewise.model.load import load_tokenizer

    tok = load_tokenizer(str(smol_dir))
    tok.add_tokens(["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], special_tokens=True)
    tok.bos_token = "<|begin_of_text|>"
    tok.eos_token = "<|eot_id|>"
    tok.chat_template = LLAMA3_TEMPLATE
    return tok


def write_tiny_model(path: Path, tokenizer, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A randomly initialised Llama with the given tokenizer, saved as a normal model directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, chatml_tokenizer) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model", chatml_tokenizer)


def sql_example(i: int, turns: int = 1) -> dict:
    messages = [{"role": "system", "content": "You are a SQL expert."}]
    for t in range(turns):
        messages.append({"role": "user", "content": f"Rows of table t{i} with id above {i + t}?"})
        messages.append({"role": "assistant", "content": f"SELECT * FROM t{i} WHERE id > {i + t};"})
    return {"messages": messages}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def sql_data(tmp_path) -> tuple[Path, Path]:
    train = write_jsonl(tmp_path / "train.jsonl", [sql_example(i, turns=1 + i % 2) for i in range(24)])
    val = write_jsonl(tmp_path / "val.jsonl", [sql_example(100 + i) for i in range(6)])
    return train, val
