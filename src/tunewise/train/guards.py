"""Guards that stop or warn a run going wrong: NaN/inf loss, loss spikes and oscillation, overfitting.

The messages say what the guide says to do: lower the learning rate (QLoRA is more sensitive to
it than LoRA), and use the checkpoint from before validation loss started rising.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field

from ..errors import TunewiseError

WINDOW = 20  # recent steps the spike test compares with
SPIKE = 2.5  # a step loss this many times the recent median is a spike...
NOISE = 10  # ...and this many median absolute deviations above it: with a few sequences a step, one hard
# batch lands at 3x the median while validation keeps falling (SQL example, batch 2: 3.2x, 6.2 MADs);
# a step that diverges lands far outside the recent spread (tens of MADs)
OSCILLATION_SPIKES = 3  # this many spikes within OSCILLATION_STEPS steps is oscillation
OSCILLATION_STEPS = 50
LR_ADVICE = ("lower train.lr (the guide: from 2e-4 to 1e-4 or 5e-5; QLoRA is more sensitive to the "
             "learning rate than LoRA)")


def check_finite(loss: float, step: int) -> None:
    if not math.isfinite(loss):
        raise TunewiseError(f"training loss became {loss} at step {step}; the run is stopped and the last good "
                            f"checkpoint is kept. Resume with --resume after you {LR_ADVICE}.")


@dataclass
class SpikeGuard:
    recent: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    spikes: list = field(default_factory=list)
    warned_oscillation: bool = False

    def update(self, step: int, loss: float) -> str | None:
        """Record a step's loss; return a warning message on a spike or oscillation."""
        message = None
        if len(self.recent) >= WINDOW // 2:
            median = statistics.median(self.recent)
            spread = statistics.median(abs(x - median) for x in self.recent)
            if loss > SPIKE * median and loss - median > max(0.1, NOISE * spread):
                self.spikes = [s for s in self.spikes if s > step - OSCILLATION_STEPS] + [step]
                message = f"loss spike at step {step}: {loss:.3f} against a recent median of {median:.3f}; {LR_ADVICE}"
                if len(self.spikes) >= OSCILLATION_SPIKES and not self.warned_oscillation:
                    self.warned_oscillation = True
                    message = (f"loss is oscillating: {len(self.spikes)} spikes in the last {OSCILLATION_STEPS} steps "
                               f"(latest at step {step}); {LR_ADVICE}")
        self.recent.append(loss)
        return message


@dataclass
class OverfitWatch:
    """Val loss rising (beyond noise) while train loss falls: report once, with the step it started."""
    reported: bool = False

    def update(self, train_events: list[dict], eval_events: list[dict]) -> str | None:
        start = overfit_start(train_events, eval_events)
        if start is None or self.reported:
            return None
        self.reported = True
        return (f"overfitting: validation loss has risen since step {start} while training loss keeps falling; "
                f"adapter/ keeps the best checkpoint (step {start}). Fewer epochs or a lower rank help.")


RISE = 0.01  # val loss must rise by more than 1% over the best to count as overfitting, not noise
SUSTAIN = 2  # ...at this many evaluations in a row: one bump on a small val set is noise (it often recovers)


def overfit_start(train: list[dict], evals: list[dict]) -> int | None:
    """The best step, when SUSTAIN evaluations in a row after it had val loss above the best (by more
    than RISE) while train loss kept falling."""
    if len(evals) < SUSTAIN + 1:
        return None
    best = min(evals, key=lambda e: e["val_loss"])

    def train_near(step: int) -> float:
        window = [e["loss"] for e in train if step - 10 < e["step"] <= step] or [float("nan")]
        return sum(window) / len(window)

    above = 0
    for e in (e for e in evals if e["step"] > best["step"]):
        above = above + 1 if e["val_loss"] > best["val_loss"] * (1 + RISE) else 0
        if above >= SUSTAIN and train_near(e["step"]) < train_near(best["step"]):
            return best["step"]
    return None
