"""Everything before the first step: data encoded and checked, model with adapters."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from ..data.batching import AUTO_TOKEN_BUDGET
from ..data.doctor import check
from ..data.formats import spec_of
from ..data.load import load_examples
from ..data.masking import Encoded, EncodeStats, encode_all
from ..data.split import split_examples
from ..data.targets import TargetOptions, target_options
from ..data.template import require_template
from ..errors import TunewiseError
from ..model.lora import base_model
from ..plan import GIB, micro_batch_tokens, shape_from_config
from .memory import available_bytes, device_type

DEFAULT_VAL_FRACTION = 0.1  # the guide: a 10-20% validation split


@dataclass
class Datasets:
    train: list[Encoded]
    val: list[Encoded]
    train_stats: EncodeStats
    val_stats: EncodeStats
    notes: list[str]


def doctor_gate(config: Config, tokenizer, options: TargetOptions) -> list[str]:
    """The data doctor's checks at the start of training: errors refuse the run, warnings are shown."""
    data = config.data
    report = check(data.train, data.val, tokenizer, data.max_seq_len, data.allow_small, options, spec_of(data))
    errors = [f"{f.where()}{f.message}" for f in report.findings if f.level == "error"]
    if errors:
        shown = "\n  ".join(errors[:10])
        more = f"\n  ... {report.errors - 10} more" if report.errors > 10 else ""
        raise TunewiseError(f"the data check found {report.errors} errors:\n  {shown}{more}\n"
                            f"run `tunewise data check {data.train}{spec_of(data).cli_flags()} --model "
                            f"{config.model.name}` for the full report")
    warnings = [f for f in report.findings if f.level == "warning" and f.code != "truncated"]
    notes = [f["described"] for f in report.stats.get("format", {}).values()]
    notes += [f"warning: {f.where()}{f.message}" for f in warnings[:5]]
    if report.warnings > min(len(warnings), 5):
        notes.append(f"({report.warnings} data warnings in all; `tunewise data check` lists them)")
    return notes


def prepare_data(config: Config, tokenizer, source: str | None = None) -> Datasets:
    require_template(tokenizer, config.model.name)
    data = config.data
    options = target_options(tokenizer, source, data.fold_system_prompt, data.end_of_turn)
    notes = doctor_gate(config, tokenizer, options)
    spec = spec_of(data)
    train = load_examples(data.train, spec)
    if data.val:
        val = load_examples(data.val, spec)
    else:
        fraction = data.val_fraction or DEFAULT_VAL_FRACTION
        if data.val_fraction is None:
            notes.append(f"no data.val given: holding out {fraction:.0%} of {data.train} for validation")
        train, val = split_examples(train, fraction, config.train.seed)
    train_enc, train_stats = encode_all(tokenizer, train, data.max_seq_len, data.train, options)
    val_enc, val_stats = encode_all(tokenizer, val, data.max_seq_len, data.val or f"{data.train} (val split)", options)
    return Datasets(train_enc, val_enc, train_stats, val_stats, notes)


def micro_batch_budget(config: Config, model, data: Datasets, device) -> tuple[int, str | None]:
    """Tokens per micro-batch for micro_batch_size=auto, from the memory free after loading the
    model (plan.micro_batch_tokens), and a warning when one sequence may not fit."""
    if config.train.micro_batch_size != "auto":
        return AUTO_TOKEN_BUDGET, None  # unused: micro-batches have a fixed size
    free = available_bytes(device)
    try:
        shape = shape_from_config(base_model(model).config.to_dict())
    except TunewiseError:  # not a Llama-shaped config: keep the fixed budget
        shape = None
    if free is None or shape is None:
        return AUTO_TOKEN_BUDGET, None
    longest = max(len(x.input_ids) for x in data.train)
    stats = data.train_stats
    tokens, fits = micro_batch_tokens(
        shape, "qlora" if config.model.quantization == "nf4" else "lora", longest, free,
        device_type(device) == "cuda", stats.trained_tokens / max(stats.total_tokens, 1),
        config.lora.dropout > 0, config.train.gradient_checkpointing)
    if fits:
        return tokens, None
    return tokens, (f"the longest training sequence ({longest} tokens) may not fit in the {free / GIB:.1f} GiB "
                    "of memory left after loading the model: set train.gradient_checkpointing=true "
                    "or lower data.max_seq_len" + ("" if config.model.quantization == "nf4" else
                                                   ", or use model.quantization=nf4"))
