import pytest
import yaml

from tunewise.config import Config, dump_config, flatten, load_config
from tunewise.errors import TunewiseError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_follow_the_guide(tmp_path):
    cfg = load_config(write(tmp_path, "data: {train: t.jsonl}\n"))
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (16, 32, 0.05)
    assert cfg.lora.target_modules == "all-linear"
    assert (cfg.train.lr, cfg.train.scheduler, cfg.train.warmup_ratio) == (2e-4, "cosine", 0.03)
    assert cfg.train.batch_size == 8 and cfg.model.quantization == "none"


@pytest.mark.parametrize("text,key", [
    ("data: {train: t.jsonl}\nlora: {rank: 8}\n", "lora.rank"),
    ("data: {train: t.jsonl}\ntrainer: {}\n", "trainer"),
    ("data: {train: t.jsonl, shuffle: true}\n", "data.shuffle"),
])
def test_unknown_keys_are_rejected_by_name(tmp_path, text, key):
    with pytest.raises(TunewiseError, match=f"unknown key '{key}'"):
        load_config(write(tmp_path, text))


def test_ill_typed_value_names_the_key(tmp_path):
    with pytest.raises(TunewiseError, match=r"train\.lr"):
        load_config(write(tmp_path, "data: {train: t.jsonl}\ntrain: {lr: fast}\n"))
    with pytest.raises(TunewiseError, match=r"model\.quantization"):
        load_config(write(tmp_path, "data: {train: t.jsonl}\nmodel: {quantization: int3}\n"))


def test_dotted_overrides(tmp_path):
    path = write(tmp_path, "data: {train: t.jsonl}\n")
    cfg = load_config(path, ["train.max_steps=5", "lora.r=8", "lora.target_modules=[q_proj, v_proj]",
                             "model.quantization=nf4"])
    assert cfg.train.max_steps == 5 and cfg.lora.r == 8
    assert cfg.lora.target_modules == ["q_proj", "v_proj"] and cfg.model.quantization == "nf4"
    with pytest.raises(TunewiseError, match="unknown key 'train.max_step'"):
        load_config(path, ["train.max_step=5"])
    with pytest.raises(TunewiseError, match="key.sub=value"):
        load_config(path, ["train.max_steps"])


def test_micro_batch_cannot_exceed_batch(tmp_path):
    with pytest.raises(TunewiseError, match="micro_batch_size"):
        load_config(write(tmp_path, "data: {train: t.jsonl}\ntrain: {batch_size: 4, micro_batch_size: 8}\n"))


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(TunewiseError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(TunewiseError, match="not valid YAML"):
        load_config(write(tmp_path, "data: [unclosed\n"))
    with pytest.raises(TunewiseError, match="data"):
        load_config(write(tmp_path, "train: {epochs: 1}\n"))


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, "data: {train: t.jsonl}\n"), ["train.epochs=1"])
    again = Config.model_validate(yaml.safe_load(dump_config(cfg)))
    assert again == cfg


def test_readme_config_block_is_the_config_models_defaults():
    """The README shows every key with its default; this keeps it from drifting from config.py."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("A config (every key shown with its default")[1].split("```yaml\n", 1)[1].split("```")[0]
    shown = flatten(yaml.safe_load(block))
    defaults = flatten(Config.model_validate({"data": {"train": "t.jsonl"}}).model_dump(mode="json"))
    examples = {"data.train", "data.val"}  # shown as examples, not defaults
    # every key but val_fraction (the alternative to data.val, named in its comment)
    assert set(shown) == set(defaults) - {"data.val_fraction"}
    for key, value in defaults.items():
        if key in shown and key not in examples:
            assert shown[key] == value, f"README says {key}: {shown[key]!r}, config.py {value!r}"
