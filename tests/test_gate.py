"""The promotion gate through its public API and the CLI: the seven audit cases, gate.json's contract, the three
outcomes, and its operating characteristics simulated (benchmarks/gate_calibration.py holds the scenarios)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpo_action.cli import main
from hpo_action.config import GateConfig
from hpo_action.errors import GateError
from hpo_action.judge.decision import GateDecision
from hpo_action.judge.gate import ForgettingInput, Paired, gate, pair
from hpo_action.judge.predictions import read_predictions
from hpo_action.report.tables import forgetting_table, primary_table

from .helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gate_calibration as calibration

TOP_KEYS = {
    "decision",
    "promote",
    "reasons",
    "primary",
    "forgetting",
    "forgetting_rule",
    "config",
    "adapter_sha256",
    "test_fingerprint",
}
PRIMARY_KEYS = {
    "metric",
    "n",
    "candidate",
    "reference",
    "delta",
    "bound",
    "upper_bound",
    "ci",
    "confidence",
    "test",
    "alternative",
    "p_value",
    "alpha",
    "min_effect",
    "target_effect",
    "mde",
    "power",
    "status",
    "needed_n",
    "table",
    "note",
    "estimand",
    "power_rule",  # how the MDE and needed_n were computed (issue 21 item 5)
}
FORGETTING_KEYS = {
    "name",
    "metric",
    "n",
    "reference",
    "candidate",
    "delta",
    "bound",
    "upper_bound",
    "margin",
    "test",
    "p_value",
    "p_adjusted",
    "passed",
    "status",
    "needed_n",
    "note",
    "probe_rows",  # rows of the set the search's probe took, never tested by the gate
    "gate_rows",  # the rows the gate tested (n)
    "estimand",
    "power_rule",
}
CFG = GateConfig(resamples=1000)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _gate_cli(tmp_path: Path, cand: list[dict], ref: list[dict], *extra: str) -> tuple[int, dict | None, str]:
    """Run `hpo-action gate` in-process; returns the exit code, gate.json (when written) and what it printed."""
    c, r = _write(tmp_path / "cand.jsonl", cand), _write(tmp_path / "ref.jsonl", ref)
    out = tmp_path / "gate.json"
    out.unlink(missing_ok=True)
    args = ["gate", "--candidate", str(c), "--champion", str(r), "--out", str(out), "--resamples", "1000", *extra]
    printed = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        try:
            main(args)
        except SystemExit as exit_info:
            code = int(exit_info.code or 0)
    return code, json.loads(out.read_text()) if out.is_file() else None, printed.getvalue()


def _booleans(n_gain: int, n_loss: int, n_both: int, n_neither: int) -> tuple[list[dict], list[dict]]:
    pairs = [(True, False)] * n_gain + [(False, True)] * n_loss + [(True, True)] * n_both
    pairs += [(False, False)] * n_neither
    cand = [{"id": i, "exact_match": c} for i, (c, _) in enumerate(pairs)]
    ref = [{"id": i, "exact_match": r} for i, (_, r) in enumerate(pairs)]
    return cand, ref


# --- gate.json ----------------------------------------------------------------------------------------------------


def test_gate_json_keeps_its_keys_and_adds_status_and_needed_n():
    rng = np.random.default_rng(0)
    forgetting = [ForgettingInput("copy", Paired("loss", [0.5] * 30, [0.5] * 30, False), 0.1)]
    decision = gate(calibration.booleans(rng, 200, 0.1, 0.02), forgetting, CFG)
    data = decision.to_json()
    assert set(data) == TOP_KEYS
    assert set(data["primary"]) == PRIMARY_KEYS
    assert set(data["primary"]["table"]) == {"both", "candidate_only", "reference_only", "neither"}
    assert set(data["forgetting"][0]) == FORGETTING_KEYS
    assert data["forgetting"][0]["p_adjusted"] == data["forgetting"][0]["p_value"]  # no multiplicity adjustment
    assert {"alpha", "resamples", "seed"} <= set(data["config"])
    text = json.dumps(data, allow_nan=False)  # no NaN anywhere
    assert GateDecision.from_json(json.loads(text)) == decision


def test_no_disagreement_is_no_evidence_and_rules_out_a_gain():
    same = Paired("exact_match", [1.0, 0.0] * 100, [1.0, 0.0] * 100, True)
    decision = gate(same, [], CFG)
    assert decision.primary.p_value == 1.0 and decision.primary.delta == 0.0
    assert decision.decision == "reject"  # 200 pairs that never disagree exclude a 5-point gain
    assert "no evidence: the models never disagree" in decision.reasons[0]


def test_lower_is_better_metrics_are_oriented():
    rng = np.random.default_rng(1)
    reference = rng.normal(2.0, 0.3, 300)
    candidate = reference - 0.1 + rng.normal(0, 0.05, 300)  # lower loss: better
    # On the default range [0, ln V] no test valid for every law there can show 0.1 with 300 pairs (a mass of
    # 0.1/(2 ln V) at the worst difference would hide in them); the known range [0, 4] can.
    decision = gate(
        Paired("loss", candidate.tolist(), reference.tolist(), False),
        [],
        CFG.model_copy(update={"score_range": (0.0, 4.0)}),
    )
    assert decision.decision == "promote"
    assert decision.primary.test == "betting"
    assert decision.primary.delta == pytest.approx(0.1, abs=0.02)
    assert decision.primary.bound > 0
    flipped = gate(
        Paired("loss", candidate.tolist(), reference.tolist(), False),
        [],
        GateConfig(resamples=1000, direction="maximize", score_range=(0.0, 4.0)),
    )
    assert flipped.decision == "reject" and "significantly worse" in flipped.reasons[0]


def test_the_deciding_reason_comes_first():
    rng = np.random.default_rng(2)
    good = calibration.booleans(rng, 400, 0.12, 0.01)
    forgot = Paired("exact_match", [0.0] * 100 + [1.0] * 200, [1.0] * 300, True)
    kept = Paired("exact_match", [1.0] * 300, [1.0] * 300, True)
    decision = gate(good, [ForgettingInput("arith", kept, 0.02), ForgettingInput("copy", forgot, 0.02)], CFG)
    assert decision.decision == "reject"
    assert [r.status for r in decision.forgetting] == ["passed", "failed"]
    assert decision.reasons[0].startswith("forgetting on copy")
    assert [check.ok for check in decision.checks()] == [False, True, True]


# --- the seven audit cases, through the CLI --------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 5])
def test_1_bootstrap_never_promotes_on_a_handful_of_examples(tmp_path: Path, n: int):
    cand = [{"id": i, "loss": 1.00 + 0.001 * i} for i in range(n)]
    ref = [{"id": i, "loss": 1.01 + 0.001 * i + 0.002 * (i % 2)} for i in range(n)]
    code, result, _ = _gate_cli(tmp_path, cand, ref, "--test", "bootstrap")
    assert code == 0 and result is not None
    assert result["decision"] == "inconclusive"
    assert f"only {n} pair{'' if n == 1 else 's'} (promotion needs 10)" in result["reasons"][0]


def test_2_a_forgetting_file_is_gated_on_the_primary_metric_never_a_guessed_field(tmp_path: Path):
    cand, ref = _booleans(60, 0, 100, 40)
    forgot = _write(tmp_path / "f.cand.jsonl", [{"id": i, "n_tokens": 7, "exact_match": False} for i in range(200)])
    kept = _write(tmp_path / "f.ref.jsonl", [{"id": i, "n_tokens": 7, "exact_match": True} for i in range(200)])
    code, result, _ = _gate_cli(tmp_path, cand, ref, "--forgetting", f"copy={forgot},{kept}")
    assert code == 0 and result is not None
    assert result["forgetting"][0]["metric"] == "exact_match" and result["forgetting"][0]["status"] == "failed"
    assert result["decision"] == "reject"
    # A forgetting file without the primary metric: exit 2, naming the numeric fields found.
    other = _write(tmp_path / "o.jsonl", [{"id": i, "n_tokens": 7, "acc": 1.0} for i in range(200)])
    code, result, err = _gate_cli(tmp_path, cand, ref, "--forgetting", f"copy={other},{other}")
    assert code == 2 and result is None
    assert "no numeric 'exact_match' in both files (numeric fields in both: n_tokens, acc)" in err
    code, result, _ = _gate_cli(tmp_path, cand, ref, "--forgetting", f"copy={other},{other},0.02,acc")
    assert code == 0 and result["forgetting"][0]["metric"] == "acc"


def test_2b_several_numeric_fields_and_no_metric_exit_2(tmp_path: Path):
    rows = [{"id": i, "loss": 1.0, "n_tokens": 7} for i in range(20)]
    code, result, err = _gate_cli(tmp_path, rows, rows)
    assert code == 2 and result is None
    assert (
        "cannot tell which metric to gate on (numeric fields in both: loss, n_tokens); choose one with --metric" in err
    )


def test_3_the_test_and_its_bound_agree_by_construction():
    rng = np.random.default_rng(3)
    for i in range(200):
        if i % 2:
            paired = calibration.booleans(rng, 300, 0.06, 0.04)
        else:
            paired = calibration.losses(rng.normal(1.0, 1.0, 60), rng.normal(1.2, 1.0, 60))
        cfg = GateConfig(resamples=200, min_effect=float(rng.choice([0.0, 0.01])), seed=i)
        p = gate(paired, [], cfg, figures=False).primary  # the power figures never change the decision
        assert (p.p_value < cfg.alpha) == (p.bound > cfg.min_effect), p


def test_4a_a_clearly_worse_candidate_is_rejected(tmp_path: Path):
    cand, ref = _booleans(0, 20, 100, 80)
    code, result, _out = _gate_cli(tmp_path, cand, ref, "--fail-on-reject")
    assert code == 3 and result is not None
    assert result["decision"] == "reject"
    assert "significantly worse" in result["reasons"][0]


def test_4b_an_underpowered_run_is_inconclusive_and_names_the_n_needed(tmp_path: Path):
    cand, ref = _booleans(2, 0, 30, 18)  # n = 50, 2 discordant pairs, p = 0.125
    code, result, out = _gate_cli(tmp_path, cand, ref)
    assert code == 0 and result is not None
    primary = result["primary"]
    assert result["decision"] == "inconclusive" and primary["p_value"] == pytest.approx(0.125)
    assert primary["mde"] > 0.04  # not clamped to the observed discordance
    assert primary["needed_n"] > 50
    assert f"about {primary['needed_n']} examples are needed for +0.05" in result["reasons"][0]
    assert "gate: INCONCLUSIVE" in out


def test_5_forgetting_a_three_point_drop_at_n_5000_is_caught_and_small_sets_are_inconclusive():
    rng = np.random.default_rng(5)
    clear = calibration.booleans(rng, 400, 0.3, 0.0)
    drop = calibration.booleans(rng, 5000, 0.01, 0.04, 0.8)
    decision = gate(clear, [ForgettingInput("copy", drop, 0.02)], CFG)
    assert decision.forgetting[0].status == "failed" and decision.decision == "reject"
    gained_and_lost = [(1.0, 0.0)] * 3 + [(0.0, 1.0)] * 3 + [(1.0, 1.0)] * 154  # 160 examples, none forgotten on net
    nothing_lost = Paired("exact_match", [c for c, _ in gained_and_lost], [r for _, r in gained_and_lost], True)
    small = gate(clear, [ForgettingInput("copy", nothing_lost, 0.02)], CFG)
    assert small.forgetting[0].status == "inconclusive" and small.decision == "inconclusive"
    assert small.forgetting[0].needed_n > 160
    assert f"about {small.forgetting[0].needed_n} examples would show it" in small.reasons[0]


def test_5b_the_default_margin_is_two_points_for_booleans_and_a_loss_set_must_set_its_own():
    from pydantic import ValidationError

    from hpo_action.config import ForgettingBenchmark

    assert ForgettingBenchmark(name="x", data="x.jsonl", metric="exact_match").margin == 0.02
    assert ForgettingBenchmark(name="x", data="x.jsonl", metric="loss", margin=0.1).margin == 0.1
    with pytest.raises(ValidationError, match=r"margin: loss is a score, so there is no default margin"):
        ForgettingBenchmark(name="x", data="x.jsonl")


def test_6_no_multiplicity_adjustment_across_forgetting_sets(tmp_path: Path):
    cand, ref = _booleans(80, 0, 100, 20)
    files = []
    for name in ("a", "b", "c"):
        rows = [{"id": i, "exact_match": True} for i in range(300)]
        files += ["--forgetting", f"{name}={_write(tmp_path / f'{name}.jsonl', rows)},{tmp_path / f'{name}.jsonl'}"]
    code, result, _ = _gate_cli(tmp_path, cand, ref, *files)
    assert code == 0 and result["decision"] == "promote"
    assert all(row["p_adjusted"] == row["p_value"] for row in result["forgetting"])


def test_7_scores_default_to_the_betting_test_on_the_clipped_range_and_say_so():
    rng = np.random.default_rng(7)
    decision = gate(calibration.heavier_tailed_candidate(rng, 200), [], CFG, vocab_size=50_000)
    primary = decision.primary
    assert primary.test == "betting" and decision.decision != "promote"
    assert "clipped to [0, ln V] = [0, 10.82]" in primary.estimand and "V = 50000" in primary.estimand
    fallback = gate(calibration.heavier_tailed_candidate(rng, 200), [], CFG, figures=False)  # the estimand only
    assert "assumed vocabulary size" in fallback.primary.estimand
    assert decision.to_json()["primary"]["estimand"] == primary.estimand
    assert "distribution-free" in primary.power_rule and "betting" in primary.power_rule  # issue 21 item 5


@pytest.mark.parametrize("boolean", [True, False])
def test_7b_the_shown_interval_inverts_the_deciding_test(boolean: bool):
    """Issue 21 item 4: n = 200, b = 14, c = 6 promotes (p = 0.039); the 95% two-sided interval would include 0,
    so the gate shows the one-sided bounds, which form the 1 − 2·alpha interval, and nothing else."""
    if boolean:
        paired = Paired("exact_match", [1.0] * 14 + [0.0] * 6 + [1.0] * 180, [0.0] * 14 + [1.0] * 6 + [1.0] * 180, True)
    else:
        rng = np.random.default_rng(8)
        reference = rng.uniform(1.0, 3.0, 400)
        paired = Paired("loss", (reference - 0.3 + rng.normal(0, 0.2, 400)).tolist(), reference.tolist(), False)
    decision = gate(paired, [], CFG.model_copy(update={"score_range": (0.0, 5.0)}))
    primary = decision.primary
    assert decision.decision == "promote" and primary.p_value < 0.05
    assert primary.ci == (primary.bound, primary.upper_bound) and primary.confidence == pytest.approx(0.90)
    assert primary.bound > 0
    shown = decision.to_json()["primary"]
    assert list(shown["ci"]) == [primary.bound, primary.upper_bound] and shown["confidence"] == pytest.approx(0.90)
    assert "two-sided 90% interval" in primary_table(primary).title


def test_duplicate_forgetting_names_exit_2(tmp_path: Path):
    cand, ref = _booleans(60, 0, 100, 40)
    rows = _write(tmp_path / "f.jsonl", [{"id": i, "exact_match": True} for i in range(20)])
    code, result, err = _gate_cli(
        tmp_path, cand, ref, "--forgetting", f"x={rows},{rows}", "--forgetting", f"x={rows},{rows}"
    )
    assert code == 2 and result is None and "'x' is given twice" in err


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"id": 1, "loss": Infinity}', "Infinity is not a finite number"),
        ('{"id": 1, "loss": -1e308}', "beyond"),
        ('{"id": 1, "loss": NaN}', "NaN is not a finite number"),
    ],
)
def test_non_finite_scores_exit_2_naming_the_file_and_line(tmp_path: Path, line: str, expected: str):
    good = [{"id": 1, "loss": 1.0}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(line + "\n")
    ref = _write(tmp_path / "ref.jsonl", good)
    with pytest.raises(GateError, match=expected):
        read_predictions(bad)
    proc = subprocess.run(
        [sys.executable, "-m", "hpo_action", "gate", "--candidate", str(bad), "--champion", str(ref)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and f"{bad} line 1" in proc.stderr


def test_bom_and_invalid_utf8(tmp_path: Path):
    with_bom = tmp_path / "bom.jsonl"
    with_bom.write_bytes(b"\xef\xbb\xbf" + b'{"id": 1, "loss": 1.0}\n')
    assert read_predictions(with_bom)["1"]["loss"] == 1.0
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b'{"id": 1, "loss": 1.0, "output": "\xff"}\n')
    with pytest.raises(GateError, match="not UTF-8"):
        read_predictions(broken)


def test_bad_margin_and_settings_exit_2(tmp_path: Path):
    cand, ref = _booleans(60, 0, 100, 40)
    rows = _write(tmp_path / "f.jsonl", [{"id": i, "exact_match": True} for i in range(20)])
    for flag, message in (
        (["--forgetting", f"x={rows},{rows},-1"], "margin must be a finite number"),
        (["--forgetting", f"x={rows},{rows},abc"], "is not a number"),
        (["--target-effect", "0"], "target-effect"),
        (["--alpha", "0.7"], "alpha"),
    ):
        code, result, err = _gate_cli(tmp_path, cand, ref, *flag)
        assert code == 2 and result is None and message in err, (flag, err)


def test_gate_reads_the_config_and_flags_override_it(tmp_path: Path):
    from .helpers import small_config, write_config

    config = write_config(tmp_path, small_config(tmp_path, gate={"alpha": 0.01, "target_effect": 0.1}))
    cand, ref = _booleans(12, 2, 100, 86)  # exact_match is the quickstart's primary metric
    rows = [{**row, "loss": 1.0} for row in cand]
    code, result, _ = _gate_cli(tmp_path, rows, [{**row, "loss": 1.0} for row in ref], "-c", str(config))
    assert code == 0 and result["primary"]["metric"] == "exact_match"
    assert result["config"]["alpha"] == 0.01 and result["config"]["target_effect"] == 0.1
    code, result, _ = _gate_cli(
        tmp_path, rows, [{**row, "loss": 1.0} for row in ref], "-c", str(config), "--alpha", "0.05"
    )
    assert result["config"]["alpha"] == 0.05


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


def test_gate_cli_never_imports_torch(tmp_path: Path):
    cand, ref = _booleans(0, 20, 100, 80)
    c, r = _write(tmp_path / "c.jsonl", cand), _write(tmp_path / "r.jsonl", ref)
    code = (
        "import sys; from hpo_action.cli import main\n"
        "try:\n    main(sys.argv[1:])\nfinally:\n    print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, "gate", "--candidate", str(c), "--champion", str(r)],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("False") and "gate: REJECT" in proc.stdout


# --- operating characteristics ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("scenario", calibration.scenarios(GateConfig(resamples=199)), ids=lambda s: s.name)
def test_operating_characteristics(scenario: calibration.Scenario):
    """Each goal of issue 11 over 1000 simulated sets (resamples kept low for speed; the benchmark runs more)."""
    outcome = calibration.simulate(scenario, 1000, GateConfig(resamples=199), seed=11)
    print(f"{scenario.name}: {outcome.rate:.3f} (limit {outcome.limit:.3f}), agreement {outcome.agreement:.3f}")
    assert outcome.met, outcome
    assert outcome.agreement >= 0.99


def test_a_forgetting_set_too_small_to_ever_pass_is_warned_about_before_the_search(tmp_path: Path):
    from hpo_action.judge.gate import too_small_to_pass

    assert too_small_to_pass("copy", 133, 0.02, 0.05) is None
    assert "needs at least 133" in too_small_to_pass("copy", 132, 0.02, 0.05)
    assert "needs at least 52" in too_small_to_pass("copy", 51, 0.05, 0.05)

    from .helpers import small_config, write_config

    raw = small_config(
        tmp_path, gate={"forgetting": [{"name": "copy", "data": "forget_copy.jsonl", "metric": "exact_match"}]}
    )
    config = write_config(tmp_path, raw)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed), pytest.raises(SystemExit):
        main(["run", "-c", str(config), "--registry", "nosuch://scheme"])  # fails right after the warning
    assert "forgetting set 'copy' has 160 examples: at margin 0.02 it can never pass" not in printed.getvalue()
    lines = (tmp_path / "forget_copy.jsonl").read_text().splitlines()[:40]
    (tmp_path / "forget_copy.jsonl").write_text("\n".join(lines) + "\n")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed), pytest.raises(SystemExit):
        main(["run", "-c", str(config), "--registry", "nosuch://scheme"])  # fails right after the warning
    assert "forgetting set 'copy' has 40 examples: at margin 0.02 it can never pass" in printed.getvalue()


def test_run_refuses_a_loss_forgetting_set_without_a_margin(tmp_path: Path, capsys):
    """Issue 21 item 6: a loss margin has no default that pretends to be accuracy points; `run` says which field."""
    from .helpers import small_config, write_config

    raw = small_config(tmp_path, gate={"forgetting": [{"name": "lm", "data": "forget_copy.jsonl", "metric": "loss"}]})
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "-c", str(write_config(tmp_path, raw))])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "gate.forgetting.0.margin: loss is a score" in err
    assert not (tmp_path / "runs").exists()


def test_forgetting_labels_say_what_passed_means_across_sets():
    """Issue 21 item 6: a set's "passed" is its own level-alpha test; the decision is an intersection-union test."""
    rng = np.random.default_rng(9)
    clear = calibration.booleans(rng, 400, 0.3, 0.0)
    kept = [ForgettingInput(name, calibration.booleans(rng, 2000, 0.0, 0.0, 0.8), 0.02) for name in ("a", "b")]
    decision = gate(clear, kept, CFG)
    assert decision.decision == "promote"
    assert "intersection-union test" in decision.to_json()["forgetting_rule"]
    assert "this set's own one-sided test" in decision.reasons[-1]
    assert "intersection-union" in forgetting_table(decision.forgetting, 0.05).title


@pytest.mark.parametrize("family", calibration.FAMILIES, ids=lambda f: f.name.split(" (")[0])
def test_1_the_default_score_test_holds_its_level_in_every_family(family: calibration.Family):
    """Issue 21 item 1, reduced: 100 null data sets per n (equal clipped means) through the gate; the benchmark
    runs 300 and RESULTS.md shows them beside the old default's."""
    limit = 0.05 + 2 * (0.05 * 0.95 / 100) ** 0.5
    for n in calibration.SIZES:
        rate, _ = calibration.false_promotion(family, n, "betting", 100, seed=21)
        assert rate <= limit, (family.name, n, rate)


# The families whose tails a pilot hides (the heavier-tailed and t(2) ones fell short before) and the invented ones.
_PLANNED = [f for f in calibration.FAMILIES if f.name.startswith(("heavier", "skewed", "ties", "hidden"))]


@pytest.mark.parametrize("family", _PLANNED, ids=lambda f: f.name.split(" (")[0])
def test_5_the_reported_needed_n_reaches_its_power_in_heavy_tailed_families(family: calibration.Family):
    """Issue 21 item 5, reduced: a pilot of 100 pairs at a true gain of 0.3 (not 0.05, so that n stays near a
    thousand), and 40 fresh data sets of the size the gate reports; the benchmark runs 5 pilots of 200 at 0.05."""
    check = calibration.power_at_needed_n(family, pilots=1, sets=40, pilot=100, effect=0.3, seed=5)
    assert check.pooled >= 0.75, check


def test_gate_cli_refuses_a_loss_forgetting_pair_without_a_margin_and_takes_a_score_range(tmp_path: Path):
    """Issue 21 items 1 and 6 on `hpo-action gate`: a score pair needs MARGIN; a metric of unknown range needs
    --score-range, and a score outside it exits 2 rather than being clipped."""
    cand, ref = _booleans(60, 0, 100, 40)
    lm = _write(tmp_path / "lm.jsonl", [{"id": i, "loss": 1.0} for i in range(50)])
    code, result, err = _gate_cli(tmp_path, cand, ref, "--forgetting", f"lm={lm},{lm},,loss")
    assert code == 2 and result is None
    assert "--forgetting lm: loss is a score, so there is no default margin; give MARGIN" in err
    rows = [{"id": i, "bleu": 10.0 + i % 7} for i in range(40)]
    code, result, err = _gate_cli(tmp_path, rows, rows, "--metric", "bleu")
    assert code == 2 and "gate.score_range: the score test needs the range of 'bleu'" in err
    code, result, err = _gate_cli(tmp_path, rows, rows, "--metric", "bleu", "--score-range", "0", "12")
    assert code == 2 and "a candidate bleu of 13 lies outside gate.score_range [0, 12]" in err
    code, result, _ = _gate_cli(tmp_path, rows, rows, "--metric", "bleu", "--score-range", "0", "100")
    assert code == 0 and result["primary"]["test"] == "betting" and result["decision"] != "promote"
    assert result["primary"]["estimand"] == "the mean difference in bleu (scores in [0, 100])"


def test_betting_says_inconclusive_when_no_data_of_this_size_could_reach_the_level():
    """Ten pairs all at the top of the range still cannot give an e-value of 1/alpha at alpha = 0.001."""
    paired = Paired("accuracy_score", [1.0] * 10, [0.0] * 10, False)
    decision = gate(paired, [], CFG.model_copy(update={"alpha": 0.001, "score_range": (0.0, 1.0)}))
    assert decision.decision == "inconclusive"
    assert "10 pairs cannot reach level 0.001, even if all favour the candidate" in decision.reasons[0]
    assert gate(paired, [], CFG.model_copy(update={"score_range": (0.0, 1.0)})).decision == "promote"
