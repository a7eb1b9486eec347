"""One function per CLI command, composing the modules; the CLI only parses and prints."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from . import artifacts
from .config import HpoConfig
from .data import load_splits, tokenize_splits
from .errors import ConfigError
from .models import load_base_model
from .progress import StudyProgress, best_table, trials_table
from .space import trial_defaults
from .study import TRIALS_DIR, check_not_all_failed, finished, open_study, redact, run_trials, storage_url
from .trial import TrialRunner


def quiet_libraries() -> None:
    """Library chatter (tokenizer fork warnings, per-step logs) drowns the progress view in CI logs."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def search(cfg: HpoConfig, extra_trials: int | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run (or resume) the study and write trials.csv, best/ and summary.json; returns the summary."""
    console = console or Console(stderr=True)
    started = time.monotonic()
    output = Path(cfg.output.dir)
    splits = load_splits(cfg.data)  # every data error surfaces before anything is written
    _check_writable(output)
    quiet_libraries()
    base = load_base_model(cfg.model)
    train, validation, cache_hit = tokenize_splits(splits, base.tokenizer, cfg.data, output / "cache")
    console.print(
        f"[bold]hpo-action[/bold] {cfg.model.name} ({cfg.model.method}, {base.device}, {str(base.dtype)[6:]}) · "
        f"{len(train)} train / {len(validation)} validation examples"
        f"{' (tokenized cache)' if cache_hit else ''}"
    )
    study = open_study(cfg)
    runner = TrialRunner(cfg, base, train, validation)
    total = cfg.search.n_trials if extra_trials is None else finished(study) + extra_trials
    with StudyProgress(console, total=total, already=finished(study)) as progress:
        run_trials(study, cfg, runner, extra_trials=extra_trials, on_trial=progress.update)
    check_not_all_failed(study)
    return _write_outputs(cfg, study, output, time.monotonic() - started, console)


def _write_outputs(cfg: HpoConfig, study: Any, output: Path, elapsed: float, console: Console) -> dict[str, Any]:
    artifacts.write_trials_csv(study, output / "trials.csv")
    best_dir = None
    try:
        best = study.best_trial
    except ValueError:
        best = None
    if best is not None:
        params = {**trial_defaults(cfg), **best.params}
        best_dir = artifacts.publish_best(study, output, output / TRIALS_DIR, params)
    summary = artifacts.summarize(study, cfg, redact(storage_url(cfg)), elapsed, best_dir)
    artifacts.write_summary(summary, output / "summary.json")
    metric = cfg.search.objective.metric
    console.print(trials_table(artifacts.trial_rows(study), metric))
    if summary["best"]:
        console.print(best_table(summary["best"], metric))
    console.print(f"outputs in {output}")
    return summary


def _check_writable(output: Path) -> None:
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"output.dir: cannot create {output}: {err.strerror}") from None
    if not os.access(output, os.W_OK):
        raise ConfigError(f"output.dir: {output} is not writable (choose another folder with --output)")
