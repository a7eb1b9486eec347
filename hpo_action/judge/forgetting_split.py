"""Each forgetting set split once into a probe part, which the search scores after every trial, and a gate part,
which only the final gate tests: the search selects on the probe, so the gate's evidence must come from rows the
selection never saw (otherwise the best of many probes passes the gate more often than its level allows).

The split is a seeded hash of data.seed, the set's name and each row's id: the same in every worker, on resume and
in the final gate, whatever order the file lists its rows in. Pure: no torch, so the selection benchmark runs it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from hpo_action.config import GateConfig, HpoConfig, is_forgetting_objective
from hpo_action.data.rows import Rows
from hpo_action.errors import ConfigError
from hpo_action.judge import stats
from hpo_action.judge.decision import ForgettingResult
from hpo_action.judge.gate import ForgettingInput, Paired, forgetting_result, too_small_to_pass
from hpo_action.metrics import metric_kind

DEFAULT_PROBE_SHARE = 0.3  # of a set's rows, when search.forgetting_probe_size is unset
# At start, a set's gate part is judged for a candidate that changes this many times the margin of its answers,
# losing as many as it gains (e.g. 10% changed at margin 0.05): what a fine-tune that keeps a skill typically does.
EXPECTED_DISAGREEMENT_PER_MARGIN = 2.0
# A loss-like set's probe is judged at start for a kept skill that moves each row's score by half the margin.
EXPECTED_SPREAD_PER_MARGIN = 0.5
_INFEASIBLE = 1e-9  # the constraint value of a probe that did not pass although its bound sat on the margin


@dataclass(frozen=True)
class ForgettingParts:
    """One set's rows split in two disjoint parts: `probe` for the search, `gate` for the final gate."""

    probe: Rows
    gate: Rows


def probes_needed(cfg: HpoConfig) -> bool:
    """Forgetting probes run after each trial for the constraint or for a forgetting objective."""
    wanted = cfg.search.forgetting_constraint or any(is_forgetting_objective(o.metric) for o in cfg.search.objectives)
    return wanted and bool(cfg.gate.forgetting)


def probe_size(cfg: HpoConfig, name: str, n: int) -> int:
    """Rows of set `name` (of n) the probe takes: none when no probe runs, else search.forgetting_probe_size or
    DEFAULT_PROBE_SHARE of the set; exit 2 when that leaves the gate nothing."""
    if not probes_needed(cfg):
        return 0
    size = cfg.search.forgetting_probe_size or max(1, round(DEFAULT_PROBE_SHARE * n))
    if size >= n:
        raise ConfigError(
            f"search.forgetting_probe_size: {size} probe rows of forgetting set {name!r} leave none of its {n} rows "
            f"for the gate (the probe and the gate never share rows); lower it, e.g. to {max(1, n // 3)}, or add rows"
        )
    return size


def split_set(rows: Rows, name: str, seed: int, size: int) -> ForgettingParts:
    """The `size` rows first by a hash of (seed, name, id) form the probe; the rest, in file order, the gate."""
    ranked = sorted(rows, key=lambda row: _rank(seed, name, str(row["id"])))
    chosen = {str(row["id"]) for row in ranked[:size]}
    probe = [row for row in rows if str(row["id"]) in chosen]
    return ForgettingParts(probe=probe, gate=[row for row in rows if str(row["id"]) not in chosen])


def forgetting_parts(cfg: HpoConfig, sets: dict[str, Rows]) -> dict[str, ForgettingParts]:
    """Every loaded set's probe and gate parts, by name."""
    return {name: split_set(rows, name, cfg.data.seed, probe_size(cfg, name, len(rows))) for name, rows in sets.items()}


def probe_verdict(
    name: str,
    candidate: list[float],
    base: list[float],
    metric: str,
    margin: float,
    direction: str | None,
    gate: GateConfig,
    vocab_size: int | None = None,
) -> ForgettingResult:
    """The gate's own non-inferiority test on the probe rows (a loss clipped to the same [0, ln V]): a trial is
    feasible only if its probe would pass the gate at the probe's size (the lower bound above −margin, not the
    point estimate). No power figures: feasibility never needs them."""
    boolean = metric_kind(metric) == "boolean"
    paired = Paired(metric, candidate, base, boolean)
    return forgetting_result(ForgettingInput(name, paired, margin, direction), gate, vocab_size, figures=False)


def kept_skill_probe_size(
    base: list[float], metric: str, margin: float, direction: str | None, gate: GateConfig, vocab_size: int | None
) -> int | None:
    """For a loss-like set's probe, scored on the base model: None when a trial that keeps the skill would be shown
    within the margin on these rows; else about how many rows it would take (the base scores repeated, doubling up
    to 64x), or 0 when even that many would not. Kept: each row's score moves by EXPECTED_SPREAD_PER_MARGIN ×
    margin, half of them up and half down (no mean change), what a fine-tune that keeps a skill typically does."""
    if metric_kind(metric) == "boolean" or not base:
        return None
    step = EXPECTED_SPREAD_PER_MARGIN * margin

    def shown(n: int) -> bool:
        rows = [base[i % len(base)] for i in range(n)]
        low = 0.0 if metric == "loss" else 1.0 if metric == "perplexity" else -math.inf
        moved = [max(low, b + (step if i % 2 else -step)) for i, b in enumerate(rows)]
        return probe_verdict("kept", moved, rows, metric, margin, direction, gate, vocab_size).passed

    if shown(len(base)):
        return None
    size = 2 * len(base)
    while size <= 64 * len(base):
        if shown(size):
            return size
        size *= 2
    return 0


def constraint_value(result: ForgettingResult) -> float:
    """Optuna's constraint (feasible when ≤ 0): how far the probe's lower bound falls below −margin."""
    value = -(result.bound + result.margin)
    return value if result.passed else max(value, _INFEASIBLE)


def small_set_warnings(cfg: HpoConfig, parts: dict[str, ForgettingParts]) -> list[str]:
    """For boolean sets: a gate part too small to show its margin at the expected disagreement, and a probe part
    that can never pass (the constraint would hold no trial), each with the numbers."""
    found = []
    alpha, power = cfg.gate.alpha, cfg.gate.power
    for benchmark in cfg.gate.forgetting:
        if benchmark.name not in parts or metric_kind(benchmark.metric) != "boolean":
            continue
        split, margin = parts[benchmark.name], benchmark.margin
        never = too_small_to_pass(benchmark.name, len(split.gate), margin, alpha)
        if never is not None:
            found.append(f"{never} (its gate part: {_counts(split)})")
            continue
        disagreement = min(EXPECTED_DISAGREEMENT_PER_MARGIN * margin, 1.0)
        needed = stats.paired_proportion_n(0.0, disagreement, -margin, alpha, power)
        if len(split.gate) < needed:
            found.append(
                f"forgetting set {benchmark.name!r}: its gate part has {_counts(split)}; a candidate that changes "
                f"{disagreement:.0%} of its answers, losing as many as it gains, needs about {needed} rows to be "
                f"shown within margin {margin:g} with {power:.0%} power; add rows or widen the margin"
            )
        if split.probe and len(split.probe) < stats.noninferiority_min_n(margin, alpha):
            least = stats.noninferiority_min_n(margin, alpha)
            found.append(
                f"forgetting set {benchmark.name!r}: its probe part has {len(split.probe)} rows, and at margin "
                f"{margin:g} no trial can pass the gate's test on fewer than {least}, so every trial is infeasible; "
                f"raise search.forgetting_probe_size to at least {least} or add rows"
            )
    return found


def _counts(split: ForgettingParts) -> str:
    total = len(split.probe) + len(split.gate)
    return f"{len(split.gate)} rows of {total} ({len(split.probe)} go to the search's probe)"


def _rank(seed: int, name: str, row_id: str) -> str:
    return hashlib.sha256(f"{seed}\0{name}\0{row_id}".encode()).hexdigest()
