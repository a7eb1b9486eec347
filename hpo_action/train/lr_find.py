"""The learning-rate range test: one short run whose learning rate grows exponentially each step, the training
loss smoothed, and a suggestion read off the curve. A cheap first look at where the study's range should lie:
the loss falls once the rate is large enough to learn and blows up once it is too large.

The suggestion is the rate where the smoothed loss falls fastest (per decade of learning rate) before its
minimum; the loss minimum itself is reported too. The run uses the trial's own setup (`TrialRunner`: the base
model, the tokenized data, the trainer's configuration) with only the learning-rate schedule replaced.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

from hpo_action.errors import TrialError
from hpo_action.train.trial import TrialRunner, _quiet

SMOOTHING = 0.1  # exponential moving average of the loss, debiased as in Adam
DIVERGENCE = 4.0  # stop once the smoothed loss exceeds this many times its minimum


@dataclass
class LrFindResult:
    """The range test's curve and what it suggests."""

    learning_rates: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float  # where the smoothed loss falls fastest, before its minimum
    minimum: float  # the learning rate at the smoothed loss's minimum
    steps: int
    seconds: float
    diverged: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def lr_range_test(
    runner: TrialRunner, params: dict[str, Any], start: float = 1e-6, end: float = 1.0, steps: int = 100
) -> LrFindResult:
    """Train `steps` steps with the rate growing from `start` to `end` (log-linearly); stop on divergence."""
    import torch
    from transformers import TrainerCallback, set_seed
    from trl import SFTTrainer

    if not 0 < start < end:
        raise TrialError(f"lr-find: the start rate ({start:g}) must be positive and below the end rate ({end:g})")
    started = time.perf_counter()
    set_seed(runner.cfg.train.seed)
    growth = (end / start) ** (1 / max(steps - 1, 1))
    rates: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []

    class _Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
            loss = (logs or {}).get("loss")
            if loss is None:
                return
            rates.append(start * growth ** (state.global_step - 1))
            losses.append(float(loss))
            if not math.isfinite(float(loss)):
                control.should_training_stop = True
                return
            smoothed.append(_ema(losses, smoothed))
            if smoothed[-1] > DIVERGENCE * min(smoothed):
                control.should_training_stop = True

    model = runner.base.attach(params)
    try:
        with tempfile.TemporaryDirectory(prefix="hpo-lr-find-") as scratch:
            args = runner._sft_config(params, scratch)
            args.max_steps, args.eval_strategy, args.logging_steps = steps, "no", 1
            optimizer = torch.optim.AdamW(
                [p for p in model.parameters() if p.requires_grad],
                lr=start,
                weight_decay=float(params["weight_decay"]),
            )
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: growth**step)
            trainer = SFTTrainer(
                model=model,
                args=args,
                train_dataset=runner.train_dataset,
                processing_class=runner.base.tokenizer,
                optimizers=(optimizer, schedule),
                callbacks=[_Record()],
            )
            _quiet(trainer)
            trainer.train()
    finally:
        runner.base.detach(model)
    return _result(rates[: len(smoothed)], losses[: len(smoothed)], smoothed, time.perf_counter() - started, steps)


def _ema(losses: list[float], smoothed: list[float]) -> float:
    """The debiased exponential moving average of the losses so far."""
    previous = smoothed[-1] * (1 - (1 - SMOOTHING) ** (len(losses) - 1)) if smoothed else 0.0
    average = (1 - SMOOTHING) * previous + SMOOTHING * losses[-1]
    return average / (1 - (1 - SMOOTHING) ** len(losses))


def _result(rates: list[float], losses: list[float], smoothed: list[float], seconds: float, steps: int) -> LrFindResult:
    if len(smoothed) < 5:
        raise TrialError(f"lr-find: the loss diverged after {len(smoothed)} steps; lower the start rate (--start-lr)")
    lowest = min(range(len(smoothed)), key=smoothed.__getitem__)
    # The slope per decade of learning rate, over a few steps, before the minimum.
    span = max(2, len(smoothed) // 20)
    before = range(max(lowest - span, 1))
    slopes = [(smoothed[i + span] - smoothed[i]) / math.log10(rates[i + span] / rates[i]) for i in before]
    steepest = min(range(len(slopes)), key=slopes.__getitem__) + span // 2 if slopes else lowest
    return LrFindResult(
        learning_rates=rates,
        losses=losses,
        smoothed=smoothed,
        suggestion=rates[steepest],
        minimum=rates[lowest],
        steps=len(smoothed),
        seconds=round(seconds, 3),
        diverged=len(smoothed) < steps,
    )
