"""The statistics of a promotion gate, as pure functions: one-sided paired tests and the bounds that invert them.

Every test asks one question, H0: δ ≤ δ0 against δ > δ0, where δ is the candidate's mean improvement over the
reference, and reports the one-sided lower confidence bound that inverts *that same test* at the same level:
`p_value < alpha` and `lower > delta0` agree by construction. The upper bound inverts the same family tested the
other way (H0: δ ≥ x), so "a gain of x is excluded" is a test too.

Every result is a frozen dataclass whose fields are never NaN or inf: a degenerate case (no disagreement, no
variance) gets a defined value and a `reason`. Randomness comes only from the `seed` argument. Leaf module: numpy,
scipy and the standard library only.
"""

from __future__ import annotations

from ._betting import PLANNING_RULE, betting_max_evidence, betting_mde, betting_mean_test, betting_n, betting_power
from ._common import ALTERNATIVES, Alternative, BoundedTest, Scores
from ._mcnemar import McNemarMethod, McNemarResult, mcnemar
from ._means import MEAN_METHODS, MeanMethod, paired_mean_mde, paired_mean_n, paired_mean_test
from ._proportions import (
    PROPORTION_METHODS,
    ProportionMethod,
    mcnemar_mde,
    mcnemar_n,
    mcnemar_power,
    noninferiority_min_n,
    paired_proportion_mde,
    paired_proportion_n,
    paired_proportion_test,
    tango_bound,
)

__all__ = [
    "ALTERNATIVES",
    "MEAN_METHODS",
    "PLANNING_RULE",
    "PROPORTION_METHODS",
    "Alternative",
    "BoundedTest",
    "McNemarMethod",
    "McNemarResult",
    "MeanMethod",
    "ProportionMethod",
    "Scores",
    "betting_max_evidence",
    "betting_mde",
    "betting_mean_test",
    "betting_n",
    "betting_power",
    "mcnemar",
    "mcnemar_mde",
    "mcnemar_n",
    "mcnemar_power",
    "noninferiority_min_n",
    "paired_mean_mde",
    "paired_mean_n",
    "paired_mean_test",
    "paired_proportion_mde",
    "paired_proportion_n",
    "paired_proportion_test",
    "tango_bound",
]
