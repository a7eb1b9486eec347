"""Learning without forgetting: the gate's decision on the chosen trial under five search strategies at equal trial
budget, on two tasks that each keep a different skill of the tiny demo model.

    python benchmarks/forgetting_tradeoff.py [--seeds 5] [--trials 8] [--tasks quickstart alphabet]
                                             [--strategies a b c d e] [--out FILE]

Strategies (the same space for the learning rate and the rank, the same steps per trial and number of trials):
  (a) no mitigation: the study picks the best eval_loss;
  (b) the forgetting constraint only (search.forgetting_constraint);
  (c) the constraint plus replay (replay_ratio searched);
  (d) the constraint plus replay plus distillation (replay_ratio and kl_to_base searched);
  (e) the multi-objective search (eval_loss and forgetting, replay_ratio and kl_to_base searched, no constraint).
Tasks: `quickstart` learns the letter shift and keeps `copy` (exact match, margin 0.05), exactly the quickstart;
`alphabet` learns the same shift and keeps the alphabet order the model was pretrained on (`abc: ` runs, scored
by per-token loss, margin 0.1 nats), with its own replay rows.

A seed sets both the sampler's seed and the training seed (adapter init, data order, the replay mix).
Per run: the chosen trial is evaluated once on the test split and each forgetting set and gated against the base
model, as `hpo-action run` does (the base model's predictions are computed once per task). Writes
benchmarks/results/forgetting_tradeoff.json: promote rate, median test metric and median forgetting delta of the
chosen trial per strategy for the quickstart task at the top level, the same per task under `by_task`, and every
run under `runs`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import statistics
import string
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COMMIT = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
RESULTS = ROOT / "benchmarks" / "results"
QUICKSTART = ROOT / "examples" / "quickstart"
STRATEGIES = ("a", "b", "c", "d", "e")
REMEDIES = ("replay_ratio", "kl_to_base")


def alphabet_sets(seed: int = 7) -> dict[str, list[dict[str, str]]]:
    """The pretraining's alphabet runs (`abc: ` + a run of 4-12 letters), split by text into a forgetting set and
    a replay set that share no row."""
    letters = string.ascii_lowercase
    runs = sorted({(letters * 2)[start : start + length] for start in range(26) for length in range(4, 13)})
    random.Random(seed).shuffle(runs)
    rows = [{"prompt": "abc: ", "completion": run} for run in runs]
    half = len(rows) // 2
    forget = [{"id": f"forget_abc-{i:04d}", **row} for i, row in enumerate(rows[:half])]
    replay = [{"id": f"replay_abc-{i:04d}", **row} for i, row in enumerate(rows[half:])]
    return {"forget_abc": forget, "replay_abc": replay}


def task_folder(task: str, folder: Path) -> dict[str, Any]:
    """Write the task's files into `folder`; returns the config overrides that point at them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train", "validation", "test", "forget_copy", "replay_copy"):
        shutil.copy(QUICKSTART / f"{name}.jsonl", folder / f"{name}.jsonl")
    paths = {k: str(folder / f"{k}.jsonl") for k in ("train", "validation", "test")}
    if task == "quickstart":
        keep = {"name": "copy", "data": str(folder / "forget_copy.jsonl"), "metric": "exact_match", "margin": 0.05}
        replay = str(folder / "replay_copy.jsonl")
    else:
        sets = alphabet_sets()
        for name, rows in sets.items():
            (folder / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        keep = {"name": "abc", "data": str(folder / "forget_abc.jsonl"), "metric": "loss", "margin": 0.1}
        replay = str(folder / "replay_abc.jsonl")
        # The quickstart's probe size (128 of copy's 400 rows) would leave this 117-row set nothing for the gate.
        probe = {"search.forgetting_probe_size": len(sets["forget_abc"]) // 3}
        return {
            **{f"data.{k}": v for k, v in paths.items()},
            "data.replay": [replay],
            "gate.forgetting": [keep],
            **probe,
        }
    return {**{f"data.{k}": v for k, v in paths.items()}, "data.replay": [replay], "gate.forgetting": [keep]}


def strategy_overrides(strategy: str, space: dict[str, Any]) -> dict[str, Any]:
    """The search settings of one strategy on top of the quickstart's: its space for the learning rate and the
    rank, and for the remedies the ranges it searches by default (config/remedies.py; so (d) on the quickstart task
    is the quickstart)."""
    plain = {k: v for k, v in space.items() if k not in REMEDIES}
    fixed = {"replay_ratio": 0.0, "kl_to_base": 0.0}
    if strategy in ("a", "b"):
        return {
            "search.space": {**plain, **fixed},
            "train.replay_ratio": 0.0,
            "train.kl_to_base": 0.0,
            "search.forgetting_constraint": strategy == "b",
            "search.objectives": [],
        }
    remedies = {**plain, "replay_ratio": space["replay_ratio"]}
    remedies["kl_to_base"] = 0.0 if strategy == "c" else space["kl_to_base"]
    if strategy == "c":
        return {"search.space": remedies, "train.kl_to_base": 0.0, "search.forgetting_constraint": True}
    if strategy == "d":
        return {"search.space": remedies, "search.forgetting_constraint": True, "search.objectives": []}
    objectives = [{"metric": "eval_loss", "direction": "minimize"}, {"metric": "forgetting", "direction": "minimize"}]
    return {"search.space": remedies, "search.forgetting_constraint": False, "search.objectives": objectives}


class Task:
    """One task: the base model loaded, the data tokenized, the probes and the base model's predictions, once."""

    def __init__(self, name: str, base_cfg: Any, folder: Path, base: Any) -> None:
        from hpo_action.config import apply_overrides
        from hpo_action.data.loading import load_splits
        from hpo_action.data.tokenize import tokenize_replay, tokenize_splits
        from hpo_action.judge.forgetting import build_probes, load_forgetting_sets
        from hpo_action.judge.forgetting_split import forgetting_parts

        self.name, self.folder, self.base = name, folder, base
        self.cfg = apply_overrides(base_cfg, task_folder(name, folder / "data"), source=name)
        self.splits = load_splits(self.cfg.data)
        cache = folder / "cache"
        self.train, self.validation, _ = tokenize_splits(self.splits, base.tokenizer, self.cfg.data, cache)
        self.replay, _ = tokenize_replay(self.splits.replay, base.tokenizer, self.cfg.data, cache)
        probed = apply_overrides(self.cfg, {"search.forgetting_constraint": True}, source="probes")
        sets = load_forgetting_sets(self.cfg)
        self.probes = build_probes(probed, base, sets)  # each set's probe part; the gate below tests the rest
        self.sets = {name: part.gate for name, part in forgetting_parts(probed, sets).items()}
        self.reference = self._score(base.model)

    def _score(self, model: Any) -> dict[str, dict[str, dict[str, Any]]]:
        """Per-example scores of `model` on the test split and every forgetting set, keyed by set and id."""
        from hpo_action.judge.evaluate import EvalSettings, score_rows
        from hpo_action.judge.forgetting import benchmark_settings

        settings = EvalSettings.from_config(self.cfg.evaluate)
        tokenizer = self.base.tokenizer
        scores = {"test": score_rows(model, tokenizer, self.splits.test or [], self.cfg.data, settings)}
        for benchmark in self.cfg.gate.forgetting:
            own_settings, data_cfg = benchmark_settings(self.cfg, benchmark)
            scores[benchmark.name] = score_rows(model, tokenizer, self.sets[benchmark.name], data_cfg, own_settings)
        return {name: {str(r["id"]): r for r in records} for name, records in scores.items()}

    def run(self, strategy: str, seed: int, trials: int) -> dict[str, Any]:
        """One study of `trials` trials with this strategy and seed, then evaluate and gate its chosen trial."""
        from hpo_action.config import apply_overrides
        from hpo_action.search.optuna_backend.finalist import chosen_trial
        from hpo_action.search.optuna_backend.study import open_study, run_trials
        from hpo_action.train.trial import TrialRunner

        started = time.monotonic()
        out = self.folder / f"{strategy}-{seed}"
        space = {name: spec.model_dump() for name, spec in self.cfg.space_with_defaults().items()}
        overrides = strategy_overrides(strategy, space)  # the remedies' ranges: the quickstart's defaults
        overrides.update({"search.seed": seed, "train.seed": 42 + seed})  # the sampler and the training both vary
        overrides.update({"search.n_trials": trials, "output.dir": str(out)})
        overrides.update({"search.study_name": f"{strategy}-{seed}", "search.workers": 0})
        cfg = apply_overrides(self.cfg, overrides, source=f"strategy {strategy}")
        probes = self.probes if strategy != "a" else ()
        runner = TrialRunner(cfg, self.base, self.train, self.validation, probes, self.replay)
        study = open_study(cfg)
        run_trials(study, cfg, runner, target=trials)
        chosen = chosen_trial(study)
        row: dict[str, Any] = {"task": self.name, "strategy": strategy, "seed": seed, "trial": None}
        row.update(beyond_warm_start(study, chosen))
        if chosen is None or not (out / "trials" / str(chosen.number)).is_dir():
            row.update(decision="no trial", test_metric=None, forgetting_delta=None)
        else:
            row.update(self._gate(cfg, out / "trials" / str(chosen.number)))
            row.update(trial=chosen.number, params={k: chosen.params[k] for k in sorted(chosen.params)})
        row["seconds"] = round(time.monotonic() - started, 1)
        return row

    def _gate(self, cfg: Any, adapter: Path) -> dict[str, Any]:
        from hpo_action.judge.evaluate import attach_trained
        from hpo_action.judge.gate import ForgettingInput, gate, pair

        model, _ = attach_trained(self.base, adapter)
        try:
            scores = self._score(model)
        finally:
            self.base.model = model.unload()
        metric = cfg.primary_metric
        inputs = [
            ForgettingInput(b.name, pair(scores[b.name], self.reference[b.name], b.metric), b.margin, b.direction)
            for b in cfg.gate.forgetting
        ]
        decision = gate(pair(scores["test"], self.reference["test"], metric), inputs, cfg.gate)
        (kept,) = decision.forgetting
        return {
            "decision": decision.decision,
            "test_metric": decision.primary.candidate,
            "forgetting_delta": kept.delta,
            "forgetting_status": kept.status,
        }


def beyond_warm_start(study: Any, chosen: Any) -> dict[str, Any]:
    """Issue 22 item 5: what the search found beyond its first warm start (the train defaults, trial 0): its
    eval_loss, the chosen trial's, and by how much the chosen one beats it (0 when the warm start was chosen;
    None when nothing was chosen or the warm start did not complete)."""
    from hpo_action.search.space import DEFAULTS, warm_start_kind

    warm = next((t for t in study.trials if warm_start_kind(t.user_attrs) == DEFAULTS), None)
    warm_value = warm.value if warm is not None else None
    chosen_value = chosen.value if chosen is not None else None
    by = None if warm_value is None or chosen_value is None else round(warm_value - chosen_value, 6)
    return {
        "warm_start_value": warm_value,
        "chosen_value": chosen_value,
        "chosen_is_warm_start": bool(chosen is not None and warm_start_kind(chosen.user_attrs)),
        "beats_warm_start_by": by,  # eval_loss, lower is better: > 0 when the search found a better trial
    }


def summarize(rows: list[dict[str, Any]], strategies: list[str], seeds: int) -> dict[str, Any]:
    """The issue's structure: promote rate, median test metric and median forgetting delta per strategy."""

    def median(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return round(statistics.median(present), 4) if present else None

    by = {s: [r for r in rows if r["strategy"] == s] for s in strategies}
    return {
        "promote_rate": {
            s: round(sum(r["decision"] == "promote" for r in by[s]) / len(by[s]), 3) if by[s] else None for s in by
        },
        "median_test_metric": {s: median([r["test_metric"] for r in by[s]]) for s in by},
        "median_forgetting_delta": {s: median([r["forgetting_delta"] for r in by[s]]) for s in by},
        "chosen_beyond_warm_starts": {s: sum(not r.get("chosen_is_warm_start", True) for r in by[s]) for s in by},
        "median_beats_warm_start_by": {s: median([r.get("beats_warm_start_by") for r in by[s]]) for s in by},
        "seeds": seeds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", default=str(QUICKSTART / "hpo.yaml"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=None, help="Trials per study; default the quickstart's.")
    parser.add_argument("--tasks", nargs="+", default=["quickstart", "alphabet"], choices=["quickstart", "alphabet"])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--out", type=Path, default=RESULTS / "forgetting_tradeoff.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # transformers' renames and Optuna's experimental notes, every trial

    from hpo_action.config import load_config
    from hpo_action.session import quiet_libraries
    from hpo_action.train.models import load_base_model

    quiet_libraries()
    cfg = load_config(args.config)
    trials = args.trials or cfg.search.n_trials
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="forgetting-tradeoff-"))
    base = load_base_model(cfg.model)
    tasks = {name: Task(name, cfg, folder / name, base) for name in args.tasks}
    rows: list[dict[str, Any]] = []
    for seed in range(args.seeds):  # seed-major: an interrupted run still covers every task and strategy evenly
        for task in tasks.values():
            for strategy in args.strategies:
                rows.append(task.run(strategy, seed, trials))
                print(json.dumps(rows[-1]), flush=True)
                _write(args, rows, trials, time.monotonic() - started, complete=False)
    result = _write(args, rows, trials, time.monotonic() - started, complete=True)
    _print_table(result["by_task"], args.strategies)
    print(f"wrote {args.out} in {result['wall_s']} s")
    shutil.rmtree(folder, ignore_errors=True)


def _write(args: Any, rows: list[dict[str, Any]], trials: int, elapsed: float, complete: bool) -> dict[str, Any]:
    """The results so far (after every run, so that a stopped benchmark keeps what it measured)."""
    by_task = {}
    for name in args.tasks:
        own = [r for r in rows if r["task"] == name]
        by_task[name] = summarize(own, args.strategies, len({r["seed"] for r in own}))
    result = {**by_task[args.tasks[0]], "by_task": by_task, "trials_per_study": trials, "complete": complete}
    command = f"--seeds {args.seeds} --tasks {' '.join(args.tasks)} --strategies {' '.join(args.strategies)}"
    result["manifest"] = {"commit": COMMIT, "command": f"python benchmarks/forgetting_tradeoff.py {command}"}
    result.update(runs=rows, wall_s=round(elapsed, 1))
    args.out.write_text(json.dumps(result, indent=2, default=_finite) + "\n")
    return result


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else str(value)


def _print_table(by_task: dict[str, dict[str, Any]], strategies: list[str]) -> None:
    print(
        f"{'task':12}{'strategy':>9}{'promote':>9}{'test metric':>13}{'forgetting delta':>18}"
        f"{'beyond warm starts':>20}{'beats warm start by':>21}"
    )
    for task, result in by_task.items():
        for s in strategies:
            metric, delta = result["median_test_metric"][s], result["median_forgetting_delta"][s]
            rate, by = result["promote_rate"][s], result["median_beats_warm_start_by"][s]
            print(
                f"{task:12}{s:>9}{'-' if rate is None else f'{rate:.2f}':>9}"
                f"{'-' if metric is None else f'{metric:.3f}':>13}"
                f"{'-' if delta is None else f'{delta:+.3f}':>18}"
                f"{result['chosen_beyond_warm_starts'][s]:>20}{'-' if by is None else f'{by:+.4f}':>21}"
            )


if __name__ == "__main__":
    main()
