"""A first run that explains itself: edge inputs answered in one line, a timeout that says so everywhere, forgetting
sets in their own format, a card that credits the right base, and one permission policy for the outputs."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hpo_action.cli import main
from hpo_action.config import ModelConfig, parse_config
from hpo_action.errors import ConfigError
from hpo_action.judge.decision import GateDecision
from hpo_action.pipeline import run
from hpo_action.search.summary import RunSummary
from hpo_action.ship.card import card_title, render_card
from hpo_action.ship.registry import open_registry
from hpo_action.train.model_source import check_model_source
from hpo_action.train.trial import Pruned, _Tracker

from .helpers import error_line, promoted_decision, sample_summary, small_config, write_config

GATE = promoted_decision()


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def _card(tmp_path: Path, model: dict, title: str | None = None) -> ModelCard:
    cfg = parse_config({"model": model, "data": {"train": "t.jsonl"}, "registry": {"title": title}})
    chosen = card_title(cfg, open_registry(str(tmp_path / "registry")).title)
    path = tmp_path / "README.md"
    path.write_text(render_card(cfg, sample_summary(), GATE, [], chosen, None, env={}, load_from="registry/v1"))
    return ModelCard.load(path)


def test_the_card_credits_a_hub_base_and_never_a_local_path(tmp_path: Path):
    hub = _card(tmp_path, {"name": "org/base-model"})
    assert hub.data.base_model == "org/base-model"
    assert 'from_pretrained("org/base-model")' in hub.text

    local = tmp_path / "my-base"
    local.mkdir()
    card = _card(tmp_path, {"name": str(local)})
    assert card.data.base_model is None and "base_model_relation" not in card.data.to_dict()
    assert str(tmp_path) not in card.content  # neither the header nor the body names the machine's folders
    assert "a local folder named `my-base`; supply it yourself" in card.text

    credited = _card(tmp_path, {"name": str(local), "card_base_model": "org/the-original"})
    assert credited.data.base_model == "org/the-original"
    assert "base_model:adapter:org/the-original" in credited.data.tags
    assert _card(tmp_path, {"name": "hpo-action/tiny-demo"}).data.base_model is None  # built here, not on the Hub


def test_the_card_title_is_registry_title_or_a_name_that_says_something(tmp_path: Path):
    assert open_registry("hf://org/shift-adapter").title == "shift-adapter"
    assert open_registry(str(tmp_path / "registry")).title is None  # a folder's name says nothing
    assert _card(tmp_path, {"name": "org/base-model"}, title="Shift solver").text.lstrip().startswith("# Shift solver")
    untitled = _card(tmp_path, {"name": "org/base-model"})
    assert untitled.text.lstrip().startswith("# base-model-lora")
    assert untitled.data.model_name == "base-model-lora"


def test_n_trials_0_on_a_new_study_is_no_trial_to_run_and_leaves_nothing(tmp_path: Path, capsys):
    config = write_config(tmp_path, small_config(tmp_path))
    for command in (["search", "-c", str(config), "--n-trials", "0"], ["run", "-c", str(config), "--skip-search"]):
        code, _, err = _cli(capsys, *command)
        assert code == 2 and "no trial to run" in error_line(err)
    assert not (tmp_path / "out").exists()  # no study, no WAITING warm-start trial, no folder


def test_a_model_name_that_is_no_folder_and_no_hub_id_says_folder_not_found(tmp_path: Path, capsys):
    config = write_config(tmp_path, small_config(tmp_path))
    code, _, err = _cli(capsys, "search", "-c", str(config), "--model", "./modle")
    assert code == 2 and error_line(err).startswith("error: model.name: folder not found: ") and "modle" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=r"model\.name: folder not found: modle"):
        check_model_source(ModelConfig(name="modle"))


def test_without_network_a_hub_model_fails_fast_in_one_line(tmp_path: Path):
    config = write_config(tmp_path, small_config(tmp_path))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))  # port 9: nothing answers
    command = [sys.executable, "-m", "hpo_action", "search", "-c", str(config), "--model", "some-org/some-model"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [proc.stderr.splitlines()[-1]] and "is out of reach" in errors[0], proc.stderr
    assert "not in the local cache" in errors[0] and "Retrying" not in proc.stderr and "Traceback" not in proc.stderr


def test_without_network_a_cached_hub_model_switches_to_offline_mode(tmp_path: Path, monkeypatch, capsys):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    snapshot = cache / "models--some-org--cached" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (cache / "models--some-org--cached" / "refs").mkdir()
    (cache / "models--some-org--cached" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    check_model_source(ModelConfig(name="some-org/cached"))
    assert constants.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"  # workers inherit it
    assert "using the cached copy of some-org/cached" in capsys.readouterr().err


def test_a_trial_that_ran_all_its_steps_is_complete_whatever_the_pruner_says():
    cfg = parse_config({"model": {"name": "hpo-action/tiny-demo"}, "data": {"train": "t.jsonl"}})
    always_prune = lambda value, step: True  # noqa: E731
    tracker = _Tracker("eval_loss", "minimize", always_prune, cfg.train, max_steps=20)
    with pytest.raises(Pruned):
        tracker.record({"eval_loss": 1.0}, step=10)
    tracker = _Tracker("eval_loss", "minimize", always_prune, cfg.train, max_steps=20)
    assert tracker.record({"eval_loss": 1.0}, step=20) is False  # reported, and the trial goes on to COMPLETE
    assert tracker.curve == [(20, 1.0)]


def test_search_help_lists_only_what_search_uses(capsys):
    main(["search", "--help"])
    out = capsys.readouterr().out
    assert "--n-trials" in out and "--registry" not in out
    main(["run", "--help"])
    assert "--registry" in capsys.readouterr().out


def _as_messages(source: Path, target: Path) -> None:
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    chats = [
        {"id": r["id"], "messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": c}]}
        for r in rows
        for c in [r["completion"]]
    ]
    target.write_text("".join(json.dumps(chat) + "\n" for chat in chats))


@pytest.mark.slow
def test_a_chat_config_gates_on_a_prompt_completion_forgetting_set_given_only_its_format(tmp_path: Path, capsys):
    raw = small_config(tmp_path)
    for name in ("train", "validation", "test"):
        _as_messages(tmp_path / f"{name}.jsonl", tmp_path / f"chat_{name}.jsonl")
        raw["data"][name] = f"chat_{name}.jsonl"
    raw["data"]["format"] = "messages"
    raw["search"].update(n_trials=1, budget={"max_steps": 4, "eval_every": 2})
    config = write_config(tmp_path, raw)
    code, _, err = _cli(capsys, "run", "-c", str(config))  # the forgetting entry says nothing about its format
    assert code == 2 and error_line(err)
    assert "gate.forgetting[copy].data" in err and "missing 'messages'" in err
    assert "set gate.forgetting[copy].format" in err and "gate.forgetting[copy].columns" in err

    raw["gate"]["forgetting"][0]["format"] = "prompt_completion"
    decision = run(parse_config(raw, base_dir=tmp_path))
    assert [row.name for row in decision.forgetting] == ["copy"] and decision.forgetting[0].n > 0


@pytest.mark.slow
def test_a_run_stopped_by_its_timeout_says_so_everywhere_and_its_files_follow_one_mode(
    tmp_path: Path, monkeypatch, capsys
):
    summary_file = tmp_path / "job-summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary_file))
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "step-outputs"))
    raw = small_config(tmp_path, search={"n_trials": 1, "workers": 1})
    run(parse_config(raw, base_dir=tmp_path))  # one trial, no timeout
    capsys.readouterr()
    # Three trials wanted now, and a timeout that has passed before the first new trial could start, on any
    # machine however fast: the study stops at the one trial it has.
    raw["search"].update(n_trials=3, timeout=1e-9)
    cfg = parse_config(raw, base_dir=tmp_path)
    run(cfg)
    said = "stopped by timeout after 1 of 3 trials; the same command continues"
    assert said in capsys.readouterr().err
    out = tmp_path / "out"
    summary = RunSummary.read(out / "summary.json")
    assert summary.stopped_early == said and summary.n_trials == 1
    assert said in summary_file.read_text() and said in (out / "report.md").read_text()
    card = render_card(cfg, summary, GateDecision.read(out / "gate.json"), [], "t", None, env={})
    assert said in card

    for name in ("summary.json", "gate.json", "report.md", "config.yaml", "trials.csv", "best/params.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    log = out / "workers" / "worker-0.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600  # library output may echo a secret
    assert math.isfinite(summary.best.value)


def test_the_verdict_leads_with_the_check_that_decided_and_never_implies_an_unchecked_skill(tmp_path: Path):
    from rich.console import Console

    from hpo_action.config import GateConfig
    from hpo_action.judge.gate import ForgettingInput, Paired, gate
    from hpo_action.report.tables import verdict, verdict_markdown

    table = [(True, False)] * 90 + [(False, True)] * 5 + [(True, True)] * 105  # a clear gain on the task
    primary = Paired("exact_match", [float(c) for c, _ in table], [float(r) for _, r in table], True)
    forgot = Paired("exact_match", [0.0] * 150 + [1.0] * 150, [1.0] * 300, True)  # half of `copy` lost
    rejected = gate(primary, [ForgettingInput("copy", forgot, 0.05)], GateConfig(resamples=1000))
    lines = verdict_markdown(rejected)
    checks = [line for line in lines if line.startswith("- ")]
    assert rejected.decision == "reject" and checks[0].startswith("- ✗ forgetting on copy")  # what decided, first
    assert checks[1].startswith("- ✓")
    assert "−" not in "\n".join(lines) and "-0.5" in "\n".join(lines)  # ASCII minus

    unchecked = gate(primary, [], GateConfig(resamples=1000))
    text = "\n".join(verdict_markdown(unchecked))
    assert "forgetting: not checked (no gate.forgetting set was configured)" in text
    console = Console(record=True, width=120)
    console.print(verdict(unchecked))
    assert "? forgetting: not checked" in console.export_text()
    cfg = parse_config({"model": {"name": "org/base-model"}, "data": {"train": "t.jsonl"}})
    card = render_card(cfg, sample_summary(), unchecked, [], "t", None, env={})
    assert "forgetting was not checked" in card and "kept what the base model could do" not in card


def test_qlora_on_a_cpu_fails_before_any_worker_starts(tmp_path: Path, capsys):
    config = write_config(tmp_path, small_config(tmp_path, model={"method": "qlora"}))
    code, _, err = _cli(capsys, "search", "-c", str(config), "--workers", "2")
    assert code == 2 and "model.method: qlora needs a CUDA GPU" in error_line(err)
    assert not (tmp_path / "out").exists()  # no workers/ folder: no worker process was started
