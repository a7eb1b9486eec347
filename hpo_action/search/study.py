"""The Optuna study: sampler, pruner, storage, resume, warm start, and failures recorded as trial states."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_action.config import HpoConfig, SearchConfig
from hpo_action.errors import ConfigError, OutputError, TrialError
from hpo_action.search.slots import TrialSlotLock
from hpo_action.search.space import grid, searched, suggest, warm_start_params
from hpo_action.train.trial import (
    BATCH_KEYS,
    OutOfMemory,
    Pruned,
    TrialResult,
    TrialRunner,
    describe_error,
    halve_batch,
)

if TYPE_CHECKING:
    import optuna

TRIALS_DIR = "trials"
SCHEMA_ATTEMPTS = 4


def study_name(cfg: HpoConfig) -> str:
    """Stable for a config: the same config (whatever n_trials or sampler) reopens the same study."""
    return cfg.search.study_name or f"hpo-{cfg.fingerprint()}"


def storage_url(cfg: HpoConfig) -> str:
    return cfg.search.storage or f"sqlite:///{Path(cfg.output.dir) / 'study.db'}"


def open_storage(url: str, search: SearchConfig | None = None) -> Any:
    """An Optuna RDB storage for URLs, a journal storage for file paths (e.g. runs/study.journal).

    RDB storages get heartbeats: a trial whose worker stops beating for the grace period is failed by the next
    worker that looks and, up to `search.retry_interrupted` times, queued again with the same parameters."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    search = search or SearchConfig()
    if "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    attempt = 0
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=_engine_kwargs(url),
                    heartbeat_interval=search.heartbeat_interval,
                    grace_period=search.grace_period,
                    heartbeat_stale_trial_callback=retry_callback(search),
                )
        except (IntegrityError, ProgrammingError) as err:  # workers creating Optuna's tables at the same time
            attempt += 1
            if attempt == SCHEMA_ATTEMPTS:
                raise ConfigError(f"search.storage: cannot open {redact(url)}: {type(err).__name__}") from None
            time.sleep(0.5 * attempt)
        except Exception as err:  # SQLAlchemy raises many types for a bad URL or an unreachable server
            raise ConfigError(f"search.storage: cannot open {redact(url)}: {type(err).__name__}") from None


def check_remote_storage(cfg: HpoConfig) -> None:
    """Connect to a database storage now (a local SQLite file or journal always opens)."""
    url = storage_url(cfg)
    if "://" in url and not url.startswith("sqlite"):
        open_storage(url, cfg.search).remove_session()


def retry_callback(search: SearchConfig) -> Any:
    """Queues an interrupted trial again with its parameters; None when retries are off."""
    if search.retry_interrupted == 0:
        return None
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return RetryHeartbeatStaleTrialCallback(max_retry=search.retry_interrupted)


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
        # 3, not 5: over 10 seeds of benchmarks/hpo_defaults.py, median best loss 0.177 instead of 0.306 at the
        # same compute. Short studies (16-30 trials) gain most from modelling early.
        options.setdefault("n_startup_trials", 3)
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
        storage=open_storage(storage_url(cfg), cfg.search),
        sampler=sampler,
        pruner=pruner,
        direction=cfg.search.objective.direction,
        load_if_exists=True,
    )
    fail_orphans(study, retry_callback(cfg.search))
    fail_stale(study)
    if cfg.search.warm_start and cfg.search.sampler != "grid" and not study.trials and searched(cfg):
        study.enqueue_trial(warm_start_params(cfg), user_attrs={"warm_start": True})
    return study


def worker_id(pid: int | None = None) -> str:
    """Who runs a trial: stored on it, so a restart on this host can tell whether that process is gone."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def fail_orphans(study: optuna.Study, retry: Callable[..., None] | None = None) -> list[int]:
    """Fail (and retry) the RUNNING trials of processes on this host that are gone (killed, crashed), so a
    restart on the same machine does not wait out the heartbeat grace period; returns their numbers."""
    import optuna

    host = socket.gethostname()
    orphans = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner_host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        if owner_host != host or not pid.isdigit():
            continue
        if int(pid) != os.getpid() and _alive(int(pid)):  # our own pid here is a reused one: we run no trial yet
            continue
        fail_running(study, trial, f"interrupted: worker {owner_host}:{pid} died during this trial", retry)
        orphans.append(trial.number)
    return orphans


def fail_worker_trials(study: optuna.Study, pid: int, cause: str) -> list[int]:
    """Fail the trial a dead worker process was running, with the cause; not retried, since a trial that
    crashes its process (OOM escalation, segfault) would likely crash the next one too."""
    import optuna

    mine = worker_id(pid)
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    crashed = [t for t in running if t.user_attrs.get("worker") == mine]
    for trial in crashed:
        fail_running(study, trial, cause)
    return [t.number for t in crashed]


def fail_running(
    study: optuna.Study, trial: optuna.trial.FrozenTrial, error: str, retry: Callable[..., None] | None = None
) -> None:
    """Fail another process's RUNNING trial (Optuna has no public API for it) and optionally queue a retry."""
    import optuna

    storage = study._storage
    before_error = storage.get_trial(trial._trial_id)  # the retry must not inherit the error below
    try:
        storage.set_trial_user_attr(trial._trial_id, "error", error)
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return  # another process failed it first (and retried it, if it should be)
    if retry is not None:
        retry(study, before_error)


def fail_stale(study: optuna.Study) -> None:
    """Fail (and retry) trials whose heartbeat stopped: their worker died on some machine."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def retried(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of interrupted trials that a retry stands in for: they do not count toward n_trials."""
    return {number for t in trials for number in t.system_attrs.get("retry_history", ())}


def finished(study: optuna.Study) -> int:
    """Trials that count toward n_trials: complete, pruned or failed, each retried trial once."""
    trials = study.get_trials(deepcopy=False)
    superseded = retried(trials)
    return sum(1 for t in trials if t.state.is_finished() and t.number not in superseded)


def claimed(study: optuna.Study) -> int:
    """Finished trials plus the ones running now: a worker starts a trial only while this is below target."""
    import optuna

    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    return finished(study) + len(running)


def target_trials(study: optuna.Study, cfg: HpoConfig, extra_trials: int | None) -> int:
    """How many counted trials the study should hold when this command ends."""
    return finished(study) + extra_trials if extra_trials is not None else cfg.search.n_trials


def slot_lock(cfg: HpoConfig) -> TrialSlotLock:
    url = storage_url(cfg)
    local = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") or "://" not in url else None
    return TrialSlotLock(url, study_name(cfg), local.parent if local else Path(cfg.output.dir))


def run_trials(
    study: optuna.Study,
    cfg: HpoConfig,
    runner: TrialRunner,
    target: int,
    deadline: float | None = None,
    on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
    prune_adapters: bool = True,
) -> int:
    """Run trials until the study holds `target` (counting every worker's), or until `deadline` (time.time())
    passes; returns how many this call ran. Safe to run in many processes on one study at once; workers that
    share an output folder leave `prune_adapters` to their supervisor, which deletes the non-best adapters
    once none of them is still saving one."""
    trials_dir = Path(cfg.output.dir) / TRIALS_DIR
    objective = _Objective(study, cfg, runner, trials_dir)
    lock = slot_lock(cfg)
    ran = 0
    # Samplers may stop a study (the grid sampler, once every point ran) only inside Optuna's optimize loop,
    # which this loop stands in for: let them, and honor the stop below.
    study._thread_local.in_optimize_loop, study._stop_flag = True, False
    try:
        while not study._stop_flag and (deadline is None or time.time() < deadline):
            with lock:
                fail_stale(study)
                if claimed(study) >= target:
                    break
                with warnings.catch_warnings():  # Optuna wants heartbeats with optimize(); we beat them ourselves
                    warnings.filterwarnings("ignore", message="Heartbeat of storage")
                    trial = study.ask()
                trial.set_user_attr("worker", worker_id())
            frozen = _run_one(study, trial, objective)
            ran += 1
            if on_trial is not None:
                on_trial(study, frozen)
    finally:
        study._thread_local.in_optimize_loop = False
        lock.close()
        if prune_adapters and not cfg.output.keep_all_adapters:
            keep_only_best(study, trials_dir)
    return ran


def _run_one(study: optuna.Study, trial: optuna.Trial, objective: _Objective) -> optuna.trial.FrozenTrial:
    """Run one asked trial with heartbeats and tell its outcome; a full disk stops the study."""
    import optuna

    state, value = optuna.trial.TrialState.FAIL, None
    try:
        with heartbeat(study._storage, trial._trial_id):
            value = objective(trial)
        state = optuna.trial.TrialState.COMPLETE
    except optuna.TrialPruned:
        state = optuna.trial.TrialState.PRUNED
    except OSError as err:  # recorded by the objective as the trial's error
        if err.errno in (errno.ENOSPC, errno.EDQUOT):  # every later trial would fail the same way
            study.tell(trial, state=state, skip_if_finished=True)
            raise OutputError(
                f"output.dir: {err.strerror} while saving trial {trial.number} to {objective.trials_dir}; "
                "free space or set output.dir elsewhere, then run the same command again to resume"
            ) from None
    except Exception:  # recorded by the objective as the trial's error; the study goes on
        pass
    except BaseException:  # Ctrl-C, SystemExit: the trial is lost, the study stays consistent
        trial.set_user_attr("error", "interrupted")
        study.tell(trial, state=state, skip_if_finished=True)
        raise
    if state == optuna.trial.TrialState.COMPLETE:
        study.tell(trial, value, skip_if_finished=True)
    else:
        study.tell(trial, state=state, skip_if_finished=True)
    return study._storage.get_trial(trial._trial_id)


@contextmanager
def heartbeat(storage: Any, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat every interval while it runs (RDB storages with heartbeats only)."""
    interval = getattr(storage, "heartbeat_interval", None)
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"hpo-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class _Objective:
    """Optuna objective: suggest, train, report; every failure becomes a FAIL trial with its cause kept."""

    def __init__(self, study: optuna.Study, cfg: HpoConfig, runner: TrialRunner, trials_dir: Path) -> None:
        self.study, self.cfg, self.runner, self.trials_dir = study, cfg, runner, trials_dir

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        params = suggest(trial, self.cfg)
        started = time.perf_counter()

        def report(value: float, step: int) -> bool:
            trial.report(value, step)
            return trial.should_prune()

        def save_to(result: TrialResult) -> Path | None:
            return self._save_dir(trial, result)

        def run(params: dict[str, Any]) -> TrialResult:
            return self.runner.run(params, report=report, save_to=save_to, trial_number=trial.number)

        try:
            try:
                result = run(params)
            except OutOfMemory as oom:
                if not self.cfg.search.oom_retry or oom.batch < 2:
                    raise
                smaller = halve_batch(params)
                trial.set_user_attr("batch_override", {k: smaller[k] for k in BATCH_KEYS})
                trial.set_user_attr("oom_retry", f"{oom}; retried at per-device batch {smaller[BATCH_KEYS[0]]}")
                result = run(smaller)
        except Pruned as pruned:
            trial.set_user_attr("steps", pruned.step)
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))
            raise optuna.TrialPruned(str(pruned)) from None
        except Exception as err:
            trial.set_user_attr("error", describe_error(err)[:2000])
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
