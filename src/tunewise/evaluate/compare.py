"""Base versus tuned on the same held-out prompts: the evidence the guide asks for."""

from __future__ import annotations

from pathlib import Path

import yaml
from peft import PeftModel

from ..config import Config
from ..data.load import load_examples
from ..data.template import fold_system
from ..device import pick_device
from ..errors import TunewiseError
from ..model.load import load_model, load_tokenizer, resolve_model
from ..model.lora import adapters_in_compute_dtype
from ..model.lora_add import fuse_lora_add
from ..rundir import RunDir
from .failures import add_failures
from .forgetting import ForgettingOptions, forgetting_section, previous_run
from .generate import generate, prompt_messages
from .metrics import check_references, get_metric


def load_run_config(run_dir: str | Path) -> Config:
    run = RunDir(run_dir)
    if not run.config.is_file():
        raise TunewiseError(f"{run_dir} is not a tunewise run directory (no config.yaml)")
    if not (run.adapter / "adapter_config.json").is_file():
        raise TunewiseError(f"{run_dir} has no trained adapter yet (adapter/ is missing); train first")
    if not (run.adapter / "adapter_model.safetensors").is_file():
        raise TunewiseError(f"{run.adapter} has no adapter_model.safetensors; tunewise loads safetensors "
                            "only, never pickled weights")
    return Config.model_validate(yaml.safe_load(run.config.read_text()))


def load_tuned(run_dir: str | Path, quantization: str | None = None, device: str = "auto", dtype: str | None = None):
    """The run's base model with its adapter attached (disable it to get the base model back), on
    `device` (the accelerator when there is one) in the dtype that device runs the run's model.dtype in."""
    config = load_run_config(run_dir)
    source = resolve_model(config.model.name)
    tokenizer = load_tokenizer(source, config.model.trust_remote_code)
    base = load_model(source, dtype or config.model.dtype, quantization or config.model.quantization,
                      pick_device(device), config.model.trust_remote_code)
    model = PeftModel.from_pretrained(base, str(RunDir(run_dir).adapter))
    adapters_in_compute_dtype(model)
    # training's one-matmul LoRA add (model/lora_add.py): the adapter's arithmetic as trained, and
    # fewer ops in each adapted layer of every decoding step
    fuse_lora_add(model)
    model.eval()
    return model, tokenizer, config


def _check_references_first(metric, examples, references, data_path, run_dir, options: ForgettingOptions) -> None:
    """Every reference the metrics will run, this task's and the earlier task's (--previous), checked
    before anything is generated: a broken one is refused by line, not after an hour of generation."""
    check_references(metric, examples, references, data_path)
    previous = previous_run(run_dir, options)
    if previous:
        _, data, name = previous
        earlier = load_examples(data)
        check_references(get_metric(name), earlier, [e.messages[-1]["content"] for e in earlier], data)


def compare(run_dir: str | Path, data_path: str | Path, metric_name: str, max_new_tokens: int = 128,
            batch_size: int = 16, progress=None, device: str = "auto",
            forgetting: ForgettingOptions | None = None) -> dict:
    """Base and tuned scored on the same prompts; with `forgetting` (on by default; probes=0 turns
    it off) also the forgetting check and the earlier task's score (evaluate/forgetting.py)."""
    metric = get_metric(metric_name)
    examples = load_examples(data_path)
    references = [e.messages[-1]["content"] for e in examples]
    for e, ref in zip(examples, references):
        if not isinstance(ref, str):
            raise TunewiseError(f"{e.where}: the last assistant message has no text content (a tool "
                                "call?); evaluation compares the answer's text with the metric")
    options = forgetting or ForgettingOptions()
    _check_references_first(metric, examples, references, data_path, run_dir, options)
    model, tokenizer, config = load_tuned(run_dir, device=device)
    fold = config.data.fold_system_prompt  # prompts as the run was trained on them
    prompts = [prompt_messages(fold_system(e.messages) if fold else e.messages) for e in examples]
    tools = [e.tools for e in examples]  # as in training: the same function definitions in the prompt
    with model.disable_adapter():
        base_out = generate(model, tokenizer, prompts, max_new_tokens, batch_size, progress, tools)
    tuned_out = generate(model, tokenizer, prompts, max_new_tokens, batch_size, progress, tools)
    rows = []
    for ex, prompt, ref, b, t in zip(examples, prompts, references, base_out, tuned_out):
        rows.append({
            "prompt": prompt[-1]["content"] if prompt else "", "reference": ref, "base": b, "tuned": t,
            "base_ok": float(metric(b, ref, ex.meta)), "tuned_ok": float(metric(t, ref, ex.meta)),
            "line": ex.line,
        })
    n = len(rows)
    result = {
        "metric": metric_name, "n": n, "data": str(data_path), "run": str(run_dir),
        "base": {"score": sum(r["base_ok"] for r in rows) / n},
        "tuned": {"score": sum(r["tuned_ok"] for r in rows) / n},
        "examples": rows,
    }
    result["forgetting"] = forgetting_section(model, tokenizer, config, run_dir, data_path, metric_name, options,
                                              max_new_tokens, batch_size)
    return add_failures(result, metric_name, [e.meta for e in examples])  # right format? hallucination?
