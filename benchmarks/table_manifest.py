"""What a learning-curve table was built from, pinned in its manifest, and the check that refuses to replay a table
whose pins differ from the code and config under test: a table describes one trial loop, one config, one set of
data files and one set of libraries, and evidence replayed from another would silently describe something else.

Pinned and compared before a replay: the task's config (paths relative to the project; compared in the sections
that shape a curve, CURVE_SECTIONS, and in the options the table knew: an option added later, at a default that
changes no curve, must not void a table, and if it does change one the drift test says so), the fingerprint of every
data file the config names, and the major versions of the libraries that train (torch, transformers, trl, peft).
Pinned for the record: the exact versions, the project commit (and whether the trial loop had uncommitted edits),
the demo model's weight hash and the torch thread count. What these cannot tell (an edit of the trial loop, a minor
library release or another demo model that moves the curves) the drift test catches: tests/test_curve_tables.py
retrains rows of the table and compares them with the recorded curves, so CI (which installs the newest releases
within pyproject's bounds) fails when the curves move, not whenever a version number does. A table marked `stale`
is refused unless the caller asks for it explicitly (`--allow-stale`).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PINNED_LIBRARIES = ("torch", "transformers", "trl", "peft")
RECORDED_LIBRARIES = ("hpo-action", *PINNED_LIBRARIES, "optuna")
# What decides a curve: the trial loop, and the table's builder (its grid and runner).
TRIAL_LOOP = ("hpo_action/train", "hpo_action/data", "hpo_action/session.py", "benchmarks/curves.py")
# The config sections a learning curve depends on; the gate, evaluation, registry and output never touch one.
CURVE_SECTIONS = ("model", "data", "train", "search")


class TableMismatch(ValueError):
    """The table's manifest does not describe the code and config under test (the replay exits 2)."""


def relative(value: Any) -> Any:
    """The value with every path inside the project written relative to it: no machine path is published."""
    prefix = f"{ROOT}/"
    if isinstance(value, str):
        return value.removeprefix(prefix)
    if isinstance(value, dict):
        return {key: relative(item) for key, item in value.items()}
    if isinstance(value, list):
        return [relative(item) for item in value]
    return value


def config_pin(cfg: Any) -> dict[str, Any]:
    """The config as the manifest pins it: relative paths, and no output folder (where rows were built is not
    part of what they mean)."""
    raw = relative(cfg.model_dump(mode="json"))
    raw.pop("output", None)
    return raw


def data_fingerprint(config: dict[str, Any]) -> str:
    """sha256 over every project file the config names (train, validation, test, replay, forgetting sets), in the
    order the config names them: an edit to any of them changes it."""
    digest = hashlib.sha256()
    for name in _paths(config):
        digest.update(name.encode() + b"\0" + (ROOT / name).read_bytes() + b"\0")
    return digest.hexdigest()


def _paths(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if "/" in value and (ROOT / value).is_file() else []
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [path for item in items for path in _paths(item)]


def demo_model_sha256() -> str:
    """sha256 of the local demo model's weights (built here from code: its floats depend on the machine)."""
    from hpo_action.train.demo_model import ensure_demo_model

    digest = hashlib.sha256()
    for path in sorted(ensure_demo_model().glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def commit() -> dict[str, Any]:
    """The project commit, and whether the trial loop's files differ from it (a table built from edits)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    edited = bool(git("status", "--porcelain", *TRIAL_LOOP))
    return {"commit": git("rev-parse", "HEAD") or None, "trial_loop_edited": edited}


def pins(cfg: Any, threads: int) -> dict[str, Any]:
    """Everything a manifest pins, for a table about to be written with `cfg` on `threads` torch threads."""
    config = config_pin(cfg)
    return {
        **commit(),
        "demo_model_sha256": demo_model_sha256() if cfg.model.name == "hpo-action/tiny-demo" else None,
        "data_fingerprint": data_fingerprint(config),
        "torch_threads": threads,
        "versions": {name: version(name) for name in RECORDED_LIBRARIES},
        "config": config,
    }


def mismatches(manifest: dict[str, Any], cfg: Any) -> list[str]:
    """The pins of `manifest` that differ from `cfg` and the libraries installed here, in words."""
    found = []
    config = config_pin(cfg)
    recorded_config = manifest.get("config") or {}
    keys = [
        key
        for section in CURVE_SECTIONS
        for key in _differing(recorded_config.get(section), config.get(section), f"{section}.")
    ]
    if keys:
        found.append(f"config differs at {', '.join(keys[:3])}")
    if manifest.get("data_fingerprint") != data_fingerprint(config):
        found.append("data files differ (data_fingerprint)")
    recorded = manifest.get("versions", {})
    for name in PINNED_LIBRARIES:
        if _major(recorded.get(name)) != _major(version(name)):
            found.append(f"{name} {recorded.get(name)} in the table, {version(name)} here")
    return found


def _major(text: str | None) -> str | None:
    return text.split(".", 1)[0] if text else None


def _differing(recorded: Any, today: Any, path: str = "") -> list[str]:
    """The dotted keys whose values differ; a key the recorded config lacks is an option added since (ignored),
    except in the search space, which is compared whole (a parameter added to it changes every study)."""
    if isinstance(recorded, dict) and isinstance(today, dict) and path != "search.space.":
        return [key for k in sorted(recorded) for key in _differing(recorded[k], today.get(k), f"{path}{k}.")]
    return [] if recorded == today else [path.rstrip(".")]


def check(manifest: dict[str, Any], where: str, cfg: Any | None, allow_stale: bool = False) -> None:
    """Refuse (TableMismatch, one line) a stale table unless `allow_stale`, and one whose pins differ from `cfg`
    (the task's config today; None: the task is no longer defined, so only a stale table may replay)."""
    stale = manifest.get("stale")
    rebuild = f"rebuild it (python benchmarks/curves.py --task {manifest.get('task')})"
    if stale:
        if allow_stale:
            return
        raise TableMismatch(f"{where}: stale table: {stale}; pass --allow-stale to replay it as recorded")
    if cfg is None:
        raise TableMismatch(f"{where}: no task {manifest.get('task')!r} in benchmarks/curves.py; {rebuild}")
    if "data_fingerprint" not in manifest:
        raise TableMismatch(f"{where}: the manifest pins nothing (built before manifests had pins); {rebuild}")
    found = mismatches(manifest, cfg)
    if found:
        raise TableMismatch(f"{where}: the table does not match the code under test: {'; '.join(found)}; {rebuild}")


def load_manifest(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
