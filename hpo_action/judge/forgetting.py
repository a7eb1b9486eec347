"""Forgetting: the benchmarks the base model could do, loaded once; their per-trial probes for the search's
constraint; and how each set is scored (its own data format and metric)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpo_action.config import DataConfig, ForgettingBenchmark, HpoConfig
from hpo_action.data.loading import load_rows
from hpo_action.data.rows import Rows
from hpo_action.judge.evaluate import EvalSettings, score_rows
from hpo_action.metrics import metric_direction
from hpo_action.train.models import BaseModel


def benchmark_settings(cfg: HpoConfig, benchmark: ForgettingBenchmark) -> tuple[EvalSettings, DataConfig]:
    """How a set is scored: its one metric, and its rows read in its own format (else `data.format`)."""
    settings = EvalSettings.from_config(cfg.evaluate.model_copy(update={"metrics": [benchmark.metric]}))
    own = {"format": benchmark.format or cfg.data.format, "columns": benchmark.columns or cfg.data.columns}
    return settings, cfg.data.model_copy(update=own)


def load_forgetting_sets(cfg: HpoConfig) -> dict[str, Rows]:
    """Each data forgetting benchmark's rows, loaded (and checked) before anything is scored or written."""
    return {
        b.name: load_rows(
            b.data, benchmark_settings(cfg, b)[1], f"gate.forgetting[{b.name}].data", f"gate.forgetting[{b.name}]"
        )
        for b in cfg.gate.forgetting
        if b.kind == "data" and b.data
    }


@dataclass(frozen=True)
class ForgettingProbe:
    """A small fixed sample of a forgetting set with the base model's score, scored after each trial so that
    forgetting beyond the margin makes the trial infeasible (train's `Probe`)."""

    name: str
    rows: Rows
    data_cfg: DataConfig
    settings: EvalSettings
    baseline: float
    margin: float
    higher_is_better: bool

    def excess_drop(self, model: Any, tokenizer: Any) -> float:
        """How far the trained model falls below the base beyond the margin: feasible when ≤ 0."""
        metric = self.settings.metrics[0]
        records = score_rows(model, tokenizer, self.rows, self.data_cfg, self.settings)
        value = sum(float(r[metric]) for r in records) / max(len(records), 1)
        drop = self.baseline - value if self.higher_is_better else value - self.baseline
        return drop - self.margin


def build_probes(cfg: HpoConfig, base: BaseModel, sets: dict[str, Rows]) -> tuple[ForgettingProbe, ...]:
    """Fixed small samples of the data forgetting sets, scored once on the base model."""
    probes = []
    for benchmark in cfg.gate.forgetting:
        if benchmark.name not in sets:  # an lm-eval run per trial costs too much; the final gate still runs it
            continue
        settings, data_cfg = benchmark_settings(cfg, benchmark)
        sample = sorted(sets[benchmark.name], key=lambda r: str(r["id"]))[: cfg.search.forgetting_probe_size]
        records = score_rows(base.model, base.tokenizer, sample, data_cfg, settings)
        baseline = sum(float(r[benchmark.metric]) for r in records) / max(len(records), 1)
        higher = metric_direction(benchmark.metric, benchmark.direction) == "maximize"
        probes.append(ForgettingProbe(benchmark.name, sample, data_cfg, settings, baseline, benchmark.margin, higher))
    return tuple(probes)
