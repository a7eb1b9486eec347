"""Seed-robust finalists (search.finalists): retrain the study's top-k trials on extra training seeds and choose
the configuration by a confidence bound on its mean objective, not by its one lucky run.

Near the optimum the spread between training seeds exceeds the gaps between the best configurations (issue 23),
so the single best run is partly the best seed: the winner's curse. Each finalist's objective is measured on the
search's own run (train.seed) and on `seeds` more (train.seed + 1, ...); the chosen one has the best pessimistic
bound on its mean, the one-sided Student-t bound at CONFIDENCE,

    minimize: mean + t(CONFIDENCE, df) · sd / √n        maximize: mean − t(CONFIDENCE, df) · sd / √n

with n its runs and sd the training-seed standard deviation pooled over the finalists (df = Σ(n − 1)): the seeds
add the same noise to every configuration, and one configuration's sd from 2 or 3 runs is too noisy to rank by
(the table replay chose worse with it: benchmarks/RESULTS.md, "Seed-robust finalists"). With every finalist on the
same seeds the bound ranks as the mean does; it says how far each mean may be off. A finalist whose retraining
failed (diverged) is never chosen while another has every run; with none complete, the search's own pick stands.
The core (`retrain`, `score`, `choose`) takes plain typed inputs and a training callable, so the table replay
(benchmarks/finalists_replay.py) runs the same rule; `apply` is the pipeline's one call: it runs the finalists after
the search and before the final evaluation, writes finalists.csv, puts the chosen configuration's adapter in best/
and records the rule and the seeds in summary.json.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import shutil
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_action.files import write_text_atomic

if TYPE_CHECKING:
    from rich.console import Console

    from hpo_action.config import HpoConfig
    from hpo_action.layout import RunLayout
    from hpo_action.search.summary import FinalistsRecord, RunSummary
    from hpo_action.train.runner import Runner

CONFIDENCE = 0.9  # one-sided level of the bound (benchmarks/RESULTS.md, "Seed-robust finalists")


@dataclass(frozen=True)
class Candidate:
    """A finalist as the search left it: its trial number, every trial parameter, its objective on train.seed, and
    what its search run measured (the best trial's record when it is chosen)."""

    number: int
    params: dict[str, Any]
    value: float
    metrics: dict[str, float] = field(default_factory=dict)
    forgetting_excess: dict[str, float] = field(default_factory=dict)
    forgetting_drop: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SeedRun:
    """One retraining of a finalist on another training seed; value None when it failed."""

    number: int
    seed: int
    value: float | None
    steps: int
    error: str = ""
    adapter: Path | None = None  # where its weights were saved (apply); None in a replay


@dataclass(frozen=True)
class Score:
    """A finalist's runs (the search's first), their mean and sd, and the bound it is ranked by."""

    number: int
    values: tuple[float | None, ...]
    mean: float
    sd: float
    bound: float  # inf (minimize) / -inf (maximize) when a run failed


def finalist_seeds(base_seed: int, seeds: int) -> list[int]:
    """The extra training seeds: the ones after the search's own."""
    return [base_seed + i for i in range(1, seeds + 1)]


def retrain(candidates: list[Candidate], seeds: list[int], train: Callable[[Candidate, int], SeedRun]) -> list[SeedRun]:
    """Every finalist on every extra seed, seed-major (an interruption leaves every finalist equally covered)."""
    return [train(candidate, seed) for seed in seeds for candidate in candidates]


def score(
    candidates: list[Candidate],
    runs: list[SeedRun],
    minimize: bool = True,
    confidence: float = CONFIDENCE,
    pooled: bool = True,
) -> list[Score]:
    """Each finalist's mean over its runs and its pessimistic bound at `confidence` (the module's formula), with the
    seed sd pooled over the finalists whose runs all completed (`pooled=False`: each one's own sd, the variant the
    replay found worse)."""
    from scipy.stats import t

    complete = {}
    for candidate in candidates:
        values = (candidate.value, *(r.value for r in runs if r.number == candidate.number))
        complete[candidate.number] = values if all(v is not None and math.isfinite(v) for v in values) else None
    spreads = [(statistics.variance(v), len(v) - 1) for v in complete.values() if v is not None and len(v) > 1]
    df_pooled = sum(df for _, df in spreads)
    sd_pooled = math.sqrt(sum(var * df for var, df in spreads) / df_pooled) if df_pooled else 0.0
    scores = []
    for candidate in candidates:
        values = (candidate.value, *(r.value for r in runs if r.number == candidate.number))
        finite = [v for v in values if v is not None and math.isfinite(v)]
        mean = statistics.fmean(finite) if finite else math.nan
        sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
        df = df_pooled if pooled else len(finite) - 1
        if complete[candidate.number] is None:
            bound = math.inf if minimize else -math.inf
        elif df == 0:
            bound = mean
        else:
            margin = float(t.ppf(confidence, df)) * (sd_pooled if pooled else sd) / math.sqrt(len(finite))
            bound = mean + margin if minimize else mean - margin
        scores.append(Score(candidate.number, values, mean, sd, bound))
    return scores


def choose(scores: list[Score], minimize: bool = True) -> int:
    """The finalist with the best bound; ties (and all failed) go to the earlier one, the search's order."""
    sign = 1.0 if minimize else -1.0
    return min(enumerate(scores), key=lambda item: (sign * item[1].bound, item[0]))[1].number


def rule(top_k: int, seeds: list[int], minimize: bool = True) -> str:
    """The rule in words, as summary.json records it."""
    side = "mean + t·sd/√n (lowest)" if minimize else "mean − t·sd/√n (highest)"
    return (
        f"the best one-sided {CONFIDENCE:.0%} Student-t bound on the mean objective, {side} with the seed sd pooled "
        f"over the finalists, among the top {top_k} "
        f"trials, each retrained on training seeds {', '.join(map(str, seeds))} besides the search's own"
    )


@contextlib.contextmanager
def _seeded(runner: Runner, seed: int) -> Iterator[None]:
    """The runner trains with train.seed = `seed` (a k-fold runner through the one TrialRunner it wraps)."""
    inner: Any = getattr(runner, "runner", runner)
    original = inner.cfg
    inner.cfg = original.model_copy(update={"train": original.train.model_copy(update={"seed": seed})})
    try:
        yield
    finally:
        inner.cfg = original


def runner_trainer(runner: Runner, folder: Path) -> Callable[[Candidate, int], SeedRun]:
    """The training callable of a real run: the study's runner, unpruned, weights to folder/<trial>-seed<seed>."""
    from hpo_action.errors import TrialError

    def train(candidate: Candidate, seed: int) -> SeedRun:
        target = folder / f"{candidate.number}-seed{seed}"
        with _seeded(runner, seed):
            try:
                result = runner.run(candidate.params, save_to=lambda _: target, trial_number=candidate.number)
            except TrialError as err:
                return SeedRun(candidate.number, seed, None, 0, str(err).splitlines()[0][:200])
        return SeedRun(candidate.number, seed, result.value, result.steps, "", target if target.is_dir() else None)

    return train


def write_csv(scores: list[Score], runs: list[SeedRun], chosen: int, base_seed: int, path: Path) -> None:
    """finalists.csv: one row per run of each finalist (the search's own first), with its mean, sd and bound."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["number", "seed", "value", "steps", "error", "mean", "sd", "bound", "chosen"])
    for s in scores:
        mine = [r for r in runs if r.number == s.number]
        rows = [(base_seed, s.values[0], "", "")] + [(r.seed, r.value, r.steps, r.error) for r in mine]
        for seed, value, steps, error in rows:
            writer.writerow([s.number, seed, value, steps, error, s.mean, s.sd, s.bound, s.number == chosen])
    write_text_atomic(path, buffer.getvalue())


def apply(
    candidates: list[Candidate],
    cfg: HpoConfig,
    summary: RunSummary,
    runner: Runner,
    layout: RunLayout,
    console: Console,
) -> RunSummary:
    """Run the finalists of a finished study (its top-k admitted trials, best first, as its backend lists them); put
    the chosen configuration's adapter in best/ and return the summary with that best trial, the rule and the seeds.
    Fewer than two finalists: the summary unchanged, with a note."""
    from hpo_action.search.summary import FinalistsRecord

    settings = cfg.search.finalists
    minimize = cfg.search.objective.direction == "minimize"
    if len(candidates) < 2 or summary.best is None:
        console.print(f"search.finalists: {len(candidates)} completed trial(s) qualify; nothing to compare")
        return summary
    seeds = finalist_seeds(cfg.train.seed, settings.seeds)
    folder = layout.finalists_dir
    remove_finalists_folder(folder)
    console.print(f"finalists: retraining trials {[c.number for c in candidates]} on seeds {seeds}")
    runs = retrain(candidates, seeds, runner_trainer(runner, folder))
    scores = score(candidates, runs, minimize)
    chosen = choose(scores, minimize)
    write_csv(scores, runs, chosen, cfg.train.seed, layout.finalists_csv)
    winner = next(c for c in candidates if c.number == chosen)
    best_dir = _publish_chosen(winner, runs, layout, minimize)
    remove_finalists_folder(folder)  # best/ holds the chosen weights; the runs are in finalists.csv
    record = FinalistsRecord(settings.top_k, seeds, CONFIDENCE, summary.best.number, chosen, sum(r.steps for r in runs))
    summary = _chosen_summary(summary, record, winner, best_dir, rule(settings.top_k, seeds, minimize))
    picked = next(s for s in scores if s.number == chosen)
    console.print(
        f"finalists: trial #{chosen} chosen (mean {picked.mean:.4g}, bound {picked.bound:.4g} over "
        f"{len(picked.values)} runs; the single-run pick was #{record.search_pick}); {layout.finalists_csv}"
    )
    return summary


def _publish_chosen(winner: Candidate, runs: list[SeedRun], layout: RunLayout, minimize: bool) -> Path | None:
    """best/ gets the chosen configuration's weights: of its runs whose weights exist (its search run's, kept when
    it led the study, and each retraining's), the one with the best objective."""
    from hpo_action.search.outputs import publish_trial

    kept: list[tuple[Path, float | None]] = [(layout.trial_dir(winner.number), winner.value)]
    kept += [(r.adapter, r.value) for r in runs if r.number == winner.number and r.adapter is not None]
    found = [(path, value) for path, value in kept if path.is_dir() and value is not None]
    if not found:
        return None
    source, value = min(found, key=lambda item: item[1] if minimize else -item[1])
    return publish_trial(source, layout, winner.number, value, winner.params)


def _chosen_summary(
    summary: RunSummary, record: FinalistsRecord, winner: Candidate, best_dir: Path | None, words: str
) -> RunSummary:
    """The summary with the chosen trial as best, the finalist rule and record, and the retraining's steps."""
    assert summary.best is not None and summary.selection is not None
    best = replace(
        summary.best,
        number=winner.number,
        value=winner.value,
        params=winner.params,
        metrics=winner.metrics,
        forgetting_excess=winner.forgetting_excess,
        forgetting_drop=winner.forgetting_drop,
        adapter=best_dir.name if best_dir else None,
    )
    selection = replace(summary.selection, rule=words, finalists=record)
    return replace(summary, best=best, selection=selection, total_steps=summary.total_steps + record.steps)


def remove_finalists_folder(folder: Path) -> None:
    """Delete finalists/ and the retrained weights in it, which hpo-action marked; a file a person put there stops
    the run (one line naming it) instead of being deleted."""
    from hpo_action.errors import OutputError
    from hpo_action.layout import foreign_files, is_ours

    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir()):
        foreign = [entry] if not (entry.is_dir() and is_ours(entry, "trial")) else foreign_files(entry)
        if foreign:
            raise OutputError(f"output.dir: {foreign[0]} was not written by hpo-action; move it away")
        shutil.rmtree(entry)
    folder.rmdir()
