"""A registry operation runs under one deadline, `registry.timeout`, that bounds the whole operation, reads included.

Two layers, because neither is enough alone. Timeouts on each request (connect, read) restart with every byte that
arrives, so an endpoint that sends one byte every second never trips them: `within` runs the operation in a worker
thread and stops waiting for it at the deadline, whatever the worker is blocked in. A worker left behind must not go
on publishing: every Hub request it would still start fails at once, because each request's timeouts shrink to what
is left of the deadline (installed once per process on huggingface_hub's shared client through its public
`set_client_factory`) and the deadline stays in force until that worker ends; other clients (MLflow's) ask
`passed()` between the steps of a publication.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import httpx2

T = TypeVar("T")

_lock = threading.Lock()
_installed = False
_mine = threading.local()  # the window of the operation this thread runs


class _Window:
    """One operation's deadline; closed at once when its caller stops waiting early (Ctrl-C)."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds


_open: list[_Window] = []  # operations still running, newest last: for the threads they start (downloads)


class DeadlineExceeded(httpx2.TimeoutException):
    """The operation's time ran out (before a request could start, or while it was still being answered)."""


def _limit(request: httpx2.Request) -> None:
    window = getattr(_mine, "window", None) or (_open[-1] if _open else None)
    if window is None:
        return
    remaining = window.end - time.monotonic()
    if remaining <= 0:
        raise DeadlineExceeded("the registry operation's deadline passed", request=request)
    request.extensions["timeout"] = {"connect": remaining, "read": remaining, "write": remaining, "pool": remaining}


def _client() -> httpx2.Client:
    from huggingface_hub.utils import _http as hf_http

    client = hf_http.default_client_factory()
    client.event_hooks["request"] = [*client.event_hooks["request"], _limit]
    return client


def limit_hub_requests() -> None:
    """Make every huggingface_hub request of this process honour the deadline of the operation it belongs to."""
    global _installed
    from huggingface_hub.utils import set_client_factory

    with _lock:
        if not _installed:
            set_client_factory(_client)
            _installed = True


def passed() -> bool:
    """Whether the deadline of the operation this thread runs has passed (its caller stopped waiting)."""
    window = getattr(_mine, "window", None)
    return window is not None and time.monotonic() >= window.end


def within(seconds: float, call: Callable[[], T]) -> T:
    """`call()`'s result or its exception, or DeadlineExceeded once `seconds` have passed (the call may still be
    blocked in a read then; it is left to end on its own, unable to start another Hub request)."""
    window = _Window(seconds)
    outcome: list[T] = []
    failure: list[BaseException] = []

    def work() -> None:
        _mine.window = window
        with _lock:
            _open.append(window)
        try:
            outcome.append(call())
        except BaseException as error:  # handed to the waiting thread, which raises it
            failure.append(error)
        finally:
            with _lock:
                _open.remove(window)

    worker = threading.Thread(target=work, name="hpo-action-registry", daemon=True)
    worker.start()
    try:
        worker.join(max(0.0, window.end - time.monotonic()))
    except BaseException:  # Ctrl-C: the worker starts nothing more (a publication never completes behind it)
        window.end = 0.0
        raise
    if worker.is_alive():
        raise DeadlineExceeded(f"no answer within {seconds:g} s")
    if failure:
        raise failure[0]
    return outcome[0]
