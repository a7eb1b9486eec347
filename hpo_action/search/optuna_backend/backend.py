"""The Optuna backend behind the search interface (search/backend.py): the study in its storage, its trials run in
this process (search.workers 0) or in worker processes, and its outcome as typed records (a RunSummary, best/)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_action.config import HpoConfig
from hpo_action.errors import ConfigError
from hpo_action.interrupts import raise_if_pressed
from hpo_action.layout import RunLayout
from hpo_action.redaction import redact_url
from hpo_action.search import reseed_finalists
from hpo_action.search.backend import Progress, SearchRequest, SearchResult
from hpo_action.search.naming import storage_url, study_name
from hpo_action.search.optuna_backend import lr_bounds
from hpo_action.search.optuna_backend.finalist import finalist_candidates, judged_trial
from hpo_action.search.optuna_backend.no_learning import stopped
from hpo_action.search.optuna_backend.records import importances, publish_best, study_view, summarize
from hpo_action.search.optuna_backend.slots import check_complete, finished, target_trials, timeout_stop
from hpo_action.search.optuna_backend.study import check_not_all_failed, open_study, run_trials, study_exists
from hpo_action.search.optuna_backend.supervisor import WorkerPool
from hpo_action.search.outputs import check_writable
from hpo_action.search.space import trial_defaults

if TYPE_CHECKING:
    import optuna


class OptunaBackend:
    """search.backend optuna (the default): samplers, pruners and the storage of search.*."""

    def search(self, request: SearchRequest) -> SearchResult:
        """Open or resume the study, run its missing trials, and return what it holds; `extra_trials=0` (the
        leader after search workers) runs none and refuses a study that is not complete unless `allow_partial`."""
        started = time.monotonic()
        cfg, hooks = request.cfg, request.hooks
        if request.extra_trials == 0 and not study_exists(cfg):
            raise ConfigError(
                f"--n-trials 0: no trial to run, and study {study_name(cfg)!r} does not exist yet in this storage; "
                "drop --n-trials 0 (and --skip-search) to run search.n_trials trials"
            )
        check_writable(Path(cfg.output.dir))
        in_workers = cfg.search.workers > 0 and request.extra_trials != 0  # the leader runs no trial
        if in_workers:
            request.console.print(f"starting {cfg.search.workers} worker process(es); each loads the model once")
        layout = RunLayout(Path(cfg.output.dir))
        pool = WorkerPool(cfg.search.workers, layout.workers_dir) if in_workers else None
        try:
            runner = None
            if cfg.search.workers == 0:
                runner = hooks.make_runner(cfg, request.splits, request.forgetting_sets, request.console)
            else:
                hooks.prepare_workers(cfg)
            cfg = lr_bounds.resolve(cfg, lambda: hooks.find_lr(cfg, runner))
            study = open_study(cfg)
            lr_bounds.record(study, cfg)
            if request.extra_trials == 0 and not request.allow_partial:
                check_complete(study, cfg)
            target = target_trials(study, cfg, request.extra_trials)
            deadline = time.time() + cfg.search.timeout if cfg.search.timeout else None
            already = finished(study)
            with hooks.section(f"search: {max(target - already, 0)} trials"), hooks.progress(target, already) as view:
                on_trial = _viewed(view)
                if runner is not None:
                    run_trials(study, cfg, runner, target, deadline, on_trial=on_trial)
                elif pool is not None and finished(study) < target:
                    pool.run(cfg, study, target, deadline, on_trial=on_trial)
        finally:
            if pool is not None:
                pool.close()
        raise_if_pressed()
        check_not_all_failed(study)
        stopped_early = timeout_stop(finished(study), target, deadline)
        summary = _summary(cfg, study, time.monotonic() - started, stopped_early)
        if cfg.search.finalists.top_k:  # retrain the best trials on more seeds; best/ becomes the bound's choice
            runner = runner or hooks.make_runner(cfg, request.splits, request.forgetting_sets, request.console)
            candidates = finalist_candidates(study, cfg, cfg.search.finalists.top_k)
            summary = reseed_finalists.apply(candidates, cfg, summary, runner, layout, request.console)
        notices = (message,) if (message := stopped(study)) else ()  # the stopping rule (search/stopping.py)
        return SearchResult(summary, runner.base if runner else None, importances(study), notices)


def _viewed(view: Progress) -> Any:
    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        view.update(study_view(study, trial))

    return on_trial


def _summary(cfg: HpoConfig, study: optuna.Study, elapsed: float, stopped_early: str | None) -> Any:
    """The finalist (or, none qualifying, the closest to it) copied to best/ with every trial parameter, and the
    typed summary of the study."""
    best_dir, params = None, {}
    best = judged_trial(study)
    if best is not None:
        params = {**trial_defaults(cfg), **best.params, **best.user_attrs.get("batch_override", {})}
        best_dir = publish_best(study, RunLayout(Path(cfg.output.dir)), params)
    return summarize(study, cfg, redact_url(storage_url(cfg)), elapsed, best_dir, params, stopped_early)
