"""Error control across a registry's successive gates: the level each gate may test at.

A registry gates again and again; at a fixed α per gate, the chance that *some* promotion was false grows with
every gate (about 0.6 over 20 gates of candidates as good as the champion). The gate ledger (kept by the registry,
`ship/registry/ledger.py`) counts the gates started so far, and this module turns that count into the level of the
next gate. Pure: no registry, no torch.

- fixed: every gate at α (per-gate control only).
- alpha-spending: gate k at α·γ_k with γ_k = 6/(π²k²), Σγ_k = 1, so by Bonferroni's inequality the chance of any
  false promotion over the registry's whole life is at most α, whatever the dependence between gates (online
  Bonferroni; Foster & Stine 2008, J. R. Stat. Soc. B 70(2), on spending rules).
- online: the online fallback procedure (Tian & Ramdas 2021, "Online control of the familywise error rate",
  Statistical Methods in Medical Research 30(4):976-993): gate k at α·γ_k, plus the whole level of gate k − 1 when
  that gate promoted. A true promotion passes its level on instead of spending it, so a registry that keeps
  promoting real gains keeps its power, and the family-wise error stays at most α under arbitrary dependence.
- online-fdr: LORD++ (Javanmard & Montanari 2018, Ann. Stat. 46(2); Ramdas et al. 2017, NeurIPS, "Online control
  of the false discovery rate with decaying memory"), with W0 = α/2 and the same γ: every promotion earns α of
  wealth for the gates after it. It controls the false discovery rate (independent p-values); when every
  candidate is only as good as its champion, every promotion is false, so that is the chance of any.

A gate counts as started before its decision is known: a gate that crashed or never reported its outcome spent its
level and passes nothing on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from hpo_action.config import GateConfig

Procedure = Literal["fixed", "alpha-spending", "online", "online-fdr"]
PROCEDURES: tuple[Procedure, ...] = ("fixed", "alpha-spending", "online", "online-fdr")
GateOutcome = Literal["started", "promote", "reject", "inconclusive"]


def spending_weight(k: int) -> float:
    """γ_k = 6/(π²k²): positive, summing to 1 over k = 1, 2, ... (Basel problem)."""
    if k < 1:
        raise ValueError(f"gates are numbered from 1, got {k}")
    return 6.0 / (math.pi**2 * k * k)


@dataclass(frozen=True)
class LedgerEntry:
    """One gate of the registry: its number, the level it tested at, and its outcome once known."""

    k: int
    level: float
    outcome: GateOutcome = "started"
    started: str | None = None  # UTC time, for people reading the ledger


@dataclass(frozen=True)
class Ledger:
    """Every gate a registry has started, under one procedure and one α (its whole-life error budget)."""

    procedure: Procedure
    alpha: float
    gates: tuple[LedgerEntry, ...] = field(default_factory=tuple)
    ledger_id: str | None = None  # random, made with the ledger: the registry's identity that gate.json records

    def next_level(self) -> float:
        """The level the next gate (number len(gates) + 1) may test at."""
        k = len(self.gates) + 1
        if self.procedure == "fixed":
            return self.alpha
        if self.procedure == "online-fdr":
            return self._lord(k)
        level = self.alpha * spending_weight(k)
        if self.procedure == "online" and self.gates and self.gates[-1].outcome == "promote":
            level += self.gates[-1].level  # fallback: a promotion passes its level on
        return level

    def _lord(self, k: int) -> float:
        """LORD++: W0·γ_k + (α − W0)·γ_{k−τ1} + α·Σ_{j≥2} γ_{k−τj}, τj the gates that promoted, W0 = α/2."""
        wealth = self.alpha / 2
        promoted = [entry.k for entry in self.gates if entry.outcome == "promote"]
        level = wealth * spending_weight(k)
        for i, tau in enumerate(promoted):
            level += (self.alpha - wealth if i == 0 else self.alpha) * spending_weight(k - tau)
        return level

    def spent(self) -> float:
        """The error budget used up by the gates so far: every level, except (online) one that was passed on;
        online-fdr's wealth is earned back by promotions, so its levels are summed as they are."""
        if self.procedure == "fixed":
            return self.alpha * len(self.gates)
        last = len(self.gates) - 1
        return sum(
            entry.level
            for i, entry in enumerate(self.gates)
            if not (self.procedure == "online" and entry.outcome == "promote" and i < last)
        )

    def started(self, when: str | None = None) -> tuple[Ledger, LedgerEntry]:
        """This ledger with the next gate counted as started (before anything is known of its outcome)."""
        entry = LedgerEntry(len(self.gates) + 1, self.next_level(), "started", when)
        return Ledger(self.procedure, self.alpha, (*self.gates, entry), self.ledger_id), entry

    def finished(self, k: int, outcome: GateOutcome) -> Ledger:
        """This ledger with gate k's outcome recorded (a gate's outcome is written once)."""
        gates = list(self.gates)
        if not 1 <= k <= len(gates) or gates[k - 1].outcome != "started":
            raise ValueError(f"gate {k} is not a started gate of this ledger")
        old = gates[k - 1]
        gates[k - 1] = LedgerEntry(old.k, old.level, outcome, old.started)
        return Ledger(self.procedure, self.alpha, tuple(gates), self.ledger_id)

    def to_json(self) -> dict[str, Any]:
        data = {"procedure": self.procedure, "alpha": self.alpha, "gates": [asdict(g) for g in self.gates]}
        return data | ({"ledger_id": self.ledger_id} if self.ledger_id else {})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ledger:
        gates = tuple(
            LedgerEntry(int(g["k"]), float(g["level"]), g.get("outcome", "started"), g.get("started"))
            for g in data.get("gates", [])
        )
        if data.get("procedure") not in PROCEDURES or [g.k for g in gates] != list(range(1, len(gates) + 1)):
            raise ValueError("not a gate ledger (procedure or gate numbers)")
        return cls(data["procedure"], float(data["alpha"]), gates, data.get("ledger_id"))


@dataclass(frozen=True)
class SequenceLevel:
    """Where one gate stands in its registry's life: what gate.json, the card and the terminal say about it."""

    procedure: Procedure
    alpha: float  # the whole-life budget (gate.alpha)
    k: int  # this gate's number in the registry's life
    level: float  # α_k: the level this gate's tests ran at
    spent_before: float  # the budget used up by gates 1..k-1
    registry: str | None = None  # the registry's name, as messages show it
    ledger_id: str | None = None  # the identity of the registry's ledger that counted this gate (None: no ledger)

    @property
    def controlled(self) -> str:
        """The error that is controlled, in words a user understands."""
        return controlled_error(self.procedure, self.alpha)

    def line(self) -> str:
        """One line for the terminal, the job summary and the card."""
        where = f" of {self.registry}" if self.registry else ""
        return (
            f"gate {self.k}{where}, tested at level α_{self.k} = {self.level:.3g} ({self.procedure}): {self.controlled}"
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "controlled_error": self.controlled}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SequenceLevel:
        return cls(
            data["procedure"],
            data["alpha"],
            data["k"],
            data["level"],
            data["spent_before"],
            data.get("registry"),
            data.get("ledger_id"),
        )


def controlled_error(procedure: Procedure, alpha: float) -> str:
    """What the promise is, per procedure."""
    if procedure == "fixed":
        return (
            f"each gate on its own: the chance that this promotion is a false one is at most {alpha:.0%}; "
            "over many gates the chance that some promotion was false grows with every gate"
        )
    if procedure == "online-fdr":
        return (
            f"over this registry's whole life, on average at most {alpha:.0%} of its promotions are false ones (false "
            f"discovery rate); while no candidate has truly beaten its champion, the chance of any false promotion "
            f"is at most {alpha:.0%}"
        )
    return (
        f"over this registry's whole life, the chance that any promotion so far was a false one is at most {alpha:.0%}"
    )


def per_gate(alpha: float) -> SequenceLevel:
    """A gate with no registry (prediction files, or a run that publishes nowhere): per-gate control at α."""
    return SequenceLevel("fixed", alpha, 1, alpha, 0.0)


def at_level(cfg: GateConfig, level: float) -> GateConfig:
    """The gate's settings with every test at `level` (α_k), and enough resamples that a resampling test can reach
    it (at least 10 beyond the critical value, as the config requires of α)."""
    resamples = max(cfg.resamples, math.ceil(10 / level) - 1)
    return cfg.model_copy(update={"alpha": level, "resamples": resamples})
