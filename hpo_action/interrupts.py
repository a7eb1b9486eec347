"""A Ctrl-C is never lost, and it always ends the same way: the resume hint and exit code 130.

Python turns SIGINT into a KeyboardInterrupt in whatever Python code runs next. That may be a finalizer (`__del__`,
a weakref callback run by the garbage collector), where the exception is printed as "Exception ignored" and
dropped, and the study would go on as if nothing was pressed. So the press is also remembered, and the study loop,
each evaluation of a trial, the end of the study and the registry's publish step ask `raise_if_pressed()`.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import NoReturn

EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for Ctrl-C

_pressed = threading.Event()


def remember_ctrl_c() -> None:
    """Raise KeyboardInterrupt on SIGINT, as Python does, and remember it. A SIGINT that is ignored (a background
    job) or handled by someone else stays as it is."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is (
        signal.default_int_handler
    ):
        signal.signal(signal.SIGINT, _on_sigint)


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _pressed.set()
    raise KeyboardInterrupt


def raise_if_pressed() -> None:
    """Stop here if a Ctrl-C came and its KeyboardInterrupt was swallowed on the way."""
    if _pressed.is_set():
        raise KeyboardInterrupt


def exit_interrupted() -> NoReturn:
    """Say how to resume and exit 130. A second Ctrl-C is ignored from here on, so it cannot turn the clean stop
    into a crash."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("interrupted: run the same command again to resume", file=sys.stderr, flush=True)
    _forget_nested_interrupt()
    sys.exit(EXIT_CODE)


def _forget_nested_interrupt() -> None:
    """CPython remembers a KeyboardInterrupt that left any `exec` of a string (dataclasses build their methods that
    way, so a Ctrl-C during a library's import does) and, although it was handled, ends `python -m hpo_action` by
    killing itself with SIGINT instead of exiting 130. Running one more string clears that memory."""
    exec("None")
