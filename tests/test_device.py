"""The device rule every command follows, the dtype it runs in, and warnings a user sees."""

import json
import warnings

import pytest
import torch

from tunewise import device as dev
from tunewise.errors import TunewiseError


def test_auto_takes_the_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dev.pick_device("auto") == torch.device("cpu")
    with pytest.raises(TunewiseError, match="--device cuda: no CUDA device"):
        dev.pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert dev.pick_device("auto") == torch.device("cuda", 1) == dev.pick_device("cuda")
    assert dev.pick_device("cpu") == torch.device("cpu")  # asked for: the CPU even with a GPU
    with pytest.raises(TunewiseError, match="--device 'gpu'"):
        dev.pick_device("gpu")


def test_gpu_without_bf16_runs_fp16_with_a_scaler(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    dtype, note = dev.compute_dtype("bfloat16", torch.device("cuda", 0))
    assert dtype == "float16" and "Tesla T4 has no bfloat16" in note and dev.needs_grad_scaler(dtype)
    assert dev.compute_dtype("float32", torch.device("cuda", 0)) == ("float32", None)
    assert dev.compute_dtype("bfloat16", torch.device("cpu")) == ("bfloat16", None)


def test_fp16_training_uses_a_gradient_scaler_and_the_manifest_says_so(tiny_model_dir, sql_data, tmp_path):
    """A real fp16 run on the CPU: the scaled path trains, and what ran is recorded."""
    from tunewise.config import Config
    from tunewise.train import loop

    cfg = Config.model_validate({
        "model": {"name": str(tiny_model_dir), "dtype": "float16"}, "lora": {"r": 4, "alpha": 8},
        "data": {"train": str(sql_data[0]), "val": str(sql_data[1]), "max_seq_len": 256, "allow_small": True},
        "train": {"batch_size": 4, "max_steps": 3, "eval_every": 3, "save_every": 3, "lr": 5e-3},
        "output_dir": str(tmp_path / "fp16")})
    result = loop.train(cfg, device="cpu")
    manifest = json.loads((tmp_path / "fp16" / "manifest.json").read_text())
    assert (manifest["device"], manifest["dtype"], manifest["grad_scaler"]) == ("cpu", "float16", True)
    state = torch.load(tmp_path / "fp16" / "checkpoints" / "step-3" / "training_state.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0  # saved with the checkpoint, so a resume continues its scale
    events = [json.loads(x) for x in (tmp_path / "fp16" / "metrics.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["event"] == "train"]
    assert result.steps == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_library_warnings_are_shown_except_the_named_noise():
    from tunewise.cli import NOISE, _quiet_libraries

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        _quiet_libraries()
        for category, message in NOISE:
            warnings.warn(message.replace("\\", ""), category, stacklevel=1)
        shown = "sdpa is not supported for this model; falling back to eager attention"
        warnings.warn(shown, UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == [shown]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run on the device machine when lent)")
def test_cuda_resume_gives_the_same_adapter(tiny_model_dir, sql_data, tmp_path, monkeypatch):
    """Dropout masks are drawn on the GPU: the CUDA generators are checkpointed and restored."""
    from safetensors.torch import load_file

    from tunewise.config import Config
    from tunewise.train import loop

    def config(out):
        return Config.model_validate({
            "model": {"name": str(tiny_model_dir), "dtype": "float32"}, "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
            "data": {"train": str(sql_data[0]), "val": str(sql_data[1]), "max_seq_len": 256, "allow_small": True},
            "train": {"batch_size": 4, "max_steps": 6, "eval_every": 2, "save_every": 2, "lr": 5e-3,
                      "early_stopping_patience": None},
            "output_dir": str(out)})

    loop.train(config(tmp_path / "a"), device="cuda")
    real_save = loop.ckpt.save_checkpoint

    def save_then_die(run, step, *args, **kwargs):
        path = real_save(run, step, *args, **kwargs)
        if step == 4:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(loop.ckpt, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        loop.train(config(tmp_path / "b"), device="cuda")
    monkeypatch.setattr(loop.ckpt, "save_checkpoint", real_save)
    loop.train(config(tmp_path / "b"), resume=True, device="cuda")
    a = load_file(str(tmp_path / "a" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_overflowed_fp16_step_is_skipped_and_said(tiny_model_dir, sql_data, tmp_path, monkeypatch):
    """A huge initial scale makes the first fp16 gradients overflow: no update, no schedule step,
    grad_norm null (not Infinity) and the event says why; the lowered scale then trains."""
    from tunewise.config import Config
    from tunewise.train import loop, session

    real = torch.amp.GradScaler
    monkeypatch.setattr(session.torch.amp, "GradScaler", lambda device: real(device, init_scale=2.0**120))
    cfg = Config.model_validate({
        "model": {"name": str(tiny_model_dir), "dtype": "float16"}, "lora": {"r": 4, "alpha": 8},
        "data": {"train": str(sql_data[0]), "val": str(sql_data[1]), "max_seq_len": 256, "allow_small": True},
        "train": {"batch_size": 4, "max_steps": 2, "eval_every": 2, "save_every": 2, "scheduler": "constant",
                  "warmup_ratio": 0.5}, "output_dir": str(tmp_path / "skip")})
    loop.train(cfg, device="cpu")
    events = [json.loads(x) for x in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    first = next(e for e in events if e["event"] == "train")
    assert "overflowed" in first["skipped"] and first["grad_norm"] is None
    # an event's lr is the lr its update used: step 1's warmup lr is 0, and step 2's is 0 too only
    # because the schedule did not advance for a step that made no update (else it would be train.lr)
    second = [e for e in events if e["event"] == "train"][1]
    assert first["lr"] == 0.0 and second["lr"] == 0.0
