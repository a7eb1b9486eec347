"""Operating characteristics of the gate, simulated through its public API (`hpo_action.gate.gate`).

Each scenario draws paired per-example scores from a known truth, gates them, and counts outcomes; the goals are
those of issue 11 (false promotions at the null at most alpha + 2 SE, power at the reported MDE, forgetting caught
at 3 points, never "reject" at a worthwhile true gain). `tests/test_gate.py` runs every scenario with fewer
resamples; this script runs more sets and writes benchmarks/results/gate_calibration.json.

    python benchmarks/gate_calibration.py [--sets 2000] [--resamples 999]

`--families` runs issue 21's score families instead: the false-promotion rate of the default score test and of
the old one (`permutation+bootstrap`) at equal (clipped) means, n = 10, 30, 200, 1000, and the simulated power at
the needed_n the gate reports (several pilots per family, each with its own needed_n) →
benchmarks/results/gate_families.json; with --power-only, the power alone → benchmarks/results/gate_needed_n.json.

    python benchmarks/gate_calibration.py --families [--sets 300] [--pilots 5] [--power-sets 40] [--power-only]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpo_action.config import GateConfig
from hpo_action.judge import stats
from hpo_action.judge.decision import GateDecision
from hpo_action.judge.gate import ForgettingInput, Paired, gate

RESULTS = Path(__file__).resolve().parent / "results" / "gate_calibration.json"
FAMILY_RESULTS = RESULTS.with_name("gate_families.json")
POWER_RESULTS = RESULTS.with_name("gate_needed_n.json")
ALPHA = 0.05
VOCAB = 32_000  # the vocabulary the families' gates assume: losses clip to [0, ln 32000] = [0, 10.37]
SIZES = (10, 30, 200, 1000)


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
    return lambda rng, cfg: gate(paired(rng), [], cfg, figures=False)


def forgetting_only(
    paired: Callable[[np.random.Generator], Paired], margin: float
) -> Callable[[np.random.Generator, GateConfig], GateDecision]:
    """A clearly better candidate on the primary metric, so the forgetting set alone decides."""

    def draw(rng: np.random.Generator, cfg: GateConfig) -> GateDecision:
        clear = booleans(rng, 400, 0.3, 0.0)
        return gate(clear, [ForgettingInput("set", paired(rng), margin)], cfg, figures=False)

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


# --- issue 21: score families ------------------------------------------------------------------------------------
# Each family draws raw (candidate, reference) per-example losses; `Family.draw` shifts the candidate so that the
# *clipped* means (the estimand of the default test, losses clipped to [0, ln V]) differ by exactly `effect`
# (reference minus candidate: the improvement), the shift found once on a large sample.


def _exchangeable(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.lognormal(0.0, 1.0, n), rng.lognormal(0.0, 1.0, n)


def _heavier_tailed(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.lognormal(0.5**2 / 2 - 1.0 / 2, 1.0, n), rng.lognormal(0.0, 0.5, n)


def _rare_large(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Slightly better on 98% of examples, +5 on 2%: what a sample of 10 or 30 rarely shows."""
    reference = rng.lognormal(0.5, 0.5, n)
    return reference - 0.1 + rng.normal(0.0, 0.1, n) + 5.0 * (rng.random(n) < 0.02), reference


def _skewed_t2(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Differences from Student's t with 2 degrees of freedom, the right tail doubled (infinite variance, skew)."""
    reference = rng.lognormal(1.0, 0.4, n)
    t = rng.standard_t(2, n)
    return reference + 0.3 * np.where(t > 0, 2 * t, t), reference


def _lognormal_differences(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Usually a little better, sometimes much worse: a lognormal(0, 1) difference with its mean removed."""
    reference = rng.lognormal(1.0, 0.4, n)
    return reference + 0.5 * rng.lognormal(0.0, 1.0, n), reference


def _bimodal(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Better by about 1 on half the examples and worse by about 1 on the other half (a mixture of two normals)."""
    reference = rng.lognormal(1.5, 0.3, n)
    return reference + np.where(rng.random(n) < 0.5, -1.0, 1.0) + rng.normal(0.0, 0.2, n), reference


def _ties(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Losses on a grid of 0.5 and 85% of pairs tied: the differences take five values, 0 most of the time."""
    reference = np.round(rng.lognormal(1.0, 0.5, n) * 2) / 2
    steps = rng.choice([-1.0, -0.5, 0.0, 0.5, 2.0], size=n, p=[0.04, 0.06, 0.85, 0.03, 0.02])
    return reference + steps, reference


def _hidden_tail(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A little better almost always, the loss at the top of the range (+10) on 0.5% of examples: a pilot of 200
    misses the tail one time in three."""
    reference = rng.lognormal(0.3, 0.3, n)
    return reference - 0.05 + rng.normal(0.0, 0.05, n) + 10.0 * (rng.random(n) < 0.005), reference


@dataclass(frozen=True)
class Family:
    name: str
    raw: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]

    @functools.cache  # noqa: B019 (a handful of frozen families, kept for the whole run)
    def shift(self, effect: float) -> float:
        """The shift c with mean(clip(ref)) − mean(clip(cand − c)) = effect, on 2·10^6 draws (bisection)."""
        cand, ref = self.raw(np.random.default_rng(2024), 2_000_000)
        top = math.log(VOCAB)
        target = float(np.mean(np.clip(ref, 0, top))) - effect
        low, high = -top, top
        for _ in range(50):
            middle = (low + high) / 2
            low, high = (middle, high) if np.mean(np.clip(cand - middle, 0, top)) > target else (low, middle)
        return (low + high) / 2

    def draw(self, rng: np.random.Generator, n: int, shift: float) -> Paired:
        cand, ref = self.raw(rng, n)
        return losses(cand - shift, ref)


FAMILIES = (
    Family("exchangeable (both lognormal(0, 1))", _exchangeable),
    Family("heavier-tailed candidate, equal mean", _heavier_tailed),
    Family("rare large losses (+5 on 2%)", _rare_large),
    Family("skewed t(2) differences", _skewed_t2),
    Family("lognormal differences", _lognormal_differences),
    Family("bimodal differences (+-1)", _bimodal),
    Family("ties-heavy grid (85% tied)", _ties),
    Family("hidden tail (+10 on 0.5%)", _hidden_tail),
)


def false_promotion(family: Family, n: int, test: str, sets: int, seed: int = 0) -> tuple[float, float]:
    """The share of `sets` null data sets (equal clipped means) that `test` promotes, and its SE."""
    cfg = GateConfig(test=test, resamples=999)
    rng, shift = np.random.default_rng(seed), family.shift(0.0)
    hits = sum(gate(family.draw(rng, n, shift), [], cfg, vocab_size=VOCAB, figures=False).promote for _ in range(sets))
    rate = hits / sets
    return rate, math.sqrt(max(rate * (1 - rate), ALPHA * (1 - ALPHA)) / sets)


@dataclass(frozen=True)
class PlanCheck:
    """Power at the needed_n the gate reports, over several pilots: each pilot gets its own needed_n, and fresh
    data sets of that size at the same true effect are gated."""

    family: str
    pilot: int
    needed_n: tuple[int, ...]  # one per pilot
    power: tuple[float, ...]  # the promoted share of the data sets at each pilot's needed_n
    pooled: float  # the promoted share over all of them
    se: float  # binomial SE of `pooled` over every data set gated
    redrawn: int  # pilots that promoted (no needed_n reported) and were replaced by a fresh one


def power_at_needed_n(
    family: Family, pilots: int, sets: int, pilot: int = 200, effect: float | None = None, seed: int = 0
) -> PlanCheck:
    """For each of `pilots` pilots of `pilot` pairs at a true improvement `effect` (default: gate.target_effect, and
    the gate plans for the same), the needed_n the gate reports, and the share of `sets` fresh data sets of that
    size, at the same effect, that the default test promotes."""
    cfg = GateConfig() if effect is None else GateConfig(target_effect=effect)
    rng, shift = np.random.default_rng(seed), family.shift(cfg.target_effect)
    needed, rates = [], []
    redrawn = 0
    for _ in range(pilots):
        result = gate(family.draw(rng, pilot, shift), [], cfg, vocab_size=VOCAB).primary
        while result.needed_n is None:  # the pilot promoted already, so the gate reports no needed_n: draw again
            redrawn += 1
            result = gate(family.draw(rng, pilot, shift), [], cfg, vocab_size=VOCAB).primary
        hits = sum(
            gate(family.draw(rng, result.needed_n, shift), [], cfg, vocab_size=VOCAB, figures=False).promote
            for _ in range(sets)
        )
        needed.append(result.needed_n)
        rates.append(hits / sets)
    pooled = float(np.mean(rates))
    se = math.sqrt(pooled * (1 - pooled) / (pilots * sets))
    return PlanCheck(family.name, pilot, tuple(needed), tuple(rates), pooled, se, redrawn)


def oracle_n(family: Family, effect: float = 0.05, draws: int = 200_000) -> int:
    """The n the betting test needs when its law is known: the same planning rule on 200,000 pairs of the family,
    where the variance bound is the variance itself to about 1%. Beside the reported needed_n it shows what a
    bound that must hold for every law costs on a pilot of 200."""
    shift, top = family.shift(effect), math.log(VOCAB)
    paired = family.draw(np.random.default_rng(99), draws, shift)
    d = np.clip(paired.reference, 0, top) - np.clip(paired.candidate, 0, top)  # improvement: lower loss is better
    return stats.betting_n(d, effect, (-top, 0.0), 0.0, ALPHA, 0.8, reps=400, seed=0)


def run_families(sets: int, pilots: int, power_sets: int) -> None:
    rows: list[dict[str, object]] = []
    for family in FAMILIES:
        for n in SIZES:
            row: dict[str, object] = {"family": family.name, "n": n}
            for test in ("permutation+bootstrap", "betting"):
                started = time.perf_counter()
                rate, se = false_promotion(family, n, test, sets)
                row[test] = {"rate": rate, "se": se}
                took = time.perf_counter() - started
                print(f"{family.name:42s} n={n:5d} {test:22s} {rate:.3f} ± {se:.3f} ({took:.0f} s)", flush=True)
            rows.append(row)
    power = run_power(pilots, power_sets)
    payload = {"manifest": manifest(), "sets": sets, "pilots": pilots, "power_sets": power_sets, "alpha": ALPHA}
    payload["vocab"] = VOCAB
    payload |= {"false_promotion": rows, "power_at_needed_n": power}
    FAMILY_RESULTS.write_text(json.dumps(payload, indent=2) + "\n")


def run_power(pilots: int, power_sets: int) -> list[dict[str, object]]:
    """Issue 21 item 5: power at the reported needed_n, every family, pilots of 200 (and of 50 and 1000 for a few)."""
    power = []
    plans = [(family, 200) for family in FAMILIES] + [(FAMILIES[i], size) for i in (3, 7) for size in (50, 1000)]
    for family, size in plans:
        started = time.perf_counter()
        check = power_at_needed_n(family, pilots, power_sets, pilot=size)
        power.append(check.__dict__)
        print(
            f"{family.name:42s} pilot {size:4d} needed_n {check.needed_n}: power {check.pooled:.3f} ± {check.se:.3f}"
            f" (lowest pilot {min(check.power):.3f}; {time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    return power


def manifest() -> dict[str, object]:
    """The commit the numbers were measured at (and whether the tree differed from it)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=999)
    parser.add_argument("--families", action="store_true", help="issue 21's score families instead")
    parser.add_argument("--pilots", type=int, default=5, help="pilots per family for the power at needed_n")
    parser.add_argument("--power-sets", type=int, default=40, help="data sets gated at each pilot's needed_n")
    parser.add_argument("--power-only", action="store_true", help="with --families: only the power at needed_n")
    parser.add_argument("--oracle", action="store_true", help="add oracle_n to gate_needed_n.json (known law)")
    args = parser.parse_args()
    if args.oracle:
        payload = json.loads(POWER_RESULTS.read_text())
        oracle = {family.name: oracle_n(family) for family in FAMILIES}
        for row in payload["power_at_needed_n"]:
            row["oracle_n"] = oracle[row["family"]]
        payload["oracle_manifest"] = manifest()
        POWER_RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
        return
    if args.families and args.power_only:
        payload = {"manifest": manifest(), "pilots": args.pilots, "power_sets": args.power_sets, "alpha": ALPHA}
        payload["vocab"] = VOCAB
        payload["power_at_needed_n"] = run_power(args.pilots, args.power_sets)
        POWER_RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
        return
    if args.families:
        run_families(args.sets, args.pilots, args.power_sets)
        return
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
