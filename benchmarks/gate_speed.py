"""Gate statistics speed: hpo-action's paired bootstrap and permutation test against scipy's bootstrap.

The same seeded data for all three: 10,000 paired continuous scores, 10,000 resamples each. The target is under
2 s for each of ours on a 2-core machine; scipy's vectorized bootstrap builds the whole resamples × n matrix.

    python benchmarks/gate_speed.py [--n 10000] [--resamples 10000] [--repeat 3]

Prints the best of `--repeat` wall times and scipy's time over ours, and writes benchmarks/results/gate_speed.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from hpo_action.stats import paired_bootstrap_ci, paired_permutation_test

RESULTS = Path(__file__).resolve().parent / "results" / "gate_speed.json"
TARGET_S = 2.0


def best_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best wall time of `repeat` runs (the least disturbed by other processes) and the last result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="paired examples")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples and sign-flip draws")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; the best time is kept")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    reference = rng.normal(0.0, 1.0, args.n)
    candidate = reference + rng.normal(0.02, 0.5, args.n)
    d = candidate - reference

    boot_s, boot = best_time(
        lambda: paired_bootstrap_ci(candidate, reference, resamples=args.resamples, method="percentile"), args.repeat
    )
    perm_s, perm = best_time(
        lambda: paired_permutation_test(candidate, reference, resamples=args.resamples), args.repeat
    )
    scipy_s, theirs = best_time(
        lambda: (
            sps.bootstrap(
                (d,), np.mean, n_resamples=args.resamples, method="percentile", vectorized=True, rng=0
            ).confidence_interval
        ),
        args.repeat,
    )
    ratio = scipy_s / boot_s
    print(f"n = {args.n}, resamples = {args.resamples}, best of {args.repeat}")
    print(f"ours bootstrap (percentile): {boot_s:.3f} s   CI [{boot.low:.5f}, {boot.high:.5f}]")
    print(f"ours permutation (sign-flip): {perm_s:.3f} s   p = {perm.p_value:.5f}")
    print(f"scipy.stats.bootstrap:        {scipy_s:.3f} s   CI [{theirs.low:.5f}, {theirs.high:.5f}]")
    print(f"scipy / ours (bootstrap): {ratio:.1f}x")
    for name, seconds in (("bootstrap", boot_s), ("permutation", perm_s)):
        if seconds >= TARGET_S:
            print(f"WARNING: ours {name} took {seconds:.2f} s, over the {TARGET_S:.0f} s target")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "n": args.n,
        "resamples": args.resamples,
        "ours_bootstrap_s": round(boot_s, 4),
        "ours_permutation_s": round(perm_s, 4),
        "scipy_bootstrap_s": round(scipy_s, 4),
        "ratio_vs_scipy": round(ratio, 2),
    }
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
