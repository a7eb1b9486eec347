"""Publish a gated run: render the card, collect the version's files, and compare-and-swap the champion."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hpo_action.config import HpoConfig, load_config
from hpo_action.errors import GateError, RegistryError
from hpo_action.files import write_text_atomic
from hpo_action.interrupts import raise_if_pressed
from hpo_action.judge.decision import GateDecision
from hpo_action.judge.generation import read_decoding
from hpo_action.judge.predictions import read_meta
from hpo_action.layout import RunLayout
from hpo_action.search.summary import RunSummary
from hpo_action.ship.card import card_title, render_card
from hpo_action.ship.registry import Champion, Registry, open_registry
from hpo_action.ship.registry._base import version_files
from hpo_action.train.models import adapter_sha256


@dataclass(frozen=True)
class Publication:
    """What `publish` did (or, with dry_run, would do): the card, the version's files, the new champion."""

    card: str
    files: list[str]
    champion: Champion | None  # None on a dry run


def record_gated_champion(layout: RunLayout, champion: Champion | None) -> None:
    """Remember which champion the gate compared against, so a later `publish` swaps from exactly that one."""
    write_text_atomic(layout.gated_against, json.dumps(champion.to_json() if champion else None) + "\n")


def gated_champion(layout: RunLayout, registry: Registry) -> Champion | None:
    """The champion as the gate read it (its revision), or None when the gate compared against the base."""
    path = layout.gated_against
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    if data is None:
        return None
    if data["uri"] != registry.uri:
        raise RegistryError(f"{layout.root} was gated against {data['uri']}, not {registry.uri}: run it again")
    current = registry.read_champion()
    if current is None or current.revision != data["revision"]:
        return Champion.from_json(data, layout.root)
    return current


def gated_evidence(layout: RunLayout) -> GateDecision:
    """The run's promote verdict, checked against what would be published: best/'s weights must hash to the
    adapter the gate saw, its generation settings must be the ones the gate evaluated with, and the stored test
    predictions must be the ones it was computed from. Anything else (no verdict, a reject, weights or settings
    replaced after the gate) is refused, exit 2."""
    if not layout.gate.is_file():
        raise GateError(f"{layout.root}: no gate.json, so nothing here was gated; run `hpo-action run` first")
    gate = GateDecision.read(layout.gate)
    if not gate.promote:
        raise GateError(f"{layout.root}: the gate decided {gate.decision!r}; only a promoted run is published")
    if not gate.adapter_sha256 or not gate.test_fingerprint:
        raise GateError(
            f"{layout.gate}: no adapter hash or test fingerprint in the verdict; run `hpo-action run` again"
        )
    if not layout.best_dir.is_dir():
        raise GateError(f"{layout.root}: no best/ folder to publish")
    actual = adapter_sha256(layout.best_dir)
    if actual != gate.adapter_sha256:
        raise GateError(
            f"{layout.best_dir}: these weights (sha256 {actual[:12]}) are not the ones the gate promoted "
            f"({gate.adapter_sha256[:12]}): best/ changed after the gate; run `hpo-action run` again"
        )
    decoding = read_decoding(layout.best_dir)
    if (decoding.to_json() if decoding else None) != gate.config.decoding:
        raise GateError(
            f"{layout.best_dir}: its generation settings (generation_config.json) are not the ones the gate "
            "evaluated with: they changed after the gate; run `hpo-action run` again"
        )
    meta = read_meta(layout.predictions("test", "candidate"))
    if meta.get("adapter_sha256") != gate.adapter_sha256 or meta.get("data_fingerprint") != gate.test_fingerprint:
        raise GateError(
            f"{layout.predictions('test', 'candidate')}: these predictions are not the ones the gate used; "
            "run `hpo-action run` again"
        )
    return gate


def publish_run(
    run_dir: Path, uri: str, cfg: HpoConfig | None = None, dry_run: bool = False, env: dict[str, str] | None = None
) -> Publication:
    """Publish a promoted run as the new champion; with `dry_run`, only render the card and list the files."""
    layout = RunLayout(Path(run_dir))
    gate = gated_evidence(layout)
    cfg = cfg or load_config(layout.run_config)
    registry = open_registry(uri, cfg.registry)
    expected = gated_champion(layout, registry)
    version = registry.next_version(expected)
    plots = sorted(path.name for path in layout.plots_dir.glob("*.png"))
    summary = RunSummary.read(layout.summary)
    previous = expected.version if expected else None
    title = card_title(cfg, registry.title)
    load_from, fetch = registry.load_reference(version), registry.fetch_code(version)
    card = render_card(cfg, summary, gate, plots, title, previous, env, load_from, fetch)
    if dry_run:
        return Publication(card, sorted([*version_files(layout), "README.md"]), None)
    write_text_atomic(layout.model_card, card)
    files = version_files(layout, layout.model_card)
    raise_if_pressed()  # nothing is published after a Ctrl-C, even one that a library swallowed
    return Publication(card, sorted(files), registry.publish(files, expected))
