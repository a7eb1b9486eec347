"""The promotion gate through its public API: decisions, gate.json keys, error paths, operating characteristics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpo_action.cli import main
from hpo_action.config import GateConfig
from hpo_action.errors import GateError
from hpo_action.gate import ForgettingInput, Paired, gate, pair, read_predictions

TOP_KEYS = {"decision", "promote", "reasons", "primary", "forgetting", "config"}
PRIMARY_KEYS = {
    "metric",
    "n",
    "candidate",
    "reference",
    "delta",
    "ci",
    "confidence",
    "test",
    "alternative",
    "p_value",
    "alpha",
    "mde",
}
FORGETTING_KEYS = {
    "name",
    "metric",
    "reference",
    "candidate",
    "delta",
    "bound",
    "margin",
    "p_value",
    "p_adjusted",
    "passed",
}


def _paired_booleans(rng: np.random.Generator, n: int, p_cand_only: float, p_ref_only: float, base: float = 0.5):
    """Correlated correct/incorrect pairs with the given discordant probabilities."""
    u = rng.random(n)
    cand_only = u < p_cand_only
    ref_only = (u >= p_cand_only) & (u < p_cand_only + p_ref_only)
    concordant = ~(cand_only | ref_only)
    both = concordant & (rng.random(n) < base)
    candidate = cand_only | both
    reference = ref_only | both
    return Paired("exact_match", candidate.astype(float).tolist(), reference.astype(float).tolist(), True)


def test_gate_json_has_exactly_the_contract_keys():
    rng = np.random.default_rng(0)
    forgetting = [ForgettingInput("copy", Paired("loss", [0.5] * 30, [0.5] * 30, False), 0.1)]
    result = gate(_paired_booleans(rng, 200, 0.1, 0.02), forgetting, GateConfig(resamples=1000))
    assert set(result) == TOP_KEYS
    assert set(result["primary"]) == PRIMARY_KEYS | {"table"}
    assert set(result["primary"]["table"]) == {"both", "candidate_only", "reference_only", "neither"}
    assert set(result["forgetting"][0]) == FORGETTING_KEYS
    assert set(result["config"]) == {"alpha", "resamples", "seed"}
    json.dumps(result, allow_nan=False)  # no NaN anywhere


def test_no_disagreement_is_no_evidence_and_never_promotes():
    same = Paired("exact_match", [1.0, 0.0] * 100, [1.0, 0.0] * 100, True)
    result = gate(same, [], GateConfig(resamples=500))
    assert result["primary"]["p_value"] == 1.0
    assert result["primary"]["delta"] == 0.0
    assert result["decision"] != "promote"
    assert any("no evidence" in reason for reason in result["reasons"])


def test_small_samples_are_inconclusive_with_the_reason():
    rng = np.random.default_rng(3)
    result = gate(_paired_booleans(rng, 20, 0.1, 0.05), [], GateConfig(resamples=500, target_effect=0.05))
    assert result["decision"] == "inconclusive"
    assert "add test examples" in result["reasons"][0]
    assert result["primary"]["mde"] > 0.05


def test_lower_is_better_metrics_are_oriented():
    rng = np.random.default_rng(1)
    reference = rng.normal(2.0, 0.3, 300)
    candidate = reference - 0.1 + rng.normal(0, 0.05, 300)  # lower loss: better
    result = gate(Paired("loss", candidate.tolist(), reference.tolist(), False), [], GateConfig(resamples=2000))
    assert result["decision"] == "promote"
    assert result["primary"]["test"] == "permutation"
    assert result["primary"]["delta"] == pytest.approx(0.1, abs=0.02)
    assert result["primary"]["ci"][0] > 0
    flipped = gate(
        Paired("loss", candidate.tolist(), reference.tolist(), False),
        [],
        GateConfig(resamples=2000, direction="maximize"),
    )
    assert flipped["decision"] != "promote"


def test_forgetting_failure_rejects_and_names_the_benchmark():
    rng = np.random.default_rng(2)
    good = _paired_booleans(rng, 400, 0.12, 0.01)
    forgot = Paired("exact_match", [0.0] * 100 + [1.0] * 60, [1.0] * 160, True)
    kept = Paired("exact_match", [1.0] * 160, [1.0] * 160, True)
    inputs = [ForgettingInput("copy", forgot, 0.05), ForgettingInput("arith", kept, 0.05)]
    result = gate(good, inputs, GateConfig(resamples=1000))
    assert result["decision"] == "reject"
    assert [r["passed"] for r in result["forgetting"]] == [False, True]
    assert any(reason.startswith("forgetting on copy") for reason in result["reasons"])
    assert not any("arith" in reason for reason in result["reasons"])


@pytest.mark.slow
def test_null_promotion_rate_is_at_most_alpha_and_power_at_five_points_is_80_percent():
    rng = np.random.default_rng(12345)
    cfg = GateConfig(resamples=1000, target_effect=0.05)
    sets = 1000
    null = sum(gate(_paired_booleans(rng, 400, 0.05, 0.05), [], cfg)["promote"] for _ in range(sets)) / sets
    assert null <= cfg.alpha + 2 * np.sqrt(cfg.alpha * (1 - cfg.alpha) / sets)
    power = sum(gate(_paired_booleans(rng, 400, 0.075, 0.025), [], cfg)["promote"] for _ in range(sets)) / sets
    assert power >= 0.8
    print(f"promotion rate under the null {null:.3f}; at +5 points, disagreement 0.1, n=400: {power:.3f}")


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pairing_errors_name_the_problem(tmp_path: Path):
    cand = _write(tmp_path / "c.jsonl", [{"id": "a", "exact_match": True}, {"id": "b", "exact_match": False}])
    ref = _write(tmp_path / "r.jsonl", [{"id": "a", "exact_match": True}, {"id": "z", "exact_match": True}])
    with pytest.raises(GateError, match="id 'b' is in the candidate predictions but not in the reference"):
        pair(read_predictions(cand), read_predictions(ref), "exact_match")
    half = _write(tmp_path / "h.jsonl", [{"id": "a", "exact_match": 0.5}, {"id": "b", "exact_match": True}])
    with pytest.raises(GateError, match=r"exact_match is boolean, got 0\.5"):
        pair(read_predictions(half), read_predictions(cand), "exact_match")


@pytest.mark.parametrize(
    ("candidate", "reference", "expected"),
    [
        ([{"id": "a", "exact_match": True}], [{"id": "b", "exact_match": True}], "id 'a' is in the candidate"),
        ([], [{"id": "a", "exact_match": True}], "no predictions (the file is empty)"),
        ([{"id": "a", "exact_match": 1}], [{"id": "a", "exact_match": True}], "exact_match is boolean, got 1"),
    ],
)
def test_gate_cli_bad_input_exits_2(tmp_path: Path, capsys, candidate, reference, expected):
    cand, ref = _write(tmp_path / "c.jsonl", candidate), _write(tmp_path / "r.jsonl", reference)
    with pytest.raises(SystemExit) as exit_info:
        main(["gate", "--candidate", str(cand), "--champion", str(ref), "--out", str(tmp_path / "gate.json")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert expected in err and err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "gate.json").exists()


def test_gate_cli_writes_gate_json_fails_on_reject_and_never_imports_torch(tmp_path: Path):
    rows = [{"id": str(i), "exact_match": bool(i % 2)} for i in range(50)]
    cand, ref = _write(tmp_path / "c.jsonl", rows), _write(tmp_path / "r.jsonl", rows)
    out = tmp_path / "gate.json"
    code = (
        "import sys; from hpo_action.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
        "    print('torch' in sys.modules); raise\n"
    )
    args = ["gate", "--candidate", str(cand), "--champion", str(ref), "--out", str(out), "--fail-on-reject"]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.strip().endswith("False")
    assert "gate: REJECT" in proc.stdout
    assert json.loads(out.read_text())["decision"] == "reject"
