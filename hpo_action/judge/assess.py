"""After the study: score the best trial once on the held-out test split and the forgetting sets, then gate.

The base model is scored before the adapter is attached (PEFT wraps the base in place), and every score is
written as a predictions file, so a later run, or `hpo-action gate`, can re-gate without re-evaluating.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from hpo_action import drills
from hpo_action.config import ForgettingBenchmark, HpoConfig
from hpo_action.data.loading import Splits, rows_fingerprint
from hpo_action.data.rows import Rows
from hpo_action.errors import ConfigError
from hpo_action.judge.decision import GateDecision
from hpo_action.judge.evaluate import EvalSettings, attach_trained, score_and_write
from hpo_action.judge.forgetting import benchmark_settings
from hpo_action.judge.forgetting_split import forgetting_parts
from hpo_action.judge.gate import ForgettingInput, gate, pair
from hpo_action.judge.generation import Decoding, read_decoding
from hpo_action.judge.predictions import RecordsById, read_predictions, write_predictions
from hpo_action.layout import RunLayout
from hpo_action.train.models import BaseModel

BASE_META = {"adapter": None, "adapter_sha256": None}


class _Scorer:
    """Scores one model at a time on the test split and the forgetting sets, writing each predictions file."""

    def __init__(self, cfg: HpoConfig, base: BaseModel, splits: Splits, sets: dict[str, Rows], layout: RunLayout):
        if splits.test is None:
            raise ConfigError("data.test: set a held-out test split to evaluate and gate (or run `hpo-action search`)")
        self.cfg, self.base, self.test_rows, self.sets, self.layout = cfg, base, splits.test, sets, layout

    def test(self, model: Any, role: str, meta: dict[str, Any], decoding: Decoding | None = None) -> RecordsById:
        settings = EvalSettings.from_config(self.cfg.evaluate, decoding)
        out = self.layout.predictions("test", role)
        return self._score(model, self.test_rows, self.cfg.data, settings, out, meta, f"evaluating {role} on test")

    def forgetting(
        self, model: Any, benchmark: ForgettingBenchmark, role: str, meta: dict[str, Any], decoding: Decoding | None
    ) -> RecordsById:
        out = self.layout.predictions(benchmark.name, role)
        if benchmark.kind == "lm_eval":
            from hpo_action.judge.lm_eval_tasks import score_lm_eval

            records = score_lm_eval(model, self.base.tokenizer, benchmark, self.cfg.evaluate.batch_size)
            write_predictions(list(records.values()), out, {**meta, "tasks": benchmark.tasks})
            return records
        settings, data_cfg = benchmark_settings(self.cfg, benchmark)
        settings = replace(settings, decoding=decoding)
        label = f"evaluating {role} on {benchmark.name}"
        return self._score(model, self.sets[benchmark.name], data_cfg, settings, out, meta, label)

    def _score(
        self, model: Any, rows: Rows, data_cfg: Any, settings: EvalSettings, out: Path, meta: Any, label: str
    ) -> RecordsById:
        fingerprint = rows_fingerprint(rows)
        records = score_and_write(model, self.base.tokenizer, rows, data_cfg, settings, out, meta, fingerprint, label)
        return {str(r["id"]): r for r in records}


def evaluate_and_gate(
    cfg: HpoConfig,
    base: BaseModel,
    splits: Splits,
    candidate_dir: Path,
    sets: dict[str, Rows],
    champion_predictions: Path | None = None,
    champion_dir: Path | None = None,
) -> GateDecision:
    """Score reference and candidate, write predictions and gate.json; returns the gate's decision.

    The reference on the test split is, in order: stored champion predictions, the champion's weights in
    `champion_dir` (re-evaluated here), or the base model. Forgetting sets: always against the base, gate parts only.
    A trained model generates with the settings saved beside its weights (generation_config.json from the
    decoding search), on the test split and the forgetting sets alike: what a user of the published model gets.
    The base model has no settings of its own, so it generates with the candidate's, on both: the gate then
    measures the fine-tuning, not the decoding search. A champion generates with its own (what it shipped with).
    gate.json's config records both (`decoding`, `reference_decoding`).
    """
    layout = RunLayout(Path(cfg.output.dir))
    parts = forgetting_parts(cfg, sets)  # the gate tests only the rows the search's probe never saw
    scorer = _Scorer(cfg, base, splits, {name: part.gate for name, part in parts.items()}, layout)
    base_meta = {"model": cfg.model.name, **BASE_META}
    decoding = read_decoding(candidate_dir)  # the base is scored with the candidate's settings: one comparison
    champion = read_predictions(champion_predictions) if champion_predictions else None
    against_base = champion is None and champion_dir is None
    reference_test = scorer.test(base.model, "base", base_meta, decoding) if against_base else None
    reference_decoding = decoding if against_base else None
    base_scores = {b.name: scorer.forgetting(base.model, b, "base", base_meta, decoding) for b in cfg.gate.forgetting}
    if champion is None and champion_dir is not None:
        champion_model, champion_meta = attach_trained(base, champion_dir)
        reference_decoding = read_decoding(champion_dir)  # a champion is judged as it was published
        champion = scorer.test(champion_model, "champion", champion_meta, reference_decoding)
        if hasattr(champion_model, "unload"):
            base.model = champion_model.unload()  # back to the bare base before the candidate's adapter
    candidate_model, candidate_meta = attach_trained(base, candidate_dir)
    candidate_test = scorer.test(candidate_model, "candidate", candidate_meta, decoding)
    inputs = []
    for benchmark in cfg.gate.forgetting:
        scores = scorer.forgetting(candidate_model, benchmark, "candidate", candidate_meta, decoding)
        names = (f"{benchmark.name} candidate", f"{benchmark.name} base")
        paired = pair(scores, base_scores[benchmark.name], benchmark.metric, names=names)
        inputs.append(ForgettingInput(benchmark.name, paired, benchmark.margin, benchmark.direction))
    reference = champion if champion is not None else reference_test
    assert reference is not None
    role = "champion" if champion is not None else "base"
    drills.at("after-evaluate")
    primary = pair(candidate_test, reference, cfg.primary_metric, names=("candidate", role))
    sha, fingerprint = candidate_meta["adapter_sha256"], rows_fingerprint(scorer.test_rows)
    decision = gate(primary, inputs, cfg.gate, sha, fingerprint, vocab_size=len(base.tokenizer))
    decision = _with_probe_rows(decision, {name: len(part.probe) for name, part in parts.items()})
    if decoding is not None or reference_decoding is not None:
        settings = replace(
            decision.config,
            decoding=decoding.to_json() if decoding else None,
            reference_decoding=reference_decoding.to_json() if reference_decoding else None,
        )
        decision = replace(decision, config=settings)
    decision.write(layout.gate)
    return decision


def _with_probe_rows(decision: GateDecision, held_back: dict[str, int]) -> GateDecision:
    """Each forgetting row records how many of its set's rows the search's probe took (and the gate never saw)."""
    rows = tuple(replace(row, probe_rows=held_back.get(row.name, 0)) for row in decision.forgetting)
    return replace(decision, forgetting=rows)
