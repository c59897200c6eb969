"""Crash safety, guards and hostile input: a killed run resumes exactly; bad runs stop early."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from tunewise.config import load_config
from tunewise.errors import TunewiseError
from tunewise.train import loop
from tunewise.train import loss as loss_module
from tunewise.train.guards import SpikeGuard


@pytest.fixture(scope="module")
def slow_tiny_model(tmp_path_factory, chatml_tokenizer, write_tiny_model):
    """Big enough that a run lasts seconds, so a kill lands mid-run."""
    return write_tiny_model(tmp_path_factory.mktemp("slow") / "model", chatml_tokenizer, hidden=256, layers=4)


@pytest.fixture
def write_config(sql_example, write_jsonl):
    """write_config(tmp_path, model_dir, out, **train) -> a config file over fresh SQL data in tmp_path"""

    def write(tmp_path, model_dir, out, **train):
        write_jsonl(tmp_path / "train.jsonl", [sql_example(i, turns=1 + i % 3) for i in range(60)])
        write_jsonl(tmp_path / "val.jsonl", [sql_example(200 + i) for i in range(8)])
        settings_ = {"batch_size": 4, "max_steps": 24, "save_every": 2, "eval_every": 4, "lr": 3e-3,
                     "early_stopping_patience": None, **train}
        config = {"model": {"name": str(model_dir), "dtype": "float32"}, "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
                  "data": {"train": "train.jsonl", "val": "val.jsonl", "max_seq_len": 128}, "train": settings_,
                  "output_dir": str(out)}
        path = tmp_path / f"{out.name}.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    return write


def tunewise(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "tunewise.cli", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_then_resume_gives_the_same_adapter(tmp_path, slow_tiny_model, write_config):
    whole = write_config(tmp_path, slow_tiny_model, tmp_path / "whole")
    killed = write_config(tmp_path, slow_tiny_model, tmp_path / "killed")
    proc = tunewise("train", str(killed), cwd=tmp_path)
    first = tmp_path / "killed" / "checkpoints" / "step-2" / "trainer_state.json"
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = sorted((tmp_path / "killed" / "checkpoints").glob("step-*"))
    assert done and "step-24" not in {p.name for p in done}, "the kill came too late to test anything"

    resumed = tunewise("train", str(killed), "--resume", cwd=tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resumed from" in out
    reference = tunewise("train", str(whole), cwd=tmp_path)
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err
    for sub in ("adapter", "checkpoints/step-24"):
        a = load_file(str(tmp_path / "whole" / sub / "adapter_model.safetensors"))
        b = load_file(str(tmp_path / "killed" / sub / "adapter_model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), sub
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
             if '"train"' in line]
    assert steps == list(range(1, 25))  # one clean history, no duplicated steps


def test_nan_loss_stops_and_keeps_the_last_checkpoint(tmp_path, tiny_model_dir, monkeypatch, write_config):
    cfg = load_config(write_config(tmp_path, tiny_model_dir, tmp_path / "nan"))
    real = loss_module.summed_loss
    calls = {"n": 0}

    def poisoned(model, batch):
        calls["n"] += 1
        loss, n = real(model, batch)
        return (loss * float("nan"), n) if calls["n"] > 5 else (loss, n)

    monkeypatch.setattr(loss_module, "summed_loss", poisoned)
    with pytest.raises(TunewiseError,
                       match=r"loss became nan at step \d+.*last good checkpoint is kept.*lower train\.lr"):
        loop.train(cfg)
    checkpoints = list((tmp_path / "nan" / "checkpoints").glob("step-*"))
    assert checkpoints
    for ckpt in checkpoints:
        weights = load_file(str(ckpt / "adapter_model.safetensors"))
        assert all(torch.isfinite(w).all() for w in weights.values())


def test_loss_spike_is_reported_with_the_guides_advice(tmp_path, tiny_model_dir, monkeypatch, capsys, write_config):
    cfg = load_config(write_config(tmp_path, tiny_model_dir, tmp_path / "spike", max_steps=16, eval_every=100))
    real = loop.accumulate_gradients
    steps = {"n": 0}

    def spiky(*args):
        steps["n"] += 1
        loss, n = real(*args)
        return (loss * 20 if steps["n"] == 14 else loss), n

    monkeypatch.setattr(loop, "accumulate_gradients", spiky)
    loop.train(cfg)
    guards = [json.loads(line) for line in (tmp_path / "spike" / "metrics.jsonl").read_text().splitlines()
              if '"guard"' in line]
    assert [g["step"] for g in guards] == [14]
    assert "lower train.lr" in guards[0]["message"] and "QLoRA" in guards[0]["message"]


def test_spike_guard_detects_oscillation():
    guard = SpikeGuard()
    messages = [guard.update(step, 1.0 if step % 7 else 4.0) for step in range(1, 40)]
    found = [m for m in messages if m]
    assert found[0].startswith("loss spike at step 14") and any("oscillating" in m for m in found)
    steady = SpikeGuard()
    assert not any(steady.update(s, 1.0 + 0.05 * (s % 3)) for s in range(1, 60))
    # small batches: step losses spread widely, and one hard batch at 3x the median is within that
    # spread, not a divergence. Steps 125-145 of the SQL example at batch 2 (val loss kept falling):
    losses = [0.044, 0.039, 0.04, 0.144, 0.113, 0.068, 0.062, 0.061, 0.059, 0.092, 0.096, 0.087, 0.061, 0.091,
              0.041, 0.033, 0.051, 0.074, 0.148, 0.024, 0.2]
    noisy = SpikeGuard()
    assert not any(noisy.update(s, x) for s, x in enumerate(losses, 125))
    assert noisy.update(146, 0.9)  # far outside that spread: a spike


def test_overfitting_is_reported_with_its_start(tmp_path, tiny_model_dir, monkeypatch, write_config):
    """Real training (train loss falls) with a scripted validation curve that bottoms out at step 8:
    the run reports overfitting since step 8 and adapter/ is the step-8 adapter, not the last."""
    cfg = load_config(write_config(tmp_path, tiny_model_dir, tmp_path / "overfit", max_steps=40, eval_every=4,
                                   save_every=4, lr=3e-2, epochs=10))
    curve = iter([2.0, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 2.1, 2.2, 2.3])
    monkeypatch.setattr(loop, "validation_loss", lambda *a, **k: next(curve))
    result = loop.train(cfg)
    assert result.best_step == 8
    events = [json.loads(line) for line in (tmp_path / "overfit" / "metrics.jsonl").read_text().splitlines()]
    train_losses = [e["loss"] for e in events if e["event"] == "train"]
    assert sum(train_losses[-10:]) < sum(train_losses[:10])  # train loss really fell
    guards = [e for e in events if e["event"] == "guard" and "overfitting" in e["message"]]
    assert len(guards) == 1 and "since step 8" in guards[0]["message"]
    best = load_file(str(tmp_path / "overfit" / "adapter" / "adapter_model.safetensors"))
    step8 = load_file(str(tmp_path / "overfit" / "checkpoints" / "step-8" / "adapter_model.safetensors"))
    last = load_file(str(tmp_path / "overfit" / "checkpoints" / "step-40" / "adapter_model.safetensors"))
    assert all(torch.equal(best[k], step8[k]) for k in best)
    assert any(not torch.equal(best[k], last[k]) for k in best)


def test_unwritable_output_dir_is_one_clear_error(tmp_path, tiny_model_dir, write_config):
    (tmp_path / "a-file").write_text("x")
    cfg = load_config(write_config(tmp_path, tiny_model_dir, tmp_path / "a-file" / "run"))
    with pytest.raises(TunewiseError, match="cannot write to output_dir"):
        loop.train(cfg)


def test_full_disk_keeps_earlier_checkpoints(tmp_path, tiny_model_dir, monkeypatch, write_config):
    import errno

    cfg = load_config(write_config(tmp_path, tiny_model_dir, tmp_path / "full", max_steps=8))
    original = loop.ckpt.torch.save

    def disk_full_after_step_4(obj, path, *a, **k):
        if "step-6" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(obj, path, *a, **k)

    monkeypatch.setattr(loop.ckpt.torch, "save", disk_full_after_step_4)
    with pytest.raises(TunewiseError, match="No space left on device.*earlier checkpoints are kept"):
        loop.train(cfg)
    names = sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir())
    assert names == ["step-2", "step-4"]  # no half-written step-6, nothing earlier lost


def test_adapter_without_safetensors_is_refused(tmp_path):
    from tunewise.evaluate.compare import load_run_config

    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "config.yaml").write_text("data: {train: t.jsonl}\n")
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "adapter" / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(TunewiseError, match="safetensors only"):
        load_run_config(run)


def test_model_dir_without_weights_and_pickle_only(tmp_path):
    from tunewise.model.load import resolve_model

    (tmp_path / "m").mkdir()
    with pytest.raises(TunewiseError, match="no config.json"):
        resolve_model(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(TunewiseError, match="safetensors"):
        resolve_model(str(tmp_path / "m"))


yaml_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(
                               st.sampled_from(["model", "lora", "data", "train", "name", "r", "lr", "train.lr",
                                                "epochs", "output_dir", "quantization", "x"]), c, max_size=4),
                           max_leaves=10)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=yaml_values | st.text(max_size=60), overrides=st.lists(st.text(max_size=20), max_size=3))
def test_fuzz_config_raises_only_its_own_errors(tmp_path, doc, overrides):
    path = tmp_path / "fuzz.yaml"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    try:
        load_config(path, overrides)
    except TunewiseError:
        pass


def test_written_files_get_the_usual_permissions(tmp_path):
    """Atomic writes go through mkstemp/mkdtemp (0600/0700); what lands must be readable like any file
    the user writes, or a model server running as another user (ollama) cannot read the export."""
    from tunewise.files import atomic_dir, write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.json", "{}")
        atomic_dir(tmp_path / "merged", lambda d: (d / "config.json").write_text("{}"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "merged").stat().st_mode & 0o777 == 0o755
