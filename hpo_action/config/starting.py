"""The starting-configuration guidance (templates/starting_points.yaml), read and typed: the one source `hpo-action
init --size` writes starters from (by dataset rows, the model's parameter count and the device), and the doctor's
trials-per-parameter rule."""

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
    """How to train on one dataset size: epochs, effective batch and schedule."""

    name: str
    max_rows: int | None
    typical_rows: int
    epochs: int
    effective_batch: int
    lr_scheduler_type: str
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float

    def max_steps(self, rows: int | None) -> int:
        """Optimizer steps for `epochs` passes over `rows` training rows (the typical count when unknown)."""
        return max(1, math.ceil(self.epochs * (rows or self.typical_rows) / self.effective_batch))


@dataclass(frozen=True)
class ModelTier:
    """What one GPU holds for a model of up to `max_params` parameters."""

    name: str
    max_params: float | None
    per_device_train_batch_size: int
    full_fine_tuning: bool
    quantize: bool


@dataclass(frozen=True)
class MethodGuide:
    """A method's warm-start values and searched ranges."""

    learning_rate: float
    learning_rate_range: tuple[float, float]
    train: dict[str, Any]
    space: dict[str, Any]


@dataclass(frozen=True)
class Start:
    """The starting point chosen for one dataset size, model and device, with the reason for its method."""

    size: SizeTier
    model: ModelTier
    method: str
    reason: str
    guide: MethodGuide

    @property
    def per_device_train_batch_size(self) -> int:
        return min(self.model.per_device_train_batch_size, self.size.effective_batch)

    @property
    def gradient_accumulation_steps(self) -> int:
        return max(1, self.size.effective_batch // self.per_device_train_batch_size)


@dataclass(frozen=True)
class StartingPoints:
    tiers: tuple[SizeTier, ...]
    model_tiers: tuple[ModelTier, ...]
    methods: dict[str, MethodGuide]
    trials_per_parameter: int
    evaluations_per_trial: int

    def tier(self, name: str) -> SizeTier:
        return next(tier for tier in self.tiers if tier.name == name)

    def tier_for_rows(self, rows: int) -> SizeTier:
        """The smallest tier whose max_rows exceeds `rows` (the last has none)."""
        return next(tier for tier in self.tiers if tier.max_rows is None or rows < tier.max_rows)

    def model_tier(self, params: int) -> ModelTier:
        """The smallest model tier whose max_params is at least `params` (the last has none)."""
        return next(tier for tier in self.model_tiers if tier.max_params is None or params <= tier.max_params)

    def choose(self, size: SizeTier, params: int, cuda: bool) -> Start:
        """Full fine-tuning for large data on a model small enough for it; QLoRA for a large model on CUDA
        (never without CUDA, which bitsandbytes needs); LoRA otherwise."""
        model = self.model_tier(params)
        count = describe_params(params)
        if model.quantize and cuda:
            method, reason = "qlora", f"{count} parameters: 4-bit weights (QLoRA) on the CUDA GPU"
        elif model.quantize:
            method, reason = "lora", f"{count} parameters, but no CUDA GPU, which QLoRA needs: LoRA"
        elif size.max_rows is None and model.full_fine_tuning:
            method, reason = "full", f"{size.name} data and {count} parameters: full fine-tuning fits"
        elif size.max_rows is None:
            method, reason = "lora", f"{count} parameters: too many for full fine-tuning on one GPU, LoRA"
        else:
            method, reason = "lora", f"{size.name} data, {count} parameters: LoRA"
        return Start(size, model, method, reason, self.methods[method])


def describe_params(params: int) -> str:
    """0.49B, 70.6B, 0.4M: the parameter count as people say it."""
    if params >= 1e9:
        return f"{params / 1e9:.3g}B"
    return f"{params / 1e6:.3g}M"


@cache
def starting_points() -> StartingPoints:
    """Read templates/starting_points.yaml once."""
    path = template("starting_points.yaml")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        return StartingPoints(
            tiers=tuple(SizeTier(name=name, **data["sizes"][name]) for name in SIZES),
            model_tiers=tuple(ModelTier(name=name, **values) for name, values in data["models"].items()),
            methods={
                name: MethodGuide(
                    learning_rate=float(values["learning_rate"]),
                    learning_rate_range=tuple(float(v) for v in values["learning_rate_range"]),  # type: ignore[arg-type]
                    train=dict(values["train"]),
                    space=dict(values["space"]),
                )
                for name, values in data["methods"].items()
            },
            trials_per_parameter=int(data["trials_per_parameter"]),
            evaluations_per_trial=int(data["evaluations_per_trial"]),
        )
    except (KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not a starting-points file this version can read ({err})") from None
