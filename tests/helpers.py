"""Helpers the tests share: the repository's paths, small configs, a sample summary and a promoted decision."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpo_action.config import GateConfig
from hpo_action.judge.decision import GateDecision
from hpo_action.judge.gate import ForgettingInput, Paired, gate
from hpo_action.search.summary import BestTrial, RunSummary, TrialRecord

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart"


def isolate_env(patch: pytest.MonkeyPatch, root: Path) -> None:
    """No test touches the real HF cache, the network or a GitHub runner's files: conftest's per-test isolation,
    also for a module's shared run (a module fixture is set up before the per-test one)."""
    patch.setenv("HF_HOME", str(root / "hf-home"))
    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setenv("HF_DATASETS_OFFLINE", "1")
    patch.setenv("TOKENIZERS_PARALLELISM", "false")
    for name in list(os.environ):
        if name.startswith(("GITHUB_", "MLFLOW_TRACKING_", "MLFLOW_REGISTRY_", "MLFLOW_EXPERIMENT_")):
            patch.delenv(name)


def sample_summary() -> RunSummary:
    """A small finished study: trial 0 pruned, trial 1 the best."""
    trials = (
        TrialRecord(0, "PRUNED", None, 3, 1.2, {"lora_r": 4}),
        TrialRecord(1, "COMPLETE", 0.4567891, 6, 2.5, {"lora_r": 8}),
    )
    best = BestTrial(1, 0.4567891, {"learning_rate": 0.01, "lora_r": 8}, {"eval_loss": 0.4567891}, {}, "runs/best")
    return RunSummary(
        study_name="hpo-abc",
        storage="sqlite:///runs/study.db",
        objective_metric="eval_loss",
        objective_direction="minimize",
        method="lora",
        base_model="hpo-action/tiny-demo",
        sampler="tpe",
        pruner="hyperband",
        states={"COMPLETE": 1, "PRUNED": 1},
        elapsed_s=12.5,
        total_steps=420,
        trials=trials,
        best=best,
        n_trials=2,
    )


def error_line(err: str) -> str:
    """The one line a failed command printed as its error, checked to be the last line and to follow nothing but
    the line `run` and `search` print before their slow imports (no traceback, no second error)."""
    lines = err.splitlines()
    assert lines and lines[-1].startswith("error: "), err
    assert len(lines) == 1 or (len(lines) == 2 and lines[0].startswith("hpo-action ")), err
    return lines[-1]


def promoted_decision() -> GateDecision:
    """A real gate decision that promotes: exact match 0.5 → 0.9 on 200 examples (85 gained, 5 lost), and a
    forgetting set `copy` of 300 examples kept exactly."""
    table = [(True, True)] * 95 + [(True, False)] * 85 + [(False, True)] * 5 + [(False, False)] * 15
    primary = Paired("exact_match", [float(c) for c, _ in table], [float(r) for _, r in table], True)
    kept = Paired("exact_match", [1.0] * 300, [1.0] * 300, True)
    decision = gate(primary, [ForgettingInput("copy", kept, 0.02)], GateConfig(resamples=1000))
    assert decision.promote
    return decision


def small_config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """The quickstart config shrunk to seconds: its data copied into tmp_path, a tiny budget."""
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "forget_copy.jsonl", "replay_copy.jsonl"):
        shutil.copy(QUICKSTART / name, tmp_path / name)
    raw = yaml.safe_load((QUICKSTART / "hpo.yaml").read_text())
    raw["search"].update(n_trials=3, timeout=None, budget={"max_steps": 6, "eval_every": 3})
    # A rate and adapter that learn the shift in a few steps: the quickstart's own defaults are LoRA's generic ones
    # (issue 22), which a 6-step trial barely moves; the tests written against the tuned values keep them.
    raw["train"].update(learning_rate=1e-2, lora_alpha=16, lora_dropout=0.0, warmup_ratio=0.0)
    raw["search"]["workers"] = 0  # in-process trials: seconds saved per study; worker tests set it
    # The quickstart's forgetting remedies cost a probe and a second forward per step: tests that want them add them.
    raw["data"].pop("replay", None)
    raw["search"]["forgetting_constraint"] = False
    for name in ("replay_ratio", "kl_to_base"):
        raw["search"]["space"].pop(name, None)
        raw["train"].pop(name, None)
    raw["output"] = {"dir": "out"}
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(raw.get(section), dict):
            raw[section] = {**raw[section], **values}
        else:
            raw[section] = values
    return raw


def write_config(tmp_path: Path, raw: dict[str, Any], name: str = "hpo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def signed_one_trial_config(root: Path, output_dir: str) -> dict[str, Any]:
    """One 40-step trial that promotes on loss, no forgetting sets, published to `root/registry` and signed with a
    fresh key at `root/signing-key.pem`: the smallest run whose published files can be read back and verified."""
    make_signing_key(root / "signing-key.pem")
    return small_config(
        root,
        search={
            "n_trials": 1,
            "seed": 0,
            "pruner": "none",
            "budget": {"max_steps": 40, "eval_every": 40},
            "space": {"learning_rate": {"low": 5e-3, "high": 9e-3, "log": True}},
        },
        evaluate={"metrics": ["loss"]},
        gate={"forgetting": []},
        registry={"uri": "registry", "signing": {"method": "key", "key": "signing-key.pem"}},
        output={"dir": output_dir},
    )


def make_signing_key(path: Path) -> Path:
    """A fresh P-256 private key in PEM, as `openssl ecparam -name prime256v1 -genkey` makes one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    return path


def public_key_pem(key: Path) -> bytes:
    """The public half of a PEM private key, as `openssl ec -pubout` writes it."""
    from cryptography.hazmat.primitives import serialization

    public = serialization.load_pem_private_key(key.read_bytes(), password=None).public_key()
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
