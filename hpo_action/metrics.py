"""The one metric registry: each per-example metric's name, kind (boolean or score), direction, and scorer.

The config validates `evaluate.metrics` against it, `evaluate` scores with it, and the gate takes each metric's
kind (booleans: McNemar; scores: the mean tests) and direction from it. No torch here: a scorer works on a
`ScoringBatch`, which the evaluation builds (prompts, references, generations and losses, computed once and
shared by every metric that asks).

A metric of your own: a class with these attributes and a `score(batch)` method, named in the config as
`evaluate.metrics: [mypkg.metrics:ContainsAnswer]` (the module must be importable). See README, "Metrics".
"""

from __future__ import annotations

import difflib
import importlib
import math
import re
import string
from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from hpo_action.errors import ConfigError

Kind = Literal["boolean", "score"]
Direction = Literal["maximize", "minimize"]
NORMALIZERS = ("lower", "strip_punctuation", "collapse_whitespace", "strip")  # the order they are applied in
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_USER_METRIC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_LOWER_IS_BETTER = ("loss", "perplexity", "entropy", "error")


class ScoringBatch(Protocol):
    """What a metric sees: the scored rows and, computed on first use, the model's outputs on them."""

    ids: list[str]
    rows: dict[str, dict[str, Any]]  # the data rows by id (extra columns included)
    normalize: tuple[str, ...]

    def references(self) -> list[str]:
        """The expected completion (the last assistant turn for chats) of each row."""
        ...

    def outputs(self) -> list[str]:
        """The model's greedy continuation of each prompt, cut at the first end-of-sequence token."""
        ...

    def losses(self) -> list[float]:
        """Mean negative log-likelihood per completion token, exactly the training loss."""
        ...

    def choice_correct(self) -> list[bool]:
        """Whether the most likely of each row's `choices` is its `answer`."""
        ...


@runtime_checkable
class Metric(Protocol):
    """A per-example metric: what it is called and measures, and how to score a batch."""

    name: str
    kind: Kind
    direction: Direction
    needs_prompt: bool  # scored from a prompt (generation, choices); a text-format dataset has none

    def score(self, batch: ScoringBatch) -> Sequence[bool | float]: ...


def normalize_text(text: str, steps: Sequence[str]) -> str:
    """Apply the chosen normalizations in a fixed order, so ('strip', 'lower') equals ('lower', 'strip')."""
    if "lower" in steps:
        text = text.lower()
    if "strip_punctuation" in steps:
        text = text.translate(_PUNCTUATION)
    if "collapse_whitespace" in steps:
        text = " ".join(text.split())
    if "strip" in steps:
        text = text.strip()
    return text


class Loss:
    name, kind, direction, needs_prompt = "loss", "score", "minimize", False

    def score(self, batch: ScoringBatch) -> list[float]:
        return batch.losses()


class Perplexity:
    name, kind, direction, needs_prompt = "perplexity", "score", "minimize", False

    def score(self, batch: ScoringBatch) -> list[float]:
        return [math.exp(min(loss, 230.0)) for loss in batch.losses()]  # capped: e^230 ≈ 1e100, still summable


class ExactMatch:
    name, kind, direction, needs_prompt = "exact_match", "boolean", "maximize", True

    def score(self, batch: ScoringBatch) -> list[bool]:
        steps = batch.normalize
        return [
            normalize_text(out, steps) == normalize_text(ref, steps)
            for out, ref in zip(batch.outputs(), batch.references(), strict=True)
        ]


class ChoiceAccuracy:
    name, kind, direction, needs_prompt = "choice_accuracy", "boolean", "maximize", True

    def score(self, batch: ScoringBatch) -> list[bool]:
        return batch.choice_correct()


BUILTIN: dict[str, Metric] = {m.name: m for m in (Loss(), Perplexity(), ExactMatch(), ChoiceAccuracy())}
_REGISTRY: dict[str, Metric] = dict(BUILTIN)


def register_metric(metric: Metric) -> Metric:
    """Add a metric under its name (a user metric, once imported); returns it."""
    if not isinstance(metric, Metric) or metric.kind not in ("boolean", "score"):
        raise ConfigError(
            f"evaluate.metrics: {metric!r} is not a metric: it needs name, kind ('boolean' or 'score'), direction, "
            "needs_prompt and score(batch)"
        )
    _REGISTRY[metric.name] = metric
    return metric


def resolve_metric(spec: str) -> Metric:
    """A built-in metric by name, or `module.path:ClassName` imported and registered (its `name` is then the
    column in predictions files); a ConfigError naming the fix otherwise."""
    if spec in _REGISTRY:
        return _REGISTRY[spec]
    if not _USER_METRIC.match(spec):
        close = difflib.get_close_matches(spec, list(_REGISTRY), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"evaluate.metrics: unknown metric {spec!r}; {hint}use one of {', '.join(BUILTIN)} or module.path:ClassName"
        )
    module_name, _, attribute = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"evaluate.metrics: cannot import {spec!r}: {err}") from None
    metric = register_metric(found() if isinstance(found, type) else found)
    _REGISTRY[spec] = metric
    return metric


def metric_kind(name: str) -> Kind | None:
    """A registered metric's kind; None for a name the registry does not know (e.g. an lm-eval task metric)."""
    metric = _REGISTRY.get(name)
    return metric.kind if metric else None


def metric_direction(name: str, override: str | None = None) -> Direction:
    """Whether higher or lower is better: a setting first, then the registry (also for `eval_<name>` as the
    trainer reports it), then the name (loss, perplexity, entropy, error: lower), else higher."""
    if override in ("maximize", "minimize"):
        return override  # type: ignore[return-value]
    metric = _REGISTRY.get(name) or _REGISTRY.get(name.removeprefix("eval_"))
    if metric is not None:
        return metric.direction
    return "minimize" if any(word in name for word in _LOWER_IS_BETTER) else "maximize"
