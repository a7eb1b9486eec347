"""Error control across a registry's successive gates (`gate.sequence`): the level rule, the ledger each registry
keeps (counted before the decision, under its lock), what gate.json and the verdict say, and a reduced run of
benchmarks/gate_sequence.py."""

from __future__ import annotations

import json
import math
import multiprocessing
import sys
from pathlib import Path

import pytest

from hpo_action.cli import main
from hpo_action.config import GateConfig
from hpo_action.errors import ConfigError, GateError
from hpo_action.judge.sequence import Ledger, at_level, per_gate, spending_weight
from hpo_action.ship.registry import LocalRegistry
from hpo_action.ship.registry.ledger import check_counted, finish_gate, start_gate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gate_sequence as benchmark

ALPHA = 0.05


def test_spending_weights_sum_to_one():
    partial = sum(spending_weight(k) for k in range(1, 100_001))
    assert partial == pytest.approx(1 - 6 / (math.pi**2 * 100_000), abs=1e-7)
    with pytest.raises(ValueError):
        spending_weight(0)


def test_levels_of_each_procedure():
    fixed, spending, online = (Ledger(p, ALPHA) for p in ("fixed", "alpha-spending", "online"))
    for k in range(1, 6):
        assert fixed.next_level() == ALPHA
        assert spending.next_level() == pytest.approx(ALPHA * 6 / (math.pi**2 * k**2))
        fixed = fixed.started()[0].finished(k, "promote")
        spending = spending.started()[0].finished(k, "promote")
    # online fallback: a promotion passes its whole level to the next gate; a rejection passes nothing
    first = online.next_level()
    online = online.started()[0].finished(1, "promote")
    assert online.next_level() == pytest.approx(first + ALPHA * spending_weight(2))
    online = online.started()[0].finished(2, "reject")
    assert online.next_level() == pytest.approx(ALPHA * spending_weight(3))
    assert online.spent() == pytest.approx(first + ALPHA * spending_weight(2))  # gate 1's level went on to gate 2


def test_online_fdr_is_lord_plus_plus():
    """LORD++ with W0 = alpha/2: after promotions at gates 1 and 3, gate 5 gets
    W0·γ5 + (alpha − W0)·γ4 + alpha·γ2 (Ramdas et al. 2017, eq. for LORD++)."""
    ledger = Ledger("online-fdr", ALPHA)
    assert ledger.next_level() == pytest.approx(ALPHA / 2 * spending_weight(1))
    for k, outcome in enumerate(("promote", "reject", "promote", "inconclusive"), start=1):
        ledger = ledger.started()[0].finished(k, outcome)
    expected = ALPHA / 2 * spending_weight(5) + ALPHA / 2 * spending_weight(4) + ALPHA * spending_weight(2)
    assert ledger.next_level() == pytest.approx(expected)


def test_a_gate_that_never_reported_spent_its_level_and_passes_nothing_on():
    ledger, entry = Ledger("online", ALPHA).started()  # crashed: no outcome written
    assert ledger.next_level() == pytest.approx(ALPHA * spending_weight(2))
    assert ledger.spent() == pytest.approx(entry.level)
    with pytest.raises(ValueError):
        ledger.finished(2, "promote")


def test_a_small_level_gets_the_resamples_to_reach_it():
    cfg = GateConfig(resamples=999)
    tight = at_level(cfg, ALPHA * spending_weight(20))  # 7.6e-5
    assert tight.alpha == pytest.approx(ALPHA * spending_weight(20))
    assert (tight.resamples + 1) * tight.alpha >= 10 > (tight.resamples - 1) * tight.alpha
    assert at_level(cfg, ALPHA).resamples == 999  # never fewer than configured


def test_local_registry_counts_gates_before_their_outcome(tmp_path: Path):
    registry = LocalRegistry(tmp_path / "reg")
    cfg = GateConfig(sequence="alpha-spending")
    first = start_gate(registry, cfg, "reg")
    second = start_gate(registry, cfg, "reg")  # the first never finished (a crash): its budget stays spent
    assert (first.k, second.k) == (1, 2)
    assert second.level == pytest.approx(ALPHA * spending_weight(2))
    assert second.spent_before == pytest.approx(first.level)
    finish_gate(registry, second, "reject")
    stored = json.loads((tmp_path / "reg" / "gates.json").read_text())
    assert [(g["k"], g["outcome"]) for g in stored["gates"]] == [(1, "started"), (2, "reject")]
    assert "whole life" in second.line() and "α_2" in second.line()


def test_a_registry_keeps_its_procedure_and_alpha(tmp_path: Path):
    registry = LocalRegistry(tmp_path / "reg")
    start_gate(registry, GateConfig(sequence="online"), "reg")
    for other in (GateConfig(sequence="fixed"), GateConfig(sequence="online", alpha=0.1)):
        with pytest.raises(ConfigError, match=r"gate.sequence/gate.alpha: reg has run 1 gates under online"):
            start_gate(registry, other, "reg")
    assert len(json.loads((tmp_path / "reg" / "gates.json").read_text())["gates"]) == 1  # nothing half-written


def test_publish_refuses_a_promotion_the_ledger_never_counted(tmp_path: Path):
    registry = LocalRegistry(tmp_path / "reg")
    counted = start_gate(registry, GateConfig(), "reg")
    finish_gate(registry, counted, "promote")
    check_counted(registry, counted.to_json(), "gate.json")
    assert counted.ledger_id and counted.to_json()["ledger_id"] == counted.ledger_id  # gate.json records it
    elsewhere = per_gate(ALPHA).to_json()  # gated on files, or by a run without this registry
    forged = {**counted.to_json(), "level": ALPHA}  # counted as gate 1 but tested at alpha, not alpha_1
    other = LocalRegistry(tmp_path / "other" / "reg")  # another registry of the same name, with its own ledger
    twin = start_gate(other, GateConfig(), "reg")
    finish_gate(other, twin, "promote")
    for recorded in (
        None,
        elsewhere,
        forged,
        {**counted.to_json(), "registry": "other", "ledger_id": None},
        twin.to_json(),
    ):
        with pytest.raises(GateError, match=r"gate.json: this gate \(against .*\) is not in reg's gate ledger"):
            check_counted(registry, recorded, "gate.json")
    rejected = start_gate(registry, GateConfig(), "reg")
    finish_gate(registry, rejected, "reject")
    with pytest.raises(GateError, match="is not in reg's gate ledger"):  # a gate.json rewritten to promote
        check_counted(registry, rejected.to_json(), "gate.json")


def test_a_fresh_registry_refuses_a_promotion_gated_elsewhere(tmp_path: Path):
    """Issue 21: a registry with no champion and no ledger took any promoted gate.json (from another registry, or
    none), so its whole-life count started after a promotion it never counted. Now it refuses, exit 2, one line."""
    gated = start_gate(LocalRegistry(tmp_path / "a"), GateConfig(), "a")
    fresh = LocalRegistry(tmp_path / "b")
    for recorded, source in ((gated.to_json(), "against a"), (per_gate(ALPHA).to_json(), "against no registry")):
        with pytest.raises(
            GateError, match=rf"gate.json: b has counted no gate, so this promotion was gated elsewhere \({source}\)"
        ) as caught:
            check_counted(fresh, recorded, "gate.json")
        assert caught.value.exit_code == 2 and "\n" not in str(caught.value)
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())  # nothing written


def _start(root: str, barrier, results) -> None:
    barrier.wait()
    results.put(start_gate(LocalRegistry(root), GateConfig(), "reg").k)


def test_concurrent_gates_get_different_numbers(tmp_path: Path):
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_start, args=(str(tmp_path / "reg"), barrier, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert sorted(results.get(timeout=5) for _ in workers) == [1, 2, 3, 4]


def test_gate_files_names_the_controlled_error(tmp_path: Path, capsys):
    rows = [(i, i % 3 != 0, i % 5 == 0) for i in range(300)]
    for name, column in (("cand", 1), ("ref", 2)):
        text = "".join(json.dumps({"id": str(r[0]), "exact_match": r[column]}) + "\n" for r in rows)
        (tmp_path / f"{name}.jsonl").write_text(text)
    out = tmp_path / "gate.json"
    main(["gate", "--candidate", str(tmp_path / "cand.jsonl"), "--champion", str(tmp_path / "ref.jsonl"),
          "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    sequence = json.loads(out.read_text())["config"]["sequence"]
    assert (sequence["procedure"], sequence["k"], sequence["level"]) == ("fixed", 1, ALPHA)
    assert "each gate on its own" in sequence["controlled_error"]
    assert "error control: gate 1, tested at level α_1 = 0.05 (fixed)" in " ".join(printed.split())


@pytest.mark.slow  # about 40 s of CPU
def test_reduced_simulation_controls_any_false_promotion_over_20_gates():
    """The benchmark at 200 lives: fixed per-gate tests promote falsely far above alpha over 20 gates of equal
    candidates; every sequential procedure stays within alpha + 2 SE; the power figures behind the default hold."""
    rows = {(r.procedure, r.measure): r for r in benchmark.simulate(lives=200, gates=20, n=1000)}
    bound = ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / 200)
    for rows_kind in ("fresh", "fixed"):
        measure = f"any false promotion in 20 gates, {rows_kind} rows"
        assert rows[("fixed", measure)].estimate > 0.25
        for procedure in ("alpha-spending", "online", "online-fdr"):
            assert rows[(procedure, measure)].estimate <= bound, (procedure, measure)

    def ratio(procedure: str, measure: str) -> float:
        return rows[(procedure, measure)].estimate / rows[("fixed", measure)].estimate

    gate_1, stream = "power at gate 1 after 0 null gates", "power, 20 real gains in a row (mean)"
    assert ratio("online", gate_1) > 0.85 and ratio("online-fdr", stream) > 0.85
    assert ratio("online", stream) > ratio("alpha-spending", stream)  # the fallback only adds to spending's levels
    assert rows[("online-fdr", "half real gains: false share of promotions")].estimate <= bound
