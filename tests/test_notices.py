"""Lines on a terminal fit its width: a long config path folds instead of running off the edge."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios


def _said_in_terminal(message: str, columns: int) -> list[str]:
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    code = f"from hpo_action.notices import say; say({message!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=child, stdout=child, stderr=child, env=env)
    os.close(child)
    data = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    os.close(main)
    assert proc.wait(timeout=60) == 0
    return data.decode().replace("\r\n", "\n").strip("\n").split("\n")


def test_a_long_line_folds_to_the_terminal_width_and_keeps_every_word():
    message = "hpo-action run " + "/very/deep/checkout" * 8 + "/hpo.yaml: tiny (lora); loading torch and transformers"
    lines = _said_in_terminal(message, columns=60)
    assert len(lines) > 1 and all(len(line) <= 60 for line in lines), lines
    assert "".join(line.strip() for line in lines).replace(" ", "") == message.replace(" ", "")


def test_a_short_line_or_a_pipe_is_left_alone(capsys):
    from hpo_action.notices import say

    message = "x" * 300  # stderr is not a terminal here: a CI log keeps the line whole
    say(message)
    assert capsys.readouterr().err == message + "\n"
    assert _said_in_terminal("short line", columns=60) == ["short line"]
