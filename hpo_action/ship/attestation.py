"""The gate's evidence as an in-toto statement (spec v1): its subject is the digest of the gated files' manifest,
its predicate the decision and the numbers behind it, the champion it beat, the study and the code that ran.

It is written as plain JSON per github.com/in-toto/attestation/blob/main/spec/v1/statement.md, so an unsigned
publication (`registry.signing.method: off`, no `signing` extra) writes one too; with signing on, `model.sig`
covers it like every other file of the version.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hpo_action.errors import VerificationError
from hpo_action.judge.decision import GateDecision
from hpo_action.ship.manifest import ChampionRef, Manifest
from hpo_action.ship.signing import SigningPlan, key_fingerprint

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://hpo-action/gate/v1"  # names the predicate below, like model-signing's own type URI


def gate_statement(
    name: str,
    manifest: Manifest,
    gate: GateDecision,
    champion: ChampionRef | None,
    study: str,
    signing: dict[str, Any],
    env: Mapping[str, str],
) -> dict[str, Any]:
    """The statement for one version: `name` is the version's name (title and number)."""
    primary = gate.primary
    predicate = {
        "decision": gate.decision,
        "primary": {
            "metric": primary.metric,
            "test": primary.test,
            "n": primary.n,
            "candidate": primary.candidate,
            "reference": primary.reference,
            "delta": primary.delta,
            "bound": primary.bound,
            "p_value": primary.p_value,
            "alpha": primary.alpha,
            "min_effect": primary.min_effect,
        },
        "forgetting": [
            {
                "name": row.name,
                "metric": row.metric,
                "n": row.n,
                "delta": row.delta,
                "bound": row.bound,
                "margin": row.margin,
                "p_value": row.p_value,
                "status": row.status,
            }
            for row in gate.forgetting
        ],
        "test_fingerprint": gate.test_fingerprint,
        "adapter_sha256": gate.adapter_sha256,
        "champion": champion.to_json() if champion else None,
        "study": study,
        "producer": _producer(),
        "source": _source(env),
        "signing": signing,
        "published_at": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "files": manifest.to_json(),
    }
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": manifest.digest}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


@dataclass(frozen=True)
class Attestation:
    """A version's gate.intoto.json, read back."""

    subject: str  # the manifest digest
    predicate: dict[str, Any]

    @property
    def files(self) -> Manifest:
        return Manifest(dict(self.predicate.get("files") or {}))

    @property
    def signing_method(self) -> str:
        return str((self.predicate.get("signing") or {}).get("method", "off"))

    @classmethod
    def read(cls, path: Path) -> Attestation:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["_type"] != STATEMENT_TYPE or data["predicateType"] != PREDICATE_TYPE:
                raise ValueError("not an hpo-action gate statement")
            (subject,) = data["subject"]
            return cls(str(subject["digest"]["sha256"]), dict(data["predicate"]))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise VerificationError(f"{path}: not a gate attestation ({type(err).__name__}: {err})") from None

    def check(self, actual: Manifest, folder: Path, path: Path) -> None:
        """The files the gate judged are these, byte for byte, and the subject is their digest."""
        if self.files.digest != self.subject:
            raise VerificationError(f"{path}: its subject is not the digest of the files it lists; it was altered")
        problem = self.files.first_difference(actual)
        if problem is not None:
            name, what = problem
            raise VerificationError(f"{folder / name}: {what} since the gate judged it (see {path.name})")


@dataclass(frozen=True)
class Provenance:
    """What the model card says about a version's signature and attestation, and how to check them."""

    method: str  # sigstore | key | off
    signer: str | None  # keyless: the workflow identity; key: its sha256 fingerprint
    issuer: str
    manifest_digest: str
    attestation_sha256: str
    repository: str | None  # owner/name in GitHub Actions, for `gh attestation verify`
    target: str  # what `hpo-action verify` takes: hf://namespace/name:N, mlflow://name:N, or REGISTRY:N (a folder)

    @classmethod
    def of(
        cls,
        plan: SigningPlan,
        issuer: str,
        manifest_digest: str,
        attestation: bytes,
        target: str,
        env: Mapping[str, str],
    ) -> Provenance:
        signer = plan.identity if plan.method == "sigstore" else None
        if plan.key is not None:
            signer = f"sha256:{key_fingerprint(plan.key)}"
        digest = hashlib.sha256(attestation).hexdigest()
        return cls(plan.method, signer, issuer, manifest_digest, digest, env.get("GITHUB_REPOSITORY") or None, target)


def _producer() -> dict[str, Any]:
    """hpo-action's version, and the commit it was installed from when pip recorded one (a VCS install)."""
    try:
        distribution = importlib.metadata.distribution("hpo-action")
    except importlib.metadata.PackageNotFoundError:
        return {"name": "hpo-action", "version": None}
    direct = json.loads(distribution.read_text("direct_url.json") or "{}")
    commit = (direct.get("vcs_info") or {}).get("commit_id")
    return {"name": "hpo-action", "version": distribution.version, **({"commit": commit} if commit else {})}


def _source(env: Mapping[str, str]) -> dict[str, Any]:
    """The project's repository and commit: GitHub Actions says it; elsewhere the git checkout of the working
    folder does, if there is one."""
    if env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        run = env.get("GITHUB_RUN_ID")
        return {
            "repository": f"{server}/{env['GITHUB_REPOSITORY']}",
            "commit": env.get("GITHUB_SHA"),
            "workflow": env.get("GITHUB_WORKFLOW_REF"),
            "run": f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{run}" if run else None,
        }
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    except OSError:
        return {"commit": None}
    return {"commit": done.stdout.strip() if done.returncode == 0 else None}
