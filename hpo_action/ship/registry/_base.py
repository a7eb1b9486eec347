"""The registry interface and the files that make up one published version."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hpo_action.errors import GateError, RegistryError
from hpo_action.judge.decision import GateDecision
from hpo_action.judge.predictions import meta_path
from hpo_action.layout import RunLayout

# Inside a version: the weights at the top (so PeftModel.from_pretrained(version) works), plus these.
CARD = "README.md"
GATE = "gate.json"
PARAMS = "params.json"
SUMMARY = "summary.json"
TEST_PREDICTIONS = "predictions/test.jsonl"
TEST_PREDICTIONS_META = "predictions/test.meta.json"
PLOTS = "plots"


@dataclass(frozen=True)
class Champion:
    """The current (or a past) champion: what it is, where its files are, and the revision the gate read."""

    version: int
    path: Path  # a local folder holding the version's files (adapter, README.md, gate.json, predictions)
    revision: str  # what compare-and-swap compares: the pointer's content locally, the commit sha on the Hub
    uri: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def test_predictions(self) -> Path | None:
        path = self.path / TEST_PREDICTIONS
        return path if path.is_file() else None

    def reusable_for(
        self, data_fingerprint: str, metrics: list[str], normalize: list[str], max_new_tokens: int
    ) -> bool:
        """Whether the stored test predictions can stand in for re-evaluating this champion: the same test rows,
        scored with the same metrics, normalization and generation length."""
        path = self.path / TEST_PREDICTIONS_META
        if not path.is_file():
            return False
        meta = json.loads(path.read_text(encoding="utf-8"))
        settings = meta.get("settings") or {}
        return (
            meta.get("data_fingerprint") == data_fingerprint
            and list(meta.get("metrics") or []) == list(metrics)
            and list(settings.get("normalize") or []) == list(normalize)
            and settings.get("max_new_tokens") == max_new_tokens
        )

    def gate(self) -> GateDecision | None:
        """The gate decision this version was promoted on (its gate.json), or None when it has none."""
        path = self.path / GATE
        return GateDecision.read(path) if path.is_file() else None

    def to_json(self) -> dict[str, Any]:
        """What `hpo-action champion --json` prints and a run folder's gated_against.json records."""
        try:
            gate = self.gate()
        except GateError:  # written by another tool or version: the champion is still usable
            gate = None
        return {
            "version": self.version,
            "path": str(self.path),
            "revision": self.revision,
            "uri": self.uri,
            "params": self.params,
            "decision": gate.decision if gate else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> Champion:
        return cls(
            version=int(data["version"]),
            path=path,
            revision=str(data["revision"]),
            uri=str(data["uri"]),
            params=dict(data.get("params", {})),
        )


class Registry(Protocol):
    """A champion pointer with compare-and-swap, a history, and immutable versions."""

    uri: str

    @property
    def name(self) -> str:
        """The registry's own name (a Hub repo id, a folder's name), as messages show it."""
        ...

    @property
    def title(self) -> str | None:
        """A model card title from the registry itself: a Hub repo's name; None for a folder, whose name
        ('registry', 'models') says nothing about the model."""
        ...

    def read_champion(self) -> Champion | None:
        """The current champion, or None before the first promotion; errors (unreadable, forbidden) raise."""
        ...

    def publish(self, files: dict[str, Path], expected: Champion | None) -> Champion:
        """Store `files` (path in version → local file) as a new version and make it the champion, only if
        the champion is still `expected`; otherwise raise `champion_changed()`."""
        ...

    def history(self) -> list[Champion]:
        """Every promoted version, oldest first."""
        ...

    def url(self, champion: Champion) -> str:
        """Where a person looks at this version (a Hub tree URL, a folder, an MLflow model version's page)."""
        ...

    def next_version(self, expected: Champion | None) -> int:
        """The number the version published next over `expected` will get: what its model card names."""
        ...

    def load_reference(self, version: int) -> str:
        """What `PeftModel.from_pretrained` takes to load this version (a Hub repo id, a folder path), or, with
        `fetch_code`, what that code downloads (an MLflow model URI)."""
        ...

    def fetch_code(self, version: int) -> str | None:
        """Python lines for the model card that bind `path` to a local folder holding this version, when it must be
        downloaded first (MLflow); None when `load_reference` loads as it is."""
        ...

    def load_adapter(self, champion: Champion) -> Path:
        """A local folder with this champion's weights, ready for `PeftModel.from_pretrained`."""
        ...


def champion_changed(expected: Champion | None, actual: str | None) -> RegistryError:
    was = f"v{expected.version}" if expected else "none"
    return RegistryError(
        f"champion changed since the gate read it (expected {was}, now {actual or 'none'}): re-gate against the "
        "new champion and publish again"
    )


def version_files(layout: RunLayout, card: Path | None = None) -> dict[str, Path]:
    """The files of one version, from a run folder: best/ weights, gate.json, test predictions, summary, plots."""
    if not layout.best_dir.is_dir():
        raise RegistryError(f"{layout.root}: no best/ folder (run the search first)")
    files = {p.relative_to(layout.best_dir).as_posix(): p for p in sorted(layout.best_dir.rglob("*")) if p.is_file()}
    files.pop(CARD, None)  # PEFT's placeholder card; ours replaces it
    for name, source in (
        (GATE, layout.gate),
        (SUMMARY, layout.summary),
        (TEST_PREDICTIONS, layout.predictions("test", "candidate")),
        (TEST_PREDICTIONS_META, meta_path(layout.predictions("test", "candidate"))),
    ):
        if not source.is_file():
            raise RegistryError(f"{layout.root}: missing {source.name} (run evaluate and gate first)")
        files[name] = source
    if layout.plots_dir.is_dir():
        files.update({f"{PLOTS}/{p.name}": p for p in sorted(layout.plots_dir.glob("*.png"))})
    if card is not None:
        files[CARD] = card
    return files
