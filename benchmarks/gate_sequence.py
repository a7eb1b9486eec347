"""Error control across successive champions (issue 21, build 3): each `gate.sequence` procedure simulated over a
registry's life of 20 gates, through the gate's public API and the registry's ledger rule.

Every gate runs at the level `Ledger.next_level()` gives it (the registry's own rule), on booleans with per-example
difficulty (p_i ~ Beta(1.4, 0.6): accuracy 0.70, discordance about 0.28). The gate's boolean decision reads only the
discordant counts (b, c): its test, `stats.paired_proportion_test` (mid-p McNemar), runs once per (b, c, n), and
every 500th decision is re-run through `hpo_action.judge.gate.gate` itself at its level and must agree (gate() also
computes the MDE and needed n, which take 20 ms a call and decide nothing).

- null, fresh rows: every candidate as good as the champion, a new test sample at each gate;
- null, fixed rows: the same test rows at every gate, the champion's stored predictions re-used until a promotion
  replaces them (what the registry does when the test set is unchanged);
- power at gate k: a real +5-point gain (0.70 -> 0.75) arriving at gate k after k - 1 null gates;
- power, stream: 20 gates that are all real +5-point gains over the current champion (mean over the gates);
- half real gains: 20 gates, each candidate a real +5-point gain with probability 1/2: any false promotion, the
  false share of promotions (its mean is the false discovery rate) and the share of real gains promoted.

    python benchmarks/gate_sequence.py [--lives 1000] [--gates 20] [--n 1000]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpo_action.config import GateConfig
from hpo_action.judge import stats
from hpo_action.judge.gate import MIN_DISCORDANT, Paired, gate
from hpo_action.judge.sequence import PROCEDURES, Ledger, Procedure, at_level

RESULTS = Path(__file__).resolve().parent / "results" / "gate_sequence.json"
ALPHA = 0.05
GAIN = 0.05
POWER_AT = (1, 2, 5, 10, 20)
DIFFICULTY = (1.4, 0.6)  # Beta parameters of the per-example chance of being right: mean 0.70


class Gater:
    """Promote or not at a level: the gate's rule for booleans (mid-p McNemar p below the level, with at least
    MIN_DISCORDANT discordant pairs) on the p-value of `stats.paired_proportion_test`, computed once per (b, c, n);
    every `check_every`-th decision is also run through `gate()` itself at its level and must agree."""

    def __init__(self, cfg: GateConfig, check_every: int = 500) -> None:
        self.cfg, self.check_every, self.calls, self.checked = cfg, check_every, 0, 0
        self._p: dict[tuple[int, int, int], float] = {}

    def promote(self, candidate: np.ndarray, reference: np.ndarray, level: float) -> bool:
        b, c, n = int(np.sum(candidate > reference)), int(np.sum(candidate < reference)), len(candidate)
        key = (b, c, n)
        if key not in self._p:
            self._p[key] = stats.paired_proportion_test(candidate, reference, 0.0, ALPHA, "midp").p_value
        promoted = self._p[key] < level and b + c >= MIN_DISCORDANT
        self.calls += 1
        if self.calls % self.check_every == 0:
            decision = gate(_paired(candidate, reference), [], at_level(self.cfg, level))
            self.checked += 1
            if decision.promote != promoted:
                raise AssertionError(f"(b, c, n) = {key} at {level:g}: gate() says {decision.decision}")
        return promoted


def _paired(candidate: np.ndarray, reference: np.ndarray) -> Paired:
    return Paired("exact_match", candidate.astype(float).tolist(), reference.astype(float).tolist(), True)


def difficulty(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.beta(*DIFFICULTY, n)


def answers(rng: np.random.Generator, chance: np.ndarray) -> np.ndarray:
    return rng.random(len(chance)) < chance


def improved(chance: np.ndarray) -> np.ndarray:
    """The same examples, each wrong answer fixed with the chance that raises accuracy by GAIN (0.70 -> 0.75)."""
    return chance + (1 - chance) * GAIN / (1 - DIFFICULTY[0] / sum(DIFFICULTY))


@dataclass(frozen=True)
class Life:
    """One simulated registry life: did any gate promote falsely; power of a real gain at the gates in POWER_AT."""

    any_false: bool
    power_at: dict[int, bool]


def null_life(
    rng: np.random.Generator, procedure: Procedure, gater: Gater, gates: int, n: int, fixed_rows: bool
) -> Life:
    ledger = Ledger(procedure, ALPHA)
    chance = difficulty(rng, n)
    champion = answers(rng, chance)
    any_false, power_at = False, {}
    for k in range(1, gates + 1):
        if not fixed_rows:
            chance = difficulty(rng, n)
            champion = answers(rng, chance)
        if k in POWER_AT:  # what a real gain arriving now would face
            power_at[k] = gater.promote(answers(rng, improved(chance)), champion, ledger.next_level())
        ledger, entry = ledger.started()
        candidate = answers(rng, chance)
        promoted = gater.promote(candidate, champion, entry.level)
        ledger = ledger.finished(entry.k, "promote" if promoted else "reject")
        any_false |= promoted
        if promoted:
            champion = candidate
    return Life(any_false, power_at)


def gain_stream(rng: np.random.Generator, procedure: Procedure, gater: Gater, gates: int, n: int) -> float:
    """The share of 20 gates, each a real gain over the current champion, that promote."""
    ledger, promoted_count = Ledger(procedure, ALPHA), 0
    for _ in range(gates):
        chance = difficulty(rng, n)
        ledger, entry = ledger.started()
        promoted = gater.promote(answers(rng, improved(chance)), answers(rng, chance), entry.level)
        ledger = ledger.finished(entry.k, "promote" if promoted else "reject")
        promoted_count += promoted
    return promoted_count / gates


@dataclass(frozen=True)
class Mixed:
    """A life where each candidate is a real gain with probability 1/2, else only as good as the champion."""

    any_false: bool
    false_share: float  # false promotions / promotions (0 when none): its mean is the false discovery rate
    power: float  # the share of real gains promoted


def mixed_life(rng: np.random.Generator, procedure: Procedure, gater: Gater, gates: int, n: int) -> Mixed:
    ledger, false, true, real = Ledger(procedure, ALPHA), 0, 0, 0
    for _ in range(gates):
        chance = difficulty(rng, n)
        gain = bool(rng.random() < 0.5)
        ledger, entry = ledger.started()
        candidate = answers(rng, improved(chance) if gain else chance)
        promoted = gater.promote(candidate, answers(rng, chance), entry.level)
        ledger = ledger.finished(entry.k, "promote" if promoted else "reject")
        real += gain
        true += promoted and gain
        false += promoted and not gain
    return Mixed(false > 0, false / max(false + true, 1), true / max(real, 1))


@dataclass(frozen=True)
class Row:
    procedure: str
    measure: str
    estimate: float
    se: float


def _rate(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1) / math.sqrt(len(array))) if len(array) > 1 else 0.0


def simulate(lives: int, gates: int = 20, n: int = 1000, seed: int = 0, resamples: int = 999) -> list[Row]:
    """Every measure for every procedure; the same seeds for each procedure (common random numbers)."""
    gater = Gater(GateConfig(alpha=ALPHA, resamples=resamples))
    rows: list[Row] = []
    for procedure in PROCEDURES:
        fresh = [
            null_life(np.random.default_rng([seed, 1, i]), procedure, gater, gates, n, False) for i in range(lives)
        ]
        fixed = [null_life(np.random.default_rng([seed, 2, i]), procedure, gater, gates, n, True) for i in range(lives)]
        rows.append(
            Row(procedure, f"any false promotion in {gates} gates, fresh rows", *_rate([x.any_false for x in fresh]))
        )
        rows.append(
            Row(procedure, f"any false promotion in {gates} gates, fixed rows", *_rate([x.any_false for x in fixed]))
        )
        for k in (k for k in POWER_AT if k <= gates):
            rows.append(
                Row(procedure, f"power at gate {k} after {k - 1} null gates", *_rate([x.power_at[k] for x in fresh]))
            )
        stream = [gain_stream(np.random.default_rng([seed, 3, i]), procedure, gater, gates, n) for i in range(lives)]
        rows.append(Row(procedure, f"power, {gates} real gains in a row (mean)", *_rate(stream)))
        mixed = [mixed_life(np.random.default_rng([seed, 4, i]), procedure, gater, gates, n) for i in range(lives)]
        rows.append(Row(procedure, "half real gains: any false promotion", *_rate([x.any_false for x in mixed])))
        rows.append(
            Row(procedure, "half real gains: false share of promotions", *_rate([x.false_share for x in mixed]))
        )
        rows.append(Row(procedure, "power, half real gains (share promoted)", *_rate([x.power for x in mixed])))
    return rows


def table(rows: list[Row]) -> str:
    fixed = {row.measure: row.estimate for row in rows if row.procedure == "fixed"}
    lines = ["| procedure | measure | estimate ± SE | vs fixed |", "|---|---|---|---|"]
    for row in rows:
        ratio = f"{row.estimate / fixed[row.measure]:.2f}" if row.measure.startswith("power") else ""
        lines.append(f"| {row.procedure} | {row.measure} | {row.estimate:.3f} ± {row.se:.3f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lives", type=int, default=1000)
    parser.add_argument("--gates", type=int, default=20)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.time()
    rows = simulate(args.lives, args.gates, args.n, args.seed)
    print(table(rows))
    print(f"\n{args.lives} lives of {args.gates} gates, n = {args.n}, alpha = {ALPHA}; {time.time() - started:.0f} s")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"settings": vars(args), "rows": [row.__dict__ for row in rows]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
