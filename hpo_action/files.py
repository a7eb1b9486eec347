"""Crash-safe writes and the packaged templates: the file helpers every stage shares."""

from __future__ import annotations

import errno
import importlib.resources
import os
import tempfile
from pathlib import Path

# One permission policy for what a run writes: outputs are read by artifact uploaders, the registry and the
# other users of a shared runner (0644); what may hold a secret is the owner's alone (0600).
PUBLIC_MODE = 0o644
PRIVATE_MODE = 0o600


def write_text_atomic(path: Path, text: str) -> None:
    """Write beside the target and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, PUBLIC_MODE)  # mkstemp makes every file private
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def template(name: str) -> Path:
    """A packaged template: in the wheel's own templates folder, or templates/ in a source checkout."""
    packaged = importlib.resources.files("hpo_action") / "templates" / name
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "templates" / name


# SQLite says SQLITE_FULL as "database or disk is full", and not through an OSError.
_NO_SPACE = (
    "no space left on device",
    "disk quota exceeded",
    "os error 28",
    "os error 122",
    "database or disk is full",
)


def is_no_space(err: BaseException) -> bool:
    """A full disk, however it surfaced: OSError ENOSPC/EDQUOT, or a library's own error that wraps one (safetensors
    raises SafetensorError with the OS message, SQLAlchemy SQLite's SQLITE_FULL), anywhere in the cause chain."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(seen).lower() for text in _NO_SPACE):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
