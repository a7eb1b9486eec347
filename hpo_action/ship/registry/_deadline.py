"""Every Hub call of a registry operation shares one deadline: connect and read timeouts shrink to what is left, and
a call after the deadline fails at once, so an endpoint that accepts TCP and never answers cannot hang a run
(huggingface_hub's own client waits forever, and retries). Installed once per process on huggingface_hub's shared
client through its public `set_client_factory`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2
from huggingface_hub.utils import _http as hf_http
from huggingface_hub.utils import set_client_factory

_lock = threading.Lock()
_deadline: float | None = None  # one per process: snapshot downloads run requests in worker threads
_installed = False


class DeadlineExceeded(httpx2.TimeoutException):
    """The operation's time ran out before this request could start."""


def _limit(request: httpx2.Request) -> None:
    if _deadline is None:
        return
    remaining = _deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineExceeded("the registry operation's deadline passed", request=request)
    request.extensions["timeout"] = {"connect": remaining, "read": remaining, "write": remaining, "pool": remaining}


def _client() -> httpx2.Client:
    client = hf_http.default_client_factory()
    client.event_hooks["request"] = [*client.event_hooks["request"], _limit]
    return client


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Run the enclosed Hub calls under one deadline, `seconds` from now."""
    global _deadline, _installed
    with _lock:
        if not _installed:
            set_client_factory(_client)
            _installed = True
    previous, _deadline = _deadline, time.monotonic() + seconds
    try:
        yield
    finally:
        _deadline = previous
