"""Run configuration: pydantic models (one source of truth for defaults), YAML, dotted overrides.

Unknown or ill-typed keys are rejected with a message naming the key, so a typo such as
`lora.rank` fails loudly instead of silently training with the default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import TunewiseError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelConfig(_Strict):
    name: str = "smollm2-135m-instruct"
    """Builtin alias, local model directory, or a Hugging Face id."""
    quantization: Literal["none", "nf4"] = "none"
    """nf4 = QLoRA: 4-bit NormalFloat base with double quantization, computing in model.dtype."""
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    trust_remote_code: bool = False


class LoraConfig(_Strict):
    r: int = Field(16, gt=0)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Union[Literal["all-linear"], list[str]] = "all-linear"
    init_from: str | None = None
    """Continue from this adapter (a run directory or an adapter directory; `train --from`): its
    weights start the run, trainable, with a fresh optimizer and schedule. Its base model, r,
    alpha, target modules and chat template must match this config's."""


class ReplayConfig(_Strict):
    """Other data mixed into every epoch against forgetting (the guide: 5-10% general data)."""
    fraction: float = Field(0.05, gt=0, le=0.5)
    """Share of the mixed training set that is replay: n_replay = round(n_train * f / (1 - f))."""
    source: str = "self"
    """`self`: the base model's own greedy answers to the bundled probe prompts (self-distillation,
    no outside data); or a JSONL file, e.g. the previous task's training data."""


class DataConfig(_Strict):
    train: str
    """JSONL, a JSON array (.json), parquet (a file or a directory of them), or a `datasets`
    save_to_disk directory."""
    val: str | None = None
    val_fraction: float | None = Field(None, gt=0, lt=1)
    """Used only when `val` is not given; the guide recommends 10-20%."""
    max_seq_len: int = Field(2048, gt=8)
    allow_small: bool = False
    """Train on fewer than 50 examples anyway (the guide: use few-shot prompting instead)."""
    fold_system_prompt: bool = False
    """For templates without a system role: the system prompt starts the first user message
    (training, evaluation and chat alike)."""
    end_of_turn: str | None = None
    """The token that ends an assistant turn where the chat template writes none (default: the
    model's own stop token, from its generation_config, or EOS)."""
    replay: ReplayConfig | None = None
    """Off by default; e.g. `replay: {fraction: 0.05, source: self}`."""
    format: Literal["auto", "messages", "prompt_completion", "alpaca", "sharegpt"] = "auto"
    """auto: from the first record's keys (messages, prompt/completion, alpaca's instruction/output,
    sharegpt's conversations)."""
    columns: dict[str, str] = {}
    """The format's field -> the file's key, for files that name them otherwise: {messages: conversation}."""
    roles: dict[str, str] = {}
    """The file's role name -> tunewise's (system, user, assistant, tool): {bot: assistant}. ShareGPT's
    human, gpt and system are known."""

    @model_validator(mode="after")
    def _one_val_source(self) -> "DataConfig":
        if self.val is not None and self.val_fraction is not None:
            raise ValueError("give data.val or data.val_fraction, not both")
        return self


class TrainConfig(_Strict):
    epochs: float = Field(3, gt=0)
    batch_size: int = Field(8, gt=0)
    """Sequences per optimizer step."""
    micro_batch_size: Union[Literal["auto"], int] = "auto"
    """Sequences per forward pass; gradients are accumulated to batch_size. The loss and gradient
    do not depend on it, but LoRA dropout's random masks are drawn per micro-batch, so with
    lora.dropout > 0 (and `auto`, sized from free memory) runs differ by machine (measured:
    max relative gradient difference 0.33 with dropout 0.05, 1.9e-7 with 0)."""
    lr: float = Field(2.0e-4, gt=0)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    eval_every: int = Field(50, gt=0)
    save_every: int = Field(100, gt=0)
    log_every: int = Field(1, gt=0)
    max_steps: int | None = Field(None, gt=0)
    early_stopping_patience: int | None = Field(3, ge=1)
    gradient_checkpointing: bool = False
    seed: int = 0
    group_by_length: bool = False
    """Put sequences of similar length in the same optimizer step (spans of 50 steps sorted by
    length, the steps shuffled; data/batching.epoch_order). Under several processes a step waits for
    the rank with the longest share: random pairs of the SQL example's 150-579-token conversations
    left 12% of two ranks' time idle. A different order of the same data, not the same run: on that
    example it trained 7% faster as two processes and scored higher on held-out questions of the
    training style but lower under a style shift (docs/benchmarks.md), so the example leaves it off."""
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "trackio"]] = []
    """Trackers that also get metrics.jsonl's numbers and the resolved config, through accelerate:
    TensorBoard files in output_dir/tensorboard; MLflow in $MLFLOW_TRACKING_URI or a file store in
    output_dir/mlruns; W&B (WANDB_MODE=offline works without a network) and trackio as they are set up."""
    strategy: Literal["ddp", "fsdp"] = "ddp"
    """In a launch of several processes: ddp (a whole model on each) or fsdp (weights, frozen base
    included, sharded over the processes; train/fsdp.py). One process ignores it."""

    @model_validator(mode="after")
    def _micro_batch_fits(self) -> "TrainConfig":
        mb = self.micro_batch_size
        if mb != "auto" and (mb <= 0 or mb > self.batch_size):
            raise ValueError(f"train.micro_batch_size={mb} must be 'auto' or in 1..batch_size ({self.batch_size})")
        return self


class Config(_Strict):
    model: ModelConfig = ModelConfig()
    lora: LoraConfig = LoraConfig()
    data: DataConfig
    train: TrainConfig = TrainConfig()
    output_dir: str = "runs/run"


def _parse_value(text: str):
    """Command-line values are YAML scalars: `5` is an int, `null` is None, `[q_proj]` a list."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for item in overrides:
        if "=" not in item:
            raise TunewiseError(f"override '{item}' is not of the form key.sub=value (e.g. train.max_steps=5)")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise TunewiseError(f"override '{item}': '{part}' is not a section")
            node = child
        node[parts[-1]] = _parse_value(value)
    return raw


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{key}'")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TunewiseError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TunewiseError(f"cannot read config {path}: {e}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TunewiseError(f"{path}: not valid YAML: {e}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TunewiseError(f"{path}: the config must be a mapping of sections (model, lora, data, train)")
    raw = apply_overrides(raw, list(overrides))
    try:
        config = Config.model_validate(raw)
    except ValidationError as e:
        raise TunewiseError(_format_errors(e, str(path))) from None
    return _resolve_paths(config, path.parent)


def _resolve_paths(config: Config, base: Path) -> Config:
    """Data paths in a config are relative to the config file, like every tool users know."""
    data = config.data
    for node, key in ((data, "train"), (data, "val"), (data.replay, "source")):
        value = getattr(node, key, None)
        if value is not None and value != "self" and not Path(value).is_absolute() and not Path(value).exists():
            candidate = base / value
            if candidate.exists():
                setattr(node, key, str(candidate))
    return config


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 1}} -> {"train.lr": 1}: the dotted keys users write as overrides."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
