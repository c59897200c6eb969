"""Did tuning cost the model its general skills? The forgetting check every evaluation runs.

On the bundled general probe set (data/probes.py: facts, arithmetic, rewriting, short
instructions, word questions) the base model's own greedy answers are the reference, cached once
per base. Both models score those answer tokens given the prompt (teacher forcing), so the check
costs two forward passes per probe, no generation once the cache is warm:

- `kl_per_token`: mean over answer tokens of KL(base || tuned) of the next-token distributions,
  in nats. 0 when the adapter changes nothing; it grows as the tuned model drifts from the base.
- `base_loss`, `tuned_loss`: mean negative log-likelihood of those tokens under each model. The
  base scores its own greedy answers, so its loss is low; a tuned model that forgot scores higher.

With `previous` (a run this one continued from, `train --from`, or `eval --previous RUN`) the
earlier task's metric on its own held-out set is measured twice: with the earlier adapter
(before) and with this one (after).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from ..config import Config
from ..data.load import load_examples
from ..data.probes import ANSWER_TOKENS, Probe, answers_path, base_key, measure_probes, read_answers, write_answers
from ..data.template import fold_system, render, template_hash
from ..errors import TunewiseError
from ..files import write_atomic
from ..model.load import resolve_model
from ..model.lora import adapters_in_compute_dtype
from ..rundir import RunDir
from .generate import generate, prompt_messages
from .metrics import get_metric

# of the 100 measuring probes; measured on the bundled 135M model with its answers cached: 21 s for 64
# probes (2477 answer tokens) on one thread of a shared 2-core CPU (docs/forgetting.md)
DEFAULT_PROBES = 64
# KL(base || tuned) per token, in nats: where the verdict changes (see docs/forgetting.md for measurements)
SMALL_KL, LARGE_KL = 0.05, 0.3
GUIDE_ADVICE = ("use fewer epochs (1-2), use a lower rank (r=8 or r=16), and optionally mix in 5-10% general "
                "instruction data (data.replay: {fraction: 0.05, source: self})")
TASK_FILE = "eval_task.json"  # RUN/report/eval_task.json: the last evaluation's data and metric


@dataclass
class ForgettingOptions:
    probes: int = DEFAULT_PROBES  # 0: off
    previous: str | None = None  # run directory of the earlier task (default: the parent of train --from)
    previous_data: str | None = None  # its held-out set (default: what its last `eval` used)
    previous_metric: str | None = None


def base_answers(model, tokenizer, source: str, config: Config, probes: list[Probe],
                 batch_size: int = 16) -> tuple[dict[str, str], Path]:
    """The base model's greedy answers to `probes` (the adapter off), from the cache or generated once."""
    key = base_key(source, template_hash(tokenizer), f"{config.model.quantization}/{config.model.dtype}")
    answers = read_answers(key)
    missing = [p for p in probes if p.id not in answers]
    if missing:
        with model.disable_adapter():
            outs = generate(model, tokenizer, [p.messages() for p in missing], ANSWER_TOKENS, batch_size)
        answers.update({p.id: out for p, out in zip(missing, outs)})
        write_answers(key, source, answers)
    return answers, answers_path(key)


@torch.no_grad()
def drift(model, tokenizer, probes: list[Probe], answers: dict[str, str], batch_size: int = 8) -> dict:
    """Teacher-forced KL(base || tuned) and both losses on the base's answer tokens."""
    rows = [_tokens(tokenizer, p, answers[p.id]) for p in probes if answers.get(p.id, "").strip()]
    totals = {"kl": 0.0, "base": 0.0, "tuned": 0.0, "tokens": 0}
    for start in range(0, len(rows), batch_size):
        ids, mask, targets = _batch(rows[start:start + batch_size], tokenizer.pad_token_id)
        device = next(model.parameters()).device
        ids, mask, targets = ids.to(device), mask.to(device), targets.to(device)
        tuned = _answer_logprobs(model, ids, mask, targets)
        with model.disable_adapter():
            base = _answer_logprobs(model, ids, mask, targets)
        picked = targets[targets >= 0]
        totals["kl"] += float((base.exp() * (base - tuned)).sum())
        totals["base"] -= float(base.gather(1, picked[:, None]).sum())
        totals["tuned"] -= float(tuned.gather(1, picked[:, None]).sum())
        totals["tokens"] += picked.numel()
    n = totals["tokens"]
    if not n:  # nothing scored: no measure at all, rather than 0 (which reads as "no drift")
        return {"probes": 0, "tokens": 0, "kl_per_token": None, "base_loss": None, "tuned_loss": None}
    return {"probes": len(rows), "tokens": n, "kl_per_token": totals["kl"] / n,
            "base_loss": totals["base"] / n, "tuned_loss": totals["tuned"] / n}


def _tokens(tokenizer, probe: Probe, answer: str) -> tuple[list[int], int]:
    prompt = tokenizer(render(tokenizer, probe.messages(), True), add_special_tokens=False)["input_ids"]
    return prompt + tokenizer(answer, add_special_tokens=False)["input_ids"], len(prompt)


def _batch(rows, pad_id: int):
    """Right-padded ids, mask, and targets: the next token where it is an answer token, else -1."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    targets = torch.full_like(ids, -1)
    for r, (tokens, prompt_len) in enumerate(rows):
        ids[r, :len(tokens)] = torch.tensor(tokens)
        mask[r, :len(tokens)] = 1
        targets[r, prompt_len - 1:len(tokens) - 1] = torch.tensor(tokens[prompt_len:])
    return ids, mask, targets


def _answer_logprobs(model, ids, mask, targets) -> torch.Tensor:
    """fp32 log-probabilities over the vocabulary at answer positions only: [answer tokens, vocab]."""
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    return F.log_softmax(logits[targets >= 0].float(), dim=-1)


def verdict(kl: float) -> tuple[str, str | None]:
    """Plain words for the KL, and the guide's advice when forgetting shows."""
    if kl < SMALL_KL:
        return "little forgetting: on general prompts the tuned model answers almost as the base does", None
    if kl < LARGE_KL:
        return "some forgetting: the tuned model has drifted from the base on general prompts", GUIDE_ADVICE
    return "marked forgetting: the tuned model no longer answers general prompts as the base did", GUIDE_ADVICE


def check_forgetting(model, tokenizer, source: str, config: Config, probes: int, batch_size: int = 16) -> dict:
    """The `forgetting` object of the evaluation JSON (without the previous task)."""
    chosen = measure_probes(probes)
    answers, cache = base_answers(model, tokenizer, source, config, chosen, batch_size)
    result = drift(model, tokenizer, chosen, answers)
    result.update(asked=len(chosen), cache=str(cache))
    if not result["tokens"]:  # no tokens, no verdict: say why instead
        result.update(loss_change=None, verdict=None, advice=None, no_verdict=(
            f"no verdict: the base model's answers to all {len(chosen)} probes are empty (cached in {cache}), "
            "so there are no answer tokens to compare the tuned model with; a base that answers general "
            "prompts with nothing (often a stop token first) cannot show forgetting this way"))
        return result
    result["loss_change"] = result["tuned_loss"] - result["base_loss"]
    result["verdict"], result["advice"] = verdict(result["kl_per_token"])
    return result


def remember_task(run_dir: str | Path, data_path: str | Path, metric: str) -> None:
    """Record the evaluation's data and metric in the run, so a continued run can re-check this task."""
    path = RunDir(run_dir).path / "report" / TASK_FILE
    write_atomic(path, json.dumps({"data": str(Path(data_path).resolve()), "metric": metric}))


def previous_run(run_dir: str | Path, options: ForgettingOptions) -> tuple[str, str, str] | None:
    """(run, data, metric) of the earlier task to re-check, or None: `--previous`, else the run's parent."""
    run = options.previous
    automatic = run is None
    if automatic:
        manifest = RunDir(run_dir).manifest
        parent = (json.loads(manifest.read_text()).get("parent") or {}) if manifest.is_file() else {}
        run = parent.get("run")
        if not run:
            return None
    if not RunDir(run).is_tuned_run():
        raise TunewiseError(f"--previous {run}: not a run directory with an adapter")
    task_file = RunDir(run).path / "report" / TASK_FILE
    task = json.loads(task_file.read_text()) if task_file.is_file() else {}
    data, metric = options.previous_data or task.get("data"), options.previous_metric or task.get("metric")
    if not (data and metric):
        if automatic:
            return None  # the parent was never evaluated: nothing to compare with, and nothing asked
        raise TunewiseError(f"--previous {run}: no evaluation recorded in {task_file}; "
                            "give --previous-data FILE and --previous-metric NAME")
    return str(run), data, metric


def previous_task(model, tokenizer, config: Config, previous: tuple[str, str, str], max_new_tokens: int,
                  batch_size: int) -> dict:
    """The earlier task's score on its held-out set: its own adapter (before) and this one (after)."""
    run, data, metric_name = previous
    earlier = Config.model_validate(yaml.safe_load(RunDir(run).config.read_text()))
    if earlier.model.name != config.model.name:
        raise TunewiseError(f"--previous {run}: trained on {earlier.model.name}, this run on {config.model.name}; "
                            "before and after must share a base model")
    metric = get_metric(metric_name)
    examples = load_examples(data)
    fold = config.data.fold_system_prompt
    prompts = [prompt_messages(fold_system(e.messages) if fold else e.messages) for e in examples]
    tools = [e.tools for e in examples]
    model.load_adapter(str(RunDir(run).adapter), adapter_name="previous")
    adapters_in_compute_dtype(model)  # PEFT loads it in fp32: the same precision as this run's adapter
    try:
        model.set_adapter("previous")
        before = generate(model, tokenizer, prompts, max_new_tokens, batch_size, None, tools)
    finally:
        model.set_adapter("default")
        model.delete_adapter("previous")
    after = generate(model, tokenizer, prompts, max_new_tokens, batch_size, None, tools)

    def score(outputs: list[str]) -> float:
        pairs = zip(outputs, examples)
        return sum(float(metric(o, e.messages[-1]["content"], e.meta)) for o, e in pairs) / len(examples)

    return {"run": run, "data": data, "metric": metric_name, "n": len(examples),
            "before": score(before), "after": score(after)}


def forgetting_section(model, tokenizer, config: Config, run_dir, data_path, metric: str,
                       options: ForgettingOptions, max_new_tokens: int, batch_size: int) -> dict | None:
    """The evaluation JSON's `forgetting` object (None when probes=0 and no earlier task is asked)."""
    remember_task(run_dir, data_path, metric)
    section = {}
    if options.probes:
        section = check_forgetting(model, tokenizer, resolve_model(config.model.name), config, options.probes,
                                   batch_size)
    previous = previous_run(run_dir, options)
    if previous:
        section["previous_task"] = previous_task(model, tokenizer, config, previous, max_new_tokens, batch_size)
    return section or None
