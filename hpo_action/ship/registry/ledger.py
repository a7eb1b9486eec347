"""The registry's gate ledger: how many gates it has started and the level each ran at (`gate.sequence`).

A gate is counted before its decision is known, in one atomic update of the registry (the local folder's lock, a
Hub commit whose parent must be the ledger branch's head), so a crash mid-gate spends its level and refunds
nothing, and two gates that start together get different numbers. Its outcome is written afterwards. The level
rule itself is pure (`hpo_action.judge.sequence`); a backend only offers `update_ledger`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable

from hpo_action.config import GateConfig
from hpo_action.errors import ConfigError, GateError, RegistryError
from hpo_action.judge.sequence import GateOutcome, Ledger, SequenceLevel, per_gate

LEDGER = "gates.json"
Change = Callable[[dict[str, Any] | None], dict[str, Any]]


@runtime_checkable
class LedgerStore(Protocol):
    """A registry that keeps a gate ledger: one JSON document, changed atomically."""

    def update_ledger(self, change: Change) -> dict[str, Any]:
        """Apply `change` to the stored ledger (None when there is none yet) atomically; returns the stored one."""
        ...

    def read_ledger(self) -> dict[str, Any] | None:
        """The stored ledger, or None when the registry has never counted a gate."""
        ...


def start_gate(registry: Any, cfg: GateConfig, name: str | None = None) -> SequenceLevel:
    """Count the next gate of `registry` as started and return the level it may test at. A registry that keeps no
    ledger can only gate at a fixed level; one whose ledger runs another procedure or α is refused (its promise
    would break), naming the setting."""
    if not isinstance(registry, LedgerStore):
        if cfg.sequence != "fixed":
            raise ConfigError(
                f"gate.sequence: {cfg.sequence} needs a registry that keeps a gate ledger ({name or 'this one'} "
                "does not); set gate.sequence: fixed"
            )
        return per_gate(cfg.alpha)
    started: list[SequenceLevel] = []

    def change(data: dict[str, Any] | None) -> dict[str, Any]:
        ledger = _read(data, name) if data is not None else Ledger(cfg.sequence, cfg.alpha, ledger_id=uuid.uuid4().hex)
        if (ledger.procedure, ledger.alpha) != (cfg.sequence, cfg.alpha):
            raise ConfigError(
                f"gate.sequence/gate.alpha: {name or 'the registry'} has run {len(ledger.gates)} gates under "
                f"{ledger.procedure} at alpha {ledger.alpha:g}, and its promise holds only if every gate does; set "
                f"gate.sequence: {ledger.procedure} and gate.alpha: {ledger.alpha:g}, or start a new registry"
            )
        spent = ledger.spent()
        ledger, entry = ledger.started(datetime.now(timezone.utc).isoformat(timespec="seconds"))
        level = SequenceLevel(ledger.procedure, ledger.alpha, entry.k, entry.level, spent, name, ledger.ledger_id)
        started[:] = [level]
        return ledger.to_json()

    registry.update_ledger(change)
    return started[0]


def finish_gate(registry: Any, level: SequenceLevel, outcome: GateOutcome) -> None:
    """Record the outcome of a started gate (an online gate that promoted passes its level on)."""
    if not isinstance(registry, LedgerStore):
        return

    def change(data: dict[str, Any] | None) -> dict[str, Any]:
        if data is None:
            raise RegistryError(f"{level.registry or 'registry'}: its gate ledger vanished before gate {level.k} ended")
        return _read(data, level.registry).finished(level.k, outcome).to_json()

    registry.update_ledger(change)


def check_counted(registry: Any, recorded: dict[str, Any] | None, where: str) -> None:
    """Refuse to publish a promotion that this registry's gate ledger never counted: a run gated without this
    registry, or against another one (a gate.json from elsewhere), including into a registry that has counted no
    gate yet. Its level was not this registry's α_k, and its number is missing from the registry's count of gates,
    so the whole-life promise (or, at a fixed level, the count of gates the card shows) would break. The gate must
    name this ledger (its random `ledger_id`; the registry's name for a ledger written before ids existed), a gate
    number the ledger holds, at the level the ledger gave it, with an outcome that is not another decision."""
    if not isinstance(registry, LedgerStore):
        return
    data = registry.read_ledger()
    recorded = recorded or {}
    source = recorded.get("registry") or "no registry"
    if data is None:
        raise GateError(
            f"{where}: {registry.name} has counted no gate, so this promotion was gated elsewhere (against "
            f"{source}); gate the run again with registry.uri set to this registry"
        )
    ledger = _read(data, registry.name)
    k = recorded.get("k")
    same = (
        recorded.get("ledger_id") == ledger.ledger_id
        if ledger.ledger_id or recorded.get("ledger_id")
        else recorded.get("registry") == registry.name
    )
    counted = (
        same
        and recorded.get("procedure") == ledger.procedure
        and isinstance(k, int)
        and 1 <= k <= len(ledger.gates)
        and math.isclose(ledger.gates[k - 1].level, float(recorded.get("level", -1.0)))
        and ledger.gates[k - 1].outcome in ("started", "promote")
    )
    if not counted:
        raise GateError(
            f"{where}: this gate (against {source}) is not in {registry.name}'s gate ledger, whose promise "
            f"({ledger.procedure}) covers only the gates it counted; gate the run again with registry.uri set to "
            "this registry"
        )


def _read(data: dict[str, Any], name: str | None) -> Ledger:
    try:
        return Ledger.from_json(data)
    except (ValueError, KeyError, TypeError) as err:
        raise RegistryError(f"{name or 'registry'}: {LEDGER} is not a gate ledger ({err}); restore it") from None
