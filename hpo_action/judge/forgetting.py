"""Forgetting: the benchmarks the base model could do, loaded once; their per-trial probes for the search's
constraint (each set's probe part, judge/forgetting_split.py); and how each set is scored (its own format and
metric)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpo_action.config import DataConfig, ForgettingBenchmark, GateConfig, HpoConfig
from hpo_action.data.loading import load_rows
from hpo_action.data.rows import Rows
from hpo_action.judge.evaluate import EvalSettings, score_rows
from hpo_action.judge.forgetting_split import (
    EXPECTED_SPREAD_PER_MARGIN,
    constraint_value,
    forgetting_parts,
    kept_skill_probe_size,
    probe_verdict,
)
from hpo_action.train.models import BaseModel
from hpo_action.train.trial import ProbeReading


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
    """A set's probe part (rows the gate never tests) with the base model's per-row scores, scored after each
    trial: the trial is feasible only if the gate's own test would pass on these rows (train's `Probe`)."""

    name: str
    rows: Rows
    data_cfg: DataConfig
    settings: EvalSettings
    base_scores: dict[str, float]  # by row id
    benchmark: ForgettingBenchmark
    gate: GateConfig

    @property
    def baseline(self) -> float:
        return sum(self.base_scores.values()) / max(len(self.base_scores), 1)

    def measure(self, model: Any, tokenizer: Any) -> ProbeReading:
        """The drop on the probe rows (point estimate) and the constraint from the gate's lower bound."""
        metric = self.benchmark.metric
        records = score_rows(model, tokenizer, self.rows, self.data_cfg, self.settings)
        scores = {str(r["id"]): float(r[metric]) for r in records}
        ids = sorted(self.base_scores)
        candidate, base = [scores[i] for i in ids], [self.base_scores[i] for i in ids]
        b = self.benchmark
        result = probe_verdict(self.name, candidate, base, metric, b.margin, b.direction, self.gate, len(tokenizer))
        return ProbeReading(drop=-result.delta, excess=constraint_value(result))


def probe_size_warnings(probes: tuple[ForgettingProbe, ...], vocab_size: int) -> list[str]:
    """Each loss-like probe too small for a trial that keeps the skill to be feasible, with the rows it needs."""
    found = []
    for probe in probes:
        b = probe.benchmark
        base = [probe.base_scores[i] for i in sorted(probe.base_scores)]
        needed = kept_skill_probe_size(base, b.metric, b.margin, b.direction, probe.gate, vocab_size)
        if needed is None:
            continue
        fix = f"raise search.forgetting_probe_size to about {needed}" if needed else "widen the margin"
        spread = EXPECTED_SPREAD_PER_MARGIN * b.margin
        found.append(
            f"forgetting set {probe.name!r}: on its {len(base)} probe rows, a trial that keeps the skill (each row's "
            f"{b.metric} moving by ±{spread:g}, no mean change) is not shown within margin {b.margin:g} by the "
            f"gate's test, so such trials count as infeasible; {fix} (or add rows to the set)"
        )
    return found


def build_probes(cfg: HpoConfig, base: BaseModel, sets: dict[str, Rows]) -> tuple[ForgettingProbe, ...]:
    """The data forgetting sets' probe parts, scored once on the base model."""
    parts = forgetting_parts(cfg, sets)
    probes = []
    for benchmark in cfg.gate.forgetting:
        if benchmark.name not in sets:  # an lm-eval run per trial costs too much; the final gate still runs it
            continue
        settings, data_cfg = benchmark_settings(cfg, benchmark)
        sample = parts[benchmark.name].probe
        records = score_rows(base.model, base.tokenizer, sample, data_cfg, settings)
        scores = {str(r["id"]): float(r[benchmark.metric]) for r in records}
        probes.append(ForgettingProbe(benchmark.name, sample, data_cfg, settings, scores, benchmark, cfg.gate))
    return tuple(probes)
