"""Does selecting on the forgetting probe inflate the gate's forgetting pass rate? (issue 21 item 2, issue 22)

Every trial of a simulated study truly forgets exactly the margin on a boolean forgetting set (the worst case the
non-inferiority test must hold its level at). Each trial's per-row correctness is drawn afresh against one fixed
base model; the search scores each trial on its probe rows, keeps the feasible ones and picks a finalist; the final
gate then tests the finalist. The figure is how often the gate says "passed" for a finalist that in truth sits on
the margin: it must stay at α.

Two designs through the product's own code (judge/forgetting_split.py, judge/gate.py):
- `split` (now): the probe is the set's seeded probe part; a trial is feasible only when the gate's own test passes
  on it (`probe_verdict`); the gate tests only the gate part.
- `overlap` (before): the probe is the first `probe` rows by id, feasible when the point drop is within the margin,
  and the gate tests the whole set, probe rows included.
Two finalist rules: `objective` (the best of an objective independent of forgetting, among feasible trials) and
`probe` (the feasible trial with the best probe result: the most selection on the probe there can be).

python benchmarks/forgetting_selection.py [--reps 2000]  → results/forgetting_selection.json (and .txt)
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpo_action.config import GateConfig
from hpo_action.judge.forgetting_split import probe_verdict, split_set
from hpo_action.judge.gate import ForgettingInput, Paired, forgetting_result

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Setting:
    """One simulated study: a set of `rows` rows, `probe` of them probed, `trials` trials at the margin."""

    rows: int = 400
    probe: int = 120
    trials: int = 20
    margin: float = 0.05
    base_accuracy: float = 0.9
    recovered: float = 0.3  # share of the base's wrong rows a trial gets right (the rest of the drop is lost rows)
    alpha: float = 0.05


def _trial(base: np.ndarray, s: Setting, rng: np.random.Generator) -> np.ndarray:
    """One trial's per-row correctness: its expected accuracy is exactly the base's minus the margin."""
    lose = (s.margin + s.recovered * (1 - base.mean())) / base.mean()  # P(wrong | base right)
    right = rng.random(len(base)) >= lose
    gained = rng.random(len(base)) < s.recovered
    return np.where(base, right, gained)


def simulate(s: Setting, design: str, rule: str, reps: int, seed: int) -> dict[str, float]:
    """Pass rate of the gate's forgetting test for the finalist, with its standard error, over `reps` studies."""
    rng = np.random.default_rng(seed)
    gate_cfg = GateConfig(alpha=s.alpha, resamples=1000)
    ids = [f"row-{i:05d}" for i in range(s.rows)]
    passed = finalists = 0
    for rep in range(reps):
        base = rng.random(s.rows) < s.base_accuracy
        rows = [{"id": row_id} for row_id in ids]
        if design == "split":
            parts = split_set(rows, "copy", rep, s.probe)
            probe_idx = [int(r["id"][4:]) for r in parts.probe]
            gate_idx = [int(r["id"][4:]) for r in parts.gate]
        else:
            probe_idx, gate_idx = list(range(s.probe)), list(range(s.rows))
        candidates = []
        for _ in range(s.trials):
            trial = _trial(base, s, rng)
            cand, ref = trial[probe_idx].astype(float).tolist(), base[probe_idx].astype(float).tolist()
            verdict = probe_verdict("copy", cand, ref, "exact_match", s.margin, None, gate_cfg)
            feasible = verdict.passed if design == "split" else -verdict.delta <= s.margin
            if feasible:
                score = verdict.bound if design == "split" else verdict.delta
                candidates.append((rng.random() if rule == "objective" else -score, trial))
        if not candidates:
            continue
        finalists += 1
        trial = min(candidates, key=lambda c: c[0])[1]
        cand, ref = trial[gate_idx].astype(float).tolist(), base[gate_idx].astype(float).tolist()
        paired = Paired("exact_match", cand, ref, True)
        if forgetting_result(ForgettingInput("copy", paired, s.margin), gate_cfg).passed:
            passed += 1
    rate = passed / max(finalists, 1)
    return {
        "pass_rate": rate,
        "se": math.sqrt(rate * (1 - rate) / max(finalists, 1)),
        "finalists": finalists,
        "reps": reps,
        "pass_rate_all_reps": passed / reps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    s = Setting()
    out = {"setting": s.__dict__, "results": []}
    lines = [f"setting: {s}", "design  rule       pass rate (SE)      finalists/reps  alpha + 2 SE"]
    for design in ("split", "overlap"):
        for rule in ("objective", "probe"):
            r = simulate(s, design, rule, args.reps, args.seed)
            out["results"].append({"design": design, "rule": rule, **r})
            lines.append(
                f"{design:7s} {rule:10s} {r['pass_rate']:.3f} ({r['se']:.3f})      "
                f"{r['finalists']}/{r['reps']}       {s.alpha + 2 * r['se']:.3f}"
            )
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "forgetting_selection.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "forgetting_selection.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
