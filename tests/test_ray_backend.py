"""The Ray Tune backend (search.backend ray): config checks, a PBT copy on the real tiny model (weights, optimizer
and data position from the better trial, the new learning rate from the first step on, the lineage as schedule),
and a whole PBT run on a local Ray that the test starts itself, gated and published through the same code."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from hpo_action.config import parse_config
from hpo_action.data.loading import load_splits
from hpo_action.data.tokenize import tokenize_splits
from hpo_action.search import ray_trial
from hpo_action.search.outputs import write_trials_csv
from hpo_action.search.ray_trial import RayCheckpoints
from hpo_action.search.space import trial_defaults
from hpo_action.search.summary import TrialRecord
from hpo_action.train.models import load_base_model
from hpo_action.train.trial import TrialRunner

from .helpers import small_config, write_config

PBT_SPACE = {"learning_rate": {"low": 1e-3, "high": 3e-2, "log": True}, "lora_r": {"choices": [8, 16]}}


def _ray_config(tmp_path: Path, **ray: object) -> dict:
    raw = small_config(tmp_path)
    raw["search"].update(backend="ray", space=dict(PBT_SPACE), ray=ray, budget={"max_steps": 9, "eval_every": 3})
    return raw


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda raw: raw["search"].update(space={"lora_r": {"choices": [8, 16]}}), "search.space: PBT needs"),
        (lambda raw: raw["search"]["ray"].update(perturbation_interval=4), "perturbation_interval"),
        (lambda raw: raw["search"]["ray"].update(perturbation_interval=9), "perturbation_interval"),
        (lambda raw: raw["search"]["ray"].update(search_alg="optuna"), "search_alg"),
        (lambda raw: raw["search"]["ray"].update(scheduler="pb2", search_alg="optuna"), "search_alg: PB2"),
        (
            lambda raw: raw["search"].update(space={"lora_r": {"choices": [8, 16]}}, ray={"scheduler": "pb2"}),
            "search.space: PB2 needs",
        ),
        (lambda raw: raw["search"]["ray"].update(scheduler="pbt2"), "scheduler"),
        (lambda raw: raw["data"].update(validation_strategy="kfold"), "kfold"),
        (lambda raw: raw["search"].update(lr_bounds="auto"), "lr_bounds"),
    ],
)
def test_what_the_ray_backend_cannot_do_fails_on_load(tmp_path: Path, change, named: str):
    raw = _ray_config(tmp_path)
    parse_config(raw, base_dir=tmp_path)  # the base config is fine
    change(raw)
    with pytest.raises((ValidationError, ValueError), match=named):
        parse_config(raw, base_dir=tmp_path)


def test_asha_takes_optunas_tpe_and_any_space(tmp_path: Path):
    raw = _ray_config(tmp_path, scheduler="asha", search_alg="optuna")
    raw["search"]["space"] = {"lora_r": {"choices": [8, 16]}}
    cfg = parse_config(raw, base_dir=tmp_path)
    assert (cfg.search.ray.scheduler, cfg.search.ray.search_alg) == ("asha", "optuna")


def test_pb2_bounds_are_the_searched_training_ranges_and_structure_stays_fixed(tmp_path: Path):
    """PB2's bounds are PBT's explore space: the float ranges among the mutable training parameters (the rate here),
    never the rank; it compares every perturbation_interval steps and keeps picks inside the configured range."""
    pytest.importorskip("sklearn")
    from ray.tune.schedulers.pb2 import PB2

    from hpo_action.search import ray_backend

    raw = _ray_config(tmp_path, scheduler="pb2", perturbation_interval=6, quantile_fraction=0.5)
    raw["search"]["space"]["weight_decay"] = {"low": 0.0, "high": 0.1}
    cfg = parse_config(raw, base_dir=tmp_path)
    scheduler = ray_backend._scheduler(cfg)
    assert isinstance(scheduler, PB2)
    assert scheduler._hyperparam_bounds == {"learning_rate": [1e-3, 3e-2], "weight_decay": [0.0, 0.1]}
    assert (scheduler._perturbation_interval, scheduler._quantile_fraction) == (6, 0.5)
    assert scheduler._custom_explore_fn({"learning_rate": 0.0300001, "weight_decay": -1e-9}) == {
        "learning_rate": 3e-2,
        "weight_decay": 0.0,
    }


def test_pb2_without_scikit_learn_is_a_one_line_config_error_naming_the_extra(tmp_path: Path, monkeypatch):
    """Ray imports PB2 without scikit-learn and fails only when it builds it, after Ray started: refuse before."""
    pytest.importorskip("ray.tune")
    from rich.console import Console

    from hpo_action.errors import ConfigError
    from hpo_action.search import ray_backend

    cfg = parse_config(_ray_config(tmp_path, scheduler="pb2"), base_dir=tmp_path)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # `import sklearn` raises ImportError
    started: list[object] = []
    monkeypatch.setattr(ray_backend, "_start_ray", lambda *args: started.append(args))
    with pytest.raises(ConfigError) as raised:
        ray_backend.run_ray_search(cfg, None, None, Console(file=io.StringIO()))  # type: ignore[arg-type]
    assert "\n" not in str(raised.value) and "hpo-action[ray]" in str(raised.value) and "pb2" in str(raised.value)
    assert not started


def test_ray_starts_from_both_warm_starts_of_the_optuna_backend(tmp_path: Path):
    """With replay rows and a forgetting constraint, the Ray backend's first trials are the Optuna backend's two warm
    starts: the trial defaults, then the same at the strongest remedies (ray_vs_optuna: without the second, no Ray
    trial stayed within the margin); without them, only the defaults."""
    from hpo_action.search.ray_backend import starting_points
    from hpo_action.search.space import searched, warm_start_params

    raw = small_config(tmp_path)
    raw["search"].update(backend="ray", space=dict(PBT_SPACE), budget={"max_steps": 9, "eval_every": 3})
    assert starting_points(parse_config(raw, base_dir=tmp_path)) == [
        warm_start_params(parse_config(raw, base_dir=tmp_path))
    ]
    raw["data"]["replay"] = ["replay_copy.jsonl"]
    raw["search"]["forgetting_constraint"] = True
    cfg = parse_config(raw, base_dir=tmp_path)
    defaults, strong = starting_points(cfg)
    space = searched(cfg)
    assert defaults == warm_start_params(cfg)
    assert (strong["replay_ratio"], strong["kl_to_base"]) == (space["replay_ratio"].high, space["kl_to_base"].high)
    assert {k: v for k, v in strong.items() if k not in ("replay_ratio", "kl_to_base")} == {
        k: v for k, v in defaults.items() if k not in ("replay_ratio", "kl_to_base")
    }


def test_trials_csv_holds_each_pbt_trials_schedule(tmp_path: Path):
    schedule = [[0, {"learning_rate": 0.01}], [20, {"learning_rate": 0.012}]]
    records = [TrialRecord(0, "COMPLETE", 0.5, 40, 1.0, {"learning_rate": 0.012}, schedule=schedule)]
    write_trials_csv(records, tmp_path / "trials.csv")
    (row,) = csv.DictReader((tmp_path / "trials.csv").open())
    assert json.loads(row["schedule"]) == schedule


def test_a_pbt_copy_resumes_the_better_trial_at_its_new_learning_rate(tmp_path: Path, monkeypatch):
    """Trial B copies trial A's checkpoint at step 3 and goes on at twice A's rate: B's curve up to step 3 is A's,
    it resumes at step 3 (not 0), and the rate the Trainer logs at step 6 is B's schedule, not A's (the resumed
    scheduler would otherwise carry A's rate on)."""
    reported: list[tuple[dict, Path]] = []

    def keep(metrics: dict, folder: Path) -> None:  # what Ray would persist: a copy of the reported folder
        copy = tmp_path / "reported" / str(len(reported))
        shutil.copytree(folder, copy)
        reported.append((metrics, copy))

    monkeypatch.setattr(ray_trial, "_report", keep)
    cfg = parse_config(_ray_config(tmp_path), base_dir=tmp_path)
    base = load_base_model(cfg.model)
    train, validation, _ = tokenize_splits(load_splits(cfg.data), base.tokenizer, cfg.data, tmp_path / "cache")
    runner = TrialRunner(cfg, base, train, validation)
    a = {**trial_defaults(cfg), "learning_rate": 5e-3}
    first = RayCheckpoints(tmp_path / "a", a, cfg)
    result_a = runner.run(a, report=first.record, checkpoints=first)
    assert [m["step"] for m, _ in reported] == [3, 6]  # the last step is reported by the trainable, with the adapter
    metrics, at_3 = reported[0]
    assert metrics["objective"] == pytest.approx(result_a.curve[0][1])

    b = {**a, "learning_rate": 1e-2}
    second = RayCheckpoints(tmp_path / "b", b, cfg)
    second.adopt(at_3)
    result_b = runner.run(b, report=second.record, checkpoints=second)
    assert second.resumed_from_step == 3
    assert result_b.curve[0] == pytest.approx(result_a.curve[0])
    assert result_b.curve[1][1] != pytest.approx(result_a.curve[1][1])
    assert second.schedule == [[0, first.reported], [3, second.reported]]
    rate_a, rate_b = (_rate_at(tmp_path / name / "checkpoint-9", 6) for name in ("a", "b"))
    assert rate_a > 0 and rate_b == pytest.approx(2 * rate_a, rel=1e-6)


def _rate_at(checkpoint: Path, step: int) -> float:
    """The learning rate the Trainer logged at `step` (its cosine schedule there times the peak rate)."""
    logged = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return next(entry["learning_rate"] for entry in logged if entry.get("step") == step and "learning_rate" in entry)


@pytest.mark.slow
def test_pbt_on_a_local_ray_gates_and_publishes_the_winner(tmp_path: Path):
    """`hpo-action run` with search.backend ray on this CPU: a local Ray (started here, on the real cores), four
    trials, PBT every 10 of their 20 steps; every trial completes, at least one copied a better one (its schedule
    shows the change, inside the configured range), the winner is the best completed value, its adapter is in best/,
    the gate decides on it and a promotion publishes a card that names the search."""
    pytest.importorskip("ray.tune")
    from hpo_action.pipeline import run
    from hpo_action.search.summary import RunSummary

    raw = small_config(tmp_path, registry={"uri": str(tmp_path / "registry")})
    raw["search"].update(
        backend="ray",
        n_trials=4,
        space=dict(PBT_SPACE),
        budget={"max_steps": 20, "eval_every": 5},
        ray={"perturbation_interval": 10},
    )
    cfg = parse_config(raw, base_dir=tmp_path)
    decision = run(cfg)
    out = Path(cfg.output.dir)
    summary = RunSummary.read(out / "summary.json")
    assert summary.states == {"COMPLETE": 4}
    assert summary.pruner == "ray:pbt" and summary.storage == "ray"
    copied = [t for t in summary.trials if len(t.schedule) > 1]
    assert copied, "no trial copied a better one"
    for trial in copied:
        for _, params in trial.schedule:
            assert 1e-3 <= params["learning_rate"] <= 3e-2
        assert trial.resumed_from_step > 0
    best = min(summary.trials, key=lambda t: t.value)
    assert summary.best is not None and summary.best.number == best.number
    assert summary.best.adapter == "best" and (out / "best" / "adapter_model.safetensors").is_file()
    assert json.loads((out / "best" / "params.json").read_text())["trial"] == best.number
    kept = [sorted(p.name for p in trial.glob("checkpoint_*")) for trial in (out / "ray").glob("*/train_trial_*")]
    assert len(kept) == 4 and all(len(names) == 1 for names in kept), kept  # each trial's last checkpoint only
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 4 and "schedule" in rows[0]
    assert json.loads((out / "gate.json").read_text())["decision"] == decision.decision
    if decision.promote:
        card = (out / "model_card.md").read_text()
        assert "Population Based Training on Ray Tune" in card


@pytest.mark.slow
def test_pb2_on_a_local_ray_perturbs_a_copied_trial_by_its_gaussian_process(tmp_path: Path):
    """PB2 on a local Ray (started here) with two trials side by side, a decision at every evaluation (PB2 explores
    from a trial's second decision on: its Gaussian process fits the improvement between two): the worse trial
    copies the better one's checkpoint and goes on at a rate PB2 picked (not PBT's ×0.8 or ×1.2 of the copied one),
    inside the range; the schedule column of trials.csv shows the change, and the rank stays the trial's. The
    population is judged synchronously (search.ray.synch): asynchronously, a trial that finished its steps before
    the other's first report was never compared, and whether a copy happened depended on the machine's speed."""
    pytest.importorskip("sklearn")
    pytest.importorskip("ray.tune")
    from hpo_action.pipeline import search

    raw = small_config(tmp_path)
    raw["search"].update(
        backend="ray",
        n_trials=2,
        space=dict(PBT_SPACE, learning_rate={"low": 1e-4, "high": 3e-2, "log": True}),
        budget={"max_steps": 16, "eval_every": 4},
        ray={"scheduler": "pb2", "perturbation_interval": 4, "quantile_fraction": 0.5, "synch": True},
    )
    summary = search(parse_config(raw, base_dir=tmp_path))
    assert summary.pruner == "ray:pb2" and summary.states == {"COMPLETE": 2}
    rows = {int(row["number"]): row for row in csv.DictReader((tmp_path / "out" / "trials.csv").open())}
    changes = []
    for trial in summary.trials:
        assert json.loads(rows[trial.number]["schedule"]) == trial.schedule
        for (_, before), (step, after) in itertools.pairwise(trial.schedule):
            assert 0 < step < 16 and 1e-4 <= after["learning_rate"] <= 3e-2 and after["lora_r"] == before["lora_r"]
            changes.append(after["learning_rate"] / before["learning_rate"])
    assert changes, "no trial copied the other"
    assert any(ratio != pytest.approx(0.8) and ratio != pytest.approx(1.2) for ratio in changes), changes


class _FakeRay:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def init(self, **kwargs: object) -> None:
        self.calls.append(kwargs)


def test_local_ray_gets_the_real_cores_and_ray_address_joins_a_cluster(tmp_path: Path, monkeypatch):
    from rich.console import Console

    from hpo_action.errors import ConfigError
    from hpo_action.search import ray_backend
    from hpo_action.train.threads import available_cores

    cfg = parse_config(_ray_config(tmp_path), base_dir=tmp_path)
    fake, console = _FakeRay(), Console(file=io.StringIO())
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray_backend._start_ray(fake, cfg, console)
    assert fake.calls[-1]["num_cpus"] == available_cores()
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    ray_backend._start_ray(fake, cfg, console)
    assert fake.calls[-1]["address"] == "auto" and "num_cpus" not in fake.calls[-1]
    monkeypatch.delenv("RAY_ADDRESS")
    too_many = cfg.model_copy(
        update={
            "search": cfg.search.model_copy(
                update={"ray": cfg.search.ray.model_copy(update={"cpus_per_trial": available_cores() + 1})}
            )
        }
    )
    with pytest.raises(ConfigError, match="cpus_per_trial"):
        ray_backend._start_ray(fake, too_many, console)


def test_skip_search_refuses_when_no_ray_experiment_exists(tmp_path: Path):
    """The leader after a cluster run (`run --skip-search`) reads a finished experiment and never starts one."""
    pytest.importorskip("ray.tune")
    from hpo_action.errors import ConfigError
    from hpo_action.pipeline import search

    cfg = parse_config(_ray_config(tmp_path), base_dir=tmp_path)
    with pytest.raises(ConfigError, match="--skip-search: no Ray Tune experiment"):
        search(cfg, extra_trials=0)
    assert not (tmp_path / "out" / "ray").exists()


@pytest.mark.slow
def test_a_killed_ray_run_resumes_its_trials_from_their_checkpoints(tmp_path: Path):
    """SIGKILL the command once trials have reported checkpoints; the same command restores Ray's experiment,
    every trial completes, and each one that was cut mid-run resumed from a checkpoint, not from step 0."""
    pytest.importorskip("ray.tune")
    raw = small_config(tmp_path)
    raw["search"].update(
        backend="ray", n_trials=4, space=dict(PBT_SPACE), budget={"max_steps": 40, "eval_every": 10}, ray={}
    )
    config = write_config(tmp_path, raw)
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    command = [sys.executable, "-m", "hpo_action", "search", "-c", str(config)]
    experiment = tmp_path / "out" / "ray"
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600  # generous: Ray and its trials start slowly on a loaded machine
        while _reported_steps(experiment).count(20) < 1 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(1)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        before = _reported_by_trial(experiment)
        assert any(0 < step < 40 for step in before.values()), before
    finally:
        _end_processes_under(ray_tmp)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    _end_processes_under(ray_tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ray: resuming experiment" in done.stderr + done.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["states"] == {"COMPLETE": 4}
    for folder, step in before.items():
        if 0 < step < 40:  # cut mid-run; trial numbers follow Ray's trial index (train_trial_<run>_<index>_...)
            trial = summary["trials"][int(folder.split("_")[3])]
            assert trial["resumed_from_step"] >= step, (folder, step, trial)  # at most one interval lost


def _reported_by_trial(experiment: Path) -> dict[str, int]:
    """The last step each trial had reported (with its checkpoint) to Ray, by its folder."""
    steps = {}
    for progress in experiment.glob("*/train_trial_*/progress.csv"):
        rows = list(csv.DictReader(progress.open()))
        steps[progress.parent.name] = max((int(float(r["step"])) for r in rows if r.get("step")), default=0)
    return steps


def _reported_steps(experiment: Path) -> list[int]:
    return list(_reported_by_trial(experiment).values())


def _end_processes_under(ray_tmp: Path) -> None:
    """Ray's processes started for this test (their command lines name its RAY_TMPDIR), by their ids."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(ray_tmp).encode() in cmdline.read_bytes():
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


@pytest.mark.slow
def test_asha_with_optunas_tpe_stops_poor_trials_and_keeps_the_best(tmp_path: Path):
    """ASHA on a local Ray with TPE through Ray's Optuna integration: the train defaults run first (warm start),
    poor trials stop at a rung before max_steps (PRUNED), and the best completed trial's adapter is in best/."""
    pytest.importorskip("ray.tune")
    from hpo_action.pipeline import search

    raw = small_config(tmp_path)
    raw["search"].update(
        backend="ray",
        n_trials=4,
        space=dict(PBT_SPACE),
        budget={"max_steps": 30, "eval_every": 10},
        ray={"scheduler": "asha", "search_alg": "optuna", "reduction_factor": 2},
    )
    cfg = parse_config(raw, base_dir=tmp_path)
    summary = search(cfg)
    assert summary.pruner == "ray:asha" and summary.sampler == "ray:optuna"
    assert set(summary.states) <= {"COMPLETE", "PRUNED"} and summary.states.get("PRUNED", 0) >= 1
    for trial in summary.trials:
        assert (trial.steps == 30) == (trial.state == "COMPLETE") and not trial.schedule
    defaults = {"learning_rate": cfg.train.learning_rate, "lora_r": cfg.train.lora_r}
    assert any(trial.params == defaults for trial in summary.trials)
    completed = [t for t in summary.trials if t.state == "COMPLETE"]
    assert summary.best is not None and summary.best.value == min(t.value for t in completed)
    assert (tmp_path / "out" / "best" / "adapter_model.safetensors").is_file()
