"""The study: opened (or resumed) with its sampler, pruner and warm start, and run trial by trial under the
trial-slot lock until it holds its target; failures are trial states, a full disk stops it."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hpo_action.config import HpoConfig
from hpo_action.config.remedies import remedies_matter, strong_remedies
from hpo_action.errors import ConfigError, TrialError
from hpo_action.interrupts import raise_if_pressed
from hpo_action.layout import RunLayout, foreign_files, is_ours
from hpo_action.redaction import redact_url
from hpo_action.search.naming import storage_url, study_name
from hpo_action.search.optuna_backend.duplicates import (
    claim_invocation,
    derive_seed,
    exhausted,
    is_discarded,
    seed_stream,
)
from hpo_action.search.optuna_backend.finalist import judged_trial
from hpo_action.search.optuna_backend.no_learning import NoLearningStop, stopped
from hpo_action.search.optuna_backend.objective import CHECKPOINT_ATTR, Objective
from hpo_action.search.optuna_backend.orphans import fail_orphans, fail_stale
from hpo_action.search.optuna_backend.samplers import make_pruner, make_sampler
from hpo_action.search.optuna_backend.slots import claimed, slot_lock
from hpo_action.search.optuna_backend.storage import open_storage, retry_callback
from hpo_action.search.optuna_backend.watchdog import TrialWatchdog
from hpo_action.search.space import DEFAULTS, STRONG_REMEDIES, WARM_START_ATTR, searched, warm_start_params
from hpo_action.train.checkpoints import sweep
from hpo_action.train.runner import Runner

if TYPE_CHECKING:
    import optuna

OBJECTIVES_ATTR = "objectives"  # study user attribute: the objective setup it was made with

OnTrial = Callable[["optuna.Study", "optuna.trial.FrozenTrial"], None]


def open_study(cfg: HpoConfig, seed: int | None = None) -> optuna.Study:
    """Create the study or reopen it: the same command again resumes; one made for other objectives is refused.
    The sampler's seed is `seed` (default search.seed) mixed with the trials the study holds, this invocation's
    number and the seed stream (duplicates.py), so that a resume, a second command (even one started at the
    same moment) or a matrix job never re-draws the same parameters."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are reported by us, without tracebacks
    base = cfg.search.seed if seed is None else seed
    stream = seed_stream()
    sampler, pruner = make_sampler(cfg, base), make_pruner(cfg)  # bad options fail before a storage is created
    study = optuna.create_study(
        study_name=study_name(cfg),
        storage=open_storage(storage_url(cfg), cfg.search),
        sampler=sampler,
        pruner=pruner,  # a multi-objective study prunes through its companion study (search/optuna_backend/pruning.py)
        directions=[entry["direction"] for entry in objective_setup(cfg)],
        load_if_exists=True,
    )
    check_objectives(study, cfg)
    fail_orphans(study, retry_callback(cfg.search))
    fail_stale(study)
    held = len(study.get_trials(deepcopy=False))
    invocation = _claim_invocation(study, cfg)
    if held or stream or invocation:
        study.sampler = make_sampler(cfg, derive_seed(base, held, stream, invocation))
    if cfg.search.warm_start and cfg.search.sampler != "grid" and not study.trials and searched(cfg):
        warm = warm_start_params(cfg)
        study.enqueue_trial(warm, user_attrs={WARM_START_ATTR: DEFAULTS})
        strong = strong_remedies(warm, searched(cfg))
        if remedies_matter(cfg) and strong != warm:
            study.enqueue_trial(strong, user_attrs={WARM_START_ATTR: STRONG_REMEDIES})
    return study


def _claim_invocation(study: optuna.Study, cfg: HpoConfig) -> int:
    """This command's number on the study, under the slot lock: two commands started at once get two numbers."""
    lock = slot_lock(cfg)
    try:
        lock.acquire()
        return claim_invocation(study)
    finally:
        lock.release()
        lock.close()


def objective_setup(cfg: HpoConfig) -> list[dict[str, str]]:
    """The study's objectives as stored on it: [{"metric", "direction"}], the first pruned on."""
    objectives = cfg.search.objectives or [cfg.search.objective]
    return [{"metric": objective.metric, "direction": str(objective.direction)} for objective in objectives]


def check_objectives(study: optuna.Study, cfg: HpoConfig) -> None:
    """A study keeps the objectives it was made with: another setup (one objective to several, another metric or
    direction) is refused before anything trains (exit 2); the first opening records the setup on the study."""
    wanted = objective_setup(cfg)
    recorded = study.user_attrs.get(OBJECTIVES_ATTR)
    directions = [direction.name.lower() for direction in study.directions]
    if recorded is None and directions == [entry["direction"] for entry in wanted]:
        study.set_user_attr(OBJECTIVES_ATTR, wanted)  # a new study, or one made before the setup was recorded
        return
    if recorded == wanted:
        return
    made = _describe(recorded) if recorded is not None else f"{len(directions)} objective(s), {', '.join(directions)}"
    key = "search.objectives" if cfg.search.objectives else "search.objective"
    raise ConfigError(
        f"{key}: study {study.study_name!r} in {redact_url(storage_url(cfg))} was made for {made}, and this config "
        f"asks for {_describe(wanted)}; a study keeps its objectives: give this setup a new --output (or a new "
        "--study-name), or put the objectives back"
    )


def check_stored_objectives(cfg: HpoConfig) -> None:
    """The same refusal before a run loads or writes anything, when the study is already in its storage."""
    import optuna

    if study_exists(cfg):
        storage = open_storage(storage_url(cfg), cfg.search)
        check_objectives(optuna.load_study(study_name=study_name(cfg), storage=storage), cfg)


def _describe(setup: list[dict[str, str]]) -> str:
    return ", ".join(f"{entry['metric']} ({entry['direction']})" for entry in setup)


def study_exists(cfg: HpoConfig) -> bool:
    """Whether the study is already in its storage; asks without creating it."""
    import optuna

    url = storage_url(cfg)
    local = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url if "://" not in url else None
    if local is not None and not Path(local).exists():
        return False  # do not create an empty database or journal just to look into it
    return study_name(cfg) in optuna.study.get_all_study_names(open_storage(url, cfg.search))


def run_trials(
    study: optuna.Study,
    cfg: HpoConfig,
    runner: Runner,
    target: int,
    deadline: float | None = None,
    on_trial: OnTrial | None = None,
    prune_adapters: bool = True,
) -> int:
    """Run trials until the study holds `target` (counting every worker's), or until `deadline` (time.time())
    passes; returns how many this call ran. Safe to run in many processes on one study at once: each trial is
    asked for under the slot lock, which the objective releases as soon as the trial exists. Workers that share an
    output folder leave `prune_adapters` to their supervisor, which deletes the non-best adapters once none of
    them is still saving one."""
    trials_dir = RunLayout(Path(cfg.output.dir)).trials_dir
    lock = slot_lock(cfg)
    timeout = cfg.search.trial_timeout
    watchdog = TrialWatchdog(study, timeout) if timeout and cfg.search.workers == 0 else None  # workers: supervisor
    objective = Objective(study, cfg, runner, trials_dir, lock, watchdog)
    grid_done = getattr(study.sampler, "is_exhausted", None)  # the grid sampler, once every point has run
    stopper = NoLearningStop(cfg, runner)  # study.stop() when no trial learned within the margins (no_learning.py)
    callbacks = [stopper, *([_reported(on_trial)] if on_trial else [])]
    ran = 0
    try:
        while (deadline is None or time.time() < deadline) and not (grid_done and grid_done(study)):
            raise_if_pressed()
            lock.acquire()
            try:
                fail_stale(study)
                if claimed(study) >= target or exhausted(study, cfg) or stopped(study):
                    break
                study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks)
            finally:
                lock.release()
            ran += 0 if objective.reasked else 1
            if objective.fatal is not None:
                raise objective.fatal
    finally:
        lock.close()
        if watchdog is not None:
            watchdog.close()
        if prune_adapters and not cfg.output.keep_all_adapters:
            keep_only_best(study, trials_dir)
        if prune_adapters:
            sweep_checkpoints(study, cfg)
    return ran


def _reported(on_trial: OnTrial) -> OnTrial:
    """The caller hears of every trial but a discarded repeat (asked again at once)."""

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not is_discarded(trial):
            on_trial(study, trial)

    return report


def keep_only_best(study: optuna.Study, trials_dir: Path) -> None:
    """Delete every trial folder this tool saved except the judged trial's; nothing else is touched."""
    if not trials_dir.is_dir():
        return
    finalist = judged_trial(study)
    best = str(finalist.number) if finalist is not None else None
    for child in trials_dir.iterdir():
        if child.name.isdigit() and child.name != best and is_ours(child, "trial") and not foreign_files(child):
            shutil.rmtree(child, ignore_errors=True)


def sweep_checkpoints(study: optuna.Study, cfg: HpoConfig) -> None:
    """Delete what is left of trials that will not resume (killed, and not retried): every checkpoint folder but
    those of trials still running or queued (a queued retry resumes from its original's folder)."""
    import optuna

    live = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    running = study.get_trials(deepcopy=False, states=live)
    keep = {str(t.user_attrs[CHECKPOINT_ATTR]) for t in running if CHECKPOINT_ATTR in t.user_attrs}
    sweep(RunLayout(Path(cfg.output.dir)).checkpoints_dir, keep)


def check_not_all_failed(study: optuna.Study) -> None:
    """A study whose every trial failed has nothing to promote: say why, with the first error."""
    import optuna

    trials = [t for t in study.get_trials(deepcopy=False) if not is_discarded(t)]
    if trials and all(t.state == optuna.trial.TrialState.FAIL for t in trials):
        first = next((t.user_attrs.get("error") for t in trials if t.user_attrs.get("error")), "unknown error")
        raise TrialError(f"all {len(trials)} trials failed; first error: {first}")
