"""Publish a gated run: render the card, collect the version's files, and compare-and-swap the champion."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hpo_action.config import HpoConfig, load_config
from hpo_action.errors import RegistryError
from hpo_action.files import write_text_atomic
from hpo_action.judge.decision import GateDecision
from hpo_action.layout import RunLayout
from hpo_action.search.summary import RunSummary
from hpo_action.ship.card import render_card
from hpo_action.ship.registry import Champion, Registry, open_registry
from hpo_action.ship.registry._base import version_files


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


def publish_run(
    run_dir: Path, uri: str, cfg: HpoConfig | None = None, dry_run: bool = False, env: dict[str, str] | None = None
) -> Publication:
    """Publish a promoted run as the new champion; with `dry_run`, only render the card and list the files."""
    layout = RunLayout(Path(run_dir))
    if not layout.gate.is_file():
        raise RegistryError(f"{layout.root}: no gate.json; run `hpo-action run` first")
    gate = GateDecision.read(layout.gate)
    if not gate.promote:
        raise RegistryError(f"{layout.root}: the gate decided {gate.decision!r}; only a promoted run is published")
    cfg = cfg or load_config(layout.run_config)
    registry = open_registry(uri, cfg.registry)
    expected = gated_champion(layout, registry)
    version = (expected.version if expected else 0) + 1
    plots = sorted(path.name for path in layout.plots_dir.glob("*.png"))
    summary = RunSummary.read(layout.summary)
    previous = expected.version if expected else None
    card = render_card(cfg, summary, gate, plots, registry.name, previous, env, registry.load_reference(version))
    if dry_run:
        return Publication(card, sorted([*version_files(layout), "README.md"]), None)
    write_text_atomic(layout.model_card, card)
    files = version_files(layout, layout.model_card)
    return Publication(card, sorted(files), registry.publish(files, expected))
