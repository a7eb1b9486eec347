"""The one orchestrator: one function per CLI command, composing the stages; the CLI only parses and prints."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from hpo_action import drills
from hpo_action.config import GateConfig, HpoConfig, apply_overrides, load_config
from hpo_action.config.edit import set_values
from hpo_action.data.loading import Splits, load_splits, rows_fingerprint
from hpo_action.data.tokenize import tokenize_for_study, tokenize_replay
from hpo_action.errors import ConfigError, HpoActionError, TrialError
from hpo_action.files import write_text_atomic
from hpo_action.interrupts import raise_if_pressed
from hpo_action.judge.assess import evaluate_and_gate
from hpo_action.judge.decision import GateDecision
from hpo_action.judge.decoding import DecodingSearch, search_decoding
from hpo_action.judge.evaluate import EvalSettings, attach_trained, evaluate
from hpo_action.judge.forgetting_split import forgetting_parts, small_set_warnings
from hpo_action.judge.gate import ForgettingInput, choose_metric, gate, pair
from hpo_action.judge.gate_files import ForgettingFiles, margin_for
from hpo_action.judge.generation import write_generation_config
from hpo_action.judge.predictions import read_meta, read_predictions
from hpo_action.judge.sequence import at_level, per_gate
from hpo_action.layout import RunLayout
from hpo_action.preflight import Checked, check_run_inputs
from hpo_action.redaction import redact_url
from hpo_action.report import github
from hpo_action.report.doctor import Finding, diagnose, findings_table
from hpo_action.report.lr_find_plot import write_lr_find_plot
from hpo_action.report.markdown import TOP_FINDINGS, run_markdown
from hpo_action.report.plots import write_plots
from hpo_action.report.tables import (
    best_table,
    checkpoint_line,
    decoding_table,
    pareto_table,
    to_rich,
    tradeoff_line,
    trials_table,
    verdict,
    warm_start_line,
)
from hpo_action.report.terminal import StudyProgress, make_console
from hpo_action.search import lr_bounds, reseed_finalists
from hpo_action.search.finalist import chosen_trial
from hpo_action.search.outputs import publish_best, summarize, write_trials_csv
from hpo_action.search.slots import check_complete, finished, target_trials, timeout_stop
from hpo_action.search.space import trial_defaults
from hpo_action.search.stopping import stopped
from hpo_action.search.storage import storage_url, study_name
from hpo_action.search.study import check_not_all_failed, open_study, run_trials, study_exists
from hpo_action.search.summary import RunSummary
from hpo_action.search.supervisor import WorkerPool
from hpo_action.session import banner, quiet_libraries, trial_runner
from hpo_action.ship.manifest import ChampionRef, record_run_manifest
from hpo_action.ship.publish import Publication, publish_run, record_gated_champion
from hpo_action.ship.registry import Champion, Registry, open_registry
from hpo_action.ship.registry.ledger import finish_gate, start_gate
from hpo_action.ship.verify import trust_champion
from hpo_action.train.batch_planner import BatchPlan, plan_batch
from hpo_action.train.lr_find import LrFindResult, lr_range_test
from hpo_action.train.models import BaseModel, adapter_sha256, check_method, load_base_model, load_tokenizer
from hpo_action.train.runner import Runner

Sets = dict[str, list[dict[str, Any]]]


@dataclass
class _Searched:
    """What a study left for the steps after it."""

    summary: RunSummary
    splits: Splits
    base: BaseModel | None  # the base model when this process loaded it (no worker processes)


def search(cfg: HpoConfig, extra_trials: int | None = None, console: Console | None = None) -> RunSummary:
    """Run (or resume) the study and write trials.csv, best/, summary.json and the plots."""
    checked = check_run_inputs(cfg, gating=False)
    console = console or make_console(stderr=True)
    _warn_small_forgetting_sets(cfg, checked.forgetting_sets, console)
    return _study(cfg, extra_trials, console, checked).summary


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
    trusted = _trusted(cfg, registry, champion, allow_unsigned_champion, console)
    searched = _study(cfg, extra_trials, console, checked, allow_partial)
    if searched.summary.best is None:  # nothing to gate: the doctor's findings say why, before the error does
        _print_findings(diagnose(searched.summary, cfg)[:TOP_FINDINGS], console)
    drills.at("after-best")
    level = start_gate(registry, cfg.gate, registry.name) if registry else per_gate(cfg.gate.alpha)
    console.print(level.line())
    gated = cfg.model_copy(update={"gate": at_level(cfg.gate, level.level)})
    decision = _evaluate_and_gate(gated, searched, checked.forgetting_sets, champion, champion_predictions, console)
    decision = replace(decision, config=replace(decision.config, sequence=level.to_json()))
    decision.write(RunLayout(Path(cfg.output.dir)).gate)
    if registry is not None:
        finish_gate(registry, level, decision.decision)
    layout = RunLayout(Path(cfg.output.dir))
    record_run_manifest(layout, trusted)  # every file publish will ship, gate.json included
    drills.at("after-gate")
    record_gated_champion(layout, champion)
    make_console().print(verdict(decision))
    findings = diagnose(searched.summary, cfg, decision)
    _print_findings(findings[:TOP_FINDINGS], console)
    published = _publish(cfg, registry, decision, console)
    shown = published.champion if published else champion
    registry_line = None
    if registry is not None and shown is not None:
        what = "published as the new champion" if published else "champion unchanged"
        registry_line = f"{what}: v{shown.version} at {registry.url(shown)}"
    published_path = published.champion.path if published and published.champion else None
    _report(layout, searched.summary, decision, registry_line, comment_pr, registry, shown, findings, published_path)
    console.print(f"gate.json and report.md in {layout.root}")
    return decision


def _trusted(
    cfg: HpoConfig, registry: Registry | None, champion: Champion | None, allow_unsigned: bool, console: Console
) -> ChampionRef | None:
    """Verify the champion (signature, files, attestation) before it is gated against or its predictions reused."""
    if registry is None or champion is None:
        return None
    trusted = trust_champion(registry, champion, cfg.registry.signing, allow_unsigned, os.environ)
    console.print(f"champion v{champion.version}: verified (gated files sha256 {trusted.digest})")
    return trusted


def _evaluate_and_gate(
    cfg: HpoConfig,
    searched: _Searched,
    sets: Sets,
    champion: Champion | None,
    champion_predictions: Path | None,
    console: Console,
) -> GateDecision:
    best = searched.summary.best
    if best is None:
        raise TrialError(
            "no completed trial to evaluate: all were pruned or failed, or (with search.forgetting_constraint) "
            "forgot a gate.forgetting set beyond its margin; lower the learning-rate range or add replay data"
        )
    if not best.adapter:
        raise TrialError("the best trial's weights were not kept, so there is nothing to evaluate")
    adapter = Path(cfg.output.dir) / best.adapter  # summary.json names it relative to the output folder
    test = searched.splits.test or []
    champion_dir = None
    if champion is not None and champion_predictions is None:
        settings = cfg.evaluate
        reusable = champion.reusable_for(
            rows_fingerprint(test), settings.metrics, settings.normalize, settings.max_new_tokens
        )
        champion_predictions = champion.test_predictions if reusable else None
        champion_dir = None if reusable else champion.path
        how = "reusing its stored test predictions" if reusable else "re-evaluating it (other test rows or settings)"
        console.print(f"champion v{champion.version}: {how}")
    base = searched.base or load_base_model(cfg.model)  # worker processes kept theirs; they have exited
    if cfg.evaluate.decoding_search:
        with _log_group("decoding search", console):
            _search_decoding(cfg, base, adapter, searched.splits.validation, console)
    console.print(f"evaluating trial #{best.number} on {len(test)} test examples")
    with _log_group("evaluate and gate", console):
        return evaluate_and_gate(cfg, base, searched.splits, adapter, sets, champion_predictions, champion_dir)


def _search_decoding(
    cfg: HpoConfig, base: BaseModel, adapter: Path, validation: list[dict[str, Any]], console: Console
) -> DecodingSearch:
    """Tune the adapter's generation settings on the validation split; save them beside it (and decoding.json)."""
    model, _ = attach_trained(base, adapter)
    try:
        result = search_decoding(model, base.tokenizer, validation, cfg)
    finally:
        if hasattr(model, "unload"):
            base.model = model.unload()  # the bare base again, for whatever is scored next
    write_generation_config(adapter, result.best.decoding, base.model.generation_config.to_dict())
    write_text_atomic(RunLayout(Path(cfg.output.dir)).decoding, json.dumps(result.to_json(), indent=2) + "\n")
    console.print(to_rich(decoding_table(result)))
    console.print(result.verdict())
    return result


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


def _publish(cfg: HpoConfig, registry: Registry | None, decision: GateDecision, console: Console) -> Publication | None:
    if registry is None:
        return None
    if not decision.promote:
        console.print(f"not published: the gate decided {decision.decision}")
        return None
    published = publish_run(Path(cfg.output.dir), registry.uri, cfg)
    drills.at("after-publish")
    assert published.champion is not None
    champion = published.champion
    console.print(f"published v{champion.version} to {registry.uri} (revision {champion.revision[:12]})")
    return published


def _report(
    layout: RunLayout,
    summary: RunSummary,
    decision: GateDecision,
    registry_line: str | None,
    comment_pr: bool,
    registry: Registry | None,
    champion: Champion | None,
    findings: list[Finding],
    published: Path | None = None,
) -> None:
    """report.md always; in GitHub Actions also the step outputs, the job summary and the PR comment."""
    plots = sorted(path.name for path in layout.plots_dir.glob("*.png"))
    markdown = run_markdown(summary, decision, registry_line, plots, findings)
    write_text_atomic(layout.report, markdown)
    env = github.actions_env()
    if env is None:
        return
    url = registry.url(champion) if registry is not None and champion is not None else None
    version = champion.version if champion else None
    outputs = github.step_outputs(summary, decision, version, url, layout.report, published)
    github.publish_step(markdown, outputs, env, comment_pr)


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


def _print_findings(findings: list[Finding], console: Console) -> None:
    if findings:
        console.print(to_rich(findings_table(findings)))
        console.print("hpo-action doctor RUN_DIR lists every finding (--json for machines)")


def _warn_small_forgetting_sets(cfg: HpoConfig, sets: Sets, console: Console) -> None:
    """Forgetting sets whose gate part cannot show the margin, or whose probe part no trial can pass."""
    _warn(small_set_warnings(cfg, forgetting_parts(cfg, sets)), console)


def _warn(warnings: Sequence[str], console: Console) -> None:
    """Print each warning, and in GitHub Actions also as an annotation on the run."""
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
        if github.actions_env() is not None:
            github.warning("hpo-action", warning, console.file)


def _study(
    cfg: HpoConfig, extra_trials: int | None, console: Console, checked: Checked, allow_partial: bool = False
) -> _Searched:
    """Run the study in this process (search.workers 0) or in worker processes, then write its outputs."""
    started = time.monotonic()
    layout = RunLayout(Path(cfg.output.dir))
    if cfg.search.backend == "ray":  # Ray Tune places and schedules the trials (search/ray_backend.py)
        return _ray_study(cfg, checked, layout, console, restore_only=extra_trials == 0)
    if extra_trials == 0 and not study_exists(cfg):
        raise ConfigError(
            f"--n-trials 0: no trial to run, and study {study_name(cfg)!r} does not exist yet in this storage; "
            "drop --n-trials 0 (and --skip-search) to run search.n_trials trials"
        )
    _check_writable(layout.root)
    in_workers = cfg.search.workers > 0 and extra_trials != 0  # the leader (--skip-search) runs no trial
    if in_workers:
        console.print(f"starting {cfg.search.workers} worker process(es); each loads the model once")
    pool = WorkerPool(cfg.search.workers, layout.workers_dir) if in_workers else None
    try:
        quiet_libraries()
        runner = (
            trial_runner(cfg, checked.splits, checked.forgetting_sets, console) if cfg.search.workers == 0 else None
        )
        if runner is None:
            _prepare_for_workers(cfg, checked.splits, layout, console)
        cfg = lr_bounds.resolve(
            cfg, lambda: _find_lr(cfg, checked.splits, runner, layout, console, lr_bounds.AUTO_STEPS).suggestion
        )
        study = open_study(cfg)
        lr_bounds.record(study, cfg)
        if extra_trials == 0 and not allow_partial:
            check_complete(study, cfg)
        target = target_trials(study, cfg, extra_trials)
        deadline = time.time() + cfg.search.timeout if cfg.search.timeout else None
        with (
            _log_group(f"search: {max(target - finished(study), 0)} trials", console),
            StudyProgress(console, total=target, already=finished(study)) as progress,
        ):
            if runner is not None:
                run_trials(study, cfg, runner, target, deadline, on_trial=progress.update)
            elif pool is not None and finished(study) < target:
                pool.run(cfg, study, target, deadline, on_trial=progress.update)
    finally:
        if pool is not None:
            pool.close()
    raise_if_pressed()
    check_not_all_failed(study)
    _warn([message] if (message := stopped(study)) else [], console)  # the stopping rule (search/stopping.py)
    stopped_early = timeout_stop(finished(study), target, deadline)
    summary = _write_outputs(cfg, study, layout, time.monotonic() - started, console, stopped_early)
    if cfg.search.finalists.top_k:  # retrain the best trials on more seeds; best/ becomes the bound's choice
        runner = runner or trial_runner(cfg, checked.splits, checked.forgetting_sets, console)
        summary = reseed_finalists.apply(study, cfg, summary, runner, layout, console)
    return _Searched(summary, checked.splits, runner.base if runner else None)


def lr_find(
    cfg: HpoConfig, steps: int = 100, start: float = 1e-6, end: float = 1.0, console: Console | None = None
) -> LrFindResult:
    """The learning-rate range test on the train defaults; writes lr_find/lr_find.json and lr_find.png."""
    console = console or make_console(stderr=True)
    layout = RunLayout(Path(cfg.output.dir))
    splits = load_splits(cfg.data)
    _check_writable(layout.root)
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
    narrowed = lr_bounds.window(result.suggestion, spec.low, spec.high) if spec and spec.type == "float" else None
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


def _ray_study(cfg: HpoConfig, checked: Checked, layout: RunLayout, console: Console, restore_only: bool) -> _Searched:
    """search.backend ray: the same outputs from a Ray Tune experiment; the trials load the model in Ray's workers.
    `restore_only` (--skip-search) reads a finished experiment from search.ray.storage and starts none."""
    from hpo_action.search.ray_backend import run_ray_search

    _check_writable(layout.root)
    quiet_libraries()
    with _log_group(f"search: Ray Tune {cfg.search.ray.scheduler}, {cfg.search.n_trials} trials", console):
        summary = run_ray_search(cfg, checked.splits, trial_runner, console, restore_only)
    raise_if_pressed()
    _write_summary(cfg, summary, layout)
    _show_outputs(summary, layout, console, None)
    return _Searched(summary, checked.splits, None)


def _write_outputs(
    cfg: HpoConfig, study: Any, layout: RunLayout, elapsed: float, console: Console, stopped_early: str | None
) -> RunSummary:
    best_dir, params = None, {}
    best = chosen_trial(study)
    if best is not None:
        params = {**trial_defaults(cfg), **best.params, **best.user_attrs.get("batch_override", {})}
        best_dir = publish_best(study, layout, params)
    summary = summarize(study, cfg, redact_url(storage_url(cfg)), elapsed, best_dir, params, stopped_early)
    _write_summary(cfg, summary, layout)
    console.print(f"writing plots to {layout.plots_dir}")
    write_plots(study, layout.plots_dir, tuple(o.metric for o in cfg.search.objectives))
    return _show_outputs(summary, layout, console, stopped_early)


def _write_summary(cfg: HpoConfig, summary: RunSummary, layout: RunLayout) -> None:
    """trials.csv, summary.json and config.yaml from the typed summary, whichever backend ran."""
    write_trials_csv(list(summary.trials), layout.trials_csv)
    summary.write(layout.summary)
    resolved = cfg.model_dump()
    resolved["search"]["storage"] = redact_url(cfg.search.storage) if cfg.search.storage else None
    write_text_atomic(layout.run_config, yaml.safe_dump(resolved, sort_keys=False))


def _show_outputs(summary: RunSummary, layout: RunLayout, console: Console, stopped_early: str | None) -> RunSummary:
    console.print(to_rich(trials_table(summary, errors=False)))
    for table in (pareto_table(summary), best_table(summary)):
        if table is not None:
            console.print(to_rich(table))
    for line in (warm_start_line(summary), tradeoff_line(summary), checkpoint_line(summary)):
        if line:
            console.print(line)
    console.print(f"outputs in {layout.root}")
    if stopped_early:
        console.print(f"[yellow]{stopped_early}[/yellow]")
    return summary


def _log_group(title: str, console: Console) -> AbstractContextManager[None]:
    """A foldable section of the log in GitHub Actions, on the console's stream so the lines stay in order."""
    return github.group(title, console.file) if github.actions_env() is not None else nullcontext()


def _check_writable(output: Path) -> None:
    """Try a real write: permission bits say nothing for root or on a read-only file system."""
    fix = "choose another folder with --output"
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"output.dir: cannot create {output}: {err.strerror} ({fix})") from None
    try:
        with tempfile.TemporaryFile(dir=output):
            pass
    except OSError as err:
        raise ConfigError(f"output.dir: {output} is not writable: {err.strerror} ({fix})") from None


def gate_files(
    candidate: Path,
    reference: Path,
    cfg: GateConfig,
    metric: str | None = None,
    forgetting: list[ForgettingFiles] = (),
    out: Path | None = None,
    console: Console | None = None,
) -> GateDecision:
    """Gate two prediction files (and forgetting pairs) from anywhere; write gate.json and print the verdict.

    The metric is never guessed: `metric`, else the first metric evaluate recorded in the candidate's meta.json,
    else the only numeric field the files share; forgetting pairs use their own, else the primary's name."""
    cand_rows, ref_rows = read_predictions(candidate), read_predictions(reference)
    recorded = read_meta(candidate).get("metrics") or [None]
    how = "choose one with --metric"
    metric = choose_metric(cand_rows, ref_rows, metric or recorded[0], f"{candidate} and {reference}", how)
    inputs = []
    for files in forgetting:
        name = files.name
        cand_f, ref_f = read_predictions(files.candidate), read_predictions(files.reference)
        how = f"name it: --forgetting {name}=CAND,REF,MARGIN,METRIC"
        chosen = choose_metric(cand_f, ref_f, files.metric or metric, f"--forgetting {name}", how)
        paired = pair(cand_f, ref_f, chosen, names=(f"{name} candidate", f"{name} reference"))
        inputs.append(ForgettingInput(name, paired, margin_for(files, paired.boolean, chosen)))
    vocab_size = read_meta(candidate).get("vocab_size")
    decision = gate(pair(cand_rows, ref_rows, metric), inputs, cfg, vocab_size=vocab_size)
    sequence = per_gate(cfg.alpha).to_json()  # no registry here: per-gate control, said so in gate.json
    decision = replace(decision, config=replace(decision.config, sequence=sequence))
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
