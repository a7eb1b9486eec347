"""The Optuna study: sampler, pruner, storage, resume, warm start, and failures recorded as trial states."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import HpoConfig
from .errors import ConfigError, TrialError
from .space import grid, searched, suggest, warm_start_params
from .trial import Pruned, TrialResult, TrialRunner

if TYPE_CHECKING:
    import optuna

TRIALS_DIR = "trials"


def study_name(cfg: HpoConfig) -> str:
    """Stable for a config: the same config (whatever n_trials or sampler) reopens the same study."""
    return cfg.search.study_name or f"hpo-{cfg.fingerprint()}"


def storage_url(cfg: HpoConfig) -> str:
    return cfg.search.storage or f"sqlite:///{Path(cfg.output.dir) / 'study.db'}"


def open_storage(url: str) -> Any:
    """An Optuna RDB storage for URLs, a journal storage for file paths (e.g. runs/study.journal)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
    except Exception as err:  # SQLAlchemy raises many types for a bad URL or an unreachable server
        raise ConfigError(f"search.storage: cannot open {redact(url)}: {type(err).__name__}") from None


def _engine_kwargs(url: str) -> dict[str, Any]:
    # SQLite waits on a busy database instead of failing when several local workers write at once.
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}


def redact(url: str) -> str:
    """Hide the password of a database URL before it reaches a log."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def make_sampler(cfg: HpoConfig) -> Any:
    import optuna.samplers as s

    search = cfg.search
    options = dict(search.sampler_options)
    seed = options.pop("seed", search.seed)
    if search.sampler == "grid":
        points = int(options.pop("grid_points", 3))
        return s.GridSampler(grid(cfg, points), seed=seed, **options)
    factories: dict[str, Callable[..., Any]] = {
        "tpe": s.TPESampler,
        "random": s.RandomSampler,
        "gp": s.GPSampler,
        "cmaes": s.CmaEsSampler,
        "qmc": s.QMCSampler,
    }
    if search.sampler == "tpe":
        options.setdefault("n_startup_trials", 5)
        options.setdefault("multivariate", True)
    try:
        return factories[search.sampler](seed=seed, **options)
    except TypeError as err:
        raise ConfigError(f"search.sampler_options: {err}") from None


def make_pruner(cfg: HpoConfig) -> Any:
    import optuna.pruners as p

    search, budget = cfg.search, cfg.search.budget
    options = dict(search.pruner_options)
    # Resources are training steps: the first rung is the first evaluation, the last is the full budget.
    if search.pruner == "hyperband":
        options.setdefault("min_resource", budget.eval_every)
        options.setdefault("max_resource", budget.max_steps)
        options.setdefault("reduction_factor", 3)
    elif search.pruner == "successive_halving":
        options.setdefault("min_resource", budget.eval_every)
        options.setdefault("reduction_factor", 3)
    elif search.pruner in ("median", "percentile"):
        options.setdefault("n_startup_trials", 3)
        options.setdefault("n_warmup_steps", budget.eval_every)
    factories: dict[str, Callable[..., Any]] = {
        "hyperband": p.HyperbandPruner,
        "successive_halving": p.SuccessiveHalvingPruner,
        "median": p.MedianPruner,
        "percentile": lambda **kw: p.PercentilePruner(kw.pop("percentile", 25.0), **kw),
        "wilcoxon": p.WilcoxonPruner,
        "none": p.NopPruner,
    }
    try:
        return factories[search.pruner](**options)
    except TypeError as err:
        raise ConfigError(f"search.pruner_options: {err}") from None


def open_study(cfg: HpoConfig) -> optuna.Study:
    """Create the study or reopen it: the same command again resumes."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler, pruner = make_sampler(cfg), make_pruner(cfg)  # bad options fail before a storage is created
    study = optuna.create_study(
        study_name=study_name(cfg),
        storage=open_storage(storage_url(cfg)),
        sampler=sampler,
        pruner=pruner,
        direction=cfg.search.objective.direction,
        load_if_exists=True,
    )
    fail_orphans(study)
    if cfg.search.warm_start and cfg.search.sampler != "grid" and not study.trials and searched(cfg):
        study.enqueue_trial(warm_start_params(cfg), user_attrs={"warm_start": True})
    return study


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def fail_orphans(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials of workers on this host whose process is gone (killed, crashed), so a
    restart neither waits for them nor counts them as running; returns their numbers."""
    import optuna

    host = socket.gethostname()
    orphans = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner_host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        if owner_host != host or not pid.isdigit():
            continue
        if int(pid) != os.getpid() and _alive(int(pid)):  # our own pid here is a reused one: we run no trial yet
            continue
        storage = study._storage  # Optuna has no public API to fail another process's trial
        storage.set_trial_user_attr(trial._trial_id, "error", f"worker {owner_host}:{pid} died during this trial")
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        orphans.append(trial.number)
    return orphans


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def finished(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())


def run_trials(
    study: optuna.Study,
    cfg: HpoConfig,
    runner: TrialRunner,
    extra_trials: int | None = None,
    on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> int:
    """Run the missing trials (or `extra_trials` more); returns how many this call ran."""
    target = finished(study) + extra_trials if extra_trials is not None else cfg.search.n_trials
    missing = target - finished(study)
    if missing <= 0:
        return 0
    trials_dir = Path(cfg.output.dir) / TRIALS_DIR
    objective = _Objective(study, cfg, runner, trials_dir)

    def stop_at_target(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if finished(study) >= target:  # other workers on the same storage count too
            study.stop()
        if on_trial is not None:
            on_trial(study, trial)

    before = len(study.get_trials(deepcopy=False))
    study.optimize(
        objective,
        n_trials=missing,
        timeout=cfg.search.timeout,
        callbacks=[stop_at_target],
        catch=(Exception,),
        gc_after_trial=False,  # TrialRunner frees memory after each trial already
    )
    if not cfg.output.keep_all_adapters:
        keep_only_best(study, trials_dir)
    return len(study.get_trials(deepcopy=False)) - before


class _Objective:
    """Optuna objective: suggest, train, report; every failure becomes a FAIL trial with its cause kept."""

    def __init__(self, study: optuna.Study, cfg: HpoConfig, runner: TrialRunner, trials_dir: Path) -> None:
        self.study, self.cfg, self.runner, self.trials_dir = study, cfg, runner, trials_dir

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        trial.set_user_attr("worker", worker_id())
        params = suggest(trial, self.cfg)
        started = time.perf_counter()

        def report(value: float, step: int) -> bool:
            trial.report(value, step)
            return trial.should_prune()

        try:
            result = self.runner.run(params, report=report, save_to=lambda r: self._save_dir(trial, r))
        except Pruned as pruned:
            trial.set_user_attr("steps", pruned.step)
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))
            raise optuna.TrialPruned(str(pruned)) from None
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:2000])
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))
            raise
        _record(trial, result)
        return result.value

    def _save_dir(self, trial: optuna.Trial, result: TrialResult) -> Path | None:
        """Save a trial's weights only if it is feasible and beats every completed trial so far (or all are kept)."""
        for name, excess in result.forgetting.items():
            trial.set_constraint(f"forgetting:{name}", excess)  # Optuna: feasible when ≤ 0
        if result.forgetting:
            trial.set_user_attr("forgetting_excess", result.forgetting)
        feasible = all(excess <= 0 for excess in result.forgetting.values())
        if not self.cfg.output.keep_all_adapters and not (feasible and _improves(self.study, result.value)):
            return None
        return self.trials_dir / str(trial.number)


def _improves(study: optuna.Study, value: float) -> bool:
    try:
        best = study.best_value  # the best feasible trial under constraints
    except ValueError:  # no completed (feasible) trial yet
        return True
    return value < best if study.direction.name == "MINIMIZE" else value > best


def _record(trial: optuna.Trial, result: TrialResult) -> None:
    trial.set_user_attr("curve", [[s, v] for s, v in result.curve])
    trial.set_user_attr("metrics", result.metrics)
    trial.set_user_attr("steps", result.steps)
    trial.set_user_attr("seconds", round(result.seconds, 3))
    trial.set_user_attr("stopped_early", result.stopped_early)


def keep_only_best(study: optuna.Study, trials_dir: Path) -> None:
    """Delete every saved trial folder except the best trial's."""
    if not trials_dir.is_dir():
        return
    try:
        best = str(study.best_trial.number)
    except ValueError:
        best = None
    for child in trials_dir.iterdir():
        if child.is_dir() and child.name != best:
            shutil.rmtree(child, ignore_errors=True)


def check_not_all_failed(study: optuna.Study) -> None:
    """A study whose every trial failed has nothing to promote: say why, with the first error."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    if trials and all(t.state == optuna.trial.TrialState.FAIL for t in trials):
        first = next((t.user_attrs.get("error") for t in trials if t.user_attrs.get("error")), "unknown error")
        raise TrialError(f"all {len(trials)} trials failed; first error: {first}")
