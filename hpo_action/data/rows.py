"""The one shape every data source is normalized to: a row is `id` plus its format's canonical keys."""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]
Rows = list[Row]
