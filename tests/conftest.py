"""Shared fixtures: real tokenizers and chat templates, a tiny random Llama built from a config.

The SmolLM2 tokenizer comes from the bundled model (converted once and cached under
~/.cache/tunewise, or $TUNEWISE_CACHE); nothing touches the network.

Helpers that several test modules share are fixtures that return the helper (`sql_example(i)`,
`lora_model(model_dir)`, ...): no test module imports another, or this one.
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
def tokenizer_dir(request) -> Path:
    """Where the SmolLM2 tokenizer is read: the bundled model, or $TUNEWISE_TEST_TOKENIZER, a directory
    holding only its tokenizer files (a GPU machine is sent those, not the 94 MiB GGUF: see
    benchmarks/device/issue14.sh). Tests that need the model's weights take `smol_dir` itself."""
    env = os.environ.get("TUNEWISE_TEST_TOKENIZER")
    return Path(env) if env else request.getfixturevalue("smol_dir")


@pytest.fixture(scope="session")
def chatml_tokenizer(tokenizer_dir):
    from tunewise.model.load import load_tokenizer

    return load_tokenizer(str(tokenizer_dir))


@pytest.fixture(scope="session")
def llama3_tokenizer(tokenizer_dir):
    """The SmolLM2 vocabulary with Llama-3's special tokens and chat template."""
    from tunewise.model.load import load_tokenizer

    tok = load_tokenizer(str(tokenizer_dir))
    tok.add_tokens(["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], special_tokens=True)
    tok.bos_token = "<|begin_of_text|>"
    tok.eos_token = "<|eot_id|>"
    tok.chat_template = LLAMA3_TEMPLATE
    return tok


def _write_tiny_model(path: Path, tokenizer, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
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
    return _write_tiny_model(tmp_path_factory.mktemp("tiny") / "model", chatml_tokenizer)


@pytest.fixture(scope="session")
def write_tiny_model():
    """write_tiny_model(path, tokenizer, hidden=64, layers=2, seed=0) -> path"""
    return _write_tiny_model


def _sql_example(i: int, turns: int = 1) -> dict:
    messages = [{"role": "system", "content": "You are a SQL expert."}]
    for t in range(turns):
        messages.append({"role": "user", "content": f"Rows of table t{i} with id above {i + t}?"})
        messages.append({"role": "assistant", "content": f"SELECT * FROM t{i} WHERE id > {i + t};"})
    return {"messages": messages}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def sql_example():
    """sql_example(i, turns=1) -> one {"messages": [...]} row: a system prompt and `turns` SQL turns"""
    return _sql_example


@pytest.fixture(scope="session")
def write_jsonl():
    """write_jsonl(path, rows) -> path"""
    return _write_jsonl


@pytest.fixture
def sql_data(tmp_path) -> tuple[Path, Path]:
    train = _write_jsonl(tmp_path / "train.jsonl", [_sql_example(i, turns=1 + i % 2) for i in range(24)])
    val = _write_jsonl(tmp_path / "val.jsonl", [_sql_example(100 + i) for i in range(6)])
    return train, val


# --- training helpers: a LoRA model, encoded examples, gradients, the textbook loss -------------

def _lora_model(model_dir, dropout=0.0, dtype="float32", quantization="none"):
    from tunewise.config import Config
    from tunewise.model.load import load_model
    from tunewise.model.lora import add_lora

    cfg = Config.model_validate({"data": {"train": "x"}, "lora": {"dropout": dropout}})
    torch.manual_seed(0)
    return add_lora(load_model(str(model_dir), dtype, quantization), cfg.lora)


def _encoded(tokenizer, path):
    from tunewise.data.load import load_examples
    from tunewise.data.masking import encode_all

    return encode_all(tokenizer, load_examples(path), 256, str(path))[0]


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _reference_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """The textbook computation (full logits, shift, sum); tests compare summed_loss against it."""
    import torch.nn.functional as F

    from tunewise.data.masking import IGNORE

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    targets = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")
    return loss, int((targets != IGNORE).sum())


@pytest.fixture(scope="session")
def lora_model():
    """lora_model(model_dir, dropout=0.0, dtype="float32", quantization="none") -> a PEFT LoRA model, seed 0"""
    return _lora_model


def _nonzero_b(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return model


@pytest.fixture(scope="session")
def nonzero_b():
    """nonzero_b(model) -> the model, its lora_B weights drawn from N(0, 0.05): the adapters change the
    output (PEFT initialises lora_B to zero, where every adapter path computes the same thing)"""
    return _nonzero_b


@pytest.fixture(scope="session")
def encoded():
    """encoded(tokenizer, path) -> the encoded examples of a JSONL file (max_seq_len 256)"""
    return _encoded


@pytest.fixture(scope="session")
def grads():
    """grads(model) -> {name: a copy of the gradient} of the trainable parameters"""
    return _grads


@pytest.fixture(scope="session")
def reference_loss():
    """reference_loss(model, batch) -> (summed cross-entropy from the model's full logits, trained tokens)"""
    return _reference_loss


# --- chat-template families: small Jinja templates that behave like each family's published one ---

SYS, Q1, A1, Q2, A2 = "SYSPROMPT zeta", "QUESTION one", "ANSWER alpha", "QUESTION two", "ANSWER beta"
R1, R2 = "REASONING first", "REASONING second"

CONVERSATIONS = {
    "system+1": [{"role": "system", "content": SYS}, {"role": "user", "content": Q1},
                 {"role": "assistant", "content": A1}],
    "1": [{"role": "user", "content": Q1}, {"role": "assistant", "content": A1}],
    "system+2": [{"role": "system", "content": SYS}, {"role": "user", "content": Q1},
                 {"role": "assistant", "content": A1}, {"role": "user", "content": Q2},
                 {"role": "assistant", "content": A2}],
}
WITH_REASONING = {  # the same two turns with reasoning, once as a field and once inline
    "reasoning_content": [{"role": "user", "content": Q1},
                          {"role": "assistant", "content": A1, "reasoning_content": R1},
                          {"role": "user", "content": Q2},
                          {"role": "assistant", "content": A2, "reasoning_content": R2}],
    "inline-think": [{"role": "user", "content": Q1},
                     {"role": "assistant", "content": f"<think>\n{R1}\n</think>\n\n{A1}"},
                     {"role": "user", "content": Q2},
                     {"role": "assistant", "content": f"<think>\n{R2}\n</think>\n\n{A2}"}],
}

CHATML_BODY = ("{% for m in messages %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{% endfor %}"
               "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

FAMILIES = {
    # name: (template, special tokens, bos, eos, generation_config eos ids as tokens)
    "llama3-date-header": (
        "{{ bos_token }}{% if messages[0].role == 'system' %}{% set sys = messages[0].content %}"
        "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
        "{{ '<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: '"
        " + strftime_now('%d %b %Y') + '\n\n' + sys + '<|eot_id|>' }}"
        "{% for m in msgs %}{{ '<|start_header_id|>' + m.role + '<|end_header_id|>\n\n' + m.content | trim"
        " + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>", "<|eot_id|>", ["<|eot_id|>"]),
    "qwen3-strips-past-reasoning": (
        "{% set ns = namespace(last_user=-1) %}{% for m in messages %}{% if m.role == 'user' %}"
        "{% set ns.last_user = loop.index0 %}{% endif %}{% endfor %}"
        "{% for m in messages %}{% if m.role == 'assistant' %}{% set content = m.content %}{% set r = '' %}"
        "{% if m.reasoning_content is defined and m.reasoning_content is not none %}{% set r = m.reasoning_content %}"
        "{% elif '</think>' in content %}{% set r = content.split('</think>')[0].split('<think>')[-1].strip('\n') %}"
        "{% set content = content.split('</think>')[-1].lstrip('\n') %}{% endif %}"
        "{% if loop.index0 > ns.last_user and (loop.last or r) %}"
        "{{ '<|im_start|>assistant\n<think>\n' + r.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') "
        "+ '<|im_end|>\n' }}"
        "{% else %}{{ '<|im_start|>assistant\n' + content + '<|im_end|>\n' }}{% endif %}"
        "{% else %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
        ["<think>", "</think>"], None, "<|im_end|>", ["<|im_end|>", "<|endoftext|>"]),
    "deepseek-r1-think-in-prompt": (
        "{{ bos_token }}{% if messages[0].role == 'system' %}{{ messages[0].content }}{% endif %}"
        "{% for m in messages %}{% if m.role == 'user' %}{{ '<｜User｜>' + m.content }}"
        "{% elif m.role == 'assistant' %}{% set c = m.content %}{% if '</think>' in c %}"
        "{% set c = c.split('</think>')[-1] %}{% endif %}{{ '<｜Assistant｜>' + c + '<｜end▁of▁sentence｜>' }}"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\n' }}{% endif %}",
        ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"],
        "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", ["<｜end▁of▁sentence｜>"]),
    "gemma4-thought-channel": (
        "{{ bos_token }}{% for m in messages %}{{ '<|turn>' + ('model' if m.role == 'assistant' else m.role) + '\n'"
        " + m.content + '<turn|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|turn>model\n<|channel>thought\n<channel|>' }}{% endif %}",
        ["<bos>", "<|turn>", "<turn|>", "<|channel>", "<channel|>"], "<bos>", "<turn|>", ["<turn|>"]),
    "mistral-v0.3-system-in-last-user": (
        "{% if messages[0].role == 'system' %}{% set system = messages[0].content %}"
        "{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}"
        "{{ bos_token }}{% for m in loop_messages %}{% if m.role == 'user' %}"
        "{% if loop.last and system is defined %}{{ '[INST] ' + system + '\n\n' + m.content + '[/INST]' }}"
        "{% else %}{{ '[INST] ' + m.content + '[/INST]' }}{% endif %}"
        "{% elif m.role == 'assistant' %}{{ ' ' + m.content + eos_token }}{% endif %}{% endfor %}",
        ["<s>", "</s>", "[INST]", "[/INST]"], "<s>", "</s>", ["</s>"]),
    "glm-no-end-of-turn": (
        "[gMASK]<sop>{% for m in messages %}{{ '<|' + m.role + '|>\n' + m.content }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}",
        ["[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>", "<|endoftext|>"],
        None, "<|endoftext|>", ["<|endoftext|>", "<|user|>", "<|observation|>"]),
    "chatml-plain": (CHATML_BODY, [], None, "<|im_end|>", ["<|im_end|>"]),
    # Command R7B: every rendering, generation prompt or not, ends with the next assistant header
    "command-r7b-trailing-header": (
        "{{ bos_token }}{% for m in messages %}{{ '<|START_OF_TURN_TOKEN|>' }}{% if m.role == 'user' %}"
        "{{ '<|USER_TOKEN|>' }}{% elif m.role == 'system' %}{{ '<|SYSTEM_TOKEN|>' }}{% else %}"
        "{{ '<|CHATBOT_TOKEN|>' }}{% endif %}{{ m.content + '<|END_OF_TURN_TOKEN|>' }}{% endfor %}"
        "{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}",
        ["<BOS_TOKEN>", "<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>",
         "<|SYSTEM_TOKEN|>"], "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>", ["<|END_OF_TURN_TOKEN|>"]),
    # Phi-3.5-mini: turns end with <|end|> (a generation_config stop); a rendering without a
    # generation prompt ends with "\n" + EOS, which generation never reaches
    "phi3.5-eos-after-end": (
        "{% for m in messages %}{% if m.role == 'system' and m.content %}{{ '<|system|>\n' + m.content + '<|end|>\n' }}"
        "{% elif m.role in ('user', 'assistant') %}{{ '<|' + m.role + '|>\n' + m.content + '<|end|>\n' }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}",
        ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], None, "<|endoftext|>",
        ["<|end|>", "<|endoftext|>"]),
    # GLM-4.5: no end-of-turn token (the next role tag stops generation); reasoning is rendered only
    # for turns after the last user message, an empty think block otherwise
    "glm4.5-reasoning": (
        "[gMASK]<sop>{% set ns = namespace(last_user=-1) %}{% for m in messages %}{% if m.role == 'user' %}"
        "{% set ns.last_user = loop.index0 %}{% endif %}{% endfor %}"
        "{% for m in messages %}{% if m.role == 'assistant' %}{% set content = m.content %}{% set r = '' %}"
        "{% if m.reasoning_content is string %}{% set r = m.reasoning_content %}"
        "{% elif '</think>' in content %}{% set r = content.split('</think>')[0].split('<think>')[-1] %}"
        "{% set content = content.split('</think>')[-1] %}{% endif %}{{ '<|assistant|>' }}"
        "{% if loop.index0 > ns.last_user and r.strip() %}{{ '\n<think>' + r.strip() + '</think>' }}"
        "{% else %}{{ '\n<think></think>' }}{% endif %}{{ '\n' + content.strip() }}"
        "{% else %}{{ '<|' + m.role + '|>\n' + m.content }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}",
        ["[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>", "<|endoftext|>",
         "<think>", "</think>"], None, "<|endoftext|>", ["<|endoftext|>", "<|user|>", "<|observation|>"]),
}


def _family_tokenizer(chatml_tokenizer, tmp_path, name):
    from tunewise.data.targets import target_options

    template, specials, bos, eos, stops = FAMILIES[name]
    tok = chatml_tokenizer.__class__.from_pretrained(chatml_tokenizer.name_or_path)
    tok.add_tokens(specials, special_tokens=True)
    if bos:
        tok.bos_token = bos
    tok.eos_token = eos
    tok.chat_template = template
    ids = [tok.convert_tokens_to_ids(t) for t in stops]
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": ids}))
    return tok, target_options(tok, str(tmp_path))


@pytest.fixture(scope="session")
def conversations():
    """name -> messages: system + one turn ("system+1"), one turn ("1"), system + two turns ("system+2")"""
    return CONVERSATIONS


@pytest.fixture(scope="session")
def with_reasoning():
    """variant -> two turns with reasoning, as a field ("reasoning_content") or inline ("inline-think")"""
    return WITH_REASONING


@pytest.fixture(scope="session")
def template_families():
    """family name -> (template, special tokens, bos, eos, generation_config eos ids as tokens)"""
    return FAMILIES


@pytest.fixture(scope="session")
def family_tokenizer():
    """family_tokenizer(chatml_tokenizer, tmp_path, name) -> (tokenizer, target options) of one template family"""
    return _family_tokenizer
