"""The learning-rate range test: one short run whose learning rate grows exponentially each step, the training
loss smoothed, and a suggestion read off the curve. A cheap first look at where the study's range should lie:
the loss falls once the rate is large enough to learn and blows up once it is too large.

The suggestion is the rate two thirds of the way along the longest run of steps over which the smoothed loss
keeps falling (after fastai's `valley`); the loss minimum and the steepest descent are reported too. The rule
was chosen on measured best rates of three tasks (benchmarks/lr_find_calibration.py, benchmarks/RESULTS.md:
within 2.0x of the best rate on each, where the steepest descent was off by 3.6x and, on a curve flat at its
start, by orders of magnitude). The run is a trial of the given parameters (`Runner.range_test`: the base model,
the rows with replay, the optimizer, the KL to the base) with only the learning-rate schedule replaced.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from hpo_action.errors import TrialError

if TYPE_CHECKING:
    import torch

    from hpo_action.train.runner import Runner

SMOOTHING = 0.1  # exponential moving average of the loss, debiased as in Adam
DIVERGENCE = 4.0  # stop once the smoothed loss exceeds this many times its minimum
VALLEY = 2 / 3  # the suggestion's place along the longest descent: calibrated in benchmarks/lr_find_calibration.py
RULE = "two thirds along the longest descent of the smoothed loss"


@dataclass(frozen=True)
class LrRamp:
    """The range test's schedule: the rate grows log-linearly from `start` (the first step) to `end` (the last)."""

    start: float
    end: float
    steps: int

    @property
    def growth(self) -> float:
        return (self.end / self.start) ** (1 / max(self.steps - 1, 1))

    def rate(self, step: int) -> float:
        """The learning rate of optimizer step `step` (1-based, as the trainer counts them)."""
        return self.start * self.growth ** (step - 1)

    def scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        """Multiplies every parameter group's rate alike, so groups keep their ratios (LoRA+, layer-wise decay)."""
        import torch

        growth = self.growth
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: growth**step)

    def stop(self, losses: list[float]) -> bool:
        """Diverged: the smoothed loss went above DIVERGENCE times its minimum."""
        smoothed = smooth(losses)
        return smoothed[-1] > DIVERGENCE * min(smoothed)


@dataclass
class LrFindResult:
    """The range test's curve and what it suggests."""

    learning_rates: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float  # two thirds along the longest descent of the smoothed loss (RULE)
    minimum: float  # the learning rate at the smoothed loss's minimum
    steepest: float  # where the smoothed loss falls fastest per decade, before its minimum
    steps: int
    seconds: float
    diverged: bool
    rule: str = RULE

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def lr_range_test(
    runner: Runner, params: dict[str, Any], start: float = 1e-6, end: float = 1.0, steps: int = 100
) -> LrFindResult:
    """Train `steps` steps of `params` as a trial would, the rate growing from `start` to `end` (log-linearly);
    stop on divergence. A k-fold runner runs it on one fold (the last, whose model a trial keeps)."""
    if not 0 < start < end:
        raise TrialError(f"lr-find: the start rate ({start:g}) must be positive and below the end rate ({end:g})")
    started = time.perf_counter()
    ramp = LrRamp(start, end, steps)
    rates, losses = [], []
    for step, loss in runner.range_test(params, ramp):
        if not math.isfinite(loss):
            break
        rates.append(ramp.rate(step))
        losses.append(loss)
    return _result(rates, losses, smooth(losses), time.perf_counter() - started, steps)


def smooth(losses: list[float]) -> list[float]:
    """The exponential moving average of the losses at each step, debiased as in Adam."""
    smoothed, average = [], 0.0
    for count, loss in enumerate(losses, 1):
        average = (1 - SMOOTHING) * average + SMOOTHING * loss
        smoothed.append(average / (1 - (1 - SMOOTHING) ** count))
    return smoothed


@dataclass(frozen=True)
class CurveReading:
    """What a smoothed range-test curve says: where the loss is lowest, where it falls fastest, and the suggestion
    (VALLEY along the longest stretch over which it keeps falling)."""

    minimum: float
    steepest: float
    suggestion: float


def read_curve(rates: list[float], smoothed: list[float]) -> CurveReading:
    """The minimum, the steepest descent (per decade of learning rate, over a few steps, before the minimum) and
    the suggestion: the rate VALLEY of the way along the longest run of steps over which the smoothed loss keeps
    falling (after fastai's `valley`). The steepest point is reported (lr_find.json), not used: on a curve that is
    flat at the start, batch noise there can be the steepest descent (benchmarks/RESULTS.md)."""
    lowest = min(range(len(smoothed)), key=smoothed.__getitem__)
    span = max(2, len(smoothed) // 20)
    before = range(max(lowest - span, 1))
    slopes = [(smoothed[i + span] - smoothed[i]) / math.log10(rates[i + span] / rates[i]) for i in before]
    steepest = min(range(len(slopes)), key=slopes.__getitem__) + span // 2 if slopes else lowest
    start, length, run_start = 0, 0, 0
    for i in range(1, len(smoothed)):
        if smoothed[i] >= smoothed[i - 1]:
            run_start = i
        elif i - run_start > length:
            start, length = run_start, i - run_start
    return CurveReading(rates[lowest], rates[steepest], rates[start + int(VALLEY * length)])


def _result(rates: list[float], losses: list[float], smoothed: list[float], seconds: float, steps: int) -> LrFindResult:
    if len(smoothed) < 5:
        raise TrialError(f"lr-find: the loss diverged after {len(smoothed)} steps; lower the start rate (--start-lr)")
    reading = read_curve(rates, smoothed)
    return LrFindResult(
        learning_rates=rates,
        losses=losses,
        smoothed=smoothed,
        suggestion=reading.suggestion,
        minimum=reading.minimum,
        steepest=reading.steepest,
        steps=len(smoothed),
        seconds=round(seconds, 3),
        diverged=len(smoothed) < steps,
    )
