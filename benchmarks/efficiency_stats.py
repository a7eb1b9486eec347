"""Statistics of replayed studies: medians with bootstrap 95% CIs (infinities allowed: a replay that never
reached ε counts as inf), paired ratios of medians, and the stagnation rule that stops a study."""

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


def _ratio(a: float, b: float) -> float | None:
    if math.isinf(b):
        return 0.0 if math.isfinite(a) else None
    return a / b if b > 0 else None


def stagnated(patience: int) -> Callable[[Any], bool]:
    """True once the study's best completed value is `patience` or more counted trials old."""

    def stop(study: Any) -> bool:
        from hpo_action.search.duplicates import is_discarded

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
