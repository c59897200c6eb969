"""train.report_to: TensorBoard and MLflow, offline, get exactly metrics.jsonl's numbers and the config;
a tracker that is not installed is refused before anything is loaded."""

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tunewise.config import Config
from tunewise.errors import TunewiseError
from tunewise.train import loop, trackers


def run_config(model_dir, data, out, report_to=None) -> Config:
    tracked = {} if report_to is None else {"report_to": report_to}
    return Config.model_validate({
        "model": {"name": str(model_dir), "dtype": "float32"}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "data": {"train": str(data[0]), "val": str(data[1]), "max_seq_len": 256, "allow_small": True},
        "train": {"epochs": 1, "batch_size": 4, "eval_every": 2, "save_every": 2, "max_steps": 3, "lr": 5e-3,
                  "early_stopping_patience": None, **tracked},
        "output_dir": str(out)})


def expected(run) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as (step, value) series under the trackers' names: train/loss, eval/val_loss, ..."""
    series = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        event = json.loads(line)
        for key, value in trackers.values(event).items():
            series.setdefault(key, []).append((event["step"], value))
    return series


def test_tensorboard_events_hold_metrics_jsonl(tiny_model_dir, sql_data, tmp_path):
    run = tmp_path / "run"
    loop.train(run_config(tiny_model_dir, sql_data, run, ["tensorboard"]), device="cpu")
    want = expected(run)
    assert {"train/loss", "train/lr", "train/tokens_per_s", "train/peak_mem_mib", "eval/val_loss"} <= want.keys()
    assert [s for s, _ in want["eval/val_loss"]] == [2, 3]
    logdir = run / "tensorboard" / trackers.PROJECT  # the config's hparams go to a sub-run below it
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    assert set(events.Tags()["scalars"]) == want.keys()
    for key, points in want.items():
        got = [(e.step, e.value) for e in events.Scalars(key)]
        assert got == [(step, float(np.float32(value))) for step, value in points], key  # stored as float32


def test_mlflow_file_store_holds_metrics_jsonl_and_the_config(tiny_model_dir, sql_data, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "run"
    loop.train(run_config(tiny_model_dir, sql_data, run, ["mlflow"]), device="cpu")
    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == trackers.PROJECT]
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    assert mlflow_run.info.run_name == "run" and mlflow_run.info.status == "FINISHED"
    want = expected(run)
    assert set(mlflow_run.data.metrics) == set(want)
    for key, points in want.items():
        got = sorted((m.step, m.value) for m in client.get_metric_history(mlflow_run.info.run_id, key))
        assert got == points, key
    params = mlflow_run.data.params
    assert params["train.lr"] == "0.005" and params["lora.r"] == "4" and params["train.report_to"] == '["mlflow"]'


@pytest.mark.parametrize("name, package", [("wandb", "wandb"), ("trackio", "trackio"), ("mlflow", "mlflow-skinny")])
def test_a_tracker_not_installed_is_refused_before_anything_loads(tiny_model_dir, sql_data, tmp_path, monkeypatch,
                                                                  name, package):
    monkeypatch.setitem(trackers.INSTALLED, name, lambda: False)
    with pytest.raises(TunewiseError, match=rf"train\.report_to: {name} is not installed; install with `pip install "
                                            rf"{package}`"):
        loop.train(run_config(tiny_model_dir, sql_data, tmp_path / "run", ["tensorboard", name]), device="cpu")
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


def test_by_default_there_are_no_tracker_files(tiny_model_dir, sql_data, tmp_path):
    run = tmp_path / "run"
    loop.train(run_config(tiny_model_dir, sql_data, run), device="cpu")
    assert not (run / "tensorboard").exists() and not (run / "mlruns").exists()
