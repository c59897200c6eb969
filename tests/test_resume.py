"""`train --resume` with changed settings: each key refused with its values named, or applied and
said as it takes effect (train/resume.py). A tiny random Llama trains 2 steps; copies resume it."""

import json
import re
import shutil

import pytest
from rich.console import Console
from safetensors.torch import load_file

from tunewise.config import Config, flatten
from tunewise.errors import TunewiseError
from tunewise.train import loop
from tunewise.train.resume import APPLIED, REFUSED, key_class


def _config(model_dir, data, out, lora=None, **train) -> Config:
    settings = {"epochs": 1, "batch_size": 4, "eval_every": 2, "save_every": 2, "max_steps": 2, "lr": 1e-3,
                "warmup_ratio": 0.25, "early_stopping_patience": None, **train}
    return Config.model_validate({
        "model": {"name": str(model_dir), "dtype": "float32"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, **(lora or {})},
        "data": {"train": str(data[0]), "val": str(data[1]), "max_seq_len": 256, "allow_small": True},
        "train": settings, "output_dir": str(out),
    })


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, tiny_model_dir, write_jsonl, sql_example):
    """A run trained for 2 steps (checkpoint at step 2), and its data; tests resume copies of it."""
    root = tmp_path_factory.mktemp("resume")
    data = (write_jsonl(root / "train.jsonl", [sql_example(i, turns=1 + i % 2) for i in range(24)]),
            write_jsonl(root / "val.jsonl", [sql_example(100 + i) for i in range(6)]))
    loop.train(_config(tiny_model_dir, data, root / "run"))
    return root, data


def _resume_copy(stopped_run, tiny_model_dir, name, lora=None, data=None, **train) -> tuple[str, list[dict]]:
    root, original = stopped_run
    data = data or original
    shutil.copytree(root / "run", root / name)
    console = Console(record=True, width=10_000)  # one line per message: the asserts read whole lines
    loop.train(_config(tiny_model_dir, data, root / name, lora, **train), resume=True, console=console)
    events = [json.loads(x) for x in (root / name / "metrics.jsonl").read_text().splitlines()]
    return console.export_text(), [e for e in events if e["event"] == "train"]


def test_a_new_lr_on_resume_is_the_lr_the_next_steps_train_at(stopped_run, tiny_model_dir):
    """The checkpoint's optimizer and scheduler state used to bring the old lr back while a note
    claimed the new one: both copies trained alike."""
    same_text, same = _resume_copy(stopped_run, tiny_model_dir, "same-lr", max_steps=4)
    text, changed = _resume_copy(stopped_run, tiny_model_dir, "new-lr", max_steps=4, lr=0.05)
    assert "train.lr: 0.001 -> 0.05" in text and "train.max_steps: 2 -> 4" in text
    printed = float(re.search(r"step 3 trains at lr (\S+)", text).group(1))
    step3 = next(e for e in changed if e["step"] == 3)
    assert step3["lr"] == pytest.approx(printed, rel=1e-5)  # what was said is what metrics.jsonl records
    same3 = next(e for e in same if e["step"] == 3)["lr"]
    assert same3 > 0  # the schedule stretched to 4 steps (the checkpoint's own had reached 0 at its end)
    assert step3["lr"] == pytest.approx(50 * same3, rel=1e-9)
    assert next(e for e in same if e["step"] == 3)["lr"] == pytest.approx(
        float(re.search(r"step 3 trains at lr (\S+)", same_text).group(1)), rel=1e-5)
    # and the optimizer used it: step 3's update differs, so step 4's loss does
    assert next(e for e in changed if e["step"] == 4)["loss"] != next(e for e in same if e["step"] == 4)["loss"]


def test_a_new_weight_decay_on_resume_is_applied(stopped_run, tiny_model_dir):
    """optimizer.load_state_dict restored the checkpoint's weight decay; now the config's is used."""
    root, _ = stopped_run
    text, _ = _resume_copy(stopped_run, tiny_model_dir, "wd0", max_steps=3)
    text_wd, _ = _resume_copy(stopped_run, tiny_model_dir, "wd", max_steps=3, weight_decay=0.5)
    assert "train.weight_decay: 0.0 -> 0.5" in text_wd and "weight_decay" not in text
    a = load_file(str(root / "wd0" / "checkpoints" / "step-3" / "adapter_model.safetensors"))
    b = load_file(str(root / "wd" / "checkpoints" / "step-3" / "adapter_model.safetensors"))
    assert any(not a[k].equal(b[k]) for k in a)


@pytest.mark.parametrize(("lora", "train", "key", "was", "now"), [
    ({"alpha": 16}, {}, "lora.alpha", "8.0", "16.0"),  # applied mid-run before, though train --from refuses it
    ({"r": 8}, {}, "lora.r", "4", "8"),
    ({}, {"batch_size": 2}, "train.batch_size", "4", "2"),
    ({}, {"seed": 1}, "train.seed", "0", "1"),
])
def test_a_setting_the_checkpoint_depends_on_is_refused_naming_both_values(
        stopped_run, tiny_model_dir, monkeypatch, lora, train, key, was, now):
    root, data = stopped_run
    loaded = []
    monkeypatch.setattr("tunewise.train.session.load_model", lambda *a, **k: loaded.append(a))
    config = _config(tiny_model_dir, data, root / "run", lora, **{"max_steps": 4, **train})
    with pytest.raises(TunewiseError) as refused:
        loop.train(config, resume=True)
    message = str(refused.value)
    assert f"{key} was {was} in " in message and f"is {now} now" in message
    assert f"Set {key}={was} back" in message and "--from" in message  # what to do instead
    assert loaded == []  # refused before any weight was read


def test_every_config_key_is_decided_for_resume():
    """A new setting must be put in REFUSED or APPLIED, or resuming with it changed is refused."""
    config = Config.model_validate({"data": {"train": "t.jsonl", "replay": {}, "columns": {"messages": "conversation"},
                                             "roles": {"human": "user"}}})
    keys = {key_class(k) for k in flatten(config.model_dump(mode="json"))}
    assert keys == set(REFUSED) | set(APPLIED)
    assert not set(REFUSED) & set(APPLIED)


def test_data_is_compared_by_content_not_by_path(stopped_run, tiny_model_dir, tmp_path, monkeypatch):
    """A data file edited in place used to resume silently into another order; a moved one is the same data."""
    root, (train, val) = stopped_run
    moved = tmp_path / "elsewhere.jsonl"
    shutil.copy(train, moved)
    text, _ = _resume_copy(stopped_run, tiny_model_dir, "moved", data=(moved, val), max_steps=3)
    assert f"data.train: '{train}' -> '{moved}' (the same content)" in text
    edited = tmp_path / "edited.jsonl"
    edited.write_text(train.read_text().replace("id above", "id over", 1))
    shutil.copy(edited, moved)  # the same path as the moved run's config.yaml now names, other content
    monkeypatch.setattr("tunewise.train.session.load_model", lambda *a, **k: pytest.fail("loaded a model"))
    with pytest.raises(TunewiseError, match=r"data.train .*elsewhere.jsonl is not the data the run started with "
                                            r"\(sha256 \w{12}\.\.\. in .*manifest.json, \w{12}\.\.\. now\)"):
        loop.train(_config(tiny_model_dir, (moved, val), root / "moved", max_steps=4), resume=True)
