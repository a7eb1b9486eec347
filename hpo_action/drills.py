"""Fault drills: make chosen trials and phases fail the way real ones do, to prove that a run survives them.
These are the only test hooks in the product (with `LocalRegistry(fail_at=...)`, which crashes a publish at each
of its steps); unset in normal use.

`HPO_ACTION_FAULTS="exit@1,oom@2,enospc@3,kill@after-best"`:
- `exit@N`: trial N calls `os._exit(137)` as training starts (a worker killed mid-trial); `segv@N`: SIGSEGV;
- `oom@N`: trial N raises `torch.cuda.OutOfMemoryError` on its first attempt; `raise@N`: a plain exception;
- `hang@N`: trial N blocks forever as training starts (a step that never returns, for search.trial_timeout);
- `enospc@N`: trial N's adapter save fails as a full disk does (safetensors' own error, "No space left on device");
- `kill@PHASE`: the process SIGKILLs itself at a phase of `run`: after-best (best/ written, nothing gated yet),
  after-evaluate, after-gate (gate.json written, nothing published), after-publish.
A typo is a config error before anything starts.
"""

from __future__ import annotations

import os
import signal
import threading
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
    from safetensors import SafetensorError  # what a real full disk raises while saving an adapter

    raise SafetensorError(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
    )


def _raise() -> None:
    raise RuntimeError("fault drill")


def _hang() -> None:
    threading.Event().wait()  # blocks in C, as a stuck kernel or collective does: no step boundary is ever reached


# fault name → (where it fires, what it does)
FAULTS: dict[str, tuple[str, Callable[[], None]]] = {
    "exit": ("train", _exit),
    "segv": ("train", _segv),
    "oom": ("train", _oom),
    "raise": ("train", _raise),
    "hang": ("train", _hang),
    "enospc": ("save", _enospc),
}


PHASES = ("after-best", "after-evaluate", "after-gate", "after-publish")


def planned() -> list[tuple[str, str]]:
    """The drills asked for, as (name, trial number or phase); a typo is a ConfigError naming the item."""
    spec = os.environ.get(ENV, "")
    items = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, where = item.partition("@")
        valid = (name in FAULTS and where.isdigit()) or (name == "kill" and where in PHASES)
        if not valid:
            known = ", ".join([*(f"{n}@N" for n in FAULTS), *(f"kill@{p}" for p in PHASES)])
            raise ConfigError(f"{ENV}: unknown drill {item!r}; known: {known}")
        items.append((name, where))
    return items


def fire(point: str, trial_number: int | None) -> None:
    """Trigger the fault planned for this trial at this point, if any."""
    if trial_number is None:
        return
    for name, where in planned():
        if name == "kill" or FAULTS[name][0] != point or where != str(trial_number) or (name, trial_number) in _fired:
            continue
        _fired.add((name, trial_number))
        FAULTS[name][1]()


def at(phase: str) -> None:
    """Die here, as a `kill -9` would, when this phase's drill is planned."""
    if ("kill", phase) in planned():
        os.kill(os.getpid(), signal.SIGKILL)
