"""What a study is called and how its storage is shown, whichever backend runs it: the study name is stable for a
config (a resume reopens the same study), and a published summary names no folder of this machine."""

from __future__ import annotations

from pathlib import Path

from hpo_action.config import HpoConfig


def study_name(cfg: HpoConfig) -> str:
    """Stable for a config: the same config (whatever n_trials or sampler) reopens the same study."""
    return cfg.search.study_name or f"hpo-{cfg.fingerprint()}"


def storage_url(cfg: HpoConfig) -> str:
    return cfg.search.storage or f"sqlite:///{Path(cfg.output.dir) / 'study.db'}"


def shown_storage(url: str, root: Path) -> str:
    """The storage as summary.json (which ships with a version) shows it: a study file inside the output folder
    relative to it (sqlite:///study.db), one elsewhere by its name only, a database URL as given (redacted). No
    folder of this machine is published."""
    prefix = "sqlite:///" if url.startswith("sqlite:///") else "" if "://" not in url else None
    if prefix is None:
        return url
    path = Path(url.removeprefix(prefix)).expanduser().resolve()
    try:
        return prefix + path.relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return f"{prefix}<outside the output folder>/{path.name}"
