"""One escaping for every user or data string a Markdown output shows (the job summary, the PR comment,
report.md, the model card): a study name, a title, a set name, a parameter value, an error message renders as
the text it is, never as a heading, a list, a link, an HTML comment or tag, a code span or a table column.

The string becomes one line (a heading or a fence needs a line of its own); `<`, `>` and `&` become entities
(so no HTML and no `<!--` survive); the characters that open inline Markdown (`` ` ``, `*`, `_` where it could
emphasise, `[`, `]`, `~`, `$`, `|`, `\\`) are backslash-escaped, and so is a list, heading or quote marker at
the start. Every renderer calls `md_text` on what it did not write itself.
"""

from __future__ import annotations

import re

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# `_` between two letters or digits cannot emphasise (learning_rate stays as it is); anywhere else it can.
_INLINE = re.compile(r"[\\`*\[\]~$|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# What opens a block at the start of a line, or of a list item's text: a heading, a list item, a rule (a lone `-`
# or `#` opens nothing that could hold text, so a table's empty cell stays `-`).
_BLOCK_START = re.compile(r"#{1,6}(?=\s)|[-+](?=\s)|-{3,}$|\d{1,9}(?=[.)](\s|$))")


def md_text(value: object) -> str:
    """`value` as Markdown inline text that renders exactly as `str(value)` (white space runs made one space)."""
    text = " ".join(str(value).split())
    text = _INLINE.sub(lambda match: "\\" + match.group(0), text)
    text = "".join(_ENTITIES.get(char, char) for char in text)
    start = _BLOCK_START.match(text)
    if start is None:
        return text
    if start.group(0)[0].isdigit():  # `1. x` is an ordered list: escape the dot
        return f"{text[: start.end()]}\\{text[start.end() :]}"
    return "\\" + text
