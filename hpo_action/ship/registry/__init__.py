"""Where champions live: a pointer that moves atomically (compare-and-swap), a history, and per version the
weights, the model card, the gate result and the test predictions.

`open_registry(uri)` picks the implementation: `hf://namespace/name` is the Hugging Face Hub, anything else
a local folder.
"""

from __future__ import annotations

from ._base import Champion, Registry, champion_changed
from .local import LocalRegistry

__all__ = ["Champion", "LocalRegistry", "Registry", "champion_changed", "open_registry"]


def open_registry(uri: str) -> Registry:
    if uri.startswith("hf://"):
        from .hub import HubRegistry

        return HubRegistry(uri)
    return LocalRegistry(uri)
