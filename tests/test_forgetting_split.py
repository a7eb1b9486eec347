"""The forgetting probe never overlaps what the gate tests: a seeded split of each set, feasibility by the gate's own
test at the probe's size, the warnings at start, and the selection simulation through the real code path."""

from __future__ import annotations

import json
import random
import sys
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import yaml

from hpo_action.cli import main
from hpo_action.config import GateConfig, parse_config
from hpo_action.errors import ConfigError
from hpo_action.judge import stats
from hpo_action.judge.forgetting_split import (
    DEFAULT_PROBE_SHARE,
    EXPECTED_SPREAD_PER_MARGIN,
    constraint_value,
    forgetting_parts,
    kept_skill_probe_size,
    probe_size,
    probe_verdict,
    small_set_warnings,
    split_set,
)
from hpo_action.judge.gate import ForgettingInput, Paired, forgetting_result
from hpo_action.search.naming import storage_url, study_name

from .helpers import QUICKSTART, ROOT, small_config, write_config

sys.path.insert(0, str(ROOT / "benchmarks"))

COPY = {"name": "copy", "data": "forget_copy.jsonl", "metric": "exact_match", "margin": 0.05}


def _raw(tmp_path: Path, **search) -> dict:
    """The small config with the forgetting set, the probe size left to its default unless given."""
    raw = small_config(tmp_path)
    raw["search"].pop("forgetting_probe_size")
    raw["search"].update({"forgetting_constraint": True, **search})
    raw["gate"]["forgetting"] = [COPY]
    return raw


def _cfg(tmp_path: Path, **search):
    return parse_config(_raw(tmp_path, **search), base_dir=tmp_path)


def _rows(n: int) -> list[dict]:
    return [{"id": f"r{i}", "prompt": f"p{i}", "completion": "c"} for i in range(n)]


def test_split_is_disjoint_seeded_and_independent_of_row_order():
    rows = _rows(400)
    parts = split_set(rows, "copy", 0, 120)
    probe, gate = {r["id"] for r in parts.probe}, {r["id"] for r in parts.gate}
    assert len(probe) == 120 and len(gate) == 280 and not probe & gate and probe | gate == {r["id"] for r in rows}
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    assert {r["id"] for r in split_set(shuffled, "copy", 0, 120).probe} == probe  # workers, resumes, the gate agree
    assert {r["id"] for r in split_set(rows, "copy", 1, 120).probe} != probe  # data.seed draws another split
    assert {r["id"] for r in split_set(rows, "math", 0, 120).probe} != probe  # each set its own
    assert [r["id"] for r in parts.gate] == [r["id"] for r in rows if r["id"] in gate]  # file order kept


def test_probe_size_defaults_to_a_share_of_the_set_and_must_leave_gate_rows(tmp_path: Path):
    cfg = _cfg(tmp_path)
    assert cfg.search.forgetting_probe_size is None
    assert probe_size(cfg, "copy", 400) == round(DEFAULT_PROBE_SHARE * 400) == 120
    assert probe_size(_cfg(tmp_path, forgetting_constraint=False), "copy", 400) == 0  # no probe: the gate takes all
    with pytest.raises(ConfigError, match=r"search.forgetting_probe_size: 400 probe rows .* 'copy' leave none"):
        probe_size(_cfg(tmp_path, forgetting_probe_size=400), "copy", 400)


def test_a_probe_that_leaves_no_gate_rows_exits_2_before_anything_trains(tmp_path: Path, capsys):
    raw = _raw(tmp_path, forgetting_probe_size=500)
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "-c", str(write_config(tmp_path, raw))])
    assert exit_info.value.code == 2
    assert "search.forgetting_probe_size: 500 probe rows" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("n", "lost", "feasible"), [(64, 2, False), (128, 0, True), (128, 2, True), (30, 0, False)])
def test_feasible_only_when_the_gates_own_test_passes_at_the_probes_size(n: int, lost: int, feasible: bool):
    """A point drop within the margin is not enough (the issue's copy −0.031 on 64 rows); the lower bound is."""
    base = [1.0] * n
    candidate = [0.0] * lost + [1.0] * (n - lost)
    cfg = GateConfig(resamples=1000)
    verdict = probe_verdict("copy", candidate, base, "exact_match", 0.05, None, cfg)
    gate = forgetting_result(ForgettingInput("copy", Paired("exact_match", candidate, base, True), 0.05), cfg)
    assert verdict == replace(gate, needed_n=None)  # the same test, the same numbers (feasibility needs no power)
    assert lost / n <= 0.05  # every case is within the margin by its point estimate
    assert verdict.passed is feasible and (constraint_value(verdict) <= 0) is feasible
    below = -(verdict.bound + 0.05)  # how far the lower bound falls below −margin
    assert constraint_value(verdict) == pytest.approx(below if feasible else max(below, 0.0), abs=1e-8)
    if n == 30:  # below the fewest rows that can ever pass at this margin
        assert n < stats.noninferiority_min_n(0.05, cfg.alpha)


def test_warnings_name_the_parts_and_the_rows_needed(tmp_path: Path):
    cfg = _cfg(tmp_path, forgetting_probe_size=20)
    rows = _rows(150)
    (gate_small, probe_small) = small_set_warnings(cfg, forgetting_parts(cfg, {"copy": rows}))
    needed = stats.paired_proportion_n(0.0, 0.1, -0.05, 0.05, 0.8)
    assert "gate part has 130 rows of 150 (20 go to the search's probe)" in gate_small
    assert f"needs about {needed} rows" in gate_small and "10% of its answers" in gate_small
    least = stats.noninferiority_min_n(0.05, 0.05)
    assert "probe part has 20 rows" in probe_small and f"at least {least}" in probe_small
    assert small_set_warnings(_cfg(tmp_path), forgetting_parts(_cfg(tmp_path), {"copy": _rows(400)})) == []


def test_a_loss_probe_too_small_to_show_a_kept_skill_says_how_many_rows_would():
    """issue 22 item 4's pilot: a 300-row loss set at margin 0.1 left the default 90-row probe, on which no trial
    that kept the skill could be feasible, and nothing said so. The check uses the gate's own test (probe_verdict)."""
    rng = random.Random(0)
    gate, vocab = GateConfig(), 36
    base = [min(3.5, rng.gammavariate(2, 0.3)) for _ in range(90)]
    needed = kept_skill_probe_size(base, "loss", 0.1, None, gate, vocab)
    assert needed is not None and needed > 90

    def kept(n: int) -> bool:  # the same kept skill, judged directly by the gate's test
        rows = [base[i % 90] for i in range(n)]
        step = EXPECTED_SPREAD_PER_MARGIN * 0.1
        moved = [max(0.0, b + (step if i % 2 else -step)) for i, b in enumerate(rows)]
        return probe_verdict("kept", moved, rows, "loss", 0.1, None, gate, vocab).passed

    assert not kept(90) and not kept(needed // 2) and kept(needed)
    assert kept_skill_probe_size(base * 4, "loss", 0.1, None, gate, vocab) is None  # 360 rows show it
    assert kept_skill_probe_size(base[:60], "loss", 0.2, None, gate, vocab) is not None
    assert kept_skill_probe_size([1.0] * 30, "exact_match", 0.05, None, gate, vocab) is None  # boolean: own warning


@pytest.mark.parametrize("rule", ["objective", "probe"])
def test_selection_on_the_probe_keeps_the_gates_pass_rate_at_alpha(rule: str):
    """Reduced benchmarks/forgetting_selection.py: every trial forgets exactly the margin; after the search picks a
    finalist on its probe, the gate passes it no more often than α + 2 SE."""
    from forgetting_selection import Setting, simulate

    result = simulate(Setting(trials=10), "split", rule, reps=300, seed=1)
    assert result["finalists"] >= 60  # enough studies reached the gate for the rate to mean something
    assert result["pass_rate"] <= 0.05 + 2 * result["se"], result


@pytest.mark.slow
@pytest.mark.parametrize("objectives", [None, [{"metric": "eval_loss"}, {"metric": "forgetting"}]])
def test_search_without_workers_scores_the_probes_and_records_forgetting(tmp_path: Path, capsys, objectives):
    """issue 20: `search --workers 0` loads the forgetting sets itself, as a worker does."""
    raw = _raw(tmp_path, forgetting_constraint=objectives is None, n_trials=1, budget={"max_steps": 2, "eval_every": 2})
    if objectives:
        raw["search"]["objectives"] = objectives
    main(["search", "-c", str(write_config(tmp_path, raw)), "--workers", "0"])
    err = capsys.readouterr().err
    assert "forgetting probes (rows the gate never tests): copy base 1 on 120 probe rows" in err
    cfg = parse_config(raw, base_dir=tmp_path)
    (trial,) = optuna.load_study(study_name=study_name(cfg), storage=storage_url(cfg)).trials
    assert trial.state.name == "COMPLETE", trial.user_attrs.get("error")
    assert set(trial.user_attrs["forgetting_excess"]) == {"copy"} and "copy" in trial.user_attrs["forgetting_drop"]
    if objectives:
        assert trial.values[1] == trial.user_attrs["forgetting_drop"]["copy"]
    else:
        assert trial.constraints == {"forgetting:copy": trial.user_attrs["forgetting_excess"]["copy"]}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["selection"]["feasible"] == int(trial.user_attrs["forgetting_excess"]["copy"] <= 0)


def test_quickstart_probe_can_pass_at_its_margin():
    """Enabling the constraint on the quickstart works: its probe part can show its margin."""
    cfg = parse_config(yaml.safe_load((QUICKSTART / "hpo.yaml").read_text()), base_dir=QUICKSTART)
    rows = [json.loads(line) for line in (QUICKSTART / "forget_copy.jsonl").read_text().splitlines()]
    parts = forgetting_parts(cfg, {"copy": rows})["copy"]
    assert len(parts.probe) == cfg.search.forgetting_probe_size
    assert len(parts.probe) >= stats.noninferiority_min_n(cfg.gate.forgetting[0].margin, cfg.gate.alpha)
    assert small_set_warnings(cfg, {"copy": parts}) == []
