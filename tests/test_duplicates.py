"""No configuration is trained twice by accident: resume, a second command on the same storage, concurrent
commands and matrix jobs each sample their own draws, and a repeated proposal is asked again. Real Optuna
storage and the real study loop; the trial itself is a stub (what is tested is which parameters get trained)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from hpo_action.config import parse_config
from hpo_action.errors import ConfigError, TrialError
from hpo_action.files import template
from hpo_action.search.optuna_backend.duplicates import STREAM_ENV, derive_seed, is_discarded, space_size
from hpo_action.search.optuna_backend.records import trial_records
from hpo_action.search.optuna_backend.slots import finished
from hpo_action.search.optuna_backend.study import check_not_all_failed, open_study, run_trials
from hpo_action.train.trial import TrialResult

from .helpers import small_config


class StubRunner:
    """Records the parameters it was asked to train; the loss is a smooth function of the learning rate."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.trained: list[dict[str, Any]] = []
        self.seconds = seconds  # how long a trial takes: concurrent commands overlap only while trials run

    def run(
        self, params: dict[str, Any], report=None, save_to=None, trial_number=None, checkpoints=None
    ) -> TrialResult:
        self.trained.append(params)
        time.sleep(self.seconds)
        value = abs(float(params["learning_rate"]) - 1e-3) + 0.01 * int(params.get("lora_r", 0))
        if report is not None:
            report(value, 1)
        return TrialResult(value=value, metrics={"eval_loss": value}, curve=[(1, value)], steps=1)


def _cfg(tmp_path: Path, **search: Any):
    raw = small_config(tmp_path, search={"pruner": "none", **search})
    return parse_config(raw, base_dir=tmp_path)


def _searched(study: optuna.Study) -> list[tuple[Any, ...]]:
    return [tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False) if not is_discarded(t)]


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_resumed_and_repeated_commands_never_redraw_a_configuration(tmp_path: Path, sampler: str):
    cfg = _cfg(tmp_path, sampler=sampler, n_trials=3, seed=5)
    runner = StubRunner()
    for _ in range(3):  # three `search --n-trials 3` calls on one storage
        study = open_study(cfg)
        run_trials(study, cfg, runner, target=finished(study) + 3)
    configs = _searched(study)
    assert len(configs) == 9 and len(set(configs)) == 9
    assert len({tuple(sorted(p.items())) for p in runner.trained}) == 9  # nothing trained twice


def test_the_first_invocation_keeps_search_seed_and_resumes_are_reproducible(tmp_path: Path):
    cfg = _cfg(tmp_path, sampler="random", warm_start=False)
    assert open_study(cfg).sampler._rng.rng.randint(1 << 30) == optuna.samplers.RandomSampler(
        seed=cfg.search.seed
    )._rng.rng.randint(1 << 30)
    assert derive_seed(7) == 7 and derive_seed(7, 0, 0) == 7
    assert len({derive_seed(7, n, s) for n in range(50) for s in range(4)}) == 200


def test_two_concurrent_commands_on_one_storage_train_distinct_configurations(tmp_path: Path):
    cfg = _cfg(tmp_path, sampler="random", n_trials=12, warm_start=False)
    studies = [open_study(cfg), open_study(cfg)]  # the same trial count (none), the same sampler seed
    runners = [StubRunner(0.2), StubRunner(0.2)]
    errors: list[BaseException] = []

    def command(study: optuna.Study, runner: StubRunner) -> None:
        try:
            run_trials(study, cfg, runner, target=12)
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=command, args=pair) for pair in zip(studies, runners, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    study = open_study(cfg)
    configs = _searched(study)
    assert len(configs) == 12 and len(set(configs)) == 12
    assert all(r.trained for r in runners)  # both really ran trials
    assert runners[0].trained[0] != runners[1].trained[0]  # each command drew its own first configuration
    trained = [tuple(sorted(p.items())) for r in runners for p in r.trained]
    assert len(trained) == len(set(trained)) == 12


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_two_commands_opened_at_once_draw_different_first_parameters_and_reproduce(tmp_path: Path, sampler: str):
    """Without HPO_ACTION_SEED_STREAM, two commands that open one study before either has a trial used to get the
    same seed (the same trial count) and so the same first draw; each now claims its own invocation number."""

    def first_draws(folder: Path) -> list[float]:
        cfg = _cfg(folder, sampler=sampler, warm_start=False)
        studies = [open_study(cfg), open_study(cfg)]  # both opened before either asks: the same trial count
        return [study.ask().suggest_float("learning_rate", 1e-5, 1e-1, log=True) for study in studies]

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    draws = first_draws(tmp_path / "a")
    assert draws[0] != draws[1]
    assert first_draws(tmp_path / "b") == draws  # a fresh study opened the same way draws the same: reproducible


def test_matrix_jobs_get_distinct_seeds_from_the_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cfg = _cfg(tmp_path, sampler="random", warm_start=False)
    firsts = set()
    for job in range(3):
        monkeypatch.setenv(STREAM_ENV, str(job))
        study = optuna.create_study(sampler=open_study(cfg).sampler)
        firsts.add(study.ask().suggest_float("x", 0, 1))
    assert len(firsts) == 3
    monkeypatch.setenv(STREAM_ENV, "job-one")
    with pytest.raises(ConfigError, match=STREAM_ENV):
        open_study(cfg)


def test_the_workflow_template_gives_each_matrix_job_its_own_stream():
    jobs = yaml.safe_load(template("workflows/hpo.yml").read_text())["jobs"]
    search = next(step for step in jobs["search"]["steps"] if "hpo-action search" in step.get("run", ""))
    assert search["env"][STREAM_ENV] == "${{ strategy.job-index }}"


def test_a_repeated_proposal_is_asked_again_and_a_small_space_stops_when_exhausted(tmp_path: Path):
    space = {"learning_rate": {"choices": [1e-4, 1e-3]}, "lora_r": {"choices": [2, 4]}}
    cfg = _cfg(tmp_path, sampler="random", n_trials=10, warm_start=False, space=space)
    assert space_size(cfg) == 4
    study = open_study(cfg)
    runner = StubRunner()
    ran = run_trials(study, cfg, runner, target=10)
    assert ran == 4 and len(runner.trained) == 4  # every configuration once, then the space is exhausted
    assert len(set(_searched(study))) == 4 and finished(study) == 4
    discarded = [t for t in study.get_trials(deepcopy=False) if is_discarded(t)]
    assert discarded  # 10 wanted from 4 configurations: repeats were proposed, recorded and asked again
    assert all(t.state.name == "PRUNED" and "duplicate_of" in t.user_attrs for t in discarded)  # never FAIL
    assert not [t for t in study.get_trials(deepcopy=False) if t.state.name == "FAIL"]  # nothing failed
    records = trial_records(study)  # what trials.csv, summary.json, the tables and the doctor read
    assert [r.number for r in records] == [t.number for t in study.get_trials() if not is_discarded(t)]
    assert {r.state for r in records} == {"COMPLETE"}


def test_discarded_repeats_never_hide_a_study_whose_every_trial_failed():
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"error": "boom"}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs={"duplicate_of": 0}))
    with pytest.raises(TrialError, match="all 1 trials failed; first error: boom"):
        check_not_all_failed(study)
