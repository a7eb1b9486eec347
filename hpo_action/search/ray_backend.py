"""The Ray Tune backend (search.backend ray): PBT, PB2 or ASHA over the same trials as the Optuna backend, on a local
Ray or the cluster at RAY_ADDRESS, ending in the same outputs (trials.csv, best/, summary.json) so that the gate, the
registry and the card work unchanged.

Ray's experiment lives in output.dir/ray/ (or search.ray.storage: a shared folder or an S3-compatible URI on a
cluster); running the same command again restores it from Ray's experiment checkpoint, and each unfinished trial
resumes from its last reported checkpoint (at most one evaluation interval lost).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from hpo_action.config import HpoConfig, ParamSpec, pbt_mutable
from hpo_action.config.remedies import remedies_matter, strong_remedies
from hpo_action.data.loading import Splits
from hpo_action.errors import ConfigError
from hpo_action.layout import RunLayout
from hpo_action.search.backend import SearchRequest, SearchResult
from hpo_action.search.naming import shown_storage, study_name
from hpo_action.search.outputs import check_writable, publish_trial
from hpo_action.search.ray_trial import ADAPTER, FINAL, OBJECTIVE, STEP, MakeRunner, TrialSpec, train_trial
from hpo_action.search.selection import fallback_note, shortfall
from hpo_action.search.space import searched, trial_defaults, warm_start_params
from hpo_action.search.summary import BestTrial, RunSummary, Selection, TrialRecord, summarize_records
from hpo_action.train.threads import available_cores

INSTALL = "search.backend ray needs Ray Tune: pip install 'hpo-action[ray]'"
PB2_INSTALL = "search.ray.scheduler pb2 needs scikit-learn (PB2's Gaussian process): pip install 'hpo-action[ray]'"
POPULATION = ("pbt", "pb2")  # the schedulers that copy checkpoints between trials and change their parameters


class RayBackend:
    """search.backend ray behind the search interface (search/backend.py); `extra_trials=0` (--skip-search) reads a
    finished experiment from search.ray.storage and starts none."""

    def search(self, request: SearchRequest) -> SearchResult:
        cfg = request.cfg
        check_writable(Path(cfg.output.dir))
        with request.hooks.section(f"search: Ray Tune {cfg.search.ray.scheduler}, {cfg.search.n_trials} trials"):
            restore_only = request.extra_trials == 0
            summary = run_ray_search(cfg, request.splits, request.hooks.make_runner, request.console, restore_only)
        return SearchResult(summary)


def run_ray_search(
    cfg: HpoConfig, splits: Splits, make_runner: MakeRunner, console: Console, restore_only: bool = False
) -> RunSummary:
    """Run (or restore and finish) the Ray Tune experiment, then copy the finalist to best/; returns the summary
    (the caller writes and shows it). `restore_only`: the experiment must exist (a leader after a cluster run)."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ConfigError(INSTALL) from None
    if cfg.search.ray.scheduler == "pb2" and not _has_sklearn():
        raise ConfigError(PB2_INSTALL)
    started = time.monotonic()
    layout = RunLayout(Path(cfg.output.dir))
    storage, name = cfg.search.ray.storage or str(layout.ray_dir), study_name(cfg)
    path = f"{storage.rstrip('/')}/{name}"
    if restore_only and not tune.Tuner.can_restore(path):
        raise ConfigError(
            f"--skip-search: no Ray Tune experiment {name!r} in {shown_storage(storage, layout.root)}; run the search "
            "first (same config, same search.ray.storage)"
        )
    _start_ray(ray, cfg, console)
    try:
        trainable = tune.with_resources(
            tune.with_parameters(train_trial, spec=TrialSpec(cfg, splits, make_runner)),
            {"cpu": cfg.search.ray.cpus_per_trial, "gpu": cfg.search.ray.gpus_per_trial},
        )
        if tune.Tuner.can_restore(path):
            console.print(f"ray: resuming experiment {name} from its checkpoint")
            tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = _tuner(tune, cfg, trainable, storage, name)
        random.seed(cfg.search.seed)  # PBT's explore draws from Python's random
        grid = tuner.fit()
    finally:
        ray.shutdown()
    if grid.num_terminated + grid.num_errors < len(grid):  # Ray Tune took the Ctrl-C and saved its state
        raise KeyboardInterrupt
    _drop_copied(grid)
    records, finals = _records(cfg, grid)
    return _summary(cfg, layout, records, finals, storage, time.monotonic() - started)


def _has_sklearn() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def _start_ray(ray: Any, cfg: HpoConfig, console: Console) -> None:
    """Join the cluster at RAY_ADDRESS, else start a local Ray limited to this machine's real cores."""
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        console.print(f"ray: joined the cluster at {address}")
        return
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # we checkpoint often
    cores = available_cores()
    if cfg.search.ray.cpus_per_trial > cores:
        raise ConfigError(
            f"search.ray.cpus_per_trial: {cfg.search.ray.cpus_per_trial} exceeds this machine's {cores} cores"
        )
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    share = cores // cfg.search.ray.cpus_per_trial
    console.print(f"ray: local Ray on {cores} cores, {share} trial(s) at a time")


def _tuner(tune: Any, cfg: HpoConfig, trainable: Any, storage: str, name: str) -> Any:
    """A new experiment: the scheduler, how starting parameters are drawn, where checkpoints go."""
    from ray.tune.search import BasicVariantGenerator

    search, ray_cfg = cfg.search, cfg.search.ray
    space = {key: _domain(tune, spec) for key, spec in searched(cfg).items()}
    warm = starting_points(cfg) if search.warm_start else []
    if ray_cfg.search_alg == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        algorithm: Any = OptunaSearch(points_to_evaluate=warm or None, seed=search.seed)
    else:
        algorithm = BasicVariantGenerator(points_to_evaluate=warm or None, random_state=search.seed)
    tune_config = tune.TuneConfig(
        metric=OBJECTIVE,
        mode="min" if search.objective.direction == "minimize" else "max",
        scheduler=_scheduler(cfg),
        search_alg=algorithm,
        num_samples=search.n_trials,
        # ASHA never pauses a trial: a worker keeps its loaded model for the next one. PBT and PB2 pause and restart
        # trials, and a paused trial's cached worker would hold its CPUs from the trials waiting to run.
        reuse_actors=ray_cfg.scheduler == "asha",
    )
    run_config = tune.RunConfig(
        name=name,
        storage_path=storage,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),  # a copy may come long after (_drop_copied)
        failure_config=tune.FailureConfig(max_failures=0),
        stop={FINAL: 1},  # a trial's last report ends it: no scheduler decision (PBT would pause or copy it there)
        verbose=0,
    )
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)


def starting_points(cfg: HpoConfig) -> list[dict[str, Any]]:
    """The Optuna backend's warm starts: the trial defaults moved into the space and, when the forgetting remedies
    matter, the same at the strongest remedies, often the one trial within the margins (benchmarks/RESULTS.md)."""
    warm = warm_start_params(cfg)
    strong = strong_remedies(warm, searched(cfg))
    return [warm, strong] if remedies_matter(cfg) and strong != warm else [warm]


def _scheduler(cfg: HpoConfig) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    ray_cfg, budget = cfg.search.ray, cfg.search.budget
    if ray_cfg.scheduler == "asha":
        return ASHAScheduler(
            time_attr=STEP,
            max_t=budget.max_steps,
            grace_period=budget.eval_every,
            reduction_factor=ray_cfg.reduction_factor,
        )
    space = searched(cfg)
    mutable = {name: space[name] for name in pbt_mutable(cfg)}
    common = {
        "time_attr": STEP,
        "perturbation_interval": ray_cfg.perturbation_interval or 2 * budget.eval_every,
        "quantile_fraction": ray_cfg.quantile_fraction,
        "custom_explore_fn": partial(_clip, space=mutable),
        "synch": ray_cfg.synch,
    }
    if ray_cfg.scheduler == "pb2":
        from ray.tune.schedulers.pb2 import PB2

        # PB2's explore picks each parameter inside [low, high] from a Gaussian process of the improvement per
        # step (a linear scale, log ranges included), where PBT scales it by 0.8 or 1.2.
        bounds = {name: [float(spec.low), float(spec.high)] for name, spec in mutable.items()}  # type: ignore[arg-type]
        return _latest_checkpoint(PB2)(hyperparam_bounds=bounds, **common)
    return _latest_checkpoint(PopulationBasedTraining)(
        hyperparam_mutations={name: _domain(tune, spec) for name, spec in mutable.items()},
        resample_probability=ray_cfg.resample_probability,
        **common,
    )


def _domain(tune: Any, spec: ParamSpec) -> Any:
    """One space entry as a Ray Tune search domain (bounds inclusive, as in the Optuna backend)."""
    if spec.type == "categorical":
        return tune.choice(list(spec.choices or []))
    assert spec.low is not None and spec.high is not None
    if spec.type == "int":
        low, high = int(spec.low), int(spec.high)
        if spec.log:
            return tune.lograndint(low, high + 1)
        return tune.qrandint(low, high, int(spec.step)) if spec.step else tune.randint(low, high + 1)
    if spec.step:
        return tune.quniform(spec.low, spec.high, spec.step)
    return tune.loguniform(spec.low, spec.high) if spec.log else tune.uniform(spec.low, spec.high)


def _clip(config: dict[str, Any], space: dict[str, ParamSpec]) -> dict[str, Any]:
    """PBT's explore scales by 0.8 or 1.2 (PB2's rounds its pick to float32); the result stays inside the configured
    range (replay_ratio < 1)."""
    for name, spec in space.items():
        config[name] = min(max(float(config[name]), spec.low), spec.high)
    return config


def _latest_checkpoint(scheduler: type) -> type:
    """Ray's PBT (and PB2, built on it) copies a top trial only from a checkpoint it asked for at that trial's own
    decision; when the population trains in turns (more trials than slots), a trial was often alone at its decision,
    so it has none and the copy is skipped. Every report here carries a checkpoint: copy the top trial's latest one
    instead."""

    class LatestCheckpoint(scheduler):  # type: ignore[misc,valid-type]
        def _checkpoint_or_exploit(self, trial, tune_controller, upper_quantile, lower_quantile):  # type: ignore[no-untyped-def]
            for top in upper_quantile:
                state = self._trial_state[top]
                if top is not trial and state.last_checkpoint is None and top.checkpoint is not None:
                    state.last_checkpoint = top.checkpoint
            super()._checkpoint_or_exploit(trial, tune_controller, upper_quantile, lower_quantile)

    LatestCheckpoint.__name__ = LatestCheckpoint.__qualname__ = f"LatestCheckpoint{scheduler.__name__}"
    return LatestCheckpoint


def _drop_copied(grid: Any) -> None:
    """A trial waiting for a slot may copy a checkpoint written long before, so every one is kept while the
    experiment runs; once it has ended, each trial's last checkpoint (its adapter, what a rerun reads) is all that
    is kept. Local storage only: a cluster's URI storage is the user's to expire."""
    for result in grid:
        last = result.checkpoint
        if last is None or "://" in str(result.path):
            continue
        for folder in Path(result.path).glob("checkpoint_*"):
            if folder.is_dir() and folder.name != Path(last.path).name:
                shutil.rmtree(folder, ignore_errors=True)


def _records(cfg: HpoConfig, grid: Any) -> tuple[list[TrialRecord], dict[int, Any]]:
    """One typed record per Ray trial, numbered in the order Ray created them; and the finished trials' results."""
    results = sorted(grid, key=lambda r: r.path)
    records, finals = [], {}
    for number, result in enumerate(results):
        metrics = result.metrics or {}
        detail = json.loads(metrics["record"]) if metrics.get(FINAL) else {}
        state = "FAIL" if result.error else "COMPLETE" if detail else "PRUNED"
        if detail and state == "COMPLETE":
            finals[number] = result
        curve = detail.get("curve") or _curve(result)
        keys = sorted(searched(cfg))
        params = {k: v for k, v in (detail.get("params") or result.config or {}).items() if k in keys}
        records.append(
            TrialRecord(
                number=number,
                state=state,
                value=metrics.get(OBJECTIVE) if not result.error else None,
                steps=metrics.get(STEP),
                seconds=round(float(metrics.get("time_total_s", 0.0)), 3),
                params=dict(sorted(params.items())),
                forgetting=detail.get("forgetting", {}),
                error=_error(result.error),
                curve=[list(point) for point in curve],
                train_curve=[list(point) for point in detail.get("train_curve", [])],
                forgetting_drop=detail.get("forgetting_drop", {}),
                resumed_from_step=int(metrics.get("resumed_from_step", 0)),
                checkpoint_bytes=int(metrics.get("checkpoint_bytes", 0)),
                schedule=detail.get("schedule", []) if cfg.search.ray.scheduler in POPULATION else [],
            )
        )
    return records, finals


def _curve(result: Any) -> list[list[float]]:
    frame = result.metrics_dataframe
    if frame is None or OBJECTIVE not in frame or STEP not in frame:
        return []
    return [[int(s), float(v)] for s, v in zip(frame[STEP], frame[OBJECTIVE], strict=True) if math.isfinite(v)]


def _error(error: BaseException | None) -> str:
    if error is None:
        return ""
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {cause}"[:2000]


def _summary(
    cfg: HpoConfig,
    layout: RunLayout,
    records: list[TrialRecord],
    finals: dict[int, Any],
    storage: str,
    elapsed: float,
) -> RunSummary:
    """The finalist by the Optuna backend's rule (best objective among completed trials within every forgetting
    margin), its adapter copied to best/, and the summary around it."""
    sign = 1.0 if cfg.search.objective.direction == "minimize" else -1.0
    feasible = [r for r in records if r.number in finals and all(e <= 0 for e in r.forgetting.values())]
    best = min(feasible, key=lambda r: (sign * float(r.value), r.number)) if feasible else None
    fallback, margins = None, {b.name: b.margin or 0.0 for b in cfg.gate.forgetting}
    probed_done = [r for r in records if r.number in finals and r.forgetting]
    if best is None and probed_done:  # none feasible: the closest is judged, as in the Optuna backend
        best = min(probed_done, key=lambda r: (shortfall(r.forgetting, margins), r.number))
        fallback = fallback_note(best.number, shortfall(best.forgetting, margins))
    best_trial = None
    if best is not None:
        params = {**trial_defaults(cfg), **json.loads(finals[best.number].metrics["record"])["params"]}
        best_dir = _publish_best(finals[best.number], layout, best, params)
        detail = json.loads(finals[best.number].metrics["record"])
        best_trial = BestTrial(
            number=best.number,
            value=float(best.value),
            params=params,
            metrics=detail.get("metrics", {}),
            forgetting_excess=best.forgetting,
            adapter=os.path.relpath(best_dir, layout.root) if best_dir else None,
            forgetting_drop=best.forgetting_drop,
        )
    probed = [r for r in records if r.state == "COMPLETE" and r.forgetting]
    objective = cfg.search.objective
    rule = f"the best {objective.metric} ({objective.direction}) among completed trials"
    if cfg.search.forgetting_constraint and cfg.gate.forgetting:
        rule += " within every forgetting margin"
    return summarize_records(
        cfg,
        records,
        study_name=study_name(cfg),
        storage=storage,
        sampler=f"ray:{cfg.search.ray.search_alg}",
        pruner=f"ray:{cfg.search.ray.scheduler}",
        elapsed=elapsed,
        n_trials=len(records),
        best=best_trial,
        selection=Selection(
            objectives=[{"metric": objective.metric, "direction": str(objective.direction)}],
            rule=rule,
            feasible=sum(all(e <= 0 for e in r.forgetting.values()) for r in probed) if probed else None,
            fallback=fallback,
        ),
    )


def _publish_best(result: Any, layout: RunLayout, best: TrialRecord, params: dict[str, Any]) -> Path | None:
    """Copy the finalist's adapter out of its last Ray checkpoint (wherever the storage is) into best/."""
    if result.checkpoint is None:
        return None
    staging = Path(tempfile.mkdtemp(dir=layout.root, prefix=".ray-best-"))
    try:
        with result.checkpoint.as_directory() as folder:
            shutil.copytree(Path(folder) / ADAPTER, staging / ADAPTER)
        return publish_trial(staging / ADAPTER, layout, best.number, best.value, params)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
