"""Edit a YAML config as text, line by line, so its layout and comments survive: set a key's value (and comment),
insert a key that is missing under its section, or remove a key with its nested lines. `hpo-action init` writes
its starters this way, and `hpo-action plan --write` the batch it found.

It handles the block style hpo-action's templates use (one `key: value  # comment` per line, two-space indents,
flow mappings as values); it is not a YAML parser.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from hpo_action.errors import ConfigError

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?P<value>[^#]*?)(?P<gap> *)(?P<comment>#.*)?$")
Change = tuple[str | None, str | None]  # (new value or None to keep it, new comment or None to keep it)


def _keys(lines: list[str]) -> dict[str, tuple[int, int]]:
    """Dotted key → (line index, indent) of every key line."""
    found: dict[str, tuple[int, int]] = {}
    path: list[tuple[int, str]] = []
    for index, line in enumerate(lines):
        match = _KEY_LINE.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while path and path[-1][0] >= indent:
            path.pop()
        path.append((indent, match["key"]))
        found[".".join(key for _, key in path)] = (index, indent)
    return found


def _replace(match: re.Match[str], value: str | None, comment: str | None) -> str:
    line = f"{match['indent']}{match['key']}:" + (f" {value}" if value is not None else match["value"].rstrip())
    comment = f"# {comment}" if comment else match["comment"]
    if not comment:
        return line
    column = match.start("comment") if match["comment"] else 0  # keep the comment's column
    return (line.ljust(column) if len(line) < column else line + " ") + comment


def _block_end(lines: list[str], index: int, indent: int) -> int:
    """The index after the last line nested under the key line at `index` (blank and comment lines included)."""
    end = index + 1
    while end < len(lines):
        text = lines[end]
        if text.strip() and not text.lstrip().startswith("#") and len(text) - len(text.lstrip()) <= indent:
            break
        end += 1
    while end > index + 1 and not lines[end - 1].strip():
        end -= 1
    return end


def set_values(text: str, changes: dict[str, Change], remove: Iterable[str] = (), strict: bool = False) -> str:
    """`text` with each dotted key set; a missing key is inserted at the end of its section (sections created as
    needed), or, with `strict`, is an error. Keys in `remove` go, with everything nested under them."""
    lines = text.splitlines()
    for dotted in remove:
        where = _keys(lines).get(dotted)
        if where is not None:
            del lines[where[0] : _block_end(lines, *where)]
    for dotted, (value, comment) in changes.items():
        keys = _keys(lines)
        if dotted in keys:
            index = keys[dotted][0]
            match = _KEY_LINE.match(lines[index])
            assert match is not None
            lines[index] = _replace(match, value, comment)
            continue
        if strict or value is None:
            raise ConfigError(f"config edit: no key {dotted!r} to set")
        lines = _insert(lines, dotted, value, comment)
    return "\n".join(lines) + "\n"


def _insert(lines: list[str], dotted: str, value: str, comment: str | None) -> list[str]:
    *parents, leaf = dotted.split(".")
    keys = _keys(lines)
    depth, at = 0, len(lines)
    for count in range(len(parents), 0, -1):
        parent = ".".join(parents[:count])
        if parent in keys:
            index, indent = keys[parent]
            depth, at = count, _block_end(lines, index, indent)
            break
    new = [f"{'  ' * level}{name}:" for level, name in enumerate(parents[depth:], start=depth)]
    line = f"{'  ' * len(parents)}{leaf}: {value}"
    new.append(f"{line}  # {comment}" if comment else line)
    if depth == 0 and lines and lines[-1].strip():
        new.insert(0, "")
    return lines[:at] + new + lines[at:]
