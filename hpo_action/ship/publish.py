"""Publish a gated run: render the card, collect the version's files, and compare-and-swap the champion."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hpo_action.config import HpoConfig, load_config
from hpo_action.errors import GateError, HpoActionError, RegistryError, VerificationError
from hpo_action.files import write_text_atomic
from hpo_action.interrupts import raise_if_pressed
from hpo_action.judge.decision import GateDecision
from hpo_action.judge.generation import read_decoding
from hpo_action.judge.predictions import read_meta
from hpo_action.layout import RunLayout
from hpo_action.search.summary import RunSummary
from hpo_action.ship.attestation import Provenance, gate_statement
from hpo_action.ship.card import card_title, render_card
from hpo_action.ship.manifest import ATTESTATION, SIGNATURE, ChampionRef, Manifest, check_run_manifest, hash_folder
from hpo_action.ship.registry import Champion, Registry, open_registry, scheme_of
from hpo_action.ship.registry._base import CARD
from hpo_action.ship.registry.ledger import check_counted
from hpo_action.ship.signing import SigningPlan, sign_folder, signing_plan
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
    """Publish a promoted run as the new champion: exactly the files the gate recorded in manifest.json (any
    difference is refused, naming the file), the card, the gate's attestation and, unless signing is off, the
    model-signing signature over all of them. With `dry_run`, only render the card and list the files (the gate
    ledger's count is checked only when publishing)."""
    layout = RunLayout(Path(run_dir))
    gate = gated_evidence(layout)
    recorded, files = check_run_manifest(layout)
    cfg = cfg or load_config(layout.run_config)
    env = dict(os.environ) if env is None else env
    plan = signing_plan(cfg.registry.signing, env)
    registry = open_registry(uri, cfg.registry)
    expected = gated_champion(layout, registry)
    _check_same_champion(layout, expected, recorded.champion)
    version = registry.next_version(expected)
    summary = RunSummary.read(layout.summary)
    title = card_title(cfg, registry.title)
    statement = gate_statement(
        f"{title} v{version}", recorded.files, gate, recorded.champion, summary.study_name, plan.to_json(), env
    )
    attestation = (json.dumps(statement, indent=2, allow_nan=False) + "\n").encode()
    target = f"{uri}:{version}" if scheme_of(uri) else f"REGISTRY:{version}"  # a folder's path is this machine's
    provenance = Provenance.of(plan, cfg.registry.signing.issuer, recorded.files.digest, attestation, target, env)
    plots = sorted(path.name for path in layout.plots_dir.glob("*.png"))
    previous = expected.version if expected else None
    load_from, fetch = registry.load_reference(version), registry.fetch_code(version)
    card = render_card(cfg, summary, gate, plots, title, previous, env, load_from, fetch, provenance)
    names = sorted([*files, CARD, ATTESTATION, *([SIGNATURE] if plan.method != "off" else [])])
    if dry_run:  # lists and renders only: the gate ledger is read when publishing (a dry run may run offline)
        return Publication(card, names, None)
    check_counted(registry, gate.config.sequence, str(layout.gate))
    write_text_atomic(layout.model_card, card)
    with _staged(layout, files, recorded.files, f"{title}-v{version}") as folder:
        (folder / ATTESTATION).write_bytes(attestation)
        (folder / CARD).write_text(card, encoding="utf-8")
        _sign(folder, plan, version)
        raise_if_pressed()  # nothing is published after a Ctrl-C, even one that a library swallowed
        staged = {name: folder / name for name in names}
        return Publication(card, names, registry.publish(staged, expected))


def _check_same_champion(layout: RunLayout, expected: Champion | None, recorded: ChampionRef | None) -> None:
    """gated_against.json (the swap's base) and manifest.json (the attestation's reference) name one champion."""
    if (expected.version if expected else None) != (recorded.version if recorded else None):
        raise VerificationError(
            f"{layout.gated_against}: names another champion than {layout.manifest} (recorded by the gate); "
            "run `hpo-action run` again"
        )


@contextmanager
def _staged(layout: RunLayout, files: dict[str, Path], manifest: Manifest, name: str) -> Iterator[Path]:
    """The version laid out in a private folder of the run, its copies checked against the manifest once more, so
    what is signed and uploaded is what the gate saw even if the run folder changes meanwhile."""
    root = Path(tempfile.mkdtemp(dir=layout.root, prefix=".publish-"))
    folder = root / re.sub(r"[^A-Za-z0-9._-]+", "-", name)  # model-signing names the signed model after it
    try:
        for version_name, source in files.items():
            target = folder / version_name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        problem = manifest.first_difference(hash_folder(folder))
        if problem is not None:
            raise VerificationError(f"{files.get(problem[0], problem[0])}: {problem[1]} while it was being published")
        yield folder
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _sign(folder: Path, plan: SigningPlan, version: int) -> None:
    try:
        sign_folder(folder, plan)
    except HpoActionError:
        raise
    except Exception as err:  # the OIDC exchange, Fulcio, Rekor: one line, nothing published
        raise RegistryError(
            f"signing v{version} ({plan.method}) failed, so nothing was published: {type(err).__name__}: {err}"
        ) from None
