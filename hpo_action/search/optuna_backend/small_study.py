"""A small in-memory study for a search that is not the training study (the decoding search, judge/decoding.py):
TPE over a few settings, the first trial given, every trial's value and payload handed back as typed records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hpo_action.search.space import Suggester


@dataclass(frozen=True)
class SmallTrial:
    """One finished trial: its number, its value and what the objective returned beside it."""

    number: int
    value: float
    payload: Any


def tpe_search(
    objective: Callable[[Suggester], tuple[float, Any]],
    direction: str,
    seed: int,
    n_trials: int,
    first: dict[str, Any],
    n_startup_trials: int = 4,
) -> list[SmallTrial]:
    """Run `n_trials` trials of `objective` (value, payload) with a seeded TPE sampler, `first` queued as trial 0."""
    import optuna

    payloads: dict[int, Any] = {}

    def run(trial: optuna.Trial) -> float:
        value, payloads[trial.number] = objective(trial)
        return value

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    study = optuna.create_study(direction=direction, sampler=sampler)
    study.enqueue_trial(first)
    study.optimize(run, n_trials=n_trials)
    return [SmallTrial(t.number, float(t.value), payloads[t.number]) for t in study.trials if t.value is not None]
