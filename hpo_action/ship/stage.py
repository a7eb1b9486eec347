"""The publication stage around the gate: the champion is verified before it is gated against, what it left for
the gate (its stored test predictions, or its weights) is chosen, and a promoted candidate is published. Its one
hand-off is the Publication (None when nothing was published)."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from hpo_action import drills
from hpo_action.config import HpoConfig
from hpo_action.data.loading import rows_fingerprint
from hpo_action.data.rows import Rows
from hpo_action.judge.decision import GateDecision
from hpo_action.judge.stage import Reference
from hpo_action.ship.manifest import ChampionRef
from hpo_action.ship.publish import Publication, publish_run
from hpo_action.ship.registry import Champion, Registry
from hpo_action.ship.verify import trust_champion


def trusted_champion(
    cfg: HpoConfig, registry: Registry | None, champion: Champion | None, allow_unsigned: bool, console: Console
) -> ChampionRef | None:
    """Verify the champion (signature, files, attestation) before it is gated against or its predictions reused."""
    if registry is None or champion is None:
        return None
    trusted = trust_champion(registry, champion, cfg.registry.signing, allow_unsigned, os.environ)
    console.print(f"champion v{champion.version}: verified (gated files sha256 {trusted.digest})")
    return trusted


def gate_reference(
    cfg: HpoConfig, champion: Champion | None, champion_predictions: Path | None, test: Rows, console: Console
) -> Reference:
    """Given predictions win; else the champion's stored test predictions when they were made on these test rows
    with these settings, else its weights (re-evaluated); no champion: the base model."""
    if champion is None or champion_predictions is not None:
        return Reference(predictions=champion_predictions)
    settings = cfg.evaluate
    reusable = champion.reusable_for(
        rows_fingerprint(test), settings.metrics, settings.normalize, settings.max_new_tokens
    )
    how = "reusing its stored test predictions" if reusable else "re-evaluating it (other test rows or settings)"
    console.print(f"champion v{champion.version}: {how}")
    return Reference(predictions=champion.test_predictions) if reusable else Reference(model_dir=champion.path)


def publish_stage(
    cfg: HpoConfig, registry: Registry | None, decision: GateDecision, console: Console
) -> Publication | None:
    """Publish the run to the registry when the gate promoted it."""
    if registry is None:
        return None
    if not decision.promote:
        console.print(f"not published: the gate decided {decision.decision}")
        return None
    published = publish_run(Path(cfg.output.dir), registry.uri, cfg)
    drills.at("after-publish")
    assert published.champion is not None
    champion = published.champion
    console.print(f"published v{champion.version} to {registry.uri} (revision {champion.revision[:12]})")
    return published


def registry_line(registry: Registry | None, published: Publication | None, champion: Champion | None) -> str | None:
    """The report's line on the registry: the new champion, or the one that stays."""
    shown = published.champion if published else champion
    if registry is None or shown is None:
        return None
    what = "published as the new champion" if published else "champion unchanged"
    return f"{what}: v{shown.version} at {registry.url(shown)}"
