"""The model card: Hub metadata (model-index with the gated test metric) and the evidence, from a template."""

from __future__ import annotations

import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo_action.config import HpoConfig, ModelConfig
from hpo_action.files import template
from hpo_action.judge.decision import GateDecision
from hpo_action.judge.generation import Decoding
from hpo_action.report.escape import md_text
from hpo_action.report.github import github_run_url
from hpo_action.report.tables import pareto_table, to_markdown, tradeoff_line, verdict_markdown
from hpo_action.search.summary import RunSummary
from hpo_action.ship.attestation import Provenance
from hpo_action.sources import is_hub_id
from hpo_action.train.demo_model import is_demo_model
from hpo_action.train.model_source import public_model_name

PLOT_TITLES = {
    "optimization_history.png": "Optimization history",
    "param_importances.png": "Parameter importances",
    "intermediate_values.png": "Intermediate values (what the pruner saw)",
    "pareto_front.png": "Pareto front (quality against forgetting)",
}
VERSIONED = ("torch", "transformers", "peft", "trl", "optuna", "huggingface_hub", "hpo-action")
METHOD_NAMES = {"lora": "LoRA adapter", "qlora": "QLoRA adapter", "full": "fully fine-tuned model"}
SEARCH_NAMES = {
    "ray:pbt": "Population Based Training on Ray Tune",
    "ray:pb2": "Population Based Bandits (PB2) on Ray Tune",
    "ray:asha": "an ASHA search on Ray Tune",
}


def render_card(
    cfg: HpoConfig,
    summary: RunSummary,
    gate: GateDecision,
    plots: list[str],
    title: str,
    champion_version: int | None,
    env: dict[str, str] | None = None,
    load_from: str | None = None,
    fetch: str | None = None,
    provenance: Provenance | None = None,
) -> str:
    """README.md for a version: metadata for the Hub, then how to load it, the search and the gate evidence.
    Every user or data string in the body goes through `md_text` (the tables and the verdict do it themselves).

    `plots` are the names of the PNG files in plots/; `load_from` is what `from_pretrained` takes to load this
    version (the registry says: a Hub repo id, a folder); `fetch`, when the registry gives it, is code that first
    downloads the version and binds `path` to its folder (MLflow), which `from_pretrained` then takes;
    `provenance` says how the version is signed and attested (publish always passes it).
    """
    from huggingface_hub import ModelCard

    if summary.best is None:
        raise ValueError("a model card needs the study's best trial")
    card = ModelCard.from_template(
        _card_data(cfg, gate, title),
        template_path=str(template("model_card.md")),
        model_name=md_text(title),
        fetch=fetch,
        load_argument="path" if fetch else json.dumps(load_from or title, ensure_ascii=False),
        method_name=METHOD_NAMES[cfg.model.method],
        base=base_model_source(cfg.model),
        reference_name=f"the champion v{champion_version}" if champion_version else "the base model",
        params={md_text(name): md_text(value) for name, value in summary.best.params.items()},
        summary=summary,
        objective=md_text(summary.objective_metric),
        selection=md_text(summary.selection.rule) if summary.selection else None,
        stopped_early=md_text(summary.stopped_early) if summary.stopped_early else None,
        search_name=SEARCH_NAMES.get(summary.pruner, "a pruned Optuna search"),
        schedule=_schedule(summary),
        budget=cfg.search.budget.model_dump(),
        gate=gate,
        gate_markdown="\n".join(verdict_markdown(gate)),
        decoding=Decoding.from_json(gate.config.decoding).describe() if gate.config.decoding else None,
        reference_decoding=_reference_generation(gate),
        tradeoff=md_text(tradeoff) if (tradeoff := tradeoff_line(summary)) else None,
        pareto_markdown="\n".join(to_markdown(pareto)) if (pareto := pareto_table(summary)) else "",
        plots=[{"title": title, "path": f"plots/{name}"} for name, title in PLOT_TITLES.items() if name in plots],
        versions=_versions(),
        run_url=github_run_url(dict(os.environ) if env is None else env),
        provenance=provenance,
    )
    return str(card)


def _schedule(summary: RunSummary) -> list[str]:
    """The winner's PBT schedule, one line per change ('from step 20: learning_rate 0.012, ...'); empty when its
    parameters never changed (or another search ran)."""
    assert summary.best is not None
    winner = next((t for t in summary.trials if t.number == summary.best.number), None)
    if winner is None or len(winner.schedule) < 2:
        return []
    lines, before = [], {}
    for step, params in winner.schedule:
        changed = {k: v for k, v in params.items() if before.get(k) != v}
        shown = ", ".join(
            f"{md_text(k)} {v:.4g}" if isinstance(v, float) else f"{md_text(k)} {md_text(v)}"
            for k, v in changed.items()
        )
        lines.append(f"from step {int(step)}: {shown}")
        before = params
    return lines


def _reference_generation(gate: GateDecision) -> str | None:
    """How the reference generated on the test split, when the gate scored it: the candidate's settings (the
    base model) or its own (a champion)."""
    reference = gate.config.reference_decoding
    if reference is None:
        return None
    if reference == gate.config.decoding:
        return "the same settings"
    return f"its own settings ({Decoding.from_json(reference).describe()})"


def card_title(cfg: HpoConfig, registry_title: str | None) -> str:
    """registry.title, else the registry's own (a Hub repo's name), else '<base model>-<method>': never the name
    of a folder such as 'registry'."""
    return cfg.registry.title or registry_title or f"{Path(cfg.model.name).name}-{cfg.model.method}"


@dataclass(frozen=True)
class BaseModelSource:
    """How a reader of the card gets the base model: its public name, a note on where it comes from, the
    `from_pretrained` argument, and the lines (if any) that make that argument exist."""

    name: str
    note: str | None
    argument: str
    setup: str | None = None


def base_model_source(model: ModelConfig) -> BaseModelSource:
    """A Hub id (or model.card_base_model) loads by its id; the bundled demo is rebuilt in code by
    `ensure_demo_model()`; a local folder is named, and the reader supplies it. Never this machine's path."""
    name = public_model_name(model)
    if is_demo_model(model.name):
        return BaseModelSource(
            name,
            "hpo-action's bundled tiny demo model, built in code: `ensure_demo_model()` from "
            "`hpo_action.train.demo_model` rebuilds it, seeded, in about 30 s on a CPU",
            "ensure_demo_model()",
            "from hpo_action.train.demo_model import ensure_demo_model  # pip install hpo-action",
        )
    credited = card_base_model(model)
    if credited:
        return BaseModelSource(credited, None, json.dumps(credited, ensure_ascii=False))
    return BaseModelSource(
        name,
        f"a local folder named `{name}`; supply it yourself",
        json.dumps(f"PATH/TO/{name}", ensure_ascii=False),
    )


def card_base_model(model: ModelConfig) -> str | None:
    """The Hub id to credit as the base: model.card_base_model, else model.name when it is a Hub id. A local
    folder (or the demo model, built locally) is never named: a path means nothing on the Hub and leaks a
    machine's layout."""
    if model.card_base_model:
        return model.card_base_model
    return model.name if is_hub_id(model.name) and not is_demo_model(model.name) else None


def _card_data(cfg: HpoConfig, gate: GateDecision, title: str) -> Any:
    """The card's YAML header: what the Hub indexes (base model, library, tags, datasets, the gated metrics)."""
    from huggingface_hub import EvalResult, ModelCardData

    adapter = cfg.model.method in ("lora", "qlora")
    base = card_base_model(cfg.model)
    test_name = _dataset_name(cfg.data.test or "test")
    results = [
        EvalResult(
            task_type="text-generation",
            dataset_type=test_name,
            dataset_name=f"{test_name} (held-out test split)",
            dataset_split="test",
            metric_type=gate.primary.metric,
            metric_value=round(gate.primary.candidate, 6),
        )
    ]
    results += [
        EvalResult(
            task_type="text-generation",
            dataset_type=row.name,
            dataset_name=f"forgetting: {row.name}",
            metric_type=row.metric,
            metric_value=round(row.candidate, 6),
        )
        for row in gate.forgetting
    ]
    tags = [cfg.model.method if adapter else "full-fine-tune", "trl", "sft", "hpo-action"]
    if adapter and base:
        tags.append(f"base_model:adapter:{base}")
    datasets = [d.partition(":")[0] for d in (cfg.data.train, cfg.data.test) if d and is_hub_id(d)]
    return ModelCardData(
        model_name=" ".join(title.split()),  # one line: YAML quotes what needs quoting, a line break could end it
        base_model=base,
        base_model_relation=("adapter" if adapter else "finetune") if base else None,
        library_name="peft" if adapter else "transformers",
        pipeline_tag="text-generation",
        tags=tags,
        datasets=datasets or None,
        license=cfg.registry.license,
        eval_results=results,
    )


def _versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _dataset_name(source: str) -> str:
    return source.split(":")[0] if is_hub_id(source) else Path(source).stem
