"""Operating characteristics of the gate, simulated through its public API (`hpo_action.gate.gate`).

Each scenario draws paired per-example scores from a known truth, gates them, and counts outcomes; the goals are
those of issue 11 (false promotions at the null at most alpha + 2 SE, power at the reported MDE, forgetting caught
at 3 points, never "reject" at a worthwhile true gain). `tests/test_gate.py` runs every scenario with fewer
resamples; this script runs more sets and writes benchmarks/results/gate_calibration.json.

    python benchmarks/gate_calibration.py [--sets 2000] [--resamples 999]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpo_action.config import GateConfig
from hpo_action.judge.decision import GateDecision
from hpo_action.judge.gate import ForgettingInput, Paired, gate

RESULTS = Path(__file__).resolve().parent / "results" / "gate_calibration.json"
ALPHA = 0.05


@dataclass(frozen=True)
class Scenario:
    """A truth to simulate, what to count, and the goal the count must meet (`at_most` or not)."""

    name: str
    draw: Callable[[np.random.Generator, GateConfig], GateDecision]
    count: Callable[[GateDecision], bool]
    goal: float
    at_most: bool


def booleans(rng: np.random.Generator, n: int, p_gain: float, p_loss: float, base: float = 0.5) -> Paired:
    """Paired correctness: the candidate alone right with p_gain, the reference alone right with p_loss."""
    u = rng.random(n)
    gain, loss = u < p_gain, (u >= p_gain) & (u < p_gain + p_loss)
    both = ~(gain | loss) & (rng.random(n) < base)
    return Paired("exact_match", (gain | both).astype(float).tolist(), (loss | both).astype(float).tolist(), True)


def losses(candidate: np.ndarray, reference: np.ndarray) -> Paired:
    return Paired("loss", candidate.tolist(), reference.tolist(), False)


def exchangeable_losses(rng: np.random.Generator, n: int) -> Paired:
    """Both models' per-example losses from one lognormal law: no difference at all."""
    return losses(rng.lognormal(0.0, 1.0, n), rng.lognormal(0.0, 1.0, n))


def heavier_tailed_candidate(rng: np.random.Generator, n: int) -> Paired:
    """Reference lognormal(0, 0.5); candidate lognormal(σ = 1) with the same mean: rare large losses."""
    return losses(rng.lognormal(0.5**2 / 2 - 1.0 / 2, 1.0, n), rng.lognormal(0.0, 0.5, n))


def rare_big_increases(rng: np.random.Generator, n: int, margin: float) -> Paired:
    """The usual shape of forgetting: most losses a little lower, 5% much higher; the mean rises by `margin`."""
    reference = rng.lognormal(0.0, 0.5, n)
    jumps = (rng.random(n) < 0.05) * rng.exponential(2.0, n)  # mean 0.1
    return losses(reference + jumps - 0.1 + margin, reference)


def primary_only(
    paired: Callable[[np.random.Generator], Paired],
) -> Callable[[np.random.Generator, GateConfig], GateDecision]:
    return lambda rng, cfg: gate(paired(rng), [], cfg)


def forgetting_only(
    paired: Callable[[np.random.Generator], Paired], margin: float
) -> Callable[[np.random.Generator, GateConfig], GateDecision]:
    """A clearly better candidate on the primary metric, so the forgetting set alone decides."""

    def draw(rng: np.random.Generator, cfg: GateConfig) -> GateDecision:
        clear = booleans(rng, 400, 0.3, 0.0)
        return gate(clear, [ForgettingInput("set", paired(rng), margin)], cfg)

    return draw


def mde_at(n: int, discordance: float, cfg: GateConfig) -> float:
    """The MDE the gate reports for a boolean set of this size and discordance with no difference in it."""
    half = round(n * discordance / 2)
    pairs = [1.0] * half + [0.0] * half + [1.0] * (n - 2 * half)
    reference = [0.0] * half + [1.0] * half + [1.0] * (n - 2 * half)
    return gate(Paired("exact_match", pairs, reference, True), [], cfg).primary.mde


def promoted(decision: GateDecision) -> bool:
    return decision.promote


def rejected(decision: GateDecision) -> bool:
    return decision.decision == "reject"


def set_passed(decision: GateDecision) -> bool:
    return decision.forgetting[0].passed


def set_caught(decision: GateDecision) -> bool:
    return not decision.forgetting[0].passed


def set_failed(decision: GateDecision) -> bool:
    return decision.forgetting[0].status == "failed"


def scenarios(cfg: GateConfig) -> list[Scenario]:
    mde = mde_at(400, 0.1, cfg)
    margin = 0.02
    return [
        Scenario(
            "null booleans n=400 disagreement 0.1: promote",
            primary_only(lambda r: booleans(r, 400, 0.05, 0.05)),
            promoted,
            ALPHA,
            at_most=True,
        ),
        Scenario(
            "null lognormal losses n=200: promote",
            primary_only(lambda r: exchangeable_losses(r, 200)),
            promoted,
            ALPHA,
            at_most=True,
        ),
        Scenario(
            "heavier-tailed candidate, equal mean, n=200: promote",
            primary_only(lambda r: heavier_tailed_candidate(r, 200)),
            promoted,
            ALPHA,
            at_most=True,
        ),
        Scenario(
            f"booleans n=400 at the reported MDE {mde:.4f}: promote",
            primary_only(lambda r: booleans(r, 400, (0.1 + mde) / 2, (0.1 - mde) / 2)),
            promoted,
            0.78,
            at_most=False,
        ),
        Scenario(
            "booleans n=50, true +5 points (disagreement 0.15): reject",
            primary_only(lambda r: booleans(r, 50, 0.10, 0.05)),
            rejected,
            ALPHA,
            at_most=True,
        ),
        Scenario(
            "booleans n=50, true +5 points (disagreement 0.05): reject",
            primary_only(lambda r: booleans(r, 50, 0.05, 0.0)),
            rejected,
            ALPHA,
            at_most=True,
        ),
        Scenario(
            "forgetting n=5000, a 3-point drop: caught (not passed)",
            forgetting_only(lambda r: booleans(r, 5000, 0.01, 0.04, 0.8), margin),
            set_caught,
            0.95,
            at_most=False,
        ),
        Scenario(
            "forgetting booleans n=1000 at the margin: passed",
            forgetting_only(lambda r: booleans(r, 1000, 0.02, 0.04, 0.8), margin),
            set_passed,
            ALPHA,
            at_most=True,
        ),
        Scenario(
            "forgetting skewed losses n=200 at the margin: passed",
            forgetting_only(lambda r: rare_big_increases(r, 200, margin), margin),
            set_passed,
            ALPHA,
            at_most=True,
        ),
        Scenario(
            "forgetting n=160, nothing forgotten (disagreement 0.04): failed",
            forgetting_only(lambda r: booleans(r, 160, 0.02, 0.02, 0.9), margin),
            set_failed,
            ALPHA,
            at_most=True,
        ),
    ]


@dataclass(frozen=True)
class Outcome:
    scenario: str
    rate: float
    limit: float
    at_most: bool
    met: bool
    agreement: float  # among primary tests with p < alpha, the share whose bound exceeds min_effect
    sets: int


def simulate(scenario: Scenario, sets: int, cfg: GateConfig, seed: int = 0) -> Outcome:
    rng = np.random.default_rng(seed)
    hits, significant, agreeing = 0, 0, 0
    for _ in range(sets):
        decision = scenario.draw(rng, cfg)
        hits += scenario.count(decision)
        p = decision.primary
        if p.p_value < p.alpha:
            significant += 1
            agreeing += p.bound > p.min_effect
    rate = hits / sets
    se = math.sqrt(scenario.goal * (1 - scenario.goal) / sets)
    limit = scenario.goal + 2 * se if scenario.at_most else scenario.goal
    met = rate <= limit if scenario.at_most else rate >= limit
    return Outcome(
        scenario.name, rate, limit, scenario.at_most, met, agreeing / significant if significant else 1.0, sets
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=999)
    args = parser.parse_args()
    cfg = GateConfig(resamples=args.resamples)
    results = []
    for scenario in scenarios(cfg):
        started = time.perf_counter()
        outcome = simulate(scenario, args.sets, cfg)
        results.append(outcome)
        relation = "<=" if outcome.at_most else ">="
        print(
            f"{'ok  ' if outcome.met else 'MISS'} {outcome.rate:.4f} {relation} {outcome.limit:.4f}  "
            f"agreement {outcome.agreement:.3f}  {scenario.name}  ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "sets": args.sets,
        "resamples": args.resamples,
        "alpha": ALPHA,
        "scenarios": [o.__dict__ for o in results],
    }
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
