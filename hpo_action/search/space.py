"""Turn the YAML search space into a trial's suggestions (from any backend's `Suggester`), grids and the
warm-start trial."""

from __future__ import annotations

import math
from typing import Any, Protocol

from hpo_action.config import HpoConfig, ParamSpec
from hpo_action.config.remedies import remedy_starts

WARM_START_ATTR = "warm_start"  # user attribute of a queued warm start: which one it is (warm_start_kind)
DEFAULTS = "defaults"
STRONG_REMEDIES = "strong remedies"  # the second warm start: the defaults with the searched remedies at their top


class Suggester(Protocol):
    """What a trial asks its backend for, one parameter at a time (an Optuna trial is one)."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = ..., log: bool = ...
    ) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = ..., log: bool = ...) -> int: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


def suggest(trial: Suggester, cfg: HpoConfig) -> dict[str, Any]:
    """Every trial parameter: searched ones from the trial, the rest from the train defaults."""
    params = trial_defaults(cfg)
    for name, spec in cfg.active_space().items():
        params[name] = suggest_value(trial, name, spec)
    return params


def trial_defaults(cfg: HpoConfig) -> dict[str, Any]:
    """The train section as trial parameters, with the space's fixed values applied."""
    params = {name: value for name, value in cfg.resolved_train().items() if name != "seed"}
    for name, spec in cfg.active_space().items():
        if spec.type == "fixed":
            params[name] = spec.value
    return params


def suggest_value(trial: Suggester, name: str, spec: ParamSpec) -> Any:
    """One space entry's value for this trial (a fixed entry's value as it is)."""
    if spec.type == "float":
        return trial.suggest_float(name, spec.low, spec.high, log=spec.log, step=spec.step)
    if spec.type == "int":
        step = int(spec.step or 1)
        return trial.suggest_int(name, int(spec.low), int(spec.high), step=step, log=spec.log)
    if spec.type == "categorical":
        return trial.suggest_categorical(name, spec.choices)
    return spec.value


def searched(cfg: HpoConfig) -> dict[str, ParamSpec]:
    """The dimensions the sampler actually explores (fixed values excluded)."""
    return {name: spec for name, spec in cfg.active_space().items() if spec.type != "fixed"}


def warm_start_params(cfg: HpoConfig) -> dict[str, Any]:
    """The train defaults, moved into the space, so the study's best is never worse than the defaults."""
    defaults = {**cfg.resolved_train(), **remedy_starts(cfg)}  # remedies searched by default: their measured start
    return {name: _into_range(defaults[name], spec) for name, spec in searched(cfg).items()}


def warm_start_kind(user_attrs: dict[str, Any]) -> str:
    """Which warm start a trial is ("" for a sampled trial); studies made before the kinds stored `True`."""
    value = user_attrs.get(WARM_START_ATTR)
    return DEFAULTS if value is True else value if isinstance(value, str) else ""


def _into_range(value: Any, spec: ParamSpec) -> Any:
    if spec.type == "categorical":
        return value if value in spec.choices else spec.choices[0]
    low, high = spec.low, spec.high
    clipped = min(max(float(value), low), high)
    if spec.step:
        clipped = low + round((clipped - low) / spec.step) * spec.step
        clipped = min(clipped, high)
    return round(clipped) if spec.type == "int" else clipped


def grid(cfg: HpoConfig, points: int) -> dict[str, list[Any]]:
    """A grid over the space: choices as given, `points` values per range (log-spaced where log)."""
    result: dict[str, list[Any]] = {}
    for name, spec in searched(cfg).items():
        if spec.type == "categorical":
            result[name] = list(spec.choices)
            continue
        if spec.log:
            ratio = math.log(spec.high / spec.low) / max(points - 1, 1)
            values = [spec.low * math.exp(i * ratio) for i in range(points)]
        elif spec.step:
            count = round((spec.high - spec.low) / spec.step) + 1
            stride = max(1, (count - 1) // max(points - 1, 1))
            values = [spec.low + i * spec.step for i in range(0, count, stride)]
        else:
            values = [spec.low + i * (spec.high - spec.low) / max(points - 1, 1) for i in range(points)]
        values = [min(max(v, spec.low), spec.high) for v in values]  # float error must not leave the range
        if spec.type == "int":
            values = [round(v) for v in values]
        result[name] = sorted(set(values))
    return result
