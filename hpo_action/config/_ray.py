"""What the Ray Tune backend (search.backend ray) accepts: checked on load, so a bad combination fails before Ray
starts."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hpo_action.config._sections import HpoConfig

# The training parameters PBT's explore may change in the middle of a trial: each acts at the next optimizer step
# (the rate and weight decay through the resumed optimizer, the others through the trial's arguments and rows).
# Everything else in the space (rank, alpha, target modules, schedule shape, batch) is drawn once per trial and
# travels with the weights it shaped when a trial copies another.
PBT_MUTABLE = ("learning_rate", "weight_decay", "max_grad_norm", "replay_ratio", "kl_to_base", "neftune_noise_alpha")


def pbt_mutable(cfg: HpoConfig) -> list[str]:
    """The searched parameters PBT and PB2 perturb (PB2's bounds): the float ranges among PBT_MUTABLE."""
    return [name for name, spec in cfg.active_space().items() if name in PBT_MUTABLE and spec.type == "float"]


def check_ray(cfg: HpoConfig) -> None:
    """Raise ValueError (named for the key) for what the Ray backend cannot do."""
    search = cfg.search
    if search.backend != "ray":
        return
    if search.multi_objective:
        raise ValueError("search.objectives: the ray backend optimizes one objective; use backend optuna")
    if cfg.data.validation_strategy == "kfold":
        raise ValueError("data.validation_strategy: kfold trials cannot be checkpointed for Ray; use holdout or time")
    if search.lr_bounds == "auto":
        raise ValueError("search.lr_bounds: auto runs with backend optuna only; set the learning_rate range")
    ray, budget = search.ray, search.budget
    if ray.scheduler == "asha":
        return
    name = ray.scheduler.upper()  # PBT or PB2: the same population, explored by scaling or by a Gaussian process
    if ray.search_alg != "random":
        raise ValueError(f"search.ray.search_alg: {name} draws its population at random; use random, or scheduler asha")
    if not pbt_mutable(cfg):
        raise ValueError(
            f"search.space: {name} needs a float range among " + ", ".join(PBT_MUTABLE) + " to perturb; add one"
        )
    interval = ray.perturbation_interval or 2 * budget.eval_every
    if interval % budget.eval_every or interval >= budget.max_steps:
        raise ValueError(
            f"search.ray.perturbation_interval: {interval} must be a multiple of search.budget.eval_every "
            f"({budget.eval_every}) and below max_steps ({budget.max_steps})"
        )
