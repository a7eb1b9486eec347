"""The dataset-size guidance (templates/starting_points.yaml), read and typed: the one source `hpo-action init
--size` writes starter spaces from, and the doctor's trials-per-parameter rule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml

from hpo_action.errors import ConfigError
from hpo_action.files import template

SIZES = ("small", "medium", "large")


@dataclass(frozen=True)
class SizeTier:
    """The starting configuration for one dataset size."""

    name: str
    max_rows: int | None
    typical_rows: int
    method: str
    learning_rate: float
    learning_rate_range: tuple[float, float]
    epochs: int
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    lr_scheduler_type: str
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float

    def max_steps(self, rows: int | None) -> int:
        """Optimizer steps for `epochs` passes over `rows` training rows (the typical count when unknown)."""
        effective = self.per_device_train_batch_size * self.gradient_accumulation_steps
        return max(1, math.ceil(self.epochs * (rows or self.typical_rows) / effective))


@dataclass(frozen=True)
class StartingPoints:
    tiers: tuple[SizeTier, ...]
    method_space: dict[str, dict[str, Any]]  # method → {parameter: a search.space entry}
    trials_per_parameter: int
    evaluations_per_trial: int

    def tier(self, name: str) -> SizeTier:
        return next(tier for tier in self.tiers if tier.name == name)

    def tier_for_rows(self, rows: int) -> SizeTier:
        """The smallest tier whose max_rows exceeds `rows` (the last has none)."""
        return next(tier for tier in self.tiers if tier.max_rows is None or rows < tier.max_rows)


@cache
def starting_points() -> StartingPoints:
    """Read templates/starting_points.yaml once."""
    path = template("starting_points.yaml")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        tiers = tuple(
            SizeTier(
                name=name,
                **{**data["sizes"][name], "learning_rate_range": tuple(data["sizes"][name]["learning_rate_range"])},
            )
            for name in SIZES
        )
        return StartingPoints(
            tiers=tiers,
            method_space=dict(data["methods"]),
            trials_per_parameter=int(data["trials_per_parameter"]),
            evaluations_per_trial=int(data["evaluations_per_trial"]),
        )
    except (KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not a starting-points file this version can read ({err})") from None
