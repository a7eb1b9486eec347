"""k-fold trials: one trial trains once per fold, on the other k−1 folds, and its objective is the mean.

The folds run one after the other. At every evaluation the pruner hears the running mean across folds: the
finished folds' final values and the current fold's latest value, at the step counted across folds (fold f's
step s is f·max_steps + s), so every trial is compared with the others at the same point of the same schedule,
and a trial whose first folds are weak is stopped before its last. The weights kept for the trial are its last
fold's model (the forgetting probes score that one), whose validation fold no fold-model of it trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_action.train.trial import Pruned, Reporter, TrialResult, TrialRunner

if TYPE_CHECKING:
    import datasets

    from hpo_action.config import HpoConfig
    from hpo_action.train.checkpoints import TrialCheckpoints
    from hpo_action.train.lr_find import LrRamp
    from hpo_action.train.models import BaseModel

Fold = tuple["datasets.Dataset", "datasets.Dataset"]


class CrossValidatedRunner:
    """Runs each trial on every fold with one TrialRunner (one model, one tokenization), fold by fold."""

    def __init__(self, runner: TrialRunner, folds: list[Fold]) -> None:
        columns = ["input_ids", "labels"]
        self.runner = runner
        self.folds = [
            (train.select_columns(columns), validation.select_columns(columns)) for train, validation in folds
        ]
        self.max_steps = runner.cfg.search.budget.max_steps

    @property
    def base(self) -> BaseModel:
        return self.runner.base

    @property
    def cfg(self) -> HpoConfig:
        return self.runner.cfg

    def range_test(self, params: dict[str, Any], ramp: LrRamp) -> list[tuple[int, float]]:
        """The range test on one fold, the last (the one whose model a trial keeps): k ramps would cost k runs
        to place one range, and every fold trains on (k−1)/k of the same rows."""
        self.runner.train_dataset, self.runner.eval_dataset = self.folds[-1]
        return self.runner.range_test(params, ramp)

    def base_metrics(self, params: dict[str, Any]) -> dict[str, float]:
        """The untrained model's metrics on each fold's validation rows, averaged as a trial's are."""
        folds = []
        for train, validation in self.folds:
            self.runner.train_dataset, self.runner.eval_dataset = train, validation
            folds.append(self.runner.base_metrics(params))
        shared = set.intersection(*(set(metrics) for metrics in folds))
        return {key: sum(metrics[key] for metrics in folds) / len(folds) for key in sorted(shared)}

    def run(
        self,
        params: dict[str, Any],
        report: Reporter | None = None,
        save_to: Callable[[TrialResult], Path | None] | None = None,
        trial_number: int | None = None,
        checkpoints: TrialCheckpoints | None = None,
    ) -> TrialResult:
        """Train on each fold in turn; the result's value is the mean of the folds' values. Never checkpointed:
        the config refuses search.resume_trials with kfold (a fold's checkpoint would resume another fold)."""
        if checkpoints is not None:
            raise ValueError("k-fold trials cannot resume from checkpoints (search.resume_trials)")
        done: list[TrialResult] = []
        probes = self.runner.probes
        try:
            for fold, (train, validation) in enumerate(self.folds):
                last = fold == len(self.folds) - 1
                self.runner.train_dataset, self.runner.eval_dataset = train, validation
                self.runner.probes = probes if last else ()  # only the kept (last) fold's model is probed
                offset = fold * self.max_steps

                def fold_report(value: float, step: int, offset: int = offset) -> bool:
                    running = (sum(r.value for r in done) + value) / (len(done) + 1)
                    return report(running, offset + step) if report is not None else False

                def fold_save(result: TrialResult) -> Path | None:
                    return save_to(combine([*done, result], self.max_steps)) if save_to is not None else None

                try:
                    result = self.runner.run(
                        params, report=fold_report, save_to=fold_save if last else None, trial_number=trial_number
                    )
                except Pruned as pruned:
                    running = (sum(r.value for r in done) + pruned.value) / (len(done) + 1)
                    curve = [*_train_curve(done, self.max_steps), *_shift(pruned.train_curve, offset)]
                    raise Pruned(offset + pruned.step, running, curve) from None
                done.append(result)
        finally:
            self.runner.probes = probes
        return combine(done, self.max_steps)


def combine(folds: list[TrialResult], max_steps: int) -> TrialResult:
    """One trial's result from its folds': the mean value and metrics, curves on the across-folds step axis."""
    values = [result.value for result in folds]
    shared = set.intersection(*(set(result.metrics) for result in folds))
    curve: list[tuple[int, float]] = []
    for fold, result in enumerate(folds):
        before = values[:fold]
        curve += [(fold * max_steps + s, (sum(before) + v) / (fold + 1)) for s, v in result.curve]
    return replace(
        folds[-1],
        value=sum(values) / len(values),
        metrics={key: sum(result.metrics[key] for result in folds) / len(folds) for key in sorted(shared)},
        curve=curve,
        steps=sum(result.steps for result in folds),
        seconds=sum(result.seconds for result in folds),
        stopped_early=any(result.stopped_early for result in folds),
        train_curve=_train_curve(folds, max_steps),
        fold_values=values,
    )


def _shift(curve: list[tuple[int, float]], offset: int) -> list[tuple[int, float]]:
    return [(offset + step, value) for step, value in curve]


def _train_curve(folds: list[TrialResult], max_steps: int) -> list[tuple[int, float]]:
    return [point for fold, result in enumerate(folds) for point in _shift(result.train_curve, fold * max_steps)]
