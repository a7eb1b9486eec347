"""Seed-robust finalists (search.finalists) replayed on a learning-curve table with seed rows: does retraining the
top-k trials on extra training seeds and choosing by the bound on their mean (hpo_action/search/reseed_finalists.py,
the product's own `score` and `choose`) pick a truly better configuration than the single-run pick, at EQUAL total
compute?

Each study seed replays one study of the defaults (benchmarks/table_replay.py: the product's sampler, pruner, warm
start and finalist rule; training seed = study seed mod the table's seeds) for enough trials to cover the largest
budget. For a study of N trials (the ones the runner trained), with S_N steps spent:

    single-run pick   the product's choice after N trials (the best feasible completed run)
    finalists         the top-k distinct configurations among its feasible completed trials, each looked up on
                      `seeds` more training seeds of the table (the seeds after the study's, in order), chosen by
                      the bound (rule "bound": the product's, one-sided CONFIDENCE Student-t with the seed sd pooled
                      over the finalists; rule "own_sd": each finalist's own sd instead)
    equal compute     the same study continued (more trials, same seed: the first N trials are identical) until it
                      has spent S_N + the finalists' retraining steps; its pick then

and each is scored by its TRUE regret: the configuration's mean final loss over every seed the table has for it,
minus the table's best such mean. Caveat: the seeds a finalist is retrained on are among the seeds of its truth (the
table has 5 for its best configurations), which flatters both arms' picks, the finalists' more.

    OMP_NUM_THREADS=1 python benchmarks/finalists_replay.py --seeds 120      # RESULTS.md's run

Writes benchmarks/results/finalists_replay.json (with the table's manifest pins).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from hpo_efficiency import strategy_config
from table_replay import RESULTS, Table, replay

TASK = "quickstart"
STUDY_TRIALS = (10, 20)  # N: the quickstart's n_trials and the product's default
SETTINGS = ((2, 1), (2, 2), (3, 1), (3, 2), (4, 2))  # (top_k, seeds)
RULES = ("bound", "own_sd")  # the product's (seed sd pooled over the finalists) and each finalist's own sd
MAX_TRIALS = 40  # the replayed study: enough trials to cover S_N + the largest retraining at N = 20
_TABLE: list[Table] = []


def _table() -> Table:
    if not _TABLE:
        _TABLE.append(Table.load(TASK))
    return _TABLE[0]


def study_job(job: tuple[int, int]) -> dict[str, Any]:
    """One study seed: the replayed study, and for each N, setting and rule the two arms' true regrets."""
    import warnings

    from hpo_action.search.reseed_finalists import Candidate, SeedRun, choose, score

    warnings.filterwarnings("ignore")
    study_seed, train_seed = job
    table = _table()
    truth = table.true_losses()
    best = min(truth.values())
    cfg = strategy_config(table, "a", {}, MAX_TRIALS)
    run = replay(table, cfg, study_seed, train_seed, truth)
    log = run.log
    constrained = cfg.search.forgetting_constraint
    out: dict[str, Any] = {"study_seed": study_seed, "train_seed": train_seed, "trials": len(log), "arms": {}}
    for n in STUDY_TRIALS:
        spent = sum(step.steps for step in log[:n])
        single = log[n - 1].chosen
        ranked: list[tuple[float, tuple[Any, ...]]] = []
        for step in log[:n]:
            if step.observed is None or not _feasible(table, step.point, train_seed, constrained):
                continue
            if step.point not in [p for _, p in ranked]:
                ranked.append((step.observed, step.point))
        ranked.sort(key=lambda item: item[0])
        for top_k, seeds in SETTINGS:
            finalists = ranked[:top_k]
            candidates = [Candidate(i, {}, value) for i, (value, _) in enumerate(finalists)]
            runs, extra = [], 0
            for i, (_, point) in enumerate(finalists):
                others = sorted(
                    (s for s in table.seeds_of(point) if s != train_seed), key=lambda s: (s - train_seed) % 97
                )
                if len(others) < seeds:
                    runs = None
                    break
                for seed in others[:seeds]:
                    row = table.rows[(*point, seed)]
                    ok = row["status"] == "ok" and math.isfinite(row["final"])
                    runs.append(SeedRun(i, seed, row["final"] if ok else None, row["run_steps"]))
                    extra += row["run_steps"]
            if runs is None or len(finalists) < 2:
                continue
            key = f"N{n}_k{top_k}_s{seeds}"
            arms = {
                "single_regret": truth[single] - best if single is not None else math.inf,
                "equal_compute_regret": run.regret_at(spent + extra),
                "equal_compute_reached": run.total_steps() >= spent + extra,
                "spent": spent,
                "extra": extra,
            }
            for name in RULES:
                scores = score(candidates, runs, pooled=name == "bound")
                chosen = finalists[choose(scores)][1]
                arms[f"{name}_regret"] = truth[chosen] - best
            out["arms"][key] = arms
    return out


def _feasible(table: Table, point: tuple[Any, ...], seed: int, constrained: bool) -> bool:
    row = table.rows[(*point, seed)]
    return not constrained or all(v <= 0 for v in json.loads(row.get("forgetting") or "{}").values())


def _median_ci(values: list[float], rng: random.Random, resamples: int = 2000) -> dict[str, float]:
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return {
        "median": statistics.median(values),
        "low": meds[int(0.025 * resamples)],
        "high": meds[int(0.975 * resamples)],
    }


def _paired(a: list[float], b: list[float], rng: random.Random, resamples: int = 2000) -> dict[str, Any]:
    """Mean of a − b per study seed with a bootstrap 95% CI, and how often a is better, equal, worse."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    means = sorted(statistics.fmean(rng.choices(diffs, k=len(diffs))) for _ in range(resamples))
    return {
        "mean_difference": statistics.fmean(diffs),
        "low": means[int(0.025 * resamples)],
        "high": means[int(0.975 * resamples)],
        "better": sum(d < -1e-12 for d in diffs),
        "equal": sum(abs(d) <= 1e-12 for d in diffs),
        "worse": sum(d > 1e-12 for d in diffs),
    }


def summarize(studies: list[dict[str, Any]]) -> dict[str, Any]:
    rng = random.Random(0)
    out = {}
    for key in studies[0]["arms"]:
        rows = [s["arms"][key] for s in studies if key in s["arms"]]
        base = [r["equal_compute_regret"] for r in rows]
        entry: dict[str, Any] = {
            "studies": len(rows),
            "extra_compute_fraction": statistics.fmean(r["extra"] / r["spent"] for r in rows),
            "equal_compute_reached": sum(r["equal_compute_reached"] for r in rows),
            "single_run_pick": _median_ci([r["single_regret"] for r in rows], rng),
            "single_run_pick_mean": statistics.fmean(r["single_regret"] for r in rows),
            "single_run_at_equal_compute": _median_ci(base, rng),
            "single_run_at_equal_compute_mean": statistics.fmean(base),
        }
        for name in RULES:
            mine = [r[f"{name}_regret"] for r in rows]
            median_base = statistics.median(base)
            entry[name] = {
                "true_regret": _median_ci(mine, rng),
                "mean_true_regret": statistics.fmean(mine),
                "median_reduction_vs_equal_compute": 1 - statistics.median(mine) / median_base if median_base else None,
                "paired_vs_equal_compute": _paired(mine, base, rng),
            }
        out[key] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=120, help="Study seeds.")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    from table_manifest import load_manifest

    from hpo_action.search.reseed_finalists import CONFIDENCE

    table = _table()
    started = time.monotonic()
    jobs = [(seed, table.seeds[seed % len(table.seeds)]) for seed in range(args.seeds)]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        studies = list(pool.map(study_job, jobs, chunksize=4))
    manifest = load_manifest(RESULTS / f"curves_{TASK}.json")
    result = {
        "task": TASK,
        "study_seeds": args.seeds,
        "max_trials": MAX_TRIALS,
        "confidence": CONFIDENCE,
        "settings": [{"top_k": k, "seeds": s} for k, s in SETTINGS],
        "study_trials": list(STUDY_TRIALS),
        "epsilon": table.pooled_seed_sd(),
        "results": summarize(studies),
        "studies": studies,
        "wall_s": round(time.monotonic() - started, 1),
        "manifest": {
            "table": {k: manifest.get(k) for k in ("commit", "demo_model_sha256", "data_fingerprint", "rows")},
            "table_extra_seeds": manifest.get("extra_seeds"),
            "rung_checks": table.probes is not None,  # the forgetting rung checks replayed (curves.py --probes)
            **table_replay_pins(),
        },
    }
    path = RESULTS / "finalists_replay.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result["results"], indent=1)[:6000])
    print(f"wrote {path}")


def table_replay_pins() -> dict[str, Any]:
    """The code that replayed: the project commit and the libraries."""
    from importlib.metadata import version

    from table_manifest import commit

    return {**commit(), "versions": {n: version(n) for n in ("hpo-action", "optuna", "scipy")}}


if __name__ == "__main__":
    main()
