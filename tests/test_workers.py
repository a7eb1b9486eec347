"""Many workers, no lost work: worker processes, PostgreSQL-shared studies, kill and resume, heartbeats,
crashed trials, OOM and a full disk, all on the real tiny model with real storages."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback

from hpo_action import drills as faults
from hpo_action.config import parse_config
from hpo_action.drills import ENV as FAULTS
from hpo_action.errors import ConfigError, OutputError, TrialError
from hpo_action.pipeline import search
from hpo_action.search.naming import storage_url, study_name
from hpo_action.search.optuna_backend.duplicates import DUPLICATE_ATTR, is_discarded
from hpo_action.search.optuna_backend.slots import finished, retried
from hpo_action.search.optuna_backend.storage import open_storage
from hpo_action.search.optuna_backend.study import open_study
from hpo_action.search.space import suggest
from hpo_action.train.demo_model import ensure_demo_model
from hpo_action.train.models import adapter_sha256

from .helpers import small_config, write_config

pytestmark = pytest.mark.slow

STORAGES = ["sqlite", "postgresql"]


def _raw(tmp_path: Path, **search_values):
    raw = small_config(tmp_path)
    raw["search"].update(search_values)
    return raw


def _with_storage(raw, kind: str, request: pytest.FixtureRequest):
    """Point the config at SQLite (the default) or the test PostgreSQL server, with a study of its own."""
    if kind == "postgresql":
        raw["search"]["storage"] = request.getfixturevalue("postgres_url")
        raw["search"]["study_name"] = f"test-{uuid.uuid4().hex[:12]}"
    return raw


def _load(cfg) -> optuna.Study:
    return optuna.load_study(study_name=study_name(cfg), storage=open_storage(storage_url(cfg), cfg.search))


def _cli(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "hpo_action", "search", "-c", str(config), *args]


@pytest.fixture(autouse=True)
def _one_thread_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several training processes on 2 cores: torch's default threads per process would fight for them.
    Also forget the faults fired by earlier tests in this process (each fires once per process)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(faults, "_fired", set())


# A child gets Ctrl-C as in a terminal, even when pytest itself runs as a background job (which ignores SIGINT).
_RESTORE_CTRL_C = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)


def _states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def test_three_processes_on_postgresql_end_with_exactly_n_trials(tmp_path: Path, postgres_url: str):
    name = f"test-{uuid.uuid4().hex[:12]}"
    raw = _raw(tmp_path, n_trials=12, storage=postgres_url, study_name=name, budget={"max_steps": 20, "eval_every": 10})
    config = write_config(tmp_path, raw)
    # Three machines' worth of `hpo-action search`, each with its own output folder, on one study.
    procs = [
        subprocess.Popen(_cli(config, "--output", str(tmp_path / f"out-{i}"), "--workers", "0"), stderr=subprocess.PIPE)
        for i in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-2000:]
    study = _load(parse_config(raw, base_dir=tmp_path))
    trials = [t for t in study.get_trials(deepcopy=False) if not is_discarded(t)]
    assert len(trials) == 12  # none duplicated: no process started a trial beyond n_trials
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}  # and none of them failed
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 12  # and no configuration twice
    # A proposal that repeated another command's (a race between asking and telling) was recorded, not
    # trained, and asked again (search/optuna_backend/duplicates.py).
    by_number = {t.number: t for t in trials}
    for repeat in (t for t in study.get_trials(deepcopy=False) if is_discarded(t)):
        assert repeat.params == by_number[repeat.user_attrs[DUPLICATE_ATTR]].params and "steps" not in repeat.user_attrs
    assert "RUNNING" not in _states(study) and "WAITING" not in _states(study)
    assert len({t.user_attrs["worker"] for t in trials}) >= 2  # the work was really shared


def test_local_worker_processes_share_the_study_without_overshooting(tmp_path: Path):
    raw = _raw(tmp_path, n_trials=6, workers=2, pruner="none")
    config = write_config(tmp_path, raw)
    proc = subprocess.run(_cli(config), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trials = _load(parse_config(raw, base_dir=tmp_path)).get_trials(deepcopy=False)
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6  # workers sample with distinct seeds
    assert "2 worker process(es)" in proc.stderr


@pytest.mark.parametrize("kind", STORAGES)
def test_a_run_killed_after_finished_trials_resumes_and_keeps_them(tmp_path: Path, kind: str, request):
    raw = _with_storage(
        _raw(tmp_path, n_trials=5, pruner="none", budget={"max_steps": 60, "eval_every": 30}), kind, request
    )
    config = write_config(tmp_path, raw)
    cfg = parse_config(raw, base_dir=tmp_path)
    proc = subprocess.Popen(_cli(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, before = time.monotonic() + 600, []  # generous: a loaded machine
    while time.monotonic() < deadline:
        time.sleep(0.3)
        try:
            trials = _load(cfg).get_trials(deepcopy=False)
        except (KeyError, ValueError):  # the study is still being created
            continue
        # A running trial that has reported an evaluation has all its parameters: the kill never lands mid-suggest.
        running = [t for t in trials if t.state.name == "RUNNING" and t.intermediate_values]
        if sum(t.state.name == "COMPLETE" for t in trials) >= 2 and running:
            proc.kill()  # SIGKILL: no cleanup runs in the supervisor
            before = trials
            break
    proc.wait()
    assert before, "no moment with 2 finished trials and one running within 600 s"
    interrupted = next(t for t in _load(cfg).trials if t.state.name == "RUNNING" and t.intermediate_values)
    worker_pid = int(interrupted.user_attrs["worker"].rpartition(":")[2])
    _wait_gone(worker_pid)  # the worker died with its supervisor instead of running on

    resumed = subprocess.run(_cli(config), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    study = _load(cfg)
    trials = study.get_trials(deepcopy=False)
    assert "RUNNING" not in _states(study)
    assert finished(study) == 5
    kept = {t.number: t.value for t in before if t.state.name == "COMPLETE"}
    assert {t.number: t.value for t in trials if t.number in kept} == kept
    lost = trials[interrupted.number]
    assert lost.state.name == "FAIL" and "interrupted" in lost.user_attrs["error"]
    retry = next(t for t in trials if lost.number in RetryHeartbeatStaleTrialCallback.retry_history(t))
    assert retry.state.name == "COMPLETE" and retry.params == lost.params  # pruner none: every trial completes
    assert [t.state.name for t in trials if t.number != lost.number] == ["COMPLETE"] * 5
    assert retried(trials) == {lost.number}


def _wait_for(condition, proc: subprocess.Popen, seconds: float = 600) -> bool:
    """Poll `condition` (a study that does not exist yet counts as False) until it holds, `proc` ends or `seconds`
    pass: a generous limit, for a machine that pytest-xdist and other jobs load."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if condition():
                return True
        except (KeyError, ValueError):  # the study is still being created
            pass
        time.sleep(0.3)
    return False


def _communicate_or_dump(proc: subprocess.Popen, seconds: float) -> str:
    """The child's stderr once it exits; past `seconds`, SIGABRT makes its fault handler (PYTHONFAULTHANDLER) print
    every thread's stack, and the test fails with it, so a child that hangs on its way out says where."""
    try:
        return proc.communicate(timeout=seconds)[1]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        err = proc.communicate()[1]
        pytest.fail(f"still running {seconds} s after Ctrl-C; its threads:\n{err[-6000:]}")


def _wait_gone(pid: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    pytest.fail(f"worker {pid} outlived its killed supervisor")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
@pytest.mark.parametrize("kind", STORAGES)
def test_a_trial_whose_heartbeat_stopped_is_failed_and_retried(tmp_path: Path, kind: str, request):
    raw = _with_storage(_raw(tmp_path, n_trials=3, heartbeat_interval=1, grace_period=2), kind, request)
    cfg = parse_config(raw, base_dir=tmp_path)
    study = open_study(cfg)
    # A worker on another machine starts a trial, beats once, and is preempted.
    trial = study.ask()
    params = suggest(trial, cfg)
    trial.set_user_attr("worker", "another-machine:4242")
    study._storage.record_heartbeat(trial._trial_id)
    time.sleep(3)

    search(cfg)
    study = _load(cfg)
    trials = study.get_trials(deepcopy=False)
    stale = trials[trial.number]
    assert stale.state.name == "FAIL"
    retry = next(t for t in trials if t.system_attrs.get("retry_history") == [trial.number])
    assert retry.state.name in ("COMPLETE", "PRUNED")
    assert retry.params == stale.params and stale.params["learning_rate"] == params["learning_rate"]
    assert finished(study) == 3 and "RUNNING" not in _states(study)


def test_a_trial_that_kills_its_worker_fails_alone_and_the_study_finishes(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(FAULTS, "exit@1,segv@2")
    cfg = parse_config(_raw(tmp_path, n_trials=4, workers=1, pruner="none"), base_dir=tmp_path)
    search(cfg)
    trials = _load(cfg).get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "FAIL", "COMPLETE"]
    assert "exited with code 137" in trials[1].user_attrs["error"]
    assert "killed by SIGSEGV" in trials[2].user_attrs["error"]
    assert len({t.user_attrs["worker"] for t in trials}) == 3  # a fresh worker after each crash


@pytest.mark.parametrize("workers", [0, 1])
def test_raising_and_nan_trials_fail_in_and_out_of_process(tmp_path: Path, workers: int):
    space = {"learning_rate": {"choices": [1e-3, 1e12]}, "lr_scheduler_type": {"choices": ["cosine", "no_such"]}}
    raw = _raw(tmp_path, sampler="grid", pruner="none", n_trials=4, space=space, workers=workers)
    raw["train"]["max_grad_norm"] = 1e30
    cfg = parse_config(raw, base_dir=tmp_path)
    search(cfg)
    trials = {(t.params["learning_rate"], t.params["lr_scheduler_type"]): t for t in _load(cfg).trials}
    assert len(trials) == 4
    assert trials[(1e-3, "cosine")].state.name == "COMPLETE"
    assert trials[(1e12, "cosine")].state.name == "FAIL"
    assert "non-finite" in trials[(1e12, "cosine")].user_attrs["error"]
    for lr in (1e-3, 1e12):
        assert trials[(lr, "no_such")].state.name == "FAIL"
        assert "no_such" in trials[(lr, "no_such")].user_attrs["error"]


@pytest.mark.parametrize("oom_retry", [False, True])
def test_an_oom_fails_the_trial_or_retries_it_with_half_the_batch(tmp_path: Path, monkeypatch, oom_retry: bool):
    monkeypatch.setenv(FAULTS, "oom@0")
    raw = _raw(tmp_path, n_trials=1, pruner="none", oom_retry=oom_retry)
    raw["train"].update(per_device_train_batch_size=8, gradient_accumulation_steps=1)
    cfg = parse_config(raw, base_dir=tmp_path)
    if not oom_retry:
        with pytest.raises(TrialError, match="all 1 trials failed; first error: OOM at per-device batch 8"):
            search(cfg)
        return
    summary = search(cfg)
    trial = _load(cfg).trials[0]
    assert trial.state.name == "COMPLETE"
    assert trial.user_attrs["batch_override"] == {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}
    assert "OOM at per-device batch 8" in trial.user_attrs["oom_retry"]
    published = json.loads((Path(cfg.output.dir) / "best" / "params.json").read_text())["params"]
    assert (published["per_device_train_batch_size"], published["gradient_accumulation_steps"]) == (4, 2)
    assert summary.best is not None and summary.best.number == 0


@pytest.mark.parametrize("workers", [0, 1])
def test_a_full_disk_while_saving_stops_with_a_clear_error_and_corrupts_nothing(
    tmp_path: Path, monkeypatch, workers: int
):
    monkeypatch.setenv(FAULTS, "enospc@1")
    raw = _raw(tmp_path, n_trials=3, pruner="none", workers=workers, warm_start=False)
    raw["output"]["keep_all_adapters"] = True  # every trial saves, so trial 1 reaches the disk
    cfg = parse_config(raw, base_dir=tmp_path)
    with pytest.raises(OutputError, match=r"output\.dir: no space left on the device while saving trial 1 .* resume"):
        search(cfg)
    trials_dir = Path(cfg.output.dir) / "trials"
    assert sorted(p.name for p in trials_dir.iterdir()) == ["0"]  # no half-written adapter
    assert (trials_dir / "0" / "adapter_config.json").is_file()
    assert _states(_load(cfg)) == ["COMPLETE", "FAIL"]

    monkeypatch.delenv(FAULTS)  # space freed: the same command resumes
    search(cfg)
    assert _states(_load(cfg)) == ["COMPLETE", "FAIL", "COMPLETE"]


def test_search_machines_then_one_leader_evaluates_gates_and_publishes(tmp_path: Path):
    raw = _raw(tmp_path, n_trials=4, storage=f"sqlite:///{tmp_path / 'shared.db'}")
    config = write_config(tmp_path, raw)
    for machine in ("a", "b"):  # one after the other: the second finds the study complete and runs nothing
        proc = subprocess.run(_cli(config, "--output", str(tmp_path / machine)), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    leader = tmp_path / "leader"
    for machine in ("a", "b"):  # what the workflow's artifacts carry: each machine's kept adapters, if any
        for trial_dir in (tmp_path / machine / "trials").glob("*"):
            shutil.copytree(trial_dir, leader / "trials" / trial_dir.name)
    command = [sys.executable, "-m", "hpo_action", "run", "-c", str(config), "--output", str(leader)]
    proc = subprocess.run([*command, "--skip-search", "--registry", str(tmp_path / "registry")], capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    trials = _load(parse_config(raw, base_dir=tmp_path)).trials
    assert len(trials) == 4 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}  # the leader ran no trial
    summary = json.loads((leader / "summary.json").read_text())
    gate = json.loads((leader / "gate.json").read_text())  # a verdict on the study's best, as the machines kept it
    assert (
        summary["best"]["number"]
        == min((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: (t.value, t.number)).number
    )
    assert gate["adapter_sha256"] == adapter_sha256(leader / "best")
    assert adapter_sha256(leader / "best") == adapter_sha256(leader / "trials" / str(summary["best"]["number"]))
    refused = subprocess.run([*command, "--skip-search", "--n-trials", "2"], capture_output=True, text=True)
    assert refused.returncode == 2 and "--skip-search runs no trial" in refused.stderr


def test_workers_get_one_gpu_each_or_a_share_of_the_cores(monkeypatch):
    from hpo_action.search.optuna_backend.supervisor import _worker_env
    from hpo_action.train.threads import available_cores

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert [_worker_env(i, 3)["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["2", "5", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU visible: each worker still gets its share of the cores
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = _worker_env(0, 2)
    share = str(max(1, available_cores() // 2))
    assert env["OMP_NUM_THREADS"] == env["HPO_ACTION_THREADS"] == share and env["CUDA_VISIBLE_DEVICES"] == ""


def test_an_unknown_fault_name_is_reported_not_ignored(monkeypatch):
    monkeypatch.setenv(FAULTS, "exlt@1")
    with pytest.raises(ConfigError, match="unknown drill 'exlt@1'"):
        faults.fire("train", 1)


@pytest.mark.parametrize("workers", [0, 1])
def test_ctrl_c_says_how_to_resume_and_leaves_nothing_running(tmp_path: Path, workers: int):
    raw = _raw(tmp_path, n_trials=4, workers=workers, pruner="none", budget={"max_steps": 60, "eval_every": 30})
    config = write_config(tmp_path, raw)
    cfg = parse_config(raw, base_dir=tmp_path)
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}  # a stuck child shows its threads' stacks (below)
    proc = subprocess.Popen(
        _cli(config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_RESTORE_CTRL_C, env=env
    )
    running = _wait_for(lambda: any(t.state.name == "RUNNING" for t in _load(cfg).get_trials(deepcopy=False)), proc)
    assert running, "no trial RUNNING within 600 s"
    proc.send_signal(signal.SIGINT)  # Ctrl-C in the terminal
    err = _communicate_or_dump(proc, 600)  # generous: a loaded machine (pytest -n 2 beside Ray) slows the exit
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted: run the same command again to resume" in err
    assert "Traceback" not in err
    assert "RUNNING" not in _states(_load(cfg))


SWALLOWING_FINALIZER = """
import os, signal
import hpo_action.cli as cli
from hpo_action.search.optuna_backend.pruning import FirstObjectivePruning


class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, arriving while a finalizer runs:
        for _ in range(10_000):  # its KeyboardInterrupt is raised in here, and Python drops it ("Exception ignored")
            pass


real_report = FirstObjectivePruning.report


def report(self, value, step):
    answer = real_report(self, value, step)
    if not os.environ.get("SWALLOWED"):
        os.environ["SWALLOWED"] = "1"
        Finalized()  # collected at once
    return answer


FirstObjectivePruning.report = report
cli.main()
"""


def test_a_ctrl_c_that_a_finalizer_swallows_still_stops_the_study(tmp_path: Path):
    """Python drops a KeyboardInterrupt raised inside a finalizer; the press must not be lost with it: the study
    stops at its next evaluation, says how to resume and exits 130, with no trial left RUNNING."""
    raw = _raw(tmp_path, n_trials=3, pruner="none", budget={"max_steps": 40, "eval_every": 20})
    config = write_config(tmp_path, raw)
    (tmp_path / "swallowing_finalizer.py").write_text(SWALLOWING_FINALIZER)
    proc = subprocess.run(
        [sys.executable, "-m", "swallowing_finalizer", "search", "-c", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_RESTORE_CTRL_C,
    )
    assert "Exception ignored" in proc.stderr and "KeyboardInterrupt" in proc.stderr  # the press was swallowed
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "interrupted: run the same command again to resume" in proc.stderr
    states = _states(_load(parse_config(raw, base_dir=tmp_path)))
    assert "RUNNING" not in states and states.count("COMPLETE") == 0, states


def test_without_workers_a_trial_past_its_timeout_stops_at_its_next_step_and_the_study_goes_on(tmp_path: Path):
    cfg = parse_config(_raw(tmp_path, n_trials=2, trial_timeout=1e-3, pruner="none"), base_dir=tmp_path)
    assert cfg.search.workers == 0  # in this process
    with pytest.raises(TrialError, match="all 2 trials failed; first error: trial timeout: stopped after"):
        search(cfg)
    trials = _load(cfg).trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]  # the first stopped, the second still ran
    assert all(t.user_attrs["error"].endswith("at step 1 (search.trial_timeout)") for t in trials)


STUCK_STEP = """
import hpo_action.search.optuna_backend.watchdog as watchdog
from hpo_action.cli import main

watchdog.GRACE_SECONDS = 0.0  # the hard limit becomes 1.5 x search.trial_timeout (60 s more in real use)
main()
"""


def test_without_workers_a_trial_stuck_inside_a_step_is_failed_and_the_command_stops_then_resumes(tmp_path: Path):
    """`--workers 0` and a step that never returns: no worker to kill, no step boundary to stop at. The watchdog
    records the trial FAIL, says so in one line and ends the process; the same command goes on from there."""
    ensure_demo_model()  # built here, once per session: a build inside the timed child would be no step at all
    raw = _raw(tmp_path, n_trials=2, pruner="none", trial_timeout=2)
    config = write_config(tmp_path, raw)
    cfg = parse_config(raw, base_dir=tmp_path)
    (tmp_path / "stuck_step.py").write_text(STUCK_STEP)
    stuck = subprocess.run(
        [sys.executable, "-m", "stuck_step", "search", "-c", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, FAULTS: "hang@0"},
        timeout=600,
    )
    assert stuck.returncode == 1, stuck.stderr[-2000:]
    line = stuck.stderr.strip().splitlines()[-1]
    assert line.startswith("error: search.trial_timeout: trial 0 is still inside one step after"), stuck.stderr[-2000:]
    assert "recorded FAIL" in line and "--workers 1" in line and "Traceback" not in stuck.stderr
    (trial,) = _load(cfg).trials
    assert trial.state.name == "FAIL" and trial.user_attrs["error"].startswith("trial timeout: still inside one step")

    resumed = subprocess.run(
        _cli(config, "--set", "search.trial_timeout=null"), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _states(_load(cfg)) == ["FAIL", "COMPLETE"]
