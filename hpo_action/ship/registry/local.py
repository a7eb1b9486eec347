"""A registry in a local folder: immutable `versions/<n>/`, and a `champion.json` pointer moved by rename.

    <root>/champion.json        {"version": n, "history": [promoted versions]}   (replaced atomically)
    <root>/versions/<n>/        adapter, README.md, gate.json, params.json, summary.json, predictions/, plots/
    <root>/gates.json           the gate ledger: every gate started, its level and outcome (`gate.sequence`)
    <root>/.lock                held (flock) while a publisher compares and swaps, or a gate is counted

A version folder appears by one rename of a complete staging folder, and becomes the champion by one rename of
the pointer; a crash at any point leaves the previous champion in place and no half-written version visible.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hpo_action.errors import RegistryError
from hpo_action.files import PUBLIC_MODE

from ._base import PARAMS, Champion, champion_changed
from .ledger import LEDGER, Change

POINTER = "champion.json"
VERSIONS = "versions"


class LocalRegistry:
    """The default registry; its URI is a folder path."""

    def __init__(self, uri: str | Path, fail_at: Callable[[str], None] | None = None) -> None:
        self.root = Path(uri).expanduser().resolve()
        self.uri = str(self.root)
        self._fail_at = fail_at or (lambda step: None)  # tests inject crashes at each step

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def title(self) -> None:
        return None

    def read_champion(self) -> Champion | None:
        pointer = self._read_pointer()
        return None if pointer is None else self._load(pointer["version"])

    def url(self, champion: Champion) -> str:
        return str(champion.path)

    def load_reference(self, version: int) -> str:
        """Relative to the registry's folder, spelled REGISTRY: the card ships, and this machine's path would mean
        nothing elsewhere (and show its layout)."""
        return f"REGISTRY/{VERSIONS}/{version}"

    def fetch_code(self, version: int) -> str:
        reference = json.dumps(self.load_reference(version))
        return f"# REGISTRY: the registry's folder (it holds {POINTER}) where you keep it\npath = {reference}"

    def next_version(self, expected: Champion | None) -> int:
        return self._next_version() if (self.root / VERSIONS).is_dir() else 1

    def load_adapter(self, champion: Champion) -> Path:
        return champion.path

    def history(self) -> list[Champion]:
        pointer = self._read_pointer()
        return [self._load(n) for n in (pointer or {}).get("history", [])]

    def publish(self, files: dict[str, Path], expected: Champion | None) -> Champion:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / VERSIONS).mkdir(exist_ok=True)
        except OSError as err:
            raise RegistryError(f"registry {self.root}: cannot create it: {err.strerror}") from None
        with self._locked():
            for leftover in (self.root / VERSIONS).glob(".staging-*"):  # a crashed publisher's; none is live now
                shutil.rmtree(leftover, ignore_errors=True)
            pointer = self._read_pointer()
            current = _revision(pointer["version"]) if pointer else None
            if current != (expected.revision if expected else None):
                raise champion_changed(expected, current)
            version = self._next_version()
            target = self.root / VERSIONS / str(version)
            staging = Path(tempfile.mkdtemp(dir=self.root / VERSIONS, prefix=".staging-"))
            try:
                for name, source in files.items():
                    destination = staging / name
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, destination)
                    self._fail_at("copy")
                _fsync_tree(staging)
                self._fail_at("staged")
                os.replace(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            self._fail_at("version")
            history = [*((pointer or {}).get("history", [])), version]
            new_pointer = {"version": version, "history": history}
            _write_atomic(self.root / POINTER, json.dumps(new_pointer, sort_keys=True) + "\n", self._fail_at)
            self._fail_at("pointer")
            return self._load(version)

    def read_ledger(self) -> dict[str, Any] | None:
        path = self.root / LEDGER
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        except json.JSONDecodeError:
            raise RegistryError(f"registry {self.root}: {LEDGER} is corrupt; restore it") from None

    def update_ledger(self, change: Change) -> dict[str, Any]:
        """Change the gate ledger under the registry's lock (what publishers hold too)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RegistryError(f"registry {self.root}: cannot create it: {err.strerror}") from None
        with self._locked():
            updated = change(self.read_ledger())
            _write_atomic(self.root / LEDGER, json.dumps(updated, indent=2) + "\n", self._fail_at)
            return updated

    def _read_pointer(self) -> dict[str, Any] | None:
        path = self.root / POINTER
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise RegistryError(f"registry {self.root}: {POINTER} is corrupt; restore it from history") from None

    def _next_version(self) -> int:
        """One past every version folder, promoted or orphaned by a crash, so no folder is ever reused."""
        numbers = [int(p.name) for p in (self.root / VERSIONS).iterdir() if p.name.isdigit()]
        return max(numbers, default=0) + 1

    def _load(self, version: int) -> Champion:
        path = self.root / VERSIONS / str(version)
        params_file = path / PARAMS
        params = json.loads(params_file.read_text()).get("params", {}) if params_file.is_file() else {}
        return Champion(version=version, path=path, revision=_revision(version), uri=self.uri, params=params)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _revision(version: int) -> str:
    """Version numbers are never reused (orphans included), so the number identifies the pointer's state."""
    return f"v{version}"


def _write_atomic(path: Path, text: str, fail_at: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, PUBLIC_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        fail_at("pointer-written")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_tree(folder: Path) -> None:
    """Flush the staged files before the rename publishes them: a power cut must not leave empty files."""
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
