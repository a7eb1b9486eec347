"""After the study: score the best trial once on the held-out test split and the forgetting sets, then gate.

The base model is scored before the adapter is attached (PEFT wraps the base in place), and every score is
written as a predictions file, so a later run, or `hpo-action gate`, can re-gate without re-evaluating.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpo_action.config import DataConfig, ForgettingBenchmark, HpoConfig, metric_direction
from hpo_action.data.loading import Splits, load_rows, rows_fingerprint
from hpo_action.errors import ConfigError
from hpo_action.judge.evaluate import EvalSettings, attach_trained, score_and_write
from hpo_action.judge.gate import ForgettingInput, GateDecision, gate, pair
from hpo_action.judge.predictions import read_predictions, write_predictions
from hpo_action.train.models import BaseModel
from hpo_action.train.trial import ForgettingProbe

PREDICTIONS_DIR = "predictions"


def _benchmark_settings(cfg: HpoConfig, benchmark: ForgettingBenchmark) -> tuple[EvalSettings, DataConfig]:
    settings = EvalSettings.from_config(cfg.evaluate.model_copy(update={"metrics": [benchmark.metric]}))
    return settings, cfg.data.model_copy(update={"format": benchmark.format or cfg.data.format})


def forgetting_rows(cfg: HpoConfig) -> dict[str, list[dict[str, Any]]]:
    """Each forgetting benchmark's rows, loaded (and checked) before anything is scored."""
    return {
        b.name: load_rows(b.data, _benchmark_settings(cfg, b)[1], f"gate.forgetting[{b.name}].data")
        for b in cfg.gate.forgetting
        if b.kind == "data"
    }


def build_probes(cfg: HpoConfig, base: BaseModel, rows: dict[str, list[dict[str, Any]]]) -> tuple[ForgettingProbe, ...]:
    """Fixed small samples of the forgetting sets with the base model's score, for the search's constraint."""
    from hpo_action.judge.evaluate import score_rows

    probes = []
    for benchmark in cfg.gate.forgetting:
        if benchmark.kind != "data":  # an lm-eval run per trial costs too much; the final gate still runs it
            continue
        settings, data_cfg = _benchmark_settings(cfg, benchmark)
        sample = sorted(rows[benchmark.name], key=lambda r: str(r["id"]))[: cfg.search.forgetting_probe_size]
        records = score_rows(base.model, base.tokenizer, sample, data_cfg, settings)
        baseline = sum(float(r[benchmark.metric]) for r in records) / max(len(records), 1)
        higher = metric_direction(benchmark.metric, benchmark.direction) == "maximize"
        probes.append(ForgettingProbe(benchmark.name, sample, data_cfg, settings, baseline, benchmark.margin, higher))
    return tuple(probes)


def evaluate_and_gate(
    cfg: HpoConfig,
    base: BaseModel,
    splits: Splits,
    candidate_dir: Path,
    champion_predictions: Path | None = None,
    champion_dir: Path | None = None,
    forgetting: dict[str, list[dict[str, Any]]] | None = None,
) -> GateDecision:
    """Score reference and candidate, write predictions and gate.json; returns the gate's decision.

    The reference on the test split is, in order: stored champion predictions, the champion's weights in
    `champion_dir` (re-evaluated here), or the base model.
    """
    if splits.test is None:
        raise ConfigError("data.test: set a held-out test split to evaluate and gate (or run `hpo-action search`)")
    output = Path(cfg.output.dir)
    folder = output / PREDICTIONS_DIR
    metric = cfg.primary_metric
    test_settings = EvalSettings.from_config(cfg.evaluate)
    extra = forgetting if forgetting is not None else forgetting_rows(cfg)
    champion = read_predictions(champion_predictions) if champion_predictions else None
    base_meta = {"model": cfg.model.name, "adapter": None, "adapter_sha256": None}

    def score(
        model: Any,
        rows: list[dict[str, Any]],
        data_cfg: DataConfig,
        settings: EvalSettings,
        name: str,
        meta: dict[str, Any],
    ) -> dict[str, dict[str, Any]]:
        records = score_and_write(
            model, base.tokenizer, rows, data_cfg, settings, folder / name, meta, rows_fingerprint(rows)
        )
        return {str(r["id"]): r for r in records}

    def score_benchmark(model: Any, benchmark: ForgettingBenchmark, role: str, meta: dict[str, Any]) -> Any:
        name = f"{benchmark.name}.{role}.jsonl"
        if benchmark.kind == "lm_eval":
            from hpo_action.judge.lm_eval_tasks import score_lm_eval

            records = score_lm_eval(model, base.tokenizer, benchmark, cfg.evaluate.batch_size)
            write_predictions(list(records.values()), folder / name, {**meta, "tasks": benchmark.tasks})
            return records
        settings, data_cfg = _benchmark_settings(cfg, benchmark)
        return score(model, extra[benchmark.name], data_cfg, settings, name, meta)

    references: dict[str, dict[str, dict[str, Any]]] = {}
    if champion is None and champion_dir is None:
        references["test"] = score(base.model, splits.test, cfg.data, test_settings, "test.base.jsonl", base_meta)
    for benchmark in cfg.gate.forgetting:
        references[benchmark.name] = score_benchmark(base.model, benchmark, "base", base_meta)

    if champion is None and champion_dir is not None:
        champion_model, champion_meta = attach_trained(base, champion_dir)
        champion = score(champion_model, splits.test, cfg.data, test_settings, "test.champion.jsonl", champion_meta)
        if hasattr(champion_model, "unload"):
            base.model = champion_model.unload()  # back to the bare base before the candidate's adapter
    candidate_model, candidate_meta = attach_trained(base, candidate_dir)
    candidates = {
        "test": score(candidate_model, splits.test, cfg.data, test_settings, "test.candidate.jsonl", candidate_meta)
    }
    inputs = []
    for benchmark in cfg.gate.forgetting:
        candidates[benchmark.name] = score_benchmark(candidate_model, benchmark, "candidate", candidate_meta)
        paired = pair(
            candidates[benchmark.name],
            references[benchmark.name],
            benchmark.metric,
            names=(f"{benchmark.name} candidate", f"{benchmark.name} base"),
        )
        inputs.append(ForgettingInput(benchmark.name, paired, benchmark.margin, benchmark.direction))
    reference = champion if champion is not None else references["test"]
    primary = pair(
        candidates["test"], reference, metric, names=("candidate", "champion" if champion is not None else "base")
    )
    decision = gate(primary, inputs, cfg.gate)
    decision.write(output / "gate.json")
    return decision
