"""train.report_to: the trackers teams already watch (TensorBoard, W&B, MLflow, trackio), fed through
accelerate's tracker API with the numbers metrics.jsonl logs and the resolved config.

Where each writes, with no network needed: TensorBoard event files in output_dir/tensorboard/;
MLflow in $MLFLOW_TRACKING_URI when set, else a file store in output_dir/mlruns (with
MLFLOW_ALLOW_FILE_STORE=true, which MLflow 3 asks for); W&B in
output_dir/wandb, offline with WANDB_MODE=offline (`wandb sync` later); trackio in its local
store. accelerate drops a tracker whose package is missing with only a debug log, so tunewise
checks first and refuses the run with the command that installs it.
"""

from __future__ import annotations

import json
import os

from accelerate import Accelerator
from accelerate.utils import (
    ProjectConfiguration,
    is_mlflow_available,
    is_tensorboard_available,
    is_trackio_available,
    is_wandb_available,
)

from ..config import Config, flatten
from ..errors import TunewiseError
from ..rundir import RunDir

PROJECT = "tunewise"  # W&B and trackio project, MLflow experiment
INSTALLED = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "mlflow": is_mlflow_available,
             "trackio": is_trackio_available}
PIP = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow-skinny", "trackio": "trackio"}
# metrics.jsonl keys that are not measurements
NOT_LOGGED = {"event", "step", "time", "best", "skipped", "message"}


def check_installed(report_to: list[str]) -> None:
    """Refuse, before anything is loaded, a tracker whose package is not installed."""
    missing = [name for name in report_to if not INSTALLED[name]()]
    if missing:
        names = " ".join(PIP[name] for name in missing)
        raise TunewiseError(f"train.report_to: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not "
                            f"installed; install with `pip install {names}` (or `pip install 'tunewise[trackers]'` "
                            "for all four), or remove it from train.report_to")


def accelerator_options(config: Config, run: RunDir) -> dict:
    """Accelerator(...) arguments for train.report_to (none when it is empty)."""
    if not config.train.report_to:
        return {}
    where = ProjectConfiguration(project_dir=str(run.path), logging_dir=str(run.path / "tensorboard"))
    return {"log_with": list(config.train.report_to), "project_config": where}


def start(accelerator: Accelerator, config: Config, run: RunDir) -> None:
    """Open each tracker's run (on rank 0) and store the resolved config in it."""
    if not config.train.report_to:
        return
    if "mlflow" in config.train.report_to and not os.environ.get("MLFLOW_TRACKING_URI"):
        import mlflow  # only here: the package is optional

        # MLflow 3 keeps its file store in maintenance mode and refuses it unless asked; a file store
        # in the run directory needs no server and no database driver, so tunewise asks.
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        mlflow.set_tracking_uri((run.path / "mlruns").resolve().as_uri())
    name = run.path.resolve().name
    try:
        accelerator.init_trackers(PROJECT, config=hyperparameters(config), init_kwargs={
            "wandb": {"name": name, "dir": str(run.path)}, "mlflow": {"run_name": name}, "trackio": {"name": name}})
    except Exception as e:  # a server out of reach, a login missing: each tracker raises its own kind
        raise TunewiseError(f"train.report_to {config.train.report_to}: a tracker could not start: "
                            f"{type(e).__name__}: {e}") from None


def hyperparameters(config: Config) -> dict:
    """The resolved config as dotted keys of scalars (lists as JSON text: TensorBoard takes no lists)."""
    flat = flatten(config.model_dump(mode="json"))
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in flat.items()}


def values(event: dict) -> dict:
    """A metrics.jsonl event's numbers under the event's name: train/loss, train/lr, eval/val_loss, ..."""
    kind = event.get("event")
    if kind not in ("train", "eval"):
        return {}  # guard warnings are text: they stay in metrics.jsonl and on the console
    return {f"{kind}/{k}": v for k, v in event.items()
            if k not in NOT_LOGGED and isinstance(v, (int, float)) and not isinstance(v, bool)}


def finish(accelerator: Accelerator) -> None:
    """Close every tracker's run (flushes TensorBoard, ends the MLflow run); safe to call twice."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers.clear()
