"""Everything `run` and `search` check before they write anything (not even the output folder, workers/ or cache/):
bad input exits 2 with one line, and a run that would fail after an hour of search fails now instead."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hpo_action import drills
from hpo_action.config import HpoConfig
from hpo_action.data.loading import Splits, load_splits
from hpo_action.data.replay import check_held_out
from hpo_action.data.rows import Rows
from hpo_action.data.tokenize import first_trained_position, tokenize_rows
from hpo_action.errors import ConfigError, GateError
from hpo_action.judge.forgetting import load_forgetting_sets
from hpo_action.judge.forgetting_split import forgetting_parts, probes_needed
from hpo_action.judge.predictions import read_predictions
from hpo_action.layout import RunLayout
from hpo_action.search.optuna_backend.samplers import make_pruner, make_sampler
from hpo_action.search.optuna_backend.storage import check_remote_storage
from hpo_action.search.optuna_backend.study import check_stored_objectives
from hpo_action.train.model_source import check_model_source
from hpo_action.train.models import check_method, load_tokenizer

_BATCH = 64  # rows tokenized at a time while looking for one a trial's max_length keeps

# What TRL's SFTTrainer reports at each evaluation (besides timings): the objective must be one of them.
REPORTED = ("eval_loss", "eval_mean_token_accuracy", "eval_entropy", "eval_num_tokens")


@dataclass(frozen=True)
class Checked:
    """The inputs a run needs, loaded and checked."""

    splits: Splits
    forgetting_sets: dict[str, Rows]


def check_run_inputs(cfg: HpoConfig, champion_predictions: Path | None = None, gating: bool = True) -> Checked:
    """Load and check the data, the forgetting sets, the champion's predictions, the study's settings and the
    output folder; raises ConfigError/DataError/GateError (exit 2) on the first problem."""
    drills.planned()  # a typo in HPO_ACTION_FAULTS fails now
    if gating and not cfg.data.test and cfg.data.validation_strategy != "time":  # time cuts its own test split
        raise ConfigError("data.test: `run` gates on a held-out test split; set data.test, or use `hpo-action search`")
    metric = cfg.search.objective.metric
    if metric not in REPORTED:
        raise ConfigError(
            f"search.objective.metric: the trainer never reports {metric!r}; use one of {', '.join(REPORTED)}"
        )
    make_sampler(cfg)
    make_pruner(cfg)
    check_method(cfg.model)  # QLoRA without CUDA or bitsandbytes fails before any worker starts
    check_model_source(cfg.model)  # a missing folder or an unreachable Hub: one line, before any worker starts
    splits = load_splits(cfg.data)
    sets = load_forgetting_sets(cfg) if gating or splits.replay or probes_needed(cfg) else {}
    forgetting_parts(cfg, sets)  # a probe that leaves a set's gate part no rows fails now
    if splits.replay:
        _check_replay_held_out(cfg, splits, sets)
    if champion_predictions is not None and splits.test is not None:
        _check_champion_ids(champion_predictions, splits)
    _check_trial_length(cfg, splits)  # else every trial fails in a worker
    check_remote_storage(cfg)  # an unreachable database fails before a model is loaded or a folder created
    check_stored_objectives(cfg)  # a study made for other objectives is refused before anything trains
    foreign = RunLayout(Path(cfg.output.dir)).foreign_entries()
    if foreign:
        raise ConfigError(
            f"output.dir: {foreign[0]} was not written by hpo-action, and hpo-action deletes or replaces what is "
            "there (numbered trial folders and best/ it marked as its own); move it away or choose another --output"
        )
    return Checked(splits, sets)


def _check_trial_length(cfg: HpoConfig, splits: Splits) -> None:
    """A trial cuts the tokenized rows to its own max_length (train.max_length, or the search space's): the shortest
    one a trial can get must keep a completion token of some training row. Rows are tokenized only until one does."""
    key, shortest = _shortest_trial_length(cfg)
    if shortest >= cfg.data.max_length:
        return  # tokenizing to data.max_length checks that one
    tokenizer = load_tokenizer(cfg.model)
    rows = list(splits.folds.pool) if splits.folds is not None else list(splits.train)
    needed: int | None = None
    for start in range(0, len(rows), _BATCH):
        for labels in tokenize_rows(rows[start : start + _BATCH], tokenizer, cfg.data, role="data.train")["labels"]:
            position = first_trained_position(labels)
            if position is not None and position < shortest:
                return
            if position is not None:
                needed = min(needed or position + 1, position + 1)
    if needed is not None:  # else no row fits data.max_length either, which tokenizing reports
        raise ConfigError(
            f"{key}: {shortest} tokens keep no completion token of any training row (the prompts are longer); "
            f"raise it to at least {needed}"
        )


def _shortest_trial_length(cfg: HpoConfig) -> tuple[str, int]:
    """The config key and value of the shortest max_length a trial can train with."""
    spec = cfg.search.space.get("max_length")
    if spec is None:
        return "train.max_length", cfg.train.max_length or cfg.data.max_length
    values = {"categorical": spec.choices, "fixed": [spec.value]}.get(spec.type, [spec.low])
    lengths = [int(value) for value in values or [] if isinstance(value, (int, float))]
    return "search.space.max_length", min(lengths, default=cfg.data.max_length)


def _check_replay_held_out(cfg: HpoConfig, splits: Splits, sets: dict[str, Rows]) -> None:
    """Replay rows must not be forgetting or test rows: trained on, they would leak into the gate (exit 2)."""
    files = {benchmark.name: str(benchmark.data) for benchmark in cfg.gate.forgetting}
    held_out = {f"gate.forgetting[{name}]": (files[name], rows) for name, rows in sets.items()}
    if splits.test is not None:
        held_out["data.test"] = (str(cfg.data.test), splits.test)
    check_held_out(splits.replay, held_out)


def _check_champion_ids(path: Path, splits: Splits) -> None:
    champion = read_predictions(path)
    ids = {str(row["id"]) for row in splits.test or []}
    missing = next((key for key in ids if key not in champion), None)
    extra = next((key for key in champion if key not in ids), None)
    if missing is not None or extra is not None:
        which = f"test id {missing!r} has no prediction" if missing is not None else f"id {extra!r} is not a test id"
        raise GateError(f"{path}: these predictions are not for this test split ({which}); re-evaluate the champion")
