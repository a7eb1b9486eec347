"""The one orchestrator: one function per CLI command, composing the stages; the CLI only parses and prints."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from hpo_action import drills
from hpo_action.config import GateConfig, HpoConfig, apply_overrides, load_config
from hpo_action.config.edit import set_values
from hpo_action.data.loading import Splits, load_splits, rows_fingerprint
from hpo_action.data.tokenize import tokenize_for_study, tokenize_replay
from hpo_action.errors import ConfigError, HpoActionError
from hpo_action.files import write_text_atomic
from hpo_action.judge.decision import GateDecision
from hpo_action.judge.decoding import DecodingSearch, search_decoding
from hpo_action.judge.evaluate import EvalSettings, attach_trained, evaluate
from hpo_action.judge.forgetting_split import forgetting_parts, small_set_warnings
from hpo_action.judge.gate_files import ForgettingFiles, gate_prediction_files
from hpo_action.judge.generation import write_generation_config
from hpo_action.judge.sequence import at_level, per_gate
from hpo_action.judge.stage import StageHooks, evaluate_stage, finalist_adapter
from hpo_action.layout import RunLayout
from hpo_action.preflight import Checked, check_run_inputs
from hpo_action.report import github
from hpo_action.report.doctor import Finding, diagnose
from hpo_action.report.lr_find_plot import write_lr_find_plot
from hpo_action.report.markdown import TOP_FINDINGS, run_markdown
from hpo_action.report.stage import print_findings, report_stage, section
from hpo_action.report.tables import decoding_table, to_rich, verdict
from hpo_action.report.terminal import StudyProgress, make_console, show_search
from hpo_action.search import lr_window
from hpo_action.search.backend import SearchHooks, SearchRequest, SearchResult
from hpo_action.search.outputs import check_writable
from hpo_action.search.space import trial_defaults
from hpo_action.search.stage import search_stage
from hpo_action.search.summary import RunSummary
from hpo_action.session import banner, quiet_libraries, trial_runner
from hpo_action.ship.manifest import record_run_manifest
from hpo_action.ship.publish import record_gated_champion
from hpo_action.ship.registry import open_registry
from hpo_action.ship.registry.ledger import finish_gate, start_gate
from hpo_action.ship.stage import gate_reference, publish_stage, registry_line, trusted_champion
from hpo_action.train.batch_planner import BatchPlan, plan_batch
from hpo_action.train.lr_find import LrFindResult, lr_range_test
from hpo_action.train.models import adapter_sha256, check_method, load_base_model, load_tokenizer
from hpo_action.train.runner import Runner

Sets = dict[str, list[dict[str, Any]]]


def search(cfg: HpoConfig, extra_trials: int | None = None, console: Console | None = None) -> RunSummary:
    """Run (or resume) the study and write trials.csv, best/, summary.json and the plots."""
    checked = check_run_inputs(cfg, gating=False)
    console = console or make_console(stderr=True)
    _warn_small_forgetting_sets(cfg, checked.forgetting_sets, console)
    return _search(cfg, checked, console, extra_trials).summary


def run(
    cfg: HpoConfig,
    extra_trials: int | None = None,
    champion_predictions: Path | None = None,
    console: Console | None = None,
    comment_pr: bool = False,
    allow_partial: bool = False,
    allow_unsigned_champion: bool = False,
) -> GateDecision:
    """The whole job: study, evaluate the best trial once on the test split, gate it against the champion
    (or the base model), publish it to the registry when it is promoted, and report (report.md; in GitHub
    Actions also the step outputs, the job summary and, with `comment_pr`, the PR comment). `extra_trials=0` is
    the leader after search workers: it refuses a study that is not complete unless `allow_partial`. The
    champion's signature and files are verified before anything is trained (`allow_unsigned_champion` accepts
    one published before signing)."""
    console = console or make_console(stderr=True)
    checked = check_run_inputs(cfg, champion_predictions)  # nothing is written before this passes
    _warn(checked.splits.warnings, console)
    _warn_small_forgetting_sets(cfg, checked.forgetting_sets, console)
    registry = open_registry(cfg.registry.uri, cfg.registry) if cfg.registry.uri else None
    champion = registry.read_champion() if registry else None  # the revision the gate reads: the swap's base
    trusted = trusted_champion(cfg, registry, champion, allow_unsigned_champion, console)
    searched = _search(cfg, checked, console, extra_trials, allow_partial)
    if searched.summary.best is None:  # nothing to gate: the doctor's findings say why, before the error does
        print_findings(diagnose(searched.summary, cfg)[:TOP_FINDINGS], console)
    drills.at("after-best")
    level = start_gate(registry, cfg.gate, registry.name) if registry else per_gate(cfg.gate.alpha)
    console.print(level.line())
    gated = cfg.model_copy(update={"gate": at_level(cfg.gate, level.level)})
    finalist_adapter(cfg, searched.summary)  # nothing to evaluate: say so before the champion is looked at
    reference = gate_reference(cfg, champion, champion_predictions, checked.splits.test or [], console)
    hooks = StageHooks(lambda title: section(title, console), lambda found: _show_decoding(found, console))
    decision = evaluate_stage(gated, searched, checked.splits, checked.forgetting_sets, reference, console, hooks)
    decision = replace(decision, config=replace(decision.config, sequence=level.to_json()))
    layout = RunLayout(Path(cfg.output.dir))
    decision.write(layout.gate)
    if registry is not None:
        finish_gate(registry, level, decision.decision)
    record_run_manifest(layout, trusted)  # every file publish will ship, gate.json included
    drills.at("after-gate")
    record_gated_champion(layout, champion)
    make_console().print(verdict(decision))
    findings = diagnose(searched.summary, cfg, decision)
    print_findings(findings[:TOP_FINDINGS], console)
    published = publish_stage(cfg, registry, decision, console)
    shown = published.champion if published else champion
    served = (shown.version, registry.url(shown)) if registry is not None and shown is not None else None
    published_path = published.champion.path if published and published.champion else None
    line = registry_line(registry, published, champion)
    report_stage(layout, searched.summary, decision, findings, line, served, published_path, comment_pr)
    console.print(f"gate.json and report.md in {layout.root}")
    return decision


def tune_decoding(cfg: HpoConfig, adapter: Path, n_trials: int | None = None) -> DecodingSearch:
    """`hpo-action tune-decoding`: the decoding search alone, on a trained adapter; generation_config.json is
    written beside it, so every later evaluation of it (and its publication) uses the chosen settings."""
    adapter_sha256(adapter)  # not an adapter: fail before the model loads
    splits = load_splits(cfg.data)
    if n_trials is not None:
        cfg = apply_overrides(cfg, {"evaluate.decoding_trials": n_trials})
    quiet_libraries()
    console = make_console(stderr=True)
    base = load_base_model(cfg.model)
    model, _ = attach_trained(base, adapter)
    result = search_decoding(model, base.tokenizer, splits.validation, cfg)
    path = write_generation_config(adapter, result.best.decoding, base.model.generation_config.to_dict())
    make_console().print(to_rich(decoding_table(result)))
    console.print(result.verdict())
    console.print(f"wrote {path}")
    return result


def _show_decoding(result: DecodingSearch, console: Console) -> None:
    console.print(to_rich(decoding_table(result)))
    console.print(result.verdict())


def report(run_dir: Path, out: Path | None = None) -> Path:
    """Write a finished run's report.md (or `out`) from its summary.json and gate.json, anywhere."""
    layout = RunLayout(Path(run_dir))
    summary, cfg, decision = _finished_run(layout)
    plots = sorted(path.name for path in layout.plots_dir.glob("*.png"))
    target = out or layout.report
    findings = diagnose(summary, cfg, decision) if cfg is not None else []
    write_text_atomic(target, run_markdown(summary, decision, None, plots, findings))
    return target


def doctor(run_dir: Path) -> list[Finding]:
    """Read a finished run (summary.json with the trial curves, config.yaml, gate.json) and diagnose it."""
    layout = RunLayout(Path(run_dir))
    summary, cfg, decision = _finished_run(layout)
    if cfg is None:
        raise ConfigError(f"{layout.root}: no config.yaml here (the run's resolved config); run it again to write it")
    return diagnose(summary, cfg, decision)


def _finished_run(layout: RunLayout) -> tuple[RunSummary, HpoConfig | None, GateDecision | None]:
    if not layout.summary.is_file():
        raise ConfigError(f"{layout.root}: no summary.json here; pass a run's output folder")
    cfg = load_config(layout.run_config) if layout.run_config.is_file() else None
    decision = GateDecision.read(layout.gate) if layout.gate.is_file() else None
    return RunSummary.read(layout.summary), cfg, decision


def _warn_small_forgetting_sets(cfg: HpoConfig, sets: Sets, console: Console) -> None:
    """Forgetting sets whose gate part cannot show the margin, or whose probe part no trial can pass."""
    _warn(small_set_warnings(cfg, forgetting_parts(cfg, sets)), console)


def _warn(warnings: Sequence[str], console: Console) -> None:
    """Print each warning, and in GitHub Actions also as an annotation on the run."""
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
        if github.actions_env() is not None:
            github.warning("hpo-action", warning, console.file)


def _search(
    cfg: HpoConfig, checked: Checked, console: Console, extra_trials: int | None = None, allow_partial: bool = False
) -> SearchResult:
    """The search stage behind search.backend, then its plots and closing tables."""
    layout = RunLayout(Path(cfg.output.dir))
    quiet_libraries()
    hooks = SearchHooks(
        make_runner=trial_runner,
        find_lr=lambda lr_cfg, runner: (
            _find_lr(lr_cfg, checked.splits, runner, layout, console, lr_window.AUTO_STEPS).suggestion
        ),
        prepare_workers=lambda workers_cfg: _prepare_for_workers(workers_cfg, checked.splits, layout, console),
        progress=lambda target, already: StudyProgress(console, total=target, already=already),
        section=lambda title: section(title, console),
    )
    request = SearchRequest(cfg, checked.splits, checked.forgetting_sets, console, hooks, extra_trials, allow_partial)
    result = search_stage(request)
    _warn(result.notices, console)  # e.g. the stopping rule's message (search/stopping.py)
    show_search(result, layout, console)
    return result


def lr_find(
    cfg: HpoConfig, steps: int = 100, start: float = 1e-6, end: float = 1.0, console: Console | None = None
) -> LrFindResult:
    """The learning-rate range test on the train defaults; writes lr_find/lr_find.json and lr_find.png."""
    console = console or make_console(stderr=True)
    layout = RunLayout(Path(cfg.output.dir))
    splits = load_splits(cfg.data)
    check_writable(layout.root)
    quiet_libraries()
    return _find_lr(cfg, splits, None, layout, console, steps, start, end)


def _find_lr(
    cfg: HpoConfig,
    splits: Splits,
    runner: Runner | None,
    layout: RunLayout,
    console: Console,
    steps: int = 100,
    start: float = 1e-6,
    end: float = 1.0,
) -> LrFindResult:
    """Run the range test (loading the base model here when worker processes run the trials)."""
    runner = runner or trial_runner(cfg, splits, None, console)
    result = lr_range_test(runner, trial_defaults(cfg), start, end, steps)
    layout.lr_find_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(layout.lr_find_dir / "lr_find.json", json.dumps(result.to_json(), indent=2) + "\n")
    spec = cfg.search.space.get("learning_rate")
    narrowed = lr_window.window(result.suggestion, spec.low, spec.high) if spec and spec.type == "float" else None
    write_lr_find_plot(result, narrowed, layout.lr_find_dir / "lr_find.png")
    console.print(
        f"lr-find: suggested learning rate {result.suggestion:.3g} (loss minimum at {result.minimum:.3g}; "
        f"{result.steps} steps, {result.seconds:.1f} s); plot in {layout.lr_find_dir / 'lr_find.png'}"
    )
    return result


def _prepare_for_workers(cfg: HpoConfig, splits: Splits, layout: RunLayout, console: Console) -> None:
    """What a worker would fail on fails here, before the study exists; the workers reuse the token cache."""
    check_method(cfg.model)
    tokenizer = load_tokenizer(cfg.model)
    tokenize_replay(splits.replay, tokenizer, cfg.data, layout.cache_dir)
    folds, cache_hit = tokenize_for_study(splits, tokenizer, cfg.data, layout.cache_dir)
    train, validation = folds[-1]
    workers = f"{cfg.search.workers} worker process(es), logs in {layout.workers_dir}"
    console.print(banner(cfg, cfg.model.method, len(train), len(validation), cache_hit) + f" · {workers}")


def gate_files(
    candidate: Path,
    reference: Path,
    cfg: GateConfig,
    metric: str | None = None,
    forgetting: list[ForgettingFiles] = (),
    out: Path | None = None,
    console: Console | None = None,
) -> GateDecision:
    """Gate two prediction files (and forgetting pairs) from anywhere (judge/gate_files.py says how the metric is
    chosen); write gate.json and print the verdict."""
    decision = gate_prediction_files(candidate, reference, cfg, metric, forgetting)
    if out is not None:
        decision.write(out)
    (console or make_console()).print(verdict(decision))
    return decision


def evaluate_split(cfg: HpoConfig, adapter: Path | None, split: str, out: Path) -> list[dict[str, Any]]:
    """Score the base model (or base + adapter) once, per example, on one split; write predictions + meta."""
    splits = load_splits(cfg.data)
    rows = {"test": splits.test, "validation": splits.validation, "train": splits.train}[split]
    if rows is None:
        raise ConfigError(f"data.{split}: no {split} split is configured")
    quiet_libraries()
    settings = EvalSettings.from_config(cfg.evaluate)
    records = evaluate(cfg.model, cfg.data, rows, settings, adapter, out, rows_fingerprint(rows))
    make_console(stderr=True).print(f"{len(records)} predictions in {out}")
    return records


def plan(cfg: HpoConfig, config_path: Path | None = None, limit: int = 256) -> BatchPlan:
    """`hpo-action plan`: measure the largest micro-batch that fits on this machine's CUDA device and propose the
    micro-batch x accumulation pair for the configured effective batch; with `config_path`, write it there."""
    import torch

    if not torch.cuda.is_available():
        raise HpoActionError(
            "plan: the batch planner measures GPU memory and plans for CUDA only; this machine has no CUDA device "
            "(on a CPU, memory is rarely the limit: keep train.per_device_train_batch_size as configured)"
        )
    quiet_libraries()
    base = load_base_model(cfg.model)
    found = plan_batch(cfg, base, trial_defaults(cfg), limit)
    make_console().print(found.describe())
    if config_path is not None and found.largest:
        changes = {
            "train.per_device_train_batch_size": (str(found.micro), None),
            "train.gradient_accumulation_steps": (str(found.accumulation), None),
        }
        write_text_atomic(config_path, set_values(config_path.read_text(encoding="utf-8"), changes))
        make_console(stderr=True).print(f"wrote the pair into {config_path}")
    return found
