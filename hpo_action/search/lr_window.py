"""The learning-rate window that `search.lr_bounds: auto` searches: a decade either side of the range test's
suggestion (the range test: train/lr_find.py), whichever backend runs the study."""

from __future__ import annotations

DECADES = 1.0  # the window: the suggestion ÷ 10 … × 10
AUTO_STEPS = 100  # steps of the range test before a study (about two 60-step trials of the quickstart)


def window(suggestion: float, low: float, high: float) -> tuple[float, float]:
    """A decade either side of the suggestion, within the configured range where the two overlap (the
    window alone where they do not: the range test found the configured range misplaced)."""
    lower, upper = suggestion / 10**DECADES, suggestion * 10**DECADES
    inside = (max(lower, low), min(upper, high))
    return inside if inside[0] < inside[1] else (lower, upper)
