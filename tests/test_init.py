"""`hpo-action init`: a starter that runs as written, never overwrites without force, and pins this version."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import hpo_action
from hpo_action.config import load_config
from hpo_action.errors import ConfigError
from hpo_action.files import template
from hpo_action.init import DEMO_VALUES, write_starter
from hpo_action.judge.decision import GateDecision
from hpo_action.search.summary import RunSummary
from hpo_action.train.models import adapter_sha256

from .helpers import QUICKSTART

STARTER = ["hpo.yaml", ".github/workflows/hpo.yml", *(f"data/{s}.jsonl" for s in ("train", "validation", "test"))]


def _leaves(node: object, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        found: dict[str, object] = {}
        for key, value in node.items():
            found.update(_leaves(value, f"{prefix}{key}."))
        return found or {prefix[:-1]: node}
    return {prefix[:-1]: node}


def test_init_writes_a_runnable_commented_starter_a_workflow_and_gitignore_lines(tmp_path: Path):
    written = write_starter(tmp_path)
    assert {str(p.relative_to(tmp_path)) for p in written} >= {*STARTER, "data/forget_copy.jsonl", ".gitignore"}
    cfg = load_config(tmp_path / "hpo.yaml")
    assert cfg.model.name == "hpo-action/tiny-demo"
    assert Path(cfg.data.train) == tmp_path / "data" / "train.jsonl"
    assert [b.name for b in cfg.gate.forgetting] == ["copy"]
    text = (tmp_path / "hpo.yaml").read_text()
    assert text.count("#") >= template("hpo.yaml").read_text().count("#")  # the template's comments came along
    for split in ("train", "validation", "test", "forget_copy"):
        assert (tmp_path / "data" / f"{split}.jsonl").read_text() == (QUICKSTART / f"{split}.jsonl").read_text()
    assert (tmp_path / ".github/workflows/hpo.yml").read_text() == template("workflows/hpo.yml").read_text()
    assert "runs/" in (tmp_path / ".gitignore").read_text().splitlines()


def test_starter_differs_from_the_template_only_in_the_demo_values(tmp_path: Path):
    write_starter(tmp_path)
    starter = _leaves(yaml.safe_load((tmp_path / "hpo.yaml").read_text()))
    original = _leaves(yaml.safe_load(template("hpo.yaml").read_text()))
    changed = {key for key in starter.keys() | original.keys() if starter.get(key) != original.get(key)}
    assert all(any(key == k or key.startswith(f"{k}.") for k in DEMO_VALUES) for key in changed), changed
    assert not {key for key in changed if key.startswith("train.")} - {  # the template's generic trial defaults
        "train.per_device_train_batch_size",
        "train.gradient_accumulation_steps",
    }


def test_init_refuses_to_overwrite_and_force_does(tmp_path: Path):
    (tmp_path / "hpo.yaml").write_text("mine: true\n")
    with pytest.raises(ConfigError, match=r"hpo\.yaml already exists; pass --force") as info:
        write_starter(tmp_path)
    assert info.value.exit_code == 2
    assert (tmp_path / "hpo.yaml").read_text() == "mine: true\n"
    assert not (tmp_path / "data").exists()  # nothing written when refusing
    write_starter(tmp_path, force=True)
    assert load_config(tmp_path / "hpo.yaml").model.name == "hpo-action/tiny-demo"


def test_gitignore_lines_are_appended_once(tmp_path: Path):
    (tmp_path / ".gitignore").write_text("*.pyc")  # no final newline
    write_starter(tmp_path)
    written = write_starter(tmp_path, force=True)
    lines = (tmp_path / ".gitignore").read_text().splitlines()
    assert lines[0] == "*.pyc" and lines.count("runs/") == 1
    assert tmp_path / ".gitignore" not in written  # unchanged the second time


def test_workflow_templates_install_this_version():
    for name in ("workflows/hpo.yml", "workflows/hpo-pr.yml"):
        env = yaml.safe_load(template(name).read_text())["env"]
        assert env["HPO_ACTION_VERSION"] == hpo_action.__version__, name


@pytest.mark.slow
def test_the_starter_uses_its_replay_file_and_promotes_on_a_cpu(tmp_path: Path):
    """The starter as written (its budget, replay file and forgetting constraint; the remedies searched by default,
    the template's generic train defaults), run in an empty folder; its two warm starts keep the test short: the
    defaults with the gentlest remedies, then the strong remedies, which keep copy."""
    write_starter(tmp_path)
    cfg = load_config(tmp_path / "hpo.yaml")
    assert [Path(source.data).name for source in cfg.data.replay] == ["replay_copy.jsonl"]
    assert cfg.search.forgetting_constraint and {"replay_ratio", "kl_to_base"} <= set(cfg.active_space())
    assert cfg.train.learning_rate is None and cfg.learning_rate == 2e-4  # LoRA's documented start, not tuned
    done = subprocess.run(
        [sys.executable, "-m", "hpo_action", "run", "-c", "hpo.yaml", "--n-trials", "2", "--workers", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = RunSummary.read(tmp_path / "runs" / "summary.json")
    assert summary.n_trials == 2 and set(summary.states) == {"COMPLETE"}, summary.states
    assert [r.warm_start for r in summary.trials] == ["defaults", "strong remedies"]
    assert summary.best is not None and summary.best.adapter
    gate = GateDecision.read(tmp_path / "runs" / "gate.json")  # a verdict on the best trial's weights
    assert gate.adapter_sha256 == adapter_sha256(tmp_path / "runs" / summary.best.adapter) and gate.primary.n > 0
    assert gate.decision == "promote", gate.reasons
    assert [(row.name, row.status) for row in gate.forgetting] == [("copy", "passed")]
    assert "replay: 240 rows of replay_copy.jsonl" in done.stderr


def test_the_publish_job_signs_and_attests_the_published_files():
    """Keyless signing and the build-provenance attestation need id-token and attestations; the official action
    runs pinned by a full commit sha, only when something was published, on exactly the published files."""
    job = yaml.safe_load(template("workflows/hpo.yml").read_text())["jobs"]["publish"]
    assert job["permissions"] == {"contents": "read", "id-token": "write", "attestations": "write"}
    steps = job["steps"]
    install = next(step for step in steps if "pip install" in step.get("run", ""))
    assert "[postgres,signing,mlflow]" in install["run"]
    names = [step.get("id") or step.get("uses", "").split("@")[0] for step in steps]
    attest = steps[names.index("actions/attest-build-provenance")]
    assert names.index("actions/attest-build-provenance") == names.index("hpo") + 1
    assert re.fullmatch(r"actions/attest-build-provenance@[0-9a-f]{40}", attest["uses"])
    assert attest["if"] == "steps.hpo.outputs.published-path != ''"
    assert attest["with"] == {"subject-path": "${{ steps.hpo.outputs.published-path }}/**"}
