"""Checks across the sections of a whole config, run when it loads: a remedy or objective without what it needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hpo_action.config._sections import HpoConfig

FORGETTING = "forgetting"  # the objective: the largest drop on the forgetting probes ('forgetting:NAME': one set)


def is_forgetting_objective(metric: str) -> bool:
    """`forgetting` or `forgetting:NAME`: an objective scored on the per-trial forgetting probes."""
    return metric == FORGETTING or metric.startswith(f"{FORGETTING}:")


def check_remedies(cfg: HpoConfig) -> None:
    """Replay needs replay data; a forgetting objective needs a forgetting set the probes can score."""
    if may_be_nonzero(cfg, "replay_ratio") and not cfg.data.replay:
        raise ValueError("train.replay_ratio: a share of replay rows needs data.replay (the rows to replay)")
    scored = [b.name for b in cfg.gate.forgetting if b.kind == "data"]
    for objective in cfg.search.objectives:
        if not is_forgetting_objective(objective.metric):
            continue
        name = objective.metric.partition(":")[2]
        if not scored or (name and name not in scored):
            wanted = f"a gate.forgetting set named {name!r}" if name else "a gate.forgetting set of kind data"
            raise ValueError(f"search.objectives: {objective.metric!r} needs {wanted} (the per-trial probes)")


def may_be_nonzero(cfg: HpoConfig, parameter: str) -> bool:
    """Whether some trial can run with this numeric trial parameter above zero (its default, or the space)."""
    spec = cfg.active_space().get(parameter)
    if spec is None:
        return bool(getattr(cfg.train, parameter))
    return any(bool(v) for v in (spec.high, spec.value, *(spec.choices or ())) if v is not None)
