"""The league of peer optimizers (benchmarks/league.py, issue 23 item 5): its metrics on a hand-computable case,
the table as a peer's multi-fidelity objective (what a step costs, which configuration is the incumbent), a capped
study through the product's study code, the power-law extrapolation, and one peer library where it is installed
(the league extra; skipped, visibly, where it is not)."""

from __future__ import annotations

import math
import sys

import pytest

from .helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from league import BudgetSpent, TableBlackbox, entry_summary, predict_final, run_peer, run_replay, truncate
from table_replay import Replay

from .test_curve_tables import synthetic_table

INF = math.inf


def test_the_league_metrics_on_a_hand_computed_case():
    """Four studies at ε 0.1 and B 400: stay times 300, 400 (censored: it touched ε and left), 400 and 100, so the
    Kaplan-Meier survival is 3/4 after 100 and 1/2 after 300 (median 300); P(regret ≤ ε) is 2/4 at 100 and 200
    steps and 3/4 at 400; an oracle that stays at 100 everywhere gives the fraction 100/300."""
    steps = [100, 200, 300, 400]
    runs = [
        Replay(steps, [INF, 0.5, 0.0, 0.0], 4),
        Replay(steps, [0.0, 0.0, 0.5, 0.5], 4),
        Replay(steps, [INF, INF, INF, 0.0], 4),
        Replay([100, 200], [0.0, 0.0], 2),
    ]
    oracle = ([100.0] * 4, [True] * 4)
    row = entry_summary(runs, oracle, epsilon=0.1, budget=400, seconds=0.0)
    stay = row["steps_to_stay_within_epsilon"]
    assert stay["median"] == 300 and stay["events"] == 3 and stay["replays"] == 4
    p = row["p_within_epsilon"]
    assert (p["25%"]["hits"], p["50%"]["hits"], p["100%"]["hits"]) == (2, 2, 3)
    assert p["100%"]["p"] == 0.75 and p["100%"]["low"] < 0.75 < p["100%"]["high"]
    assert row["regret_at_equal_compute"]["median"] == 0.0
    assert row["oracle_fraction"]["ratio"] == pytest.approx(100 / 300)


def test_the_table_as_a_peers_objective_pays_each_step_once_and_keeps_the_best_full_run():
    table = synthetic_table()
    truth = table.true_losses()
    best = min(truth, key=truth.__getitem__)
    worse = max(truth, key=truth.__getitem__)
    box = TableBlackbox(table, 0, budget=250, max_steps=100, eval_every=25, constrained=False)
    assert box.evaluate(worse, 25) == pytest.approx(table.rows[(*worse, 0)]["values"][0])  # a low fidelity
    assert box.evaluate(best, 100) == table.rows[(*best, 0)]["final"]  # a full run: the incumbent
    box.evaluate(worse, 100, resumed_from=50)  # a resumed trial pays its last 50 steps; a worse final changes nothing
    box.evaluate(worse, 110)  # 100 more steps: past the budget (275), so not a point of the curve
    with pytest.raises(BudgetSpent):
        box.evaluate(best, 100)
    run = box.result()
    assert run.steps == [25, 125, 175] and run.regret == [INF, 0.0, 0.0]


def test_a_capped_study_is_the_products_study_cut_at_the_budget():
    """A league entry's study stops once it has trained B steps: the same trials, in the same order, as the
    uncapped study of the same seeds cut at B (the cap changes when the study ends, nothing else)."""
    table = synthetic_table()
    capped = run_replay(table, "defaults", study_seed=1, train_seed=0, budget=600)
    cut = truncate(run_replay(table, "defaults", study_seed=1, train_seed=0, budget=None), 600)
    assert capped.steps == cut.steps and capped.regret == cut.regret
    assert 500 <= capped.total_steps() <= 600


def test_the_power_law_extrapolates_an_exact_power_law():
    curve = [(t, 1.0 + 2.0 * t**-0.5) for t in (25, 50, 75)]
    assert predict_final(curve, 100) == pytest.approx(1.2, rel=1e-4)
    assert predict_final(curve[:2], 100) == pytest.approx(1.2)  # two points: the exponent fixed at 0.5
    assert predict_final([(25, 1.0), (50, math.nan)], 100) == INF  # a diverged curve is never the incumbent


@pytest.mark.parametrize(
    ("key", "module", "install"),
    [
        ("dehb", "dehb", "pip install --no-deps dehb==0.1.2 (it pins numpy<2)"),
        ("st_asha", "syne_tune", "pip install -e '.[league]'"),
    ],
)
def test_a_peer_runs_through_its_own_library_on_a_table(key: str, module: str, install: str):
    pytest.importorskip(module, reason=f"{module} is not installed ({install})")
    table = synthetic_table()
    run = run_peer(table, key, study_seed=0, train_seed=0, budget=600)
    gaps = [b - a for a, b in zip([0, *run.steps], run.steps, strict=False)]
    assert run.total_steps() <= 600 and set(gaps) <= {25, 50, 75, 100}  # whole evaluations of the table
    assert math.isfinite(run.final_regret())  # a full-budget run happened within 600 steps


def test_a_rerun_replaces_its_own_rows_keeps_the_others_and_a_new_epsilon_keeps_none(tmp_path):
    """league.write merges a run into the file: at the same B and ε a rerun entry's row replaces the recorded one
    and the entries not rerun are kept; at another ε (a table with more seeds) nothing earlier is kept."""
    import json
    from argparse import Namespace

    from league import write

    out = tmp_path / "league.json"
    args = Namespace(output=str(out), seeds=100, slow_seeds=None, unconstrained=False)

    def run(epsilon: float, entries: dict[str, int]) -> dict[str, object]:
        result = {"epsilon": epsilon, "equal_compute_steps": 1500.0, "not_run": {}}
        write("quickstart", {**result, "entries": {k: {"replays": v} for k, v in entries.items()}}, args, set(), 1.0)
        return json.loads(out.read_text())["league"]["tasks"]["quickstart"]["entries"]

    run(0.01, {"defaults": 30, "random": 30})
    assert run(0.01, {"defaults": 100}) == {"defaults": {"replays": 100}, "random": {"replays": 30}}
    assert run(0.02, {"oracle": 100}) == {"oracle": {"replays": 100}}
