"""One function per CLI command, composing the modules; the CLI only parses and prints."""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from hpo_action.config import BOOLEAN_METRICS, GateConfig, HpoConfig
from hpo_action.data.loading import Splits, load_splits, rows_fingerprint, tokenize_splits
from hpo_action.errors import ConfigError, TrialError
from hpo_action.judge.assess import build_probes, evaluate_and_gate, forgetting_rows
from hpo_action.judge.evaluate import EvalSettings, evaluate
from hpo_action.judge.gate import ForgettingInput, GateDecision, choose_metric, gate, pair, too_small_to_pass
from hpo_action.judge.predictions import read_meta, read_predictions
from hpo_action.report import github
from hpo_action.report.tables import verdict, write_plots
from hpo_action.report.terminal import StudyProgress, best_table, make_console, trials_table
from hpo_action.search import outputs as artifacts
from hpo_action.search.space import trial_defaults
from hpo_action.search.study import (
    TRIALS_DIR,
    check_not_all_failed,
    check_remote_storage,
    finished,
    open_study,
    redact,
    run_trials,
    storage_url,
    target_trials,
)
from hpo_action.search.supervisor import WORKERS_DIR, WorkerPool
from hpo_action.ship.publish import RUN_CONFIG, publish_run, record_gated_champion
from hpo_action.ship.registry import open_registry
from hpo_action.train.models import BaseModel, check_method, load_base_model, load_tokenizer
from hpo_action.train.trial import TrialRunner


def quiet_libraries() -> None:
    """Library chatter (tokenizer fork warnings, per-step logs) drowns the progress view in CI logs."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    # transformers 5 renamed gradient checkpointing and warns twice per trial that TRL still uses the old name.
    warnings.filterwarnings("ignore", message="`(is_)?gradient_checkpointing` is deprecated", category=FutureWarning)


def search(cfg: HpoConfig, extra_trials: int | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run (or resume) the study and write trials.csv, best/ and summary.json; returns the summary."""
    summary, _, _ = _study(cfg, extra_trials, console or make_console(stderr=True))
    return summary


def run(
    cfg: HpoConfig,
    extra_trials: int | None = None,
    champion_predictions: Path | None = None,
    console: Console | None = None,
    comment_pr: bool = False,
) -> GateDecision:
    """The whole job: study, evaluate the best trial once on the test split, gate it against the champion
    (or the base model), and publish it to the registry when it is promoted; returns the gate's decision.
    In GitHub Actions it also writes the step outputs and the job summary (and the PR comment, `comment_pr`)."""
    console = console or make_console(stderr=True)
    if not cfg.data.test:
        raise ConfigError("data.test: `run` gates on a held-out test split; set data.test, or use `hpo-action search`")
    forgetting = forgetting_rows(cfg)  # bad forgetting data fails now, before the study writes anything
    _warn_small_forgetting_sets(cfg, forgetting, console)
    if champion_predictions is not None:
        read_predictions(champion_predictions)
    registry = open_registry(cfg.registry.uri) if cfg.registry.uri else None
    champion = registry.champion() if registry else None  # the revision the gate reads: the swap's base
    summary, loaded, splits = _study(cfg, extra_trials, console, forgetting)
    if summary["best"] is None:
        raise TrialError(
            "no completed trial to evaluate: all were pruned or failed, or (with search.forgetting_constraint) "
            "forgot a gate.forgetting set beyond its margin; lower the learning-rate range or add replay data"
        )
    best_dir = summary["best"]["adapter"]
    if not best_dir:
        raise TrialError("the best trial's weights were not kept, so there is nothing to evaluate")
    champion_dir = None
    if champion is not None and champion_predictions is None:
        reusable = champion.test_fingerprint() == rows_fingerprint(splits.test)
        champion_predictions = champion.test_predictions if reusable else None
        champion_dir = None if reusable else champion.path
        console.print(
            f"champion v{champion.version}: "
            + ("its stored test predictions match this test set" if reusable else "re-evaluating it on this test set")
        )
    console.print(f"evaluating trial #{summary['best']['number']} on {len(splits.test)} test examples")
    base = loaded or load_base_model(cfg.model)  # worker processes kept theirs; they have exited
    with _log_group("evaluate and gate", console):
        result = evaluate_and_gate(cfg, base, splits, Path(best_dir), champion_predictions, champion_dir, forgetting)
    output = Path(cfg.output.dir)
    record_gated_champion(output, champion)
    make_console().print(verdict(result))
    published = None
    if registry is not None and result.promote:
        published = publish_run(output, registry.uri, cfg)["champion"]
        console.print(f"published v{published.version} to {registry.uri} (revision {published.revision[:12]})")
    elif registry is not None:
        console.print(f"not published: the gate decided {result.decision}")
    console.print(f"gate.json in {output}")
    env = github.actions_env()
    if env is not None:
        github.after_run(result, output, env, champion=published or champion, comment_pr=comment_pr)
    return result


def _warn_small_forgetting_sets(cfg: HpoConfig, rows: dict[str, list[dict[str, Any]]], console: Console) -> None:
    for benchmark in cfg.gate.forgetting:
        if benchmark.name in rows and benchmark.metric in BOOLEAN_METRICS:
            warning = too_small_to_pass(benchmark.name, len(rows[benchmark.name]), benchmark.margin, cfg.gate.alpha)
            if warning:
                console.print(f"[yellow]warning:[/yellow] {warning}")
                if github.actions_env() is not None:
                    github.warning("hpo-action: forgetting set too small", warning, console.file)


def _study(
    cfg: HpoConfig,
    extra_trials: int | None,
    console: Console,
    forgetting: dict[str, list[dict[str, Any]]] | None = None,
) -> tuple[dict[str, Any], BaseModel | None, Splits]:
    """Run the study in this process (search.workers 0) or in worker processes; returns the summary, the base
    model when this process loaded it, and the splits."""
    started = time.monotonic()
    output = Path(cfg.output.dir)
    splits = load_splits(cfg.data)  # every data error surfaces before anything is written
    _check_writable(output)
    in_workers = cfg.search.workers > 0 and extra_trials != 0  # the leader (--skip-search) runs no trial
    pool = WorkerPool(cfg.search.workers, output / WORKERS_DIR) if in_workers else None
    try:
        check_remote_storage(cfg)  # an unreachable database fails before a model is loaded
        quiet_libraries()
        runner = None
        if cfg.search.workers == 0:
            runner = trial_runner(cfg, splits, forgetting, console)
        else:  # what a worker would fail on fails here, before the study exists; workers reuse the token cache
            check_method(cfg.model)
            tokenizer = load_tokenizer(cfg.model)
            train, validation, cache_hit = tokenize_splits(splits, tokenizer, cfg.data, output / "cache")
            workers = f"{cfg.search.workers} worker process(es), logs in {output / WORKERS_DIR}"
            console.print(_banner(cfg, cfg.model.method, len(train), len(validation), cache_hit) + f" · {workers}")
        study = open_study(cfg)
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
    check_not_all_failed(study)
    summary = _write_outputs(cfg, study, output, time.monotonic() - started, console)
    return summary, runner.base if runner else None, splits


def trial_runner(
    cfg: HpoConfig, splits: Splits, forgetting: dict[str, list[dict[str, Any]]] | None, console: Console
) -> TrialRunner:
    """Load the base model, tokenize (or reuse the cache) and score the forgetting probes: once per worker."""
    base = load_base_model(cfg.model)
    train, validation, cache_hit = tokenize_splits(splits, base.tokenizer, cfg.data, Path(cfg.output.dir) / "cache")
    setup = f"{cfg.model.method}, {base.device}, {str(base.dtype)[6:]}"
    console.print(_banner(cfg, setup, len(train), len(validation), cache_hit))
    probes = ()
    if cfg.search.forgetting_constraint and cfg.gate.forgetting:
        probes = build_probes(cfg, base, forgetting if forgetting is not None else forgetting_rows(cfg))
        console.print("forgetting constraint: " + ", ".join(f"{p.name} base {p.baseline:.3g}" for p in probes))
    return TrialRunner(cfg, base, train, validation, probes)


def _banner(cfg: HpoConfig, setup: str, n_train: int, n_validation: int, cache_hit: bool) -> str:
    data = f"{n_train} train / {n_validation} validation examples{' (tokenized cache)' if cache_hit else ''}"
    return f"[bold]hpo-action[/bold] {cfg.model.name} ({setup}) · {data}"


def _write_outputs(cfg: HpoConfig, study: Any, output: Path, elapsed: float, console: Console) -> dict[str, Any]:
    artifacts.write_trials_csv(study, output / "trials.csv")
    best_dir = None
    try:
        best = study.best_trial
    except ValueError:
        best = None
    if best is not None:
        params = {**trial_defaults(cfg), **best.params, **best.user_attrs.get("batch_override", {})}
        best_dir = artifacts.publish_best(study, output, output / TRIALS_DIR, params)
    summary = artifacts.summarize(study, cfg, redact(storage_url(cfg)), elapsed, best_dir)
    artifacts.write_summary(summary, output / "summary.json")
    artifacts.write_text_atomic(output / RUN_CONFIG, yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    write_plots(study, output / "plots")
    metric = cfg.search.objective.metric
    console.print(trials_table(artifacts.trial_rows(study), metric))
    if summary["best"]:
        console.print(best_table(summary["best"], metric))
    console.print(f"outputs in {output}")
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


ForgettingFiles = tuple[str, Path, Path, float, str | None]  # name, candidate, reference, margin, metric


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
    for name, cand_path, ref_path, margin, wanted in forgetting:
        cand_f, ref_f = read_predictions(cand_path), read_predictions(ref_path)
        how = f"name it: --forgetting {name}=CAND,REF,MARGIN,METRIC"
        chosen = choose_metric(cand_f, ref_f, wanted or metric, f"--forgetting {name}", how)
        paired = pair(cand_f, ref_f, chosen, names=(f"{name} candidate", f"{name} reference"))
        inputs.append(ForgettingInput(name, paired, margin))
    decision = gate(pair(cand_rows, ref_rows, metric), inputs, cfg)
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
