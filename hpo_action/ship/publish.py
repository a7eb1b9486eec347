"""Publish a gated run: render the card, collect the version's files, and compare-and-swap the champion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hpo_action.config import HpoConfig, load_config
from hpo_action.errors import RegistryError
from hpo_action.files import write_text_atomic
from hpo_action.judge.gate import GateDecision
from hpo_action.ship.card import render_card
from hpo_action.ship.registry import Champion, Registry, open_registry
from hpo_action.ship.registry._base import version_files

GATED_AGAINST = "champion.json"  # in the run folder: the champion the gate read (the compare-and-swap base)
RUN_CONFIG = "config.yaml"


def record_gated_champion(run_dir: Path, champion: Champion | None) -> None:
    """Remember which champion the gate compared against, so a later `publish` swaps from exactly that one."""
    data = (
        None if champion is None else {"uri": champion.uri, "version": champion.version, "revision": champion.revision}
    )
    write_text_atomic(run_dir / GATED_AGAINST, json.dumps(data) + "\n")


def gated_champion(run_dir: Path, registry: Registry) -> Champion | None:
    """The champion as the gate read it (its revision), or None when the gate compared against the base."""
    path = run_dir / GATED_AGAINST
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    if data is None:
        return None
    if data["uri"] != registry.uri:
        raise RegistryError(f"{run_dir} was gated against {data['uri']}, not {registry.uri}: run it again")
    current = registry.champion()
    if current is None or current.revision != data["revision"]:
        return Champion(version=data["version"], path=run_dir, revision=data["revision"], uri=data["uri"])
    return current


def repo_id(uri: str) -> str:
    return uri.removeprefix("hf://") if uri.startswith("hf://") else Path(uri).name


def publish_run(
    run_dir: Path, uri: str, cfg: HpoConfig | None = None, dry_run: bool = False, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Publish a promoted run as the new champion; with `dry_run`, only render the card and list the files."""
    run_dir = Path(run_dir)
    gate_file = run_dir / "gate.json"
    if not gate_file.is_file():
        raise RegistryError(f"{run_dir}: no gate.json; run `hpo-action run` first")
    gate = GateDecision.read(gate_file)
    if not gate.promote:
        raise RegistryError(f"{run_dir}: the gate decided {gate.decision!r}; only a promoted run is published")
    cfg = cfg or load_config(run_dir / RUN_CONFIG)
    registry = open_registry(uri)
    expected = gated_champion(run_dir, registry)
    version = (expected.version if expected else 0) + 1
    load_from = None if uri.startswith("hf://") else str(Path(registry.uri) / "versions" / str(version))
    card = render_card(cfg, run_dir, gate, repo_id(uri), expected.version if expected else None, env, load_from)
    if dry_run:
        files = version_files(run_dir)
        return {"dry_run": True, "card": card, "files": sorted([*files, "README.md"]), "expected": expected}
    card_path = run_dir / "model_card.md"
    write_text_atomic(card_path, card)
    champion = registry.publish(version_files(run_dir, card_path), expected)
    return {"dry_run": False, "champion": champion, "files": sorted(version_files(run_dir, card_path))}
