"""Resumable trials (search.resume_trials) on the real tiny model: a resumed trial follows the uninterrupted
curves, a SIGKILLed run resumes its trial from the last checkpoint, checkpoints go when a trial ends, and one
written for other parameters is never resumed."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from hpo_action.config import parse_config
from hpo_action.data.loading import load_splits
from hpo_action.data.tokenize import tokenize_splits
from hpo_action.errors import ConfigError
from hpo_action.layout import RunLayout, mark
from hpo_action.pipeline import search
from hpo_action.search.naming import storage_url, study_name
from hpo_action.search.optuna_backend.duplicates import retry_history
from hpo_action.search.optuna_backend.objective import CHECKPOINT_ATTR, CHECKPOINT_BYTES_ATTR, RESUMED_ATTR
from hpo_action.search.optuna_backend.storage import open_storage
from hpo_action.search.optuna_backend.study import sweep_checkpoints
from hpo_action.search.space import trial_defaults
from hpo_action.train.checkpoints import FOLDER_KIND, TrialCheckpoints, identity
from hpo_action.train.models import load_base_model
from hpo_action.train.trial import ProbeReading, Pruned, TrialRunner

from .helpers import small_config, write_config

# Every evaluation point is a checkpoint: 9 steps, evaluated (and checkpointed) at 3, 6 and 9.
BUDGET = {"max_steps": 9, "eval_every": 3}


def _runner(tmp_path: Path, budget: dict = BUDGET, probes: tuple = (), **sections) -> tuple[TrialRunner, dict]:
    raw = small_config(tmp_path, **sections)
    raw["search"].update(budget=budget, resume_trials=True)
    cfg = parse_config(raw, base_dir=tmp_path)
    base = load_base_model(cfg.model)
    train, validation, _ = tokenize_splits(load_splits(cfg.data), base.tokenizer, cfg.data, tmp_path / "cache")
    return TrialRunner(cfg, base, train, validation, probes=probes), trial_defaults(cfg)


def _checkpoints(runner: TrialRunner, folder: Path, params: dict) -> TrialCheckpoints:
    return TrialCheckpoints(folder, identity(params, runner.cfg.fingerprint()))


def _stop_at(step: int):
    """A reporter that stops training at `step`'s evaluation, before that step's checkpoint is written: the run
    ends as a kill there would, with the checkpoint of the evaluation before."""
    return lambda value, at: at >= step


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_resumed_trial_follows_the_uninterrupted_curves(tmp_path: Path, method: str):
    runner, params = _runner(tmp_path, model={"method": method})
    params = {**params, "learning_rate": 1e-3 if method == "lora" else 1e-4}
    whole = runner.run(params, checkpoints=_checkpoints(runner, tmp_path / "whole", params))
    # One deep: only the last evaluation's checkpoint is left, with the weights (the adapter for LoRA), the
    # optimizer, the scheduler, the RNG states and the Trainer's state (step, logs).
    (last,) = (tmp_path / "whole").glob("checkpoint-*")
    weights = "adapter_model.safetensors" if method == "lora" else "model.safetensors"
    held = {p.name for p in last.iterdir()}
    assert last.name == "checkpoint-9"
    assert {weights, "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= held

    interrupted = _checkpoints(runner, tmp_path / "cut", params)
    with pytest.raises(Pruned):
        runner.run(params, report=_stop_at(6), checkpoints=interrupted)
    assert sorted(p.name for p in (tmp_path / "cut").glob("checkpoint-*")) == ["checkpoint-3"]

    again = _checkpoints(runner, tmp_path / "cut", params)
    resumed = runner.run(params, checkpoints=again)
    assert again.resumed_from_step == 3 and again.checkpoint_bytes > 0
    assert resumed.steps == whole.steps == 9
    # On CPU the resumed run repeats the uninterrupted one bit for bit: weights, optimizer and scheduler state,
    # RNG states and the data order all come back. Tolerance: exact equality of every logged float.
    assert [s for s, _ in resumed.curve] == [3, 6, 9]
    assert resumed.curve == whole.curve
    assert resumed.train_curve == whole.train_curve
    assert resumed.value == whole.value


class _AdapterNorm:
    """A probe that reads the state of the model it is given: the summed |lora_B| weights, 0 for a fresh adapter
    (LoRA starts as the identity) and > 0 once it has trained."""

    name = "adapter"

    def measure(self, model, tokenizer) -> ProbeReading:
        norm = sum(float(p.detach().abs().sum()) for n, p in model.named_parameters() if "lora_B" in n)
        return ProbeReading(drop=norm, excess=norm)


def test_probes_mid_trial_read_only_the_model_a_resumed_trial_trains(tmp_path: Path):
    """The forgetting rung checks probe through probe_now at evaluations; a resumed trial's evaluations before its
    checkpoint are replayed before the checkpoint's weights load, so a probe there would read the fresh adapter
    (no forgetting at all) and spare a trial that may have forgotten."""
    runner, params = _runner(tmp_path, budget={"max_steps": 12, "eval_every": 3}, probes=(_AdapterNorm(),))
    params = {**params, "learning_rate": 1e-3}
    with pytest.raises(Pruned):
        runner.run(params, report=_stop_at(9), checkpoints=_checkpoints(runner, tmp_path / "cut", params))
    seen: list[tuple[int, dict]] = []

    def probing(value: float, step: int) -> bool:
        seen.append((step, runner.probe_now()))
        return False

    again = _checkpoints(runner, tmp_path / "cut", params)
    runner.run(params, report=probing, checkpoints=again)
    assert again.resumed_from_step == 6
    assert [step for step, _ in seen] == [3, 6, 9, 12]
    assert [readings for step, readings in seen if step <= 6] == [{}, {}]  # replayed: nothing to read
    assert all(readings["adapter"].drop > 0 for step, readings in seen if step > 6)  # the trained adapter


def test_kfold_with_resume_trials_is_refused_at_load(tmp_path: Path):
    raw = small_config(tmp_path, data={**small_config(tmp_path)["data"], "validation_strategy": "kfold", "k": 3})
    raw["search"]["resume_trials"] = True
    with pytest.raises(ConfigError, match=r"search\.resume_trials: k-fold trials cannot resume") as err:
        parse_config(raw, base_dir=tmp_path)
    assert err.value.exit_code == 2


def test_a_checkpoint_for_other_parameters_is_not_resumed(tmp_path: Path):
    runner, params = _runner(tmp_path)
    with pytest.raises(Pruned):
        runner.run(params, report=_stop_at(6), checkpoints=_checkpoints(runner, tmp_path / "trial", params))
    assert (tmp_path / "trial" / "checkpoint-3").is_dir()

    other = {**params, "learning_rate": params["learning_rate"] * 3}
    fresh = runner.run(other)
    mismatched = _checkpoints(runner, tmp_path / "trial", other)
    result = runner.run(other, checkpoints=mismatched)
    assert mismatched.resumed_from_step == 0
    assert mismatched.refused is not None and "other parameters" in mismatched.refused
    assert result.curve == fresh.curve and result.train_curve == fresh.train_curve  # trained from step 0


def _cli(config: Path) -> list[str]:
    return [sys.executable, "-m", "hpo_action", "search", "-c", str(config)]


def _study(cfg) -> optuna.Study:
    return optuna.load_study(study_name=study_name(cfg), storage=open_storage(storage_url(cfg), cfg.search))


def _last_checkpoint(folder: Path, seconds: float = 600) -> int:
    """Wait until a complete checkpoint (its trainer_state.json written) is in `folder`; returns the last one's step."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        steps = []
        for state in folder.glob("checkpoint-*/trainer_state.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):  # still being written
                steps.append(int(json.loads(state.read_text())["global_step"]))
        if steps:
            return max(steps)
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint in {folder} within {seconds} s")


def _resumed_retry(study: optuna.Study) -> tuple[optuna.trial.FrozenTrial, optuna.trial.FrozenTrial]:
    trials = study.get_trials(deepcopy=False)
    killed = trials[0]
    retry = next(t for t in trials if retry_history(t) == [killed.number])
    return killed, retry


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_a_killed_trial_resumes_from_its_last_checkpoint(tmp_path: Path, workers: int, monkeypatch):
    """SIGKILL mid-trial, once a checkpoint exists: of the whole in-process command (workers 0), then the same
    command again; or of the worker alone (workers 1), which its supervisor replaces. Either way the trial's
    retry resumes at that checkpoint's step, completes, and leaves no checkpoint behind."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    raw = small_config(tmp_path)
    raw["search"].update(
        n_trials=1, pruner="none", workers=workers, resume_trials=True, budget={"max_steps": 40, "eval_every": 10}
    )
    config = write_config(tmp_path, raw)
    cfg = parse_config(raw, base_dir=tmp_path)
    checkpoints = tmp_path / "out" / "checkpoints"
    proc = subprocess.Popen(_cli(config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _last_checkpoint(checkpoints / "0")
        running = _study(cfg).get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        pid = int(running[0].user_attrs["worker"].rpartition(":")[2])
        subprocess.run(["kill", "-9", str(pid)], check=True)
        if workers == 0:
            proc.wait(timeout=60)
            step = _last_checkpoint(checkpoints / "0", seconds=0.5)  # what the kill left behind
            assert 10 <= step < 40
            proc = subprocess.Popen(_cli(config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        else:
            step = _last_checkpoint(checkpoints / "0", seconds=0.5)
        output, _ = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, output[-3000:]
    killed, retry = _resumed_retry(_study(cfg))
    assert killed.state.name == "FAIL" and retry.state.name == "COMPLETE"
    assert retry.params == killed.params
    assert retry.user_attrs[RESUMED_ATTR] == step and retry.user_attrs["steps"] == 40
    assert retry.user_attrs[CHECKPOINT_BYTES_ATTR] > 0
    assert [s for s, _ in retry.user_attrs["curve"]] == [10, 20, 30, 40]  # the evaluations before the kill kept
    assert not checkpoints.exists()  # deleted when the trial ended
    assert f"1 resumed (#{retry.number} from step {step})" in output


def test_checkpoints_are_deleted_as_trials_end_and_their_size_is_reported(tmp_path: Path):
    raw = small_config(tmp_path)
    # The warm start trains at 1e-2; the other trial barely moves (1e-9) and is pruned at step 6, after its first
    # checkpoint (step 3), worse than the best: a pruned trial's checkpoints go too.
    raw["search"].update(n_trials=2, resume_trials=True, budget=BUDGET, pruner="percentile")
    raw["search"]["pruner_options"] = {"percentile": 0.0, "n_startup_trials": 1, "n_warmup_steps": 4}
    raw["search"]["space"] = {"learning_rate": {"choices": [1.0e-2, 1.0e-9]}}
    cfg = parse_config(raw, base_dir=tmp_path)
    summary = search(cfg)
    assert [t.state for t in summary.trials] == ["COMPLETE", "PRUNED"]
    assert summary.trials[1].steps == 6
    assert all(t.checkpoint_bytes > 0 and t.resumed_from_step == 0 for t in summary.trials)
    assert not RunLayout(Path(cfg.output.dir)).checkpoints_dir.exists()


def test_the_study_end_sweeps_checkpoints_no_trial_will_resume(tmp_path: Path):
    raw = small_config(tmp_path)
    raw["search"]["resume_trials"] = True
    cfg = parse_config(raw, base_dir=tmp_path)
    folder = RunLayout(Path(cfg.output.dir)).checkpoints_dir
    for name in ("3", "5"):
        (folder / name).mkdir(parents=True)
        mark(folder / name, FOLDER_KIND, identity="x")
    (folder / "mine").mkdir()  # not written by hpo-action: never deleted
    study = optuna.create_study()
    study.enqueue_trial({}, user_attrs={CHECKPOINT_ATTR: "3"})  # a queued retry of trial 3: it will resume
    sweep_checkpoints(study, cfg)
    assert sorted(p.name for p in folder.iterdir()) == ["3", "mine"]


def test_a_half_written_checkpoint_is_skipped(tmp_path: Path):
    """Killed while the Trainer wrote checkpoint-6 (its trainer_state.json, written last, cut short): the
    complete checkpoint-3 beside it is the one resumed."""
    checkpoints = TrialCheckpoints(tmp_path / "trial", identity({"learning_rate": 1e-3}, "config"))
    checkpoints.prepare()
    for step, text in ((3, json.dumps({"global_step": 3, "log_history": []})), (6, '{"global_step": 6, "log_')):
        (tmp_path / "trial" / f"checkpoint-{step}").mkdir()
        (tmp_path / "trial" / f"checkpoint-{step}" / "trainer_state.json").write_text(text)
    again = TrialCheckpoints(tmp_path / "trial", identity({"learning_rate": 1e-3}, "config"))
    assert again.prepare() == tmp_path / "trial" / "checkpoint-3"
    assert again.resumed_from_step == 3 and again.refused is None
