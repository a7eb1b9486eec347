"""Manifests: the sha256 of every file of a version, recorded by the gate, shipped exactly by `publish` and
checked again by `verify` and by the next `run`.

A manifest's digest is model-signing's root digest (the sha256 of the files' sha256 digests, concatenated in the
order of their paths), so the digest an attestation names is the one model-signing would compute over the same
files. The gate records the run's manifest in `manifest.json` right after `gate.json` (which it covers): an edited
verdict, a rewritten prediction, a changed tokenizer or generation setting, an added file or a symlink is then
refused by `publish`, naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo_action.errors import GateError, VerificationError
from hpo_action.files import write_text_atomic
from hpo_action.layout import RunLayout
from hpo_action.ship.registry._base import CARD, version_files

SIGNATURE = "model.sig"  # model-signing's own default name for the Sigstore bundle
ATTESTATION = "gate.intoto.json"  # the in-toto statement: the gate's evidence about the manifest's digest
# Written by `publish`, after the gate: every other file of a version is in the gate's manifest.
PUBLISHED_ONLY = (CARD, ATTESTATION, SIGNATURE)


@dataclass(frozen=True)
class Manifest:
    """Path in the version (POSIX) → sha256 (hex) of its content."""

    files: dict[str, str]

    @property
    def digest(self) -> str:
        """model-signing's root digest over these files (its `Payload`): sha256 of the digests in path order."""
        root = hashlib.sha256()
        for name in sorted(self.files):
            root.update(bytes.fromhex(self.files[name]))
        return root.hexdigest()

    def without(self, names: Collection[str]) -> Manifest:
        return Manifest({name: sha for name, sha in self.files.items() if name not in names})

    def first_difference(self, actual: Manifest) -> tuple[str, str] | None:
        """(path, what happened) for the first file, in path order, where `actual` differs from this manifest."""
        for name in sorted(set(self.files) | set(actual.files)):
            if name not in actual.files:
                return name, "is missing"
            if name not in self.files:
                return name, "was added (it is not in the manifest)"
            if actual.files[name] != self.files[name]:
                return name, "changed"
        return None

    def to_json(self) -> dict[str, str]:
        return dict(sorted(self.files.items()))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_files(files: dict[str, Path], root: Path) -> Manifest:
    """Hash each file after checking that it is a regular file reached without a symlink from `root`."""
    for source in files.values():
        check_inside(source, root)
    return Manifest({name: sha256_file(source) for name, source in files.items()})


def hash_folder(folder: Path, ignore: Collection[str] = ()) -> Manifest:
    """Every file under `folder` (symlinks refused), except the top-level names in `ignore` and what is under them."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if name.split("/", 1)[0] in ignore:
            continue
        if path.is_symlink():
            raise VerificationError(f"{path}: a symlink; a version holds regular files only")
        if path.is_file():
            found[name] = path
    return hash_files(found, folder)


def check_inside(path: Path, root: Path) -> None:
    """A regular file whose every component below `root` is a real folder or file, never a symlink."""
    real_root = Path(os.path.realpath(root))
    relative = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root)))
    if relative.parts and relative.parts[0] == "..":
        raise VerificationError(f"{path}: outside {root}")
    if Path(os.path.realpath(path)) != real_root / relative or path.is_symlink():
        raise VerificationError(f"{path}: a symlink (to {os.path.realpath(path)}); only the run's own files ship")
    if not path.is_file():
        raise VerificationError(f"{path}: not a regular file")


@dataclass(frozen=True)
class ChampionRef:
    """The champion a gate compared against: its version and the digest of its gated files."""

    version: int
    digest: str | None  # None for a champion published before signing (no attestation to take it from)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "digest": {"sha256": self.digest} if self.digest else None}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ChampionRef | None:
        if data is None:
            return None
        digest = data.get("digest") or {}
        return cls(int(data["version"]), digest.get("sha256"))


@dataclass(frozen=True)
class RunManifest:
    """What the gate records in `manifest.json`: the files of the version it judged, and its reference."""

    files: Manifest
    champion: ChampionRef | None

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": {"sha256": self.files.digest},
            "files": self.files.to_json(),
            "champion": self.champion.to_json() if self.champion else None,
        }

    @classmethod
    def read(cls, path: Path) -> RunManifest:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(Manifest(dict(data["files"])), ChampionRef.from_json(data.get("champion")))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise GateError(f"{path}: not a manifest this version can read ({type(err).__name__}); run again") from None


def gated_files(layout: RunLayout) -> dict[str, Path]:
    """The files of the version a run folder would publish, the card aside: best/ (weights, adapter and generation
    configs, tokenizer files, chat template, params.json), gate.json, summary.json, the test predictions, plots."""
    return {name: path for name, path in version_files(layout).items() if name not in PUBLISHED_ONLY}


def record_run_manifest(layout: RunLayout, champion: ChampionRef | None) -> RunManifest:
    """Right after gate.json: hash every file the version will hold, so `publish` ships exactly these."""
    manifest = RunManifest(hash_files(gated_files(layout), layout.root), champion)
    write_text_atomic(layout.manifest, json.dumps(manifest.to_json(), indent=2) + "\n")
    return manifest


def check_run_manifest(layout: RunLayout) -> tuple[RunManifest, dict[str, Path]]:
    """The recorded manifest and the run's files, refused (exit 1, naming the file) when anything differs: a
    changed, added or missing file, or a symlink anywhere below the run folder."""
    if not layout.manifest.is_file():
        raise GateError(
            f"{layout.root}: no manifest.json, so the gate recorded no files to publish; run `hpo-action run` again"
        )
    recorded = RunManifest.read(layout.manifest)
    files = gated_files(layout)
    current = hash_files(files, layout.root)  # a symlink is refused before anything else is said about it
    for name in sorted(set(files) - set(recorded.files.files)):
        raise VerificationError(f"{files[name]}: not among the files the gate saw (manifest.json); remove it")
    problem = recorded.files.first_difference(current)
    if problem is not None:
        name, what = problem
        where = files.get(name, name)
        raise VerificationError(f"{where}: {what} since the gate; nothing was published: run `hpo-action run` again")
    return recorded, files
