"""Fault drills: make chosen trials fail the way real ones do, to prove that a study survives them.

`HPO_ACTION_FAULTS="exit@1,oom@2,enospc@3"` makes trial 1 call `os._exit(137)` as training starts (a worker
killed mid-trial), trial 2 raise `torch.cuda.OutOfMemoryError` on its first attempt, and trial 3's adapter save
fail with ENOSPC (a full disk). Also `segv@N` (the worker dies of SIGSEGV) and `raise@N` (a plain exception).
Unset in normal use: the tests and failure drills set it.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable

from hpo_action.errors import ConfigError

ENV = "HPO_ACTION_FAULTS"

_fired: set[tuple[str, int]] = set()  # each fault fires once per process, so an in-process retry can succeed


def _exit() -> None:
    os._exit(137)


def _segv() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _oom() -> None:
    import torch

    raise torch.cuda.OutOfMemoryError("CUDA out of memory (fault drill)")


def _enospc() -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _raise() -> None:
    raise RuntimeError("fault drill")


# fault name → (where it fires, what it does)
FAULTS: dict[str, tuple[str, Callable[[], None]]] = {
    "exit": ("train", _exit),
    "segv": ("train", _segv),
    "oom": ("train", _oom),
    "raise": ("train", _raise),
    "enospc": ("save", _enospc),
}


def fire(point: str, trial_number: int | None) -> None:
    """Trigger the fault planned for this trial at this point, if any."""
    spec = os.environ.get(ENV)
    if not spec or trial_number is None:
        return
    for item in spec.split(","):
        name, _, number = item.strip().partition("@")
        if name not in FAULTS:
            raise ConfigError(f"{ENV}: unknown fault {name!r} in {spec!r}; known: {', '.join(FAULTS)}")
        where, action = FAULTS[name]
        if where != point or number != str(trial_number) or (name, trial_number) in _fired:
            continue
        _fired.add((name, trial_number))
        action()
