"""The README's configuration table, generated from the fields' descriptions (a test keeps the README in step).

python -m hpo_action.config.docs
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel

from hpo_action.config._sections import HpoConfig

START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def _section(annotation: Any) -> type[BaseModel] | None:
    """The section model a field holds (directly, optionally, or as list items)."""
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        for inner in typing.get_args(candidate):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "" if value in ({}, []) or isinstance(value, BaseModel) else f"`{value}`"
    if field.is_required():
        return "required"
    return "" if field.default is None else f"`{field.default}`"


def rows(model: type[BaseModel] = HpoConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every field, sections expanded in place."""
    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section = _section(field.annotation)
        if section is not None and section is not model and name not in ("space", "decoding_space"):
            suffix = "[]." if typing.get_origin(field.annotation) in (list, types.GenericAlias) else "."
            if prefix:  # a nested section: its own row, then its fields
                out.append((key, _default(field), field.description or ""))
            out += rows(section, key + suffix)
            continue
        out.append((key, _default(field), field.description or ""))
    return out


def table() -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{key}` | {default} | {text.replace('|', '/')} |" for key, default, text in rows()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
