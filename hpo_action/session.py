"""What every trial-running process sets up once: quiet libraries, the base model, the tokenized data (from the
cache when it is there) and the forgetting probes. The in-process search and each worker process use it."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from rich.console import Console

from hpo_action.config import HpoConfig
from hpo_action.data.loading import Splits
from hpo_action.data.rows import Rows
from hpo_action.data.tokenize import tokenize_for_study, tokenize_replay
from hpo_action.judge.forgetting import build_probes, load_forgetting_sets, probe_size_warnings
from hpo_action.judge.forgetting_split import probes_needed
from hpo_action.layout import RunLayout
from hpo_action.train.cross_validation import CrossValidatedRunner
from hpo_action.train.models import load_base_model
from hpo_action.train.runner import Runner
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


def banner(cfg: HpoConfig, setup: str, n_train: int, n_validation: int, cache_hit: bool) -> str:
    data = f"{n_train} train / {n_validation} validation examples{' (tokenized cache)' if cache_hit else ''}"
    if cfg.folds > 1:
        data += f" per fold · {cfg.folds}-fold: every trial trains {cfg.folds} times, the mean is its objective"
    return f"[bold]hpo-action[/bold] {cfg.model.name} ({setup}) · {data}"


def trial_runner(cfg: HpoConfig, splits: Splits, forgetting: dict[str, Rows] | None, console: Console) -> Runner:
    """Load the base model, tokenize (or reuse the cache) and score the forgetting probes: once per process."""
    base = load_base_model(cfg.model)
    layout = RunLayout(Path(cfg.output.dir))
    folds, cache_hit = tokenize_for_study(splits, base.tokenizer, cfg.data, layout.cache_dir)
    train, validation = folds[-1]
    replay, _ = tokenize_replay(splits.replay, base.tokenizer, cfg.data, layout.cache_dir)
    setup = f"{cfg.model.method}, {base.device}, {str(base.dtype)[6:]}"
    console.print(banner(cfg, setup, len(train), len(validation), cache_hit))
    if replay:
        sources = zip(replay, splits.replay, strict=True)
        console.print("replay: " + ", ".join(f"{len(rows)} rows of {Path(r.source).name}" for rows, r in sources))
    probes = ()
    if probes_needed(cfg):
        sets = forgetting or load_forgetting_sets(cfg)  # a worker process loads them itself, like the preflight
        probes = build_probes(cfg, base, sets)
        shown = (f"{p.name} base {p.baseline:.3g} on {len(p.rows)} probe rows" for p in probes)
        console.print("forgetting probes (rows the gate never tests): " + ", ".join(shown))
        for warning in probe_size_warnings(probes, len(base.tokenizer)):
            console.print(f"[yellow]warning:[/yellow] {warning}")
    reference = None
    if cfg.model.method == "full" and cfg.may_be_nonzero("kl_to_base"):
        reference, size = base.frozen_copy()
        console.print(
            f"kl_to_base with full fine-tuning: a frozen reference copy of the base model ({size / 2**20:.1f} MiB)"
        )
    runner = TrialRunner(cfg, base, train, validation, probes, replay, reference)
    return CrossValidatedRunner(runner, folds) if len(folds) > 1 else runner
