"""A trial's checkpoints (search.resume_trials): the Trainer's own checkpoint at each evaluation (weights or
adapter, optimizer and scheduler, RNG states, the step, whence the data order resumes), kept one deep in
checkpoints/<trial>/, and resumed from only when it was written for the same trial parameters.

The Trainer writes a checkpoint straight into its final folder, so a kill can leave a half-written one. Its
trainer_state.json is written last (after weights, optimizer, scheduler and RNG states), so a checkpoint counts only
when that file reads back whole with the folder's step; the Trainer deletes the older one only after that.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo_action.errors import TrialError
from hpo_action.layout import MARKER, is_ours, mark

FOLDER_KIND = "checkpoints"  # checkpoints/<trial>/: which trial parameters its checkpoints belong to
_STEP = re.compile(r"checkpoint-(\d+)")


def identity(params: dict[str, Any], fingerprint: str) -> str:
    """What a checkpoint must have been written for to be resumed: the trial's parameters (a batch override
    included) and the config fingerprint (model, data, budget, train defaults)."""
    text = json.dumps({"params": params, "config": fingerprint}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class TrialCheckpoints:
    """The checkpoint folder of one trial (the first of its retries names it) and what happened to it."""

    folder: Path
    identity: str
    resumed_from_step: int = 0  # 0: started at step 0
    checkpoint_bytes: int = 0  # the size of the last checkpoint written
    refused: str | None = None  # why a checkpoint in the folder was not resumed
    _resume_from: Path | None = field(default=None, repr=False)

    def prepare(self) -> Path | None:
        """Claim the folder for this trial; returns the last complete checkpoint written for the same identity
        (None: start at step 0). One written for other parameters is deleted, with the reason in `refused`."""
        if self.folder.exists() and not is_ours(self.folder, FOLDER_KIND):
            raise TrialError(f"{self.folder}: not a checkpoint folder of hpo-action; move it away to resume here")
        recorded = _read_marker(self.folder)
        if recorded is not None and recorded.get("identity") != self.identity:
            self.refused = f"the checkpoint in {self.folder.name}/ was written for other parameters; started at step 0"
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        mark(self.folder, FOLDER_KIND, identity=self.identity)
        done = sorted((_step(p), p) for p in self.folder.glob("checkpoint-*") if _complete(p))
        self._resume_from = done[-1][1] if done else None
        if self._resume_from is not None:
            self.resumed_from_step = done[-1][0]
            self.checkpoint_bytes = folder_bytes(self._resume_from)
        return self._resume_from

    def log_history(self) -> list[dict[str, Any]]:
        """The Trainer's log up to the resumed checkpoint: the curves before it, replayed into the new run."""
        if self._resume_from is None:
            return []
        state = json.loads((self._resume_from / "trainer_state.json").read_text(encoding="utf-8"))
        return list(state.get("log_history", []))

    def resumed(self, optimizer: Any, scheduler: Any) -> None:
        """Training is about to start (from the checkpoint, when one was prepared); nothing to change here."""

    def saved(self, step: int) -> None:
        """The Trainer finished writing checkpoint-<step>: its size is what a checkpoint of this trial weighs."""
        self.checkpoint_bytes = folder_bytes(self.folder / f"checkpoint-{step}")

    def remove(self) -> None:
        """The trial ended: nothing will resume it."""
        if is_ours(self.folder, FOLDER_KIND):
            shutil.rmtree(self.folder, ignore_errors=True)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def sweep(folder: Path, keep: set[str]) -> None:
    """Delete the checkpoint folders of trials that ended without cleaning up (a kill that is never resumed)
    but those named in `keep` (trials still running or queued); nothing that is not ours."""
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        if child.name not in keep and is_ours(child, FOLDER_KIND):
            shutil.rmtree(child, ignore_errors=True)
    with contextlib.suppress(OSError):  # another worker's trial may have started one meanwhile
        folder.rmdir()


def _step(path: Path) -> int:
    found = _STEP.fullmatch(path.name)
    return int(found.group(1)) if found else -1


def _complete(path: Path) -> bool:
    """Whether the Trainer finished writing this checkpoint: its last file reads back, for the folder's step."""
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("global_step") == _step(path)


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
