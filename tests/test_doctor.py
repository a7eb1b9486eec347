"""The run doctor on constructed studies: real Optuna trials with the curves a trial records, summarized the way
a run summarizes them, and diagnosed; each finding names its cause, evidence and remedy."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from hpo_action.cli import main
from hpo_action.config import GateConfig, HpoConfig, parse_config
from hpo_action.judge.gate import ForgettingInput, Paired, gate
from hpo_action.report.doctor import diagnose
from hpo_action.report.markdown import run_markdown
from hpo_action.search.optuna_backend.records import summarize
from hpo_action.search.space import trial_defaults
from hpo_action.search.summary import RunSummary

from .helpers import promoted_decision

LOG_LR = optuna.distributions.FloatDistribution(1e-8, 10.0, log=True)


def _config(space: dict[str, Any]) -> HpoConfig:
    return parse_config(
        {"model": {"name": "hpo-action/tiny-demo"}, "data": {"train": "t.jsonl"}, "search": {"space": space}}
    )


def _curve(values: list[float], every: int = 10) -> list[list[float]]:
    return [[every * (i + 1), v] for i, v in enumerate(values)]


def _trial(lr: float, train: list[float], evals: list[float] | None = None, state: str = "COMPLETE", **extra: Any):
    evals = evals if evals is not None else train
    attrs = {"curve": _curve(evals), "train_curve": _curve(train), "steps": 10 * len(train), **extra.pop("attrs", {})}
    params = {"learning_rate": lr, **extra.pop("params", {})}
    distributions = {"learning_rate": LOG_LR, **extra.pop("distributions", {})}
    finite = [v for v in evals if math.isfinite(v)]
    return optuna.trial.create_trial(
        state=getattr(optuna.trial.TrialState, state),
        value=finite[-1] if state == "COMPLETE" else None,
        params=params,
        distributions=distributions,
        intermediate_values={10 * (i + 1): v for i, v in enumerate(finite)},
        user_attrs=attrs,
    )


def _summary(cfg: HpoConfig, trials: list[optuna.trial.FrozenTrial]) -> RunSummary:
    study = optuna.create_study(direction="minimize")
    for trial in trials:
        study.add_trial(trial)
    params = {**trial_defaults(cfg), **study.best_trial.params}
    return summarize(study, cfg, "sqlite:///study.db", 12.0, None, params)


def _codes(cfg: HpoConfig, trials: list[optuna.trial.FrozenTrial], decision: Any = None) -> list[str]:
    return [finding.code for finding in diagnose(_summary(cfg, trials), cfg, decision)]


def test_too_high_learning_rate_is_named_first():
    cfg = _config({"learning_rate": {"low": 1e-4, "high": 1.0, "log": True}})
    trials = [
        _trial(1.1e-4, [5.0, 3.1, 2.0]),
        _trial(3e-4, [5.0, 3.5, 2.6]),
        _trial(0.1, [5.0, 6.5, 9.0]),
        _trial(0.3, [5.0, 7.0], state="FAIL", attrs={"error": "non-finite training loss (nan) at step 20"}),
        _trial(0.9, [5.0, 3.0, 8.0]),
    ]
    findings = diagnose(_summary(cfg, trials), cfg)
    assert findings[0].code == "lr_too_high"
    assert "3 of 5 trials" in findings[0].evidence and "LR >= 0.1" in findings[0].evidence
    assert "below 0.1" in findings[0].remedy and "max_grad_norm" in findings[0].remedy
    codes = [f.code for f in findings]
    assert "lr_too_low" not in codes and "spikes_or_nan" in codes


def test_too_low_learning_rate_is_named_first():
    cfg = _config({"learning_rate": {"low": 1e-8, "high": 1e-6, "log": True}})
    trials = [_trial(lr, [5.0, 4.995, 4.99, 4.985]) for lr in (1e-8, 5e-8, 2e-7, 9e-7)]
    codes = _codes(cfg, trials)
    assert codes[0] == "lr_too_low"
    assert "lr_too_high" not in codes and "overfitting" not in codes


def test_overfitting_is_named_first():
    cfg = _config({"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}})
    falling = [3.0, 2.0, 1.4, 0.9, 0.5]
    trials = [
        _trial(1e-3, falling, [3.0, 2.0, 1.5, 1.8, 2.1]),
        _trial(2e-3, falling, [3.0, 1.9, 1.6, 1.9, 2.3]),
        _trial(5e-4, falling, [3.0, 2.2, 1.7, 1.9, 2.0]),
    ]
    findings = diagnose(_summary(cfg, trials), cfg)
    assert findings[0].code == "overfitting"
    assert "fell to 1.5 at step 30, then rose to 2.1 at step 50" in findings[0].evidence
    assert "early_stopping_patience" in findings[0].remedy
    assert not {"lr_too_high", "lr_too_low"} & {f.code for f in findings}


def test_best_trial_at_the_edge_of_its_range_is_named_first():
    cfg = _config({"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "lora_r": {"choices": [4, 8, 16]}})
    rank = optuna.distributions.CategoricalDistribution([4, 8, 16])
    trials = [
        _trial(lr, [5.0, 3.0, end], params={"lora_r": 8}, distributions={"lora_r": rank})
        for lr, end in ((2e-4, 2.5), (1e-3, 2.0), (3e-3, 1.6), (9.5e-3, 1.2))
    ]
    findings = diagnose(_summary(cfg, trials), cfg)
    assert findings[0].code == "best_at_edge" and findings[0].title == "best trial at the high edge of learning_rate"
    assert "learning_rate.high to include about 0.03" in findings[0].remedy
    assert not {"lr_too_high", "lr_too_low", "overfitting"} & {f.code for f in findings}
    assert len([f for f in findings if f.code == "best_at_edge"]) == 1  # lora_r 8 is inside its choices


def test_out_of_memory_few_trials_and_a_first_rung_pruner():
    cfg = _config({"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "lora_r": {"choices": [4, 8, 16]}})
    rank = optuna.distributions.CategoricalDistribution([4, 8, 16])
    extra = {"params": {"lora_r": 8}, "distributions": {"lora_r": rank}}
    trials = [_trial(1e-3, [5.0, 3.0, 2.0], **extra)]
    trials += [_trial(3e-3, [5.0], state="PRUNED", attrs={"steps": 10}, **extra) for _ in range(4)]
    oom = {"error": "OOM at per-device batch 16 (gradient accumulation 1)"}
    trials.append(_trial(2e-3, [], state="FAIL", attrs=oom, **extra))
    findings = {f.code: f for f in diagnose(_summary(cfg, trials), cfg)}
    assert (
        "batch 16" in findings["out_of_memory"].evidence
        and "gradient_checkpointing" in findings["out_of_memory"].remedy
    )
    assert "4 of 5 finished trials were pruned, every one at step 10" in findings["pruned_at_first_rung"].evidence
    assert "5 finished trials for 2 searched parameters" in findings["too_few_trials"].evidence
    assert "at least 10" in findings["too_few_trials"].remedy


def test_a_test_set_too_small_for_the_target_effect_gives_the_n_needed():
    cfg = _config({"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}})
    outcomes = [(True, True)] * 14 + [(True, False)] * 4 + [(False, True)] * 2  # 20 examples, 6 disagreements
    paired = Paired("exact_match", [float(c) for c, _ in outcomes], [float(r) for _, r in outcomes], True)
    decision = gate(paired, [], GateConfig(target_effect=0.05, resamples=1000))
    assert decision.decision == "inconclusive"
    trials = [_trial(lr, [5.0, 3.0, 2.0 + lr]) for lr in (5e-4, 1e-3, 2e-3, 3e-3, 4e-3)]
    (finding,) = [f for f in diagnose(_summary(cfg, trials), cfg, decision) if f.code == "test_too_small"]
    assert f"about {decision.primary.needed_n} test examples are needed" in finding.remedy
    assert decision.primary.needed_n > 20 and "n = 20 test examples" in finding.evidence


def test_a_healthy_study_has_no_findings_and_markdown_shows_the_top_ones(tmp_path: Path):
    cfg = _config({"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}})
    trials = [
        _trial(lr, [5.0, 3.0, end]) for lr, end in ((3e-4, 2.2), (1e-3, 1.6), (2e-3, 1.9), (4e-3, 2.1), (6e-3, 2.4))
    ]
    summary = _summary(cfg, trials)
    assert diagnose(summary, cfg) == []
    low = _config({"learning_rate": {"low": 1e-8, "high": 1e-6, "log": True}})
    stalled = _summary(low, [_trial(lr, [5.0, 4.995, 4.99]) for lr in (1e-8, 1e-7)])  # a slow, steady descent
    text = run_markdown(stalled, None, findings=diagnose(stalled, low))
    assert "**Doctor**" in text and "loss not decreasing: learning rate too low" in text


def test_doctor_command_reads_a_run_folder_and_prints_json(tmp_path: Path, capsys):
    cfg = _config({"learning_rate": {"low": 1e-8, "high": 1e-6, "log": True}})
    _summary(cfg, [_trial(lr, [5.0, 4.99, 4.985]) for lr in (1e-8, 3e-8, 1e-7)]).write(tmp_path / "summary.json")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump()))
    main(["doctor", str(tmp_path), "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed[0]["code"] == "lr_too_low" and printed[0]["severity"] == "high"
    assert {"title", "evidence", "remedy"} <= set(printed[0])
    main(["doctor", str(tmp_path)])
    assert "[high] loss not decreasing: learning rate too low" in capsys.readouterr().out


def test_doctor_on_a_folder_without_a_run_exits_2(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["doctor", str(tmp_path)])
    assert exit_info.value.code == 2 and "no summary.json" in capsys.readouterr().err


def test_kfold_curves_restarting_at_each_fold_are_not_spikes():
    cfg = _config({"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}})
    cfg = parse_config({**cfg.model_dump(), "data": {"train": "t.jsonl", "validation_strategy": "kfold", "k": 3}})
    cfg.search.budget.max_steps, cfg.search.budget.eval_every = 30, 10
    folds = [5.0, 3.0, 2.0] * 3  # every fold starts again from a fresh adapter: 2.0 -> 5.0 is no spike
    trials = [_trial(lr, folds, [(4.0 + v) / 2 for v in folds]) for lr in (5e-4, 1e-3, 2e-3, 3e-3, 4e-3)]
    assert diagnose(_summary(cfg, trials), cfg) == []


def test_a_loss_that_levelled_off_by_its_first_log_is_not_a_too_low_learning_rate():
    cfg = _config({"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}})
    levelled = [0.30, 0.291, 0.289, 0.288]  # learned inside the first logging interval, then flat
    trials = [_trial(lr, levelled) for lr in (2e-4, 5e-4)]
    trials += [_trial(lr, [0.31, 0.29, 0.287, 0.286]) for lr in (2e-3, 4e-3, 8e-3)]
    assert "lr_too_low" not in _codes(cfg, trials)
    assert "lr_too_low" not in _codes(cfg, [_trial(lr, levelled) for lr in (2e-4, 5e-4, 2e-3)])  # every trial
    # The same small drop stays a finding where another trial shows a much lower loss was there to reach.
    stuck = [_trial(lr, [2.0, 1.99, 1.98, 1.975]) for lr in (1.1e-4, 1.5e-4)]
    findings = {f.code: f for f in diagnose(_summary(cfg, stuck + trials), cfg)}
    assert "in 2 of 7 trials, all at LR <= 0.00015," in findings["lr_too_low"].evidence


def test_noise_on_a_small_loss_is_no_spike_and_a_real_jump_is():
    cfg = _config({"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}})
    noisy = [2.0, 0.6, 0.1, 0.03, 0.05, 0.035]  # 0.03 -> 0.05 late in the run: batch noise
    trials = [_trial(lr, noisy) for lr in (3e-4, 1e-3, 3e-3, 6e-3)]
    codes = _codes(cfg, trials)
    assert not {"spikes_or_nan", "lr_too_high"} & set(codes), codes
    wobbly = [_trial(lr, [0.30, 0.29, 0.31]) for lr in (3e-4, 1e-3, 3e-3)]  # ends 0.01 above its start: noise
    assert not {"spikes_or_nan", "lr_too_high"} & set(_codes(cfg, wobbly))
    rose = _trial(6e-3, [0.30, 0.29, 0.45])  # 0.15 above its start: the loss went the wrong way
    assert "lr_too_high" in _codes(cfg, [*wobbly, rose])
    spiked = _trial(9e-3, [2.0, 0.6, 0.1, 0.9, 0.2, 0.1])  # 0.1 -> 0.9: a spike on any scale
    findings = {f.code: f for f in diagnose(_summary(cfg, [*trials, spiked]), cfg)}
    assert "0.1 -> 0.9 at step 40" in findings["spikes_or_nan"].evidence


def test_a_study_whose_trials_were_all_pruned_at_different_rungs_is_a_finding():
    cfg = _config({"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}})
    cfg.search.budget.max_steps = 60
    trials = [
        _trial(lr, curve, state="PRUNED", attrs={"steps": 10 * len(curve)})
        for lr, curve in ((3e-4, [5.0]), (1e-3, [5.0, 3.0]), (3e-3, [5.0, 3.1, 2.5]), (6e-3, [5.0, 3.3]))
    ]
    summary = _summary_without_best(cfg, trials)
    (finding,) = [f for f in diagnose(summary, cfg) if f.code == "pruned_everything"]
    assert finding.severity == 3 and "4 of 4 trials were pruned (at steps 10, 20, 30 of 60)" in finding.evidence
    assert "search.pruner: none" in finding.remedy
    assert "pruned_at_first_rung" not in _codes_of(summary, cfg)


def _summary_without_best(cfg: HpoConfig, trials: list[optuna.trial.FrozenTrial]) -> RunSummary:
    study = optuna.create_study(direction="minimize")
    for trial in trials:
        study.add_trial(trial)
    return summarize(study, cfg, "sqlite:///study.db", 12.0, None, trial_defaults(cfg))


def _codes_of(summary: RunSummary, cfg: HpoConfig) -> list[str]:
    return [finding.code for finding in diagnose(summary, cfg)]


def _forgot_copy(cfg: HpoConfig) -> Any:
    """A real gate decision that rejects: the primary metric improved, but `copy` fell from 1.0 to 0.6 of 200."""
    table = [(True, True)] * 95 + [(True, False)] * 85 + [(False, True)] * 5 + [(False, False)] * 15
    primary = Paired("exact_match", [float(c) for c, _ in table], [float(r) for _, r in table], True)
    lost = Paired("exact_match", [1.0] * 120 + [0.0] * 80, [1.0] * 200, True)
    decision = gate(primary, [ForgettingInput("copy", lost, 0.05)], cfg.gate.model_copy(update={"resamples": 1000}))
    assert decision.decision == "reject" and decision.forgetting[0].status == "failed"
    return decision


def test_forgetting_that_blocks_promotion_names_the_remedies_with_numbers():
    raw = {
        "model": {"name": "hpo-action/tiny-demo"},
        "data": {"train": "t.jsonl"},
        "search": {"space": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}},
        "train": {"lora_r": 16},
        "gate": {
            "forgetting": [{"name": "copy", "data": "forget_copy.jsonl", "metric": "exact_match", "margin": 0.05}]
        },
    }
    cfg = parse_config(raw)
    trials = [_trial(lr, [5.0, 3.0, end]) for lr, end in ((6e-4, 2.2), (1.2e-3, 1.6), (2.4e-3, 1.9))]
    (finding,) = [f for f in diagnose(_summary(cfg, trials), cfg, _forgot_copy(cfg)) if f.code.startswith("forget")]
    assert finding.code == "forgetting_blocks_promotion" and finding.severity == 3
    assert "copy: exact_match 1 (base) -> 0.6, change -0.4" in finding.evidence
    assert "margin -0.05): failed" in finding.evidence
    assert "data.replay: [" in finding.remedy and "forget_copy.jsonl" in finding.remedy
    assert "search.space.kl_to_base {low: 0.1, high: 3, log: true}" in finding.remedy  # config/remedies.py's range
    assert "replay_ratio is then searched over {low: 0.05, high: 0.5} by default" in finding.remedy
    assert "a lower learning rate than the finalist's 0.0012 (about 0.0004)" in finding.remedy
    assert "a smaller rank than 16 (about 8)" in finding.remedy and "forgetting_constraint: true" in finding.remedy

    raw["data"]["replay"] = ["replay_copy.jsonl"]
    raw["train"].update(replay_ratio=0.3, kl_to_base=0.5)
    raw["search"]["forgetting_constraint"] = True
    cfg = parse_config(raw)
    (finding,) = [f for f in diagnose(_summary(cfg, trials), cfg, _forgot_copy(cfg)) if f.code.startswith("forget")]
    assert "replay_ratio up to 0.6 (the finalist used 0.3)" in finding.remedy
    assert "kl_to_base: up to 1 (the finalist used 0.5)" in finding.remedy
    assert "data.replay: [" not in finding.remedy and "forgetting_constraint" not in finding.remedy

    raw["search"]["space"].update(replay_ratio=0.0, kl_to_base=0.0)  # replay rows given, remedies fixed off
    cfg = parse_config(raw)
    (finding,) = [f for f in diagnose(_summary(cfg, trials), cfg, _forgot_copy(cfg)) if f.code.startswith("forget")]
    assert "use the replay data: search.space.replay_ratio {low: 0.05, high: 0.5} (the finalist had none)" in (
        finding.remedy
    )


def test_a_promoted_run_has_no_forgetting_finding():
    cfg = _config({"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}})
    trials = [_trial(lr, [5.0, 3.0, end]) for lr, end in ((6e-4, 2.2), (1.2e-3, 1.6), (2.4e-3, 1.9))]
    assert "forgetting_blocks_promotion" not in _codes(cfg, trials, promoted_decision())


def _copy_config(**search: Any) -> HpoConfig:
    copy = {"name": "copy", "data": "forget_copy.jsonl", "metric": "exact_match", "margin": 0.05}
    return parse_config(
        {
            "model": {"name": "hpo-action/tiny-demo"},
            "data": {"train": "t.jsonl", "replay": ["replay_copy.jsonl"]},
            "search": {"space": {"learning_rate": {"low": 1e-3, "high": 1e-1, "log": True}}, **search},
            "train": {"lora_r": 16, "replay_ratio": 0.4, "kl_to_base": 0.5},
            "gate": {"forgetting": [copy]},
        }
    )


def _copy_probed_summary(cfg, trials: list[tuple[float, float, float, float]]):
    """A finished multi-objective study of (learning rate, loss, copy probe drop, its excess over the margin)."""
    study = optuna.create_study(directions=["minimize", "minimize"])
    for lr, loss, drop, excess in trials:
        attrs = {"curve": _curve([4.0, loss]), "train_curve": _curve([3.6, loss - 0.5]), "steps": 20}
        attrs |= {"forgetting_excess": {"copy": excess}, "forgetting_drop": {"copy": drop}}
        study.add_trial(
            optuna.trial.create_trial(
                values=[loss, drop],
                params={"learning_rate": lr},
                distributions={"learning_rate": LOG_LR},
                user_attrs=attrs,
            )
        )
    return summarize(study, cfg, "sqlite:///study.db", 12.0, None, trial_defaults(cfg))


def test_a_multi_objective_study_where_every_trial_forgot_names_the_remedies():
    cfg = _copy_config(objectives=[{"metric": "eval_loss"}, {"metric": "forgetting"}])
    trials = [
        (lr, loss, drop, drop - 0.05) for lr, loss, drop in ((1e-2, 3.3, 0.30), (1.1e-2, 3.1, 0.25), (2e-2, 2.9, 0.6))
    ]
    summary = _copy_probed_summary(cfg, trials)
    assert summary.best is None and summary.multi_objective
    findings = diagnose(summary, cfg)
    assert findings[0].code == "no_trial_within_margin" and findings[0].severity == 3
    assert "the one that forgot least, #1: copy dropped 0.25 (margin 0.05)" in findings[0].evidence
    assert "replay_ratio up to 0.8 (the trial that forgot least used 0.4)" in findings[0].remedy
    assert "lower learning rate than the trial that forgot least's 0.011" in findings[0].remedy
    assert "more probe rows" not in findings[0].remedy  # every drop was beyond the margin: real forgetting
    text = run_markdown(summary, None, findings=findings)
    assert "**Doctor**" in text and "every trial forgot beyond its margin" in text


def test_drops_within_the_margin_that_the_probe_could_not_show_ask_for_more_probe_rows_first():
    """Issue 22 item 4's pilot: every trial infeasible while the least-forgetting one dropped under the margin; the
    probe's size, not forgetting, held it back, so the first remedy is more probe rows."""
    cfg = _copy_config(objectives=[{"metric": "eval_loss"}, {"metric": "forgetting"}])
    summary = _copy_probed_summary(cfg, [(1e-2, 3.3, 0.30, 0.3), (1.1e-2, 3.1, 0.03, 0.02)])
    (finding,) = [f for f in diagnose(summary, cfg) if f.code == "no_trial_within_margin"]
    assert finding.remedy.startswith("more probe rows: search.forgetting_probe_size above 30% of each set")
    assert "copy dropped 0.03 < margin 0.05" in finding.remedy


@pytest.mark.slow
def test_a_multi_objective_run_without_a_finalist_gates_the_closest_trial_and_prints_the_doctor(tmp_path: Path):
    """Issue 22: no trial within the margins ends in a gate decision on the closest trial, not an error."""
    from rich.console import Console

    from hpo_action.pipeline import run

    from .helpers import small_config

    raw = small_config(tmp_path, train={"learning_rate": 0.05, "lora_r": 16})
    raw["search"].update(
        objectives=[{"metric": "eval_loss"}, {"metric": "forgetting"}], forgetting_probe_size=32, n_trials=1
    )
    raw["search"]["space"] = {"lora_r": {"choices": [16]}}
    raw["gate"]["forgetting"][0]["margin"] = 0.01
    console = Console(record=True, width=200)
    decision = run(parse_config(raw, base_dir=tmp_path), console=console)
    assert decision.decision in ("reject", "inconclusive")
    assert decision.reasons[0].startswith("no trial was feasible at search")
    report = (tmp_path / "out" / "report.md").read_text()
    assert "every trial forgot beyond its margin" in report and "replay the skill: data.replay" in report
