"""How the best trial and its reference are scored, once, per example: the `evaluate` section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from hpo_action.config._spec import ParamSpec, _Section, did_you_mean
from hpo_action.config._variants import DECODING_PARAMETERS
from hpo_action.metrics import NORMALIZERS, resolve_metric


class EvaluateConfig(_Section):
    """How the best trial (and the reference) are scored, once, per example, on the held-out split."""

    metrics: list[str] = Field(
        default_factory=lambda: ["loss"],
        description="Per-example metrics (loss, perplexity, exact_match, choice_accuracy, or module:Class); "
        "the first is the gate's primary metric.",
    )
    max_new_tokens: int = Field(32, ge=1, description="Greedy generation length for exact_match.")
    normalize: list[Literal[NORMALIZERS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["strip"], description="Applied to output and reference before exact_match."
    )
    batch_size: int = Field(32, ge=1, description="Examples scored per forward pass.")
    decoding_search: bool = Field(
        False,
        description="In run: tune temperature, top_p, top_k, repetition_penalty and max_new_tokens on the "
        "validation split (greedy is trial 0) and evaluate the test split with the best.",
    )
    decoding_trials: int = Field(16, ge=1, description="Trials of the decoding search, greedy included.")
    decoding_seed: int = Field(0, description="Seed of the decoding search's sampler and of sampled generation.")
    decoding_space: dict[str, ParamSpec] = Field(
        default_factory=dict,
        description="Overrides of the decoding search's ranges (do_sample, temperature, top_p, top_k, "
        "repetition_penalty, max_new_tokens).",
    )

    @field_validator("decoding_space")
    @classmethod
    def _known_decoding(cls, space: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        for name in space:
            if name not in DECODING_PARAMETERS:
                raise ValueError(f"unknown decoding parameter {name!r}{did_you_mean(name, DECODING_PARAMETERS)}")
        return space

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str]) -> list[str]:
        if not metrics:
            raise ValueError("name at least one metric, e.g. [loss]")
        for name in metrics:
            resolve_metric(name)
        return metrics
