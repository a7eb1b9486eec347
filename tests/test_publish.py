"""Two runs against a local registry: v1 promotes against the base, the next run gates against v1."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from hpo_action.cli import main
from hpo_action.config import HpoConfig, parse_config
from hpo_action.judge.decision import GateDecision
from hpo_action.judge.evaluate import EvalSettings, score_rows
from hpo_action.judge.predictions import read_predictions
from hpo_action.pipeline import run
from hpo_action.train.models import load_base_model

from .helpers import isolate_env, small_config

pytestmark = pytest.mark.slow


def _cfg(tmp_path: Path, registry: Path, output: str, seed: int):
    raw = small_config(
        tmp_path,
        search={
            "n_trials": 2,
            "seed": seed,
            "pruner": "none",
            "budget": {"max_steps": 40, "eval_every": 20},
            "space": {"learning_rate": {"low": 5e-3, "high": 9e-3, "log": True}},
        },
        evaluate={"metrics": ["loss", "exact_match"]},
        gate={"forgetting": []},
        registry={"uri": str(registry)},
        output={"dir": output},
    )
    return parse_config(raw, base_dir=tmp_path)


@dataclass(frozen=True)
class FirstRun:
    """run1 (seed 0) published as v1 of a fresh registry: the start that three tests share, run once per worker."""

    root: Path
    cfg: HpoConfig
    decision: GateDecision

    def copy_to(self, tmp_path: Path) -> Path:
        """This test's own copy of the registry (and the data files beside it), for runs that add to it."""
        for path in self.root.glob("*.jsonl"):
            shutil.copy(path, tmp_path / path.name)
        shutil.copytree(self.root / "registry", tmp_path / "registry")
        return tmp_path / "registry"


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirstRun]:
    root = tmp_path_factory.mktemp("first-run")
    cfg = _cfg(root, root / "registry", "run1", seed=0)
    with pytest.MonkeyPatch.context() as patch:
        isolate_env(patch, root)
        decision = run(cfg)
    yield FirstRun(root, cfg, decision)


def test_two_runs_promote_then_gate_against_the_champion(tmp_path: Path, first_run: FirstRun, capsys):
    registry = first_run.copy_to(tmp_path)
    first = first_run.decision
    assert first.decision == "promote"
    v1 = tmp_path / "registry" / "versions" / "1"
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "README.md",
        "gate.json",
        "params.json",
        "summary.json",
        "predictions/test.jsonl",
        "predictions/test.meta.json",
    ):
        assert (v1 / name).is_file(), name
    assert "against the base model" in (v1 / "README.md").read_text()
    # gate 1 of the registry's life ran at alpha * 6/pi^2 (online, the default), and the card says what that means
    assert first.primary.alpha == pytest.approx(0.05 * 6 / math.pi**2)
    assert first.config.sequence["k"] == 1
    assert "chance that any promotion so far was a false one is at most 5%" in (v1 / "README.md").read_text()

    second = run(_cfg(tmp_path, registry, "run2", seed=1))
    assert second.primary.reference == pytest.approx(first.primary.candidate)  # v1 is the reference
    assert not (tmp_path / "run2" / "predictions" / "test.champion.jsonl").exists()  # stored predictions reused
    assert json.loads((tmp_path / "run2" / "gated_against.json").read_text())["version"] == 1
    # online fallback: gate 1 promoted, so gate 2 gets its level on top of its own share
    assert second.config.sequence["k"] == 2
    assert second.primary.alpha == pytest.approx(0.05 * 6 / math.pi**2 * (1 + 1 / 4))
    ledger = json.loads((registry / "gates.json").read_text())
    assert [(g["k"], g["outcome"]) for g in ledger["gates"]] == [(1, "promote"), (2, second.decision)]
    capsys.readouterr()
    main(["champion", "--registry", str(registry), "--json"])  # returns normally on success
    shown = json.loads(capsys.readouterr().out)
    expected_version = 2 if second.promote else 1
    assert shown["version"] == expected_version
    assert (Path(shown["path"]) / "adapter_model.safetensors").is_file()


def test_published_adapter_reproduces_its_stored_test_predictions(first_run: FirstRun):
    from peft import PeftModel

    cfg = first_run.cfg
    assert first_run.decision.promote
    version = first_run.root / "registry" / "versions" / "1"
    base = load_base_model(cfg.model)
    model = PeftModel.from_pretrained(base.model, str(version))
    rows = [json.loads(line) for line in (first_run.root / "test.jsonl").read_text().splitlines()]
    with torch.no_grad():
        records = score_rows(model, base.tokenizer, rows, cfg.data, EvalSettings.from_config(cfg.evaluate))
    stored = read_predictions(version / "predictions" / "test.jsonl")
    assert {r["id"]: r for r in records} == stored


def test_a_changed_test_set_re_evaluates_the_champion(tmp_path: Path, first_run: FirstRun):
    registry = first_run.copy_to(tmp_path)
    assert first_run.decision.promote
    lines = (tmp_path / "test.jsonl").read_text().splitlines()
    (tmp_path / "test_small.jsonl").write_text("\n".join(lines[:-20]) + "\n")  # a different test set
    cfg = _cfg(tmp_path, registry, "run2", seed=0)
    cfg.data.test = str(tmp_path / "test_small.jsonl")
    second = run(cfg)
    champion = read_predictions(tmp_path / "run2" / "predictions" / "test.champion.jsonl")
    assert len(champion) == len(lines) - 20 == second.primary.n
    candidate = read_predictions(tmp_path / "run2" / "predictions" / "test.candidate.jsonl")
    assert champion == candidate  # same seed, same search: the champion is reproduced, with its adapter removed
    assert second.decision != "promote"
    # The same test rows, but another generation length: stored predictions would no longer be comparable.
    third = _cfg(tmp_path, registry, "run3", seed=0)
    third.evaluate.max_new_tokens = 6
    run(third)
    assert (tmp_path / "run3" / "predictions" / "test.champion.jsonl").is_file()


def test_a_swallowed_ctrl_c_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A Ctrl-C whose KeyboardInterrupt a library dropped (in a finalizer) after the gate promoted: the run stops
    before the registry moves."""
    import contextlib
    import signal

    from hpo_action import interrupts, pipeline

    real_diagnose = pipeline.diagnose

    def diagnose_while_ctrl_c_is_swallowed(*args, **kwargs):
        with contextlib.suppress(KeyboardInterrupt):  # what a finalizer does with...
            interrupts._on_sigint(signal.SIGINT, None)  # ...what Python runs on Ctrl-C
        return real_diagnose(*args, **kwargs)

    monkeypatch.setattr(pipeline, "diagnose", diagnose_while_ctrl_c_is_swallowed)
    registry = tmp_path / "registry"
    try:
        with pytest.raises(KeyboardInterrupt):
            run(_cfg(tmp_path, registry, "run", seed=0))  # the seed whose run promotes (the tests above)
    finally:
        interrupts._pressed.clear()
    assert json.loads((tmp_path / "run" / "gate.json").read_text())["decision"] == "promote"
    assert not (registry / "versions").exists() and not list(registry.glob("champion*"))
