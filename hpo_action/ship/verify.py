"""Verify a published version before trusting it: the signature (model-signing), every file against the signed
manifest, and the gate's attestation against the files it judged. `hpo-action verify` prints the result; `run`
refuses to gate against (or reuse the predictions of) a champion that fails it."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo_action.config import SigningConfig
from hpo_action.errors import ConfigError, VerificationError
from hpo_action.ship.attestation import Attestation
from hpo_action.ship.manifest import ATTESTATION, PUBLISHED_ONLY, SIGNATURE, ChampionRef, hash_folder
from hpo_action.ship.registry import Champion, Registry, open_registry, registry_files
from hpo_action.ship.signing import (
    Signer,
    Trust,
    read_signature,
    signing_plan,
    trust_from,
    verify_signature,
)


@dataclass(frozen=True)
class VersionCheck:
    """A version that passed: who signed it (None: unsigned), the gate's attestation, the gated files' digest."""

    version: int
    signer: Signer | None
    attestation: Attestation | None  # None: published before hpo-action wrote attestations
    digest: str

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "signed": self.signer is not None,
            "signer": self.signer.to_json() if self.signer else None,
            "digest": {"sha256": self.digest},
            "evidence": self.attestation.predicate if self.attestation else None,
        }

    def describe(self) -> list[str]:
        """The lines `hpo-action verify` prints: the signer, then the gate's evidence."""
        lines = [f"v{self.version}: files match (manifest sha256 {self.digest})"]
        if self.signer is None:
            lines.append("UNSIGNED: nothing proves who published these files")
        else:
            signer = self.signer
            lines.append(f"signed by {signer.identity}" + (f" (issuer {signer.issuer})" if signer.issuer else ""))
            lines += [f"  {label}: {value}" for label, value in _signer_details(signer)]
        if self.attestation is not None:
            lines += _evidence_lines(self.attestation.predicate)
        return lines


def check_folder(
    folder: Path, trust: Trust, version: int, ignore: Collection[str] = (), allow_unsigned: bool = False
) -> VersionCheck:
    """Check one version's folder; any difference is a VerificationError naming the file. `ignore`: top-level
    names that belong to the registry, not the version (a Hub repo's registry.json)."""
    actual = hash_folder(folder, ignore)
    attestation_path = folder / ATTESTATION
    attestation = Attestation.read(attestation_path) if attestation_path.is_file() else None
    signer = None
    if (folder / SIGNATURE).is_file():
        signer = verify_signature(folder, read_signature(folder / SIGNATURE), trust, actual, ignore)
    elif attestation is not None and attestation.signing_method != "off":
        raise VerificationError(
            f"{folder / SIGNATURE}: missing, yet this version was published signed ({attestation.signing_method})"
        )
    elif not allow_unsigned:
        raise VerificationError(
            f"{folder}: v{version} is unsigned (no {SIGNATURE}); nothing proves these are the files that were "
            "published (--allow-unsigned-champion / --allow-unsigned accept it, for registries that predate signing)"
        )
    gated = actual.without(PUBLISHED_ONLY)
    if attestation is not None:
        attestation.check(gated, folder, attestation_path)
    return VersionCheck(version, signer, attestation, gated.digest)


def verify_version(uri: str, version: int | None, trust: Trust, allow_unsigned: bool = False) -> VersionCheck:
    """`hpo-action verify REGISTRY[:VERSION]`: the champion, or the version named."""
    registry = open_registry(uri)
    champion = registry.read_champion()
    if champion is None:
        raise ConfigError(f"{uri}: no champion yet, so nothing to verify")
    if version is not None and version != champion.version:
        found = next((entry for entry in registry.history() if entry.version == version), None)
        if found is None:
            raise ConfigError(f"{uri}:{version}: no such version (the champion is v{champion.version})")
        champion = found
    folder = registry.load_adapter(champion)
    return check_folder(folder, trust, champion.version, registry_files(registry), allow_unsigned)


def trust_champion(
    registry: Registry, champion: Champion, settings: SigningConfig, allow_unsigned: bool, env: Mapping[str, str]
) -> ChampionRef:
    """Before `run` gates against the champion or reuses its predictions: its signature, files and attestation
    must verify (exit 1 naming the file). An unsigned champion passes with `allow_unsigned`, or when this run
    publishes unsigned too (`registry.signing` resolves to off)."""
    unsigned_ok = allow_unsigned or signing_plan(settings, env).method == "off"
    folder, trust = registry.load_adapter(champion), trust_from(settings, env)
    try:
        checked = check_folder(folder, trust, champion.version, registry_files(registry), unsigned_ok)
    except VerificationError as err:
        raise VerificationError(f"champion v{champion.version} of {registry.name} is not trusted: {err}") from None
    return ChampionRef(champion.version, checked.digest)


def parse_target(target: str) -> tuple[str, int | None]:
    """REGISTRY[:VERSION] → (registry URI, version or None)."""
    uri, sep, version = target.rpartition(":")
    if sep and uri and version.isdigit():
        return uri, int(version)
    if not target:
        raise ConfigError("verify: name a registry, e.g. ./registry or hf://me/adapter:3")
    return target, None


def _signer_details(signer: Signer) -> list[tuple[str, str]]:
    details = [
        ("workflow", signer.workflow),
        ("repository", signer.repository),
        ("commit", signer.commit),
        ("signed at", signer.signed_at or "(a key signature carries no time; see published_at below)"),
    ]
    return [(label, value) for label, value in details if value]


def _evidence_lines(evidence: dict[str, Any]) -> list[str]:
    primary = evidence.get("primary") or {}
    champion = evidence.get("champion")
    against = "the base model"
    if champion:
        digest = (champion.get("digest") or {}).get("sha256")
        against = f"champion v{champion['version']}" + (f" (sha256 {digest})" if digest else " (unsigned)")
    lines = [
        f"gate: {evidence.get('decision')} against {against}",
        f"  {primary.get('metric')}: {primary.get('test')}, n = {primary.get('n')}, delta {primary.get('delta')}, "
        f"lower bound {primary.get('bound')}, p = {primary.get('p_value')} (alpha {primary.get('alpha')})",
        f"  test set fingerprint: {evidence.get('test_fingerprint')}",
    ]
    for row in evidence.get("forgetting") or []:
        lines.append(
            f"  forgetting {row['name']}: {row['status']}, delta {row['delta']}, bound {row['bound']}, "
            f"margin {row['margin']}, n = {row['n']}"
        )
    producer, source = evidence.get("producer") or {}, evidence.get("source") or {}
    lines.append(f"  study {evidence.get('study')}, published {evidence.get('published_at')}")
    lines.append(
        f"  hpo-action {producer.get('version')}"
        + (f"; the project at commit {source.get('commit')}" if source.get("commit") else "")
        + (f" of {source.get('repository')}" if source.get("repository") else "")
    )
    return lines
