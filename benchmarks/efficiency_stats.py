"""Statistics of replayed studies: medians with bootstrap 95% CIs (infinities allowed: a replay that never
reached ε counts as inf), paired ratios of medians, Kaplan-Meier medians of censored times (steps until the
incumbent stays within ε, censored at the replay's budget), proportions with Wilson CIs, and the stagnation rule
that stops a study."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

BUDGETS = (60, 120, 180, 240, 360, 480, 600, 780, 960, 1200, 1500, 1800, 2400)
RESAMPLES = 2000


def bootstrap_median(values: list[float], seed: int = 0) -> dict[str, float]:
    """The median and a percentile-bootstrap 95% CI (order statistics: no interpolation across inf)."""
    import numpy as np

    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    medians = np.sort(np.median(data[rng.integers(0, len(data), (RESAMPLES, len(data)))], axis=1))
    return {
        "median": float(np.median(data)),
        "low": float(medians[int(0.025 * RESAMPLES)]),
        "high": float(medians[int(0.975 * RESAMPLES) - 1]),
    }


def bootstrap_ratio(a: list[float], b: list[float], seed: int = 0) -> dict[str, Any] | None:
    """median(a) / median(b) with a paired bootstrap CI (replay i of both strategies shares its seeds); None
    when the point ratio is undefined (neither median is finite)."""
    import numpy as np

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    point = _ratio(float(np.median(x)), float(np.median(y)))
    if point is None:
        return None
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(x), (RESAMPLES, len(x)))
    ratios = [_ratio(mx, my) for mx, my in zip(np.median(x[picks], axis=1), np.median(y[picks], axis=1), strict=True)]
    ordered = sorted(math.inf if r is None else r for r in ratios)
    low, high = ordered[int(0.025 * RESAMPLES)], ordered[int(0.975 * RESAMPLES) - 1]
    return {"ratio": point, "low": low, "high": high, "excludes_1": bool(high < 1 or low > 1)}


def km_median(times: Any, events: Any) -> float:
    """The Kaplan-Meier median of right-censored times (Kaplan & Meier 1958): the first event time at which the
    product-limit survival S(t) = prod(1 - d_i / n_i) falls to 0.5 or below; inf when it never does (the budget
    ran out first for too many). `events[i]` is False for a time censored at times[i]."""
    import numpy as np

    t, d = np.asarray(times, dtype=float), np.asarray(events, dtype=bool)
    order = np.lexsort((~d, t))  # at a tie, events before censorings (the usual convention)
    t, d = t[order], d[order]
    at_risk = len(t) - np.arange(len(t))
    survival = np.cumprod(np.where(d, 1.0 - 1.0 / at_risk, 1.0))
    hit = np.nonzero(d & (survival <= 0.5 + 1e-12))[0]
    return float(t[hit[0]]) if len(hit) else math.inf


def km_summary(times: list[float], events: list[bool], seed: int = 0) -> dict[str, Any]:
    """The Kaplan-Meier median with a percentile-bootstrap 95% CI (resampling replays), and the event count."""
    import numpy as np

    t, d = np.asarray(times, dtype=float), np.asarray(events, dtype=bool)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(t), (RESAMPLES, len(t)))
    medians = sorted(km_median(t[p], d[p]) for p in picks)
    return {
        "median": km_median(t, d),
        "low": medians[int(0.025 * RESAMPLES)],
        "high": medians[int(0.975 * RESAMPLES) - 1],
        "events": int(d.sum()),
        "replays": len(t),
    }


def km_ratio(
    a: tuple[list[float], list[bool]], b: tuple[list[float], list[bool]], seed: int = 0
) -> dict[str, Any] | None:
    """KM median of a ÷ KM median of b, with a paired bootstrap CI (replay i of both shares its seeds); None when
    either median is never (censored at the budget: the ratio is undefined); a resample's undefined ratio counts
    as inf."""
    import numpy as np

    ta, da, tb, db = (np.asarray(x) for x in (*a, *b))
    point = _finite_ratio(km_median(ta, da), km_median(tb, db))
    if point is None:
        return None
    rng = np.random.default_rng(seed)
    ratios = []
    for p in rng.integers(0, len(ta), (RESAMPLES, len(ta))):
        ratio = _finite_ratio(km_median(ta[p], da[p]), km_median(tb[p], db[p]))
        ratios.append(math.inf if ratio is None else ratio)
    ratios.sort()
    low, high = ratios[int(0.025 * RESAMPLES)], ratios[int(0.975 * RESAMPLES) - 1]
    return {"ratio": point, "low": low, "high": high, "excludes_1": bool(high < 1 or low > 1)}


def proportion(hits: int, n: int) -> dict[str, float]:
    """hits / n with the Wilson score 95% interval (scipy's binomtest)."""
    from scipy.stats import binomtest

    interval = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {"p": hits / n, "low": float(interval.low), "high": float(interval.high), "hits": hits, "n": n}


def _finite_ratio(a: float, b: float) -> float | None:
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else None


def _ratio(a: float, b: float) -> float | None:
    if math.isinf(b):
        return 0.0 if math.isfinite(a) else None
    return a / b if b > 0 else None


def stagnated(patience: int) -> Callable[[Any], bool]:
    """True once the study's best completed value is `patience` or more counted trials old."""

    def stop(study: Any) -> bool:
        from hpo_action.search.optuna_backend.duplicates import is_discarded

        trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and not is_discarded(t)]
        values = [(t.value, i) for i, t in enumerate(trials) if t.state.name == "COMPLETE" and t.value is not None]
        if not values:
            return len(trials) >= 2 * patience
        best_index = min(values)[1]
        return len(trials) - 1 - best_index >= patience

    return stop


def finite(value: Any) -> Any:
    """JSON has no infinity: a target never reached is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
