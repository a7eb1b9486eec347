"""Local path or Hub id: the one function that decides, for models, datasets and registries alike."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hpo_action.errors import ConfigError

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
# org/name, as the Hub spells repository ids (letters, digits, '-', '_', '.'; no leading or trailing separator).
HUB_ID = re.compile(r"^[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?/[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Source:
    """Where something comes from: a local path (absolute) or a Hub repository id (with a dataset split)."""

    kind: Literal["local", "hub"]
    value: str  # the absolute path, or the repo id
    split: str | None = None  # 'org/name:split' for a Hub dataset

    @property
    def path(self) -> Path:
        return Path(self.value)


def locate(value: str, key: str, base_dir: Path | None = None, allow_split: bool = False) -> Source:
    """Decide whether `value` (the config key `key`) is a local path or a Hub id.

    Local: an absolute path, one starting with '.' or '~', one with a data-file suffix, or one that exists
    (relative to `base_dir`, the config file's folder). Hub: 'org/name' (and 'org/name:split' for datasets).
    Anything else is neither: a ConfigError that says so, naming the key.
    """
    text = value.strip()
    expanded = Path(text).expanduser()
    base = base_dir or Path.cwd()
    candidate = expanded if expanded.is_absolute() else base / expanded
    looks_local = text.startswith((".", "~", "/")) or expanded.suffix.lower() in DATA_SUFFIXES
    if expanded.is_absolute() or looks_local or candidate.exists():
        return Source("local", str(candidate.resolve()))
    name, _, split = text.partition(":") if allow_split else (text, "", "")
    if HUB_ID.match(name):
        return Source("hub", name, split or None)
    raise ConfigError(
        f"{key}: {value!r} is neither an existing path nor a Hub id ('org/name'); "
        "check the spelling, or start a relative path with ./"
    )


def is_hub_id(value: str) -> bool:
    """True for 'org/name' (a ':split' suffix allowed) that is not an existing local path."""
    try:
        return locate(value, "source", allow_split=True).kind == "hub"
    except ConfigError:
        return False
