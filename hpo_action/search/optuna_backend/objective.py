"""The Optuna objective: suggest, train, report to the pruner; every failure becomes a FAIL trial with its cause."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_action.config import HpoConfig
from hpo_action.errors import OutputError
from hpo_action.files import is_no_space
from hpo_action.layout import RunLayout
from hpo_action.search.optuna_backend.duplicates import DUPLICATE_ATTR, MAX_REASKS, duplicate_of
from hpo_action.search.optuna_backend.finalist import (
    DROP_ATTR,
    EXCESS_ATTR,
    SHORTFALL_ATTR,
    beats_finalist,
    chosen_trial,
    closest_to_feasible,
)
from hpo_action.search.optuna_backend.forgetting_rungs import RUNGS_ATTR, ForgettingRungs, forgetting_rungs
from hpo_action.search.optuna_backend.orphans import WORKER_ATTR, worker_id
from hpo_action.search.optuna_backend.pruning import FirstObjectivePruning, companion_study
from hpo_action.search.optuna_backend.slots import TrialSlotLock
from hpo_action.search.optuna_backend.watchdog import TrialWatchdog
from hpo_action.search.selection import objective_values, shortfall
from hpo_action.search.space import suggest, warm_start_kind
from hpo_action.train.checkpoints import TrialCheckpoints, identity
from hpo_action.train.runner import Runner
from hpo_action.train.trial import (
    BATCH_KEYS,
    OutOfMemory,
    Pruned,
    TrialResult,
    describe_error,
    halve_batch,
)

if TYPE_CHECKING:
    import optuna

CHECKPOINT_ATTR = "checkpoint"  # user attribute: the trial's folder under checkpoints/; a retry inherits it
RESUMED_ATTR = "resumed_from_step"
CHECKPOINT_BYTES_ATTR = "checkpoint_bytes"
REFUSED_ATTR = "resume_refused"


class Objective:
    """Called by `Study.optimize` with the trial it just asked for, while this process holds the slot lock."""

    def __init__(
        self,
        study: optuna.Study,
        cfg: HpoConfig,
        runner: Runner,
        trials_dir: Path,
        lock: TrialSlotLock,
        watchdog: TrialWatchdog | None = None,
    ):
        self.study, self.cfg, self.runner, self.trials_dir, self.lock = study, cfg, runner, trials_dir, lock
        self.watchdog = watchdog  # in-process trials with search.trial_timeout: the hard stop of a stuck step
        self.companion = companion_study(study, cfg)  # the pruner's study when there are several objectives
        self.fatal: OutputError | None = None  # set when no later trial can succeed either (a full disk)
        self.reasked = 0  # proposals discarded as repeats, in a row
        self.checkpoints: TrialCheckpoints | None = None  # the running trial's, with search.resume_trials

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        import optuna

        try:
            trial.set_user_attr(WORKER_ATTR, worker_id())
            params = suggest(trial, self.cfg)
            self._refuse_repeat(trial)  # under the slot lock: every other worker's trial has its parameters
        finally:
            self.lock.release()  # the trial exists and holds its slot; other workers may ask for theirs
        started = time.perf_counter()
        # A warm start trains to the end: the point the search is measured against, and the strong remedies' slow
        # start would otherwise be pruned before the skill it keeps is ever probed.
        rungs = forgetting_rungs(self.cfg, self.runner)
        pruning = FirstObjectivePruning(trial, self.companion, bool(warm_start_kind(trial.user_attrs)), rungs)
        if self.watchdog is not None:
            self.watchdog.arm(trial.number)
        try:
            result = self._run_with_oom_retry(trial, params, pruning)
            multi = self.cfg.search.multi_objective
            values = objective_values(self.cfg, result.metrics, result.forgetting_drop) if multi else None
        except Pruned as pruned:
            self._close_checkpoints(trial)
            _record_rungs(trial, rungs)
            trial.set_user_attr("steps", pruned.step)
            trial.set_user_attr("train_curve", [[s, v] for s, v in pruned.train_curve])
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))
            pruning.finish("PRUNED")
            raise optuna.TrialPruned(str(pruned)) from None
        except KeyboardInterrupt:  # the checkpoint stays for a retry; the study's end sweeps it if none comes
            trial.set_user_attr("error", "interrupted")
            pruning.finish("FAIL")
            raise
        except Exception as err:
            self._close_checkpoints(trial)
            pruning.finish("FAIL")
            trial.set_user_attr("error", describe_error(err)[:2000])
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))
            if is_no_space(err):
                self.fatal = OutputError(
                    f"output.dir: no space left on the device while saving trial {trial.number} to "
                    f"{self.trials_dir}; free space or set output.dir elsewhere, then run the same command again "
                    "to resume"
                )
            raise
        finally:
            if self.watchdog is not None:
                self.watchdog.disarm()
        self._close_checkpoints(trial)
        _record(trial, result)
        _record_rungs(trial, rungs)
        pruning.finish("COMPLETE", result.value)
        return result.value if values is None else values

    def _refuse_repeat(self, trial: optuna.Trial) -> None:
        """Discard a proposal that repeats a configuration the study holds, so the loop asks again; a retry of
        an interrupted trial repeats on purpose, and after MAX_REASKS repeats in a row (a tiny space) one runs.
        The discarded trial ends PRUNED (it stopped before training), never FAIL: nothing failed."""
        import optuna

        other = duplicate_of(self.study, trial.number, trial.params)
        if other is None or self.reasked >= MAX_REASKS:
            self.reasked = 0
            return
        self.reasked += 1
        trial.set_user_attr(DUPLICATE_ATTR, other)
        raise optuna.TrialPruned(f"trial {trial.number} repeats trial {other}'s parameters; asked again")

    def _run_with_oom_retry(
        self, trial: optuna.Trial, params: dict[str, Any], pruning: FirstObjectivePruning
    ) -> TrialResult:
        def run(chosen: dict[str, Any]) -> TrialResult:
            self.checkpoints = self._checkpoints(trial, chosen)
            return self.runner.run(
                chosen,
                report=pruning.report,
                save_to=lambda result: self._save_dir(trial, result),
                trial_number=trial.number,
                checkpoints=self.checkpoints,
            )

        try:
            return run(params)
        except OutOfMemory as oom:
            if not self.cfg.search.oom_retry or oom.batch < 2:
                raise
            smaller = halve_batch(params)
            trial.set_user_attr("batch_override", {k: smaller[k] for k in BATCH_KEYS})
            trial.set_user_attr("oom_retry", f"{oom}; retried at per-device batch {smaller[BATCH_KEYS[0]]}")
            return run(smaller)

    def _checkpoints(self, trial: optuna.Trial, params: dict[str, Any]) -> TrialCheckpoints | None:
        """With search.resume_trials, the trial's checkpoint folder: named by the first trial of a retry series
        (the attribute is copied onto each retry), bound to the parameters it trains."""
        if not self.cfg.search.resume_trials:
            return None
        key = trial.user_attrs.get(CHECKPOINT_ATTR)
        if key is None:
            key = str(trial.number)
            trial.set_user_attr(CHECKPOINT_ATTR, key)
        folder = RunLayout(Path(self.cfg.output.dir)).checkpoints_dir / str(key)
        return TrialCheckpoints(folder, identity(params, self.cfg.fingerprint()))

    def _close_checkpoints(self, trial: optuna.Trial) -> None:
        """The trial ended (complete, pruned or failed): record where it resumed and what a checkpoint weighed,
        then delete its checkpoints."""
        checkpoints, self.checkpoints = self.checkpoints, None
        if checkpoints is None:
            return
        trial.set_user_attr(RESUMED_ATTR, checkpoints.resumed_from_step)
        trial.set_user_attr(CHECKPOINT_BYTES_ATTR, checkpoints.checkpoint_bytes)
        if checkpoints.refused:
            trial.set_user_attr(REFUSED_ATTR, checkpoints.refused)
        checkpoints.remove()

    def _save_dir(self, trial: optuna.Trial, result: TrialResult) -> Path | None:
        """Save a trial's weights only if it may be chosen (within every forgetting margin, when probes ran) and
        beats the finalist so far on the first objective (or all are kept)."""
        if self.cfg.search.forgetting_constraint:
            for name, excess in result.forgetting.items():
                trial.set_constraint(f"forgetting:{name}", excess)  # Optuna: feasible when ≤ 0
        if result.forgetting:
            trial.set_user_attr(EXCESS_ATTR, result.forgetting)
            trial.set_user_attr(DROP_ATTR, result.forgetting_drop)
            margins = {b.name: b.margin or 0.0 for b in self.cfg.gate.forgetting}
            trial.set_user_attr(SHORTFALL_ATTR, shortfall(result.forgetting, margins))
        qualifies = all(excess <= 0 for excess in result.forgetting.values())
        keep = qualifies and beats_finalist(self.study, result.value)
        if not keep and not qualifies and result.forgetting:
            keep = self._closest_so_far(trial.user_attrs[SHORTFALL_ATTR])  # judged if none qualifies (finalist.py)
        if not self.cfg.output.keep_all_adapters and not keep:
            return None
        return self.trials_dir / str(trial.number)

    def _closest_so_far(self, missed_by: float) -> bool:
        """No trial qualifies yet and this one missed the forgetting test by less than any completed trial."""
        if chosen_trial(self.study) is not None:
            return False
        closest = closest_to_feasible(self.study)
        return closest is None or missed_by < closest.user_attrs[SHORTFALL_ATTR]


def _record(trial: optuna.Trial, result: TrialResult) -> None:
    trial.set_user_attr("curve", [[s, v] for s, v in result.curve])
    trial.set_user_attr("metrics", result.metrics)
    trial.set_user_attr("steps", result.steps)
    trial.set_user_attr("seconds", round(result.seconds, 3))
    trial.set_user_attr("stopped_early", result.stopped_early)
    trial.set_user_attr("train_curve", [[s, v] for s, v in result.train_curve])
    if result.fold_values:
        trial.set_user_attr("fold_values", result.fold_values)


def _record_rungs(trial: optuna.Trial, rungs: ForgettingRungs | None) -> None:
    if rungs is not None and rungs.log:
        trial.set_user_attr(RUNGS_ATTR, rungs.log)
