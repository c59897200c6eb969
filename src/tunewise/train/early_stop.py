"""Early stopping on validation loss, and the best-so-far bookkeeping that picks `adapter/`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EarlyStopping:
    patience: int | None
    best_loss: float = float("inf")
    best_step: int = -1
    bad_evals: int = 0

    def update(self, step: int, val_loss: float) -> bool:
        """Record an evaluation; return True when it is a new best."""
        if val_loss < self.best_loss:
            self.best_loss, self.best_step, self.bad_evals = val_loss, step, 0
            return True
        self.bad_evals += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_evals >= self.patience

    def state(self) -> dict:
        return {"best_loss": self.best_loss, "best_step": self.best_step, "bad_evals": self.bad_evals}

    def load(self, state: dict) -> None:
        self.best_loss, self.best_step, self.bad_evals = state["best_loss"], state["best_step"], state["bad_evals"]
