"""Worker processes for one study: start N, pin each to a GPU (or a share of the CPU cores), and when one dies
mid-trial (segfault, OOM kill, `os._exit`), record that trial FAIL with the cause and start a fresh worker, so
one bad trial never ends the study or poisons the next one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_action import errors
from hpo_action.config import HpoConfig
from hpo_action.errors import HpoActionError, TrialError
from hpo_action.files import PRIVATE_MODE
from hpo_action.interrupts import raise_if_pressed
from hpo_action.layout import RunLayout
from hpo_action.search.naming import study_name
from hpo_action.search.optuna_backend.duplicates import derive_seed, is_discarded
from hpo_action.search.optuna_backend.orphans import WORKER_ATTR, fail_orphans, fail_worker_trials, worker_id
from hpo_action.search.optuna_backend.slots import claimed
from hpo_action.search.optuna_backend.storage import retry_callback
from hpo_action.search.optuna_backend.study import keep_only_best, sweep_checkpoints
from hpo_action.search.optuna_backend.watchdog import hard_limit
from hpo_action.train.threads import SHARE_ENV, process_threads, worker_share

if TYPE_CHECKING:
    import optuna

POLL_SECONDS = 0.5

OnTrial = Callable[["optuna.Study", "optuna.trial.FrozenTrial"], None]


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    log: Path
    error_file: Path
    overdue: str | None = None  # why the supervisor killed it, when it did


class WorkerPool:
    """`count` worker processes, started before this process checks the config and opens the study so that
    their heavy imports (torch, transformers, trl) overlap that work. Each waits for its assignment on stdin;
    one that never gets it (bad input found here) exits without doing anything."""

    def __init__(self, count: int, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.count, self.folder, self.launches = count, folder, 0
        self.workers = {i: self._spawn(i) for i in range(count)}
        self._running: tuple[HpoConfig, optuna.Study] | None = None

    def run(self, cfg: HpoConfig, study: optuna.Study, target: int, deadline: float | None, on_trial: OnTrial) -> None:
        """Run the study's missing trials in the workers until it holds `target` trials."""
        raw = cfg.model_dump(mode="json")
        raw["search"]["study_name"] = study_name(cfg)  # the workers open exactly this study
        assignment = {"config": raw, "target": target, "deadline": deadline}
        self._running = (cfg, study)
        for worker in self.workers.values():
            self._assign(worker, assignment, cfg.search.seed)
        seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        while self.workers:
            time.sleep(POLL_SECONDS)
            raise_if_pressed()
            if cfg.search.trial_timeout:
                self._stop_overdue(study, cfg.search.trial_timeout)
            for index, worker in list(self.workers.items()):
                code = worker.process.poll()
                if code is None:
                    continue
                del self.workers[index]
                if code != 0 and _restart_after_crash(study, worker, code, target, deadline, _resumer(cfg, worker)):
                    self.workers[index] = self._spawn(index)
                    self._assign(self.workers[index], assignment, cfg.search.seed)
            _report_new(study, seen, on_trial)
        if not cfg.output.keep_all_adapters:
            keep_only_best(study, RunLayout(Path(cfg.output.dir)).trials_dir)
        sweep_checkpoints(study, cfg)

    def _stop_overdue(self, study: optuna.Study, timeout: float) -> None:
        """Kill a worker whose trial is far past search.trial_timeout: stuck inside a step, where the trial's own
        check never runs. The trial is then failed with that cause, and a fresh worker goes on."""
        import optuna

        limit = hard_limit(timeout)
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for worker in self.workers.values():
            mine = worker_id(worker.process.pid)
            for trial in running:
                started = trial.datetime_start
                if trial.user_attrs.get(WORKER_ATTR) != mine or started is None or worker.overdue:
                    continue
                elapsed = (datetime.now() - started).total_seconds()
                if elapsed > limit:
                    worker.overdue = (
                        f"trial timeout: the worker was stopped after {elapsed:.0f} s (search.trial_timeout)"
                    )
                    worker.process.kill()

    def close(self) -> None:
        """Stop every worker still running (after an error here, or Ctrl-C). The trials they were running are
        failed as interrupted and queued again, as a restart would, so that no trial stays RUNNING."""
        _stop(list(self.workers.values()))
        self.workers = {}
        if self._running is not None:
            cfg, study = self._running
            fail_orphans(study, retry_callback(cfg.search))

    def _spawn(self, index: int) -> _Worker:
        log = self.folder / f"worker-{index}.log"
        error_file = self.folder / f"worker-{index}.error.json"
        error_file.unlink(missing_ok=True)
        command = [sys.executable, "-m", "hpo_action.worker", str(os.getpid()), str(error_file)]
        env = _worker_env(index, self.count)
        # A worker's log holds what libraries print, tracebacks included, which may echo a secret: owner only.
        sink_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_MODE)
        with os.fdopen(sink_fd, "ab") as sink:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=sink, stderr=subprocess.STDOUT, env=env)
        return _Worker(index, process, log, error_file)

    def _assign(self, worker: _Worker, assignment: dict[str, Any], seed: int) -> None:
        # Each launch samples with its own seed: equal seeds would make concurrent workers propose the same
        # parameters. The first launch keeps search.seed, so one worker reproduces an in-process study; the
        # worker mixes in the study's trial count at its start (search/optuna_backend/duplicates.py).
        assert worker.process.stdin is not None
        try:
            worker.process.stdin.write(json.dumps({**assignment, "seed": derive_seed(seed, self.launches)}).encode())
            worker.process.stdin.close()
        except BrokenPipeError:  # it died while importing; the loop records that
            pass
        self.launches += 1


def _resumer(cfg: HpoConfig, worker: _Worker) -> Callable[..., None] | None:
    """With search.resume_trials, a dead worker's trial is queued again (up to search.retry_interrupted times) and
    resumes from its last checkpoint, losing at most one evaluation interval; one stopped for its timeout is not."""
    if not cfg.search.resume_trials or worker.overdue:
        return None
    return retry_callback(cfg.search)


def _restart_after_crash(
    study: optuna.Study,
    worker: _Worker,
    code: int,
    target: int,
    deadline: float | None,
    retry: Callable[..., None] | None = None,
) -> bool:
    """Record what a dead worker was doing (and queue its trial again when `retry`); True when a fresh worker
    should take its place."""
    if worker.error_file.is_file():  # the worker stopped on an error of ours: the same in this process
        reported = json.loads(worker.error_file.read_text())
        kind = getattr(errors, reported["type"], HpoActionError)
        raise kind(reported["message"])
    how = _describe_exit(code)
    cause = worker.overdue or f"the worker process {how} during this trial"
    crashed = fail_worker_trials(study, worker.process.pid, cause, retry)
    if not crashed:
        raise TrialError(f"worker {worker.index} {how} before running a trial; see {worker.log}: {_tail(worker.log)}")
    return claimed(study) < target and (deadline is None or time.time() < deadline)


def _worker_env(index: int, count: int) -> dict[str, str]:
    """One GPU per worker (round robin), and an even share of the available CPU cores for each."""
    env = dict(os.environ)
    gpus = _visible_gpus()
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    share = worker_share(count)
    env[SHARE_ENV] = str(share)
    env["OMP_NUM_THREADS"] = str(min(share, process_threads()))  # other OpenMP users in the worker, too
    return env


def _visible_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _report_new(study: optuna.Study, seen: set[int], on_trial: OnTrial) -> None:
    done = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and t.number not in seen and not is_discarded(t)
    ]
    for trial in sorted(done, key=lambda t: (t.datetime_complete is None, t.datetime_complete, t.number)):
        seen.add(trial.number)
        on_trial(study, trial)


def _stop(workers: list[_Worker]) -> None:
    for worker in workers:
        if worker.process.stdin is not None and not worker.process.stdin.closed:
            worker.process.stdin.close()
        worker.process.terminate()
    for worker in workers:
        try:
            worker.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


def _describe_exit(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (the kernel's OOM killer?)" if name == "SIGKILL" else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


def _tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"
