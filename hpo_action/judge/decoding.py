"""Decoding search: tune how a trained model generates, without retraining it.

A small TPE study (hpo_action/search/optuna_backend/small_study.py) over do_sample, temperature, top_p, top_k,
repetition_penalty and max_new_tokens, scored on the
VALIDATION split (never the test split, which judges the choice afterwards) with the configured generation
metric. Trial 0 is greedy decoding with the configured max_new_tokens, and a setting replaces greedy only when
it scores strictly better, so "greedy is best" is a possible, and honest, answer; among settings that score the
same, the deterministic and then the simplest one is kept. Every trial samples with the
same seed (common random numbers), so a trial's score can be reproduced from its settings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from hpo_action.config import HpoConfig, ParamSpec
from hpo_action.data.rows import Rows
from hpo_action.errors import ConfigError
from hpo_action.judge.evaluate import EvalSettings, score_rows
from hpo_action.judge.generation import Decoding
from hpo_action.metrics import metric_direction, resolve_metric
from hpo_action.search.optuna_backend.small_study import tpe_search
from hpo_action.search.space import Suggester, suggest_value

_SAMPLING = ("temperature", "top_p", "top_k")


def default_space(max_new_tokens: int) -> dict[str, ParamSpec]:
    """The ranges searched unless evaluate.decoding_space overrides them."""
    return {
        "do_sample": ParamSpec.model_validate({"choices": [False, True]}),
        "temperature": ParamSpec.model_validate({"low": 0.1, "high": 1.5}),
        "top_p": ParamSpec.model_validate({"low": 0.5, "high": 1.0}),
        "top_k": ParamSpec.model_validate({"low": 0, "high": 100, "step": 10}),
        "repetition_penalty": ParamSpec.model_validate({"low": 1.0, "high": 1.5}),
        "max_new_tokens": ParamSpec.model_validate({"low": max(1, max_new_tokens // 2), "high": 2 * max_new_tokens}),
    }


@dataclass(frozen=True)
class DecodingTrial:
    number: int
    decoding: Decoding
    value: float


@dataclass(frozen=True)
class DecodingSearch:
    """What the search found: greedy's score, the chosen settings (greedy unless strictly better) and every trial."""

    metric: str
    direction: str
    n: int  # validation rows scored
    greedy: DecodingTrial
    best: DecodingTrial
    trials: tuple[DecodingTrial, ...]

    @property
    def improved(self) -> bool:
        return self.best.number != self.greedy.number

    def verdict(self) -> str:
        head = f"decoding search on {self.n} validation examples, {len(self.trials)} trials, {self.metric}"
        if not self.improved:
            return f"{head}: greedy is best ({self.greedy.value:.4g}); no setting beat it, so greedy is kept"
        return (
            f"{head}: {self.greedy.value:.4g} greedy -> {self.best.value:.4g} with trial #{self.best.number} "
            f"({self.best.decoding.describe()})"
        )

    def to_json(self) -> dict[str, Any]:
        def trial(t: DecodingTrial) -> dict[str, Any]:
            return {"number": t.number, "value": t.value, "decoding": t.decoding.to_json()}

        return {
            "metric": self.metric,
            "direction": self.direction,
            "n": self.n,
            "improved": self.improved,
            "greedy": trial(self.greedy),
            "best": trial(self.best),
            "trials": [trial(t) for t in self.trials],
        }


def generation_metric(cfg: HpoConfig, score: Any) -> str:
    """The first of the gate's metric and evaluate.metrics that generates text (built in: exact_match; a metric of
    your own that reads batch.outputs()), found by scoring greedy once with each prompt-based candidate."""
    names = [cfg.primary_metric, *(resolve_metric(name).name for name in cfg.evaluate.metrics)]
    for name in dict.fromkeys(names):
        if resolve_metric(name).needs_prompt and score((name,)):
            return name
    raise ConfigError(
        "evaluate.decoding_search: needs a metric scored on generated text (exact_match, or a metric of yours that "
        f"reads batch.outputs()); evaluate.metrics has {', '.join(cfg.evaluate.metrics)}"
    )


def search_decoding(
    model: Any, tokenizer: Any, rows: Rows, cfg: HpoConfig, n_trials: int | None = None
) -> DecodingSearch:
    """Run the decoding study on `rows` (the validation split) and return its trials and choice."""
    base_settings = EvalSettings.from_config(cfg.evaluate)
    greedy = Decoding(max_new_tokens=cfg.evaluate.max_new_tokens, seed=cfg.evaluate.decoding_seed)
    scored: dict[Decoding, float] = {}

    def mean_score(decoding: Decoding, metrics: tuple[str, ...]) -> tuple[float, bool]:
        settings = replace(base_settings, metrics=metrics, decoding=decoding)
        records = score_rows(model, tokenizer, rows, cfg.data, settings)
        values = [float(record[metrics[0]]) for record in records]
        return sum(values) / max(len(values), 1), bool(records) and "output" in records[0]

    def probe(metrics: tuple[str, ...]) -> bool:
        value, generated = mean_score(greedy, metrics)
        if generated:
            scored[greedy] = value  # trial 0 reuses it
        return generated

    metric = generation_metric(cfg, probe)
    direction = metric_direction(metric)
    space = {**default_space(cfg.evaluate.max_new_tokens), **cfg.evaluate.decoding_space}

    def objective(trial: Suggester) -> tuple[float, Decoding]:
        decoding = _suggest(trial, space, greedy)
        if decoding not in scored:
            scored[decoding] = mean_score(decoding, (metric,))[0]
        return scored[decoding], decoding

    seed, n = cfg.evaluate.decoding_seed, n_trials or cfg.evaluate.decoding_trials
    found = tpe_search(objective, direction, seed, n, _greedy_params(space, greedy))
    trials = tuple(DecodingTrial(t.number, t.payload, t.value) for t in found)
    return DecodingSearch(metric, direction, len(rows), trials[0], choose(trials, greedy, direction), trials)


def choose(trials: tuple[DecodingTrial, ...], greedy: Decoding, direction: str) -> DecodingTrial:
    """The best score; among settings that score the same, the deterministic one (greedy before sampling), then
    the one that changes fewest of greedy's settings, then the earliest. Greedy itself (trial 0) is deterministic
    and changes nothing, so another setting replaces it only by scoring strictly better."""
    sign = 1.0 if direction == "maximize" else -1.0
    top = max(sign * trial.value for trial in trials)
    tied = [trial for trial in trials if sign * trial.value == top]
    return min(tied, key=lambda trial: (trial.decoding.do_sample, _changes(trial.decoding, greedy), trial.number))


def _changes(decoding: Decoding, greedy: Decoding) -> int:
    """How many settings differ from greedy's (the seed aside; the sampling ones count only when sampling)."""
    names = ["repetition_penalty", "max_new_tokens", *(_SAMPLING if decoding.do_sample else ())]
    return sum(getattr(decoding, name) != getattr(greedy, name) for name in names)


def _greedy_params(space: dict[str, ParamSpec], greedy: Decoding) -> dict[str, Any]:
    """Trial 0: greedy, with the configured max_new_tokens and no repetition penalty."""
    wanted = {"do_sample": False, "repetition_penalty": 1.0, "max_new_tokens": greedy.max_new_tokens}
    return {name: value for name, value in wanted.items() if name in space and space[name].type != "fixed"}


def _suggest(trial: Suggester, space: dict[str, ParamSpec], greedy: Decoding) -> Decoding:
    """One trial's settings; temperature, top_p and top_k only when it samples."""
    values: dict[str, Any] = {}
    for name in ("do_sample", "repetition_penalty", "max_new_tokens"):
        values[name] = suggest_value(trial, name, space[name])
    if values["do_sample"]:
        values.update({name: suggest_value(trial, name, space[name]) for name in _SAMPLING})
    return replace(greedy, **values)
