"""`search.lr_bounds: auto`: the learning-rate range of a new study narrowed around the range test's suggestion.

The narrowed bounds are stored on the study (user attribute `lr_bounds`), so a resumed study, a second command
and the worker processes search the same range without running the range test again; the study keeps the name
of the configured one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from hpo_action.config import HpoConfig, apply_overrides
from hpo_action.search.lr_window import window
from hpo_action.search.naming import storage_url, study_name
from hpo_action.search.optuna_backend.storage import open_storage
from hpo_action.search.space import searched

if TYPE_CHECKING:
    import optuna

BOUNDS_ATTR = "lr_bounds"


def resolve(cfg: HpoConfig, find: Callable[[], float]) -> HpoConfig:
    """The config the study runs with: the stored bounds of an existing study, else `find()`'s suggestion
    narrowed into a window; unchanged unless lr_bounds is auto and the learning rate is searched."""
    spec = searched(cfg).get("learning_rate")
    if cfg.search.lr_bounds != "auto" or spec is None or spec.type != "float":
        return cfg
    name = study_name(cfg)
    bounds = stored_bounds(cfg, name) or window(find(), float(spec.low), float(spec.high))
    space = {**spec.model_dump(exclude_unset=True), "low": bounds[0], "high": bounds[1], "log": True}
    return apply_overrides(cfg, {"search.study_name": name, "search.space.learning_rate": space}, source="lr_bounds")


def record(study: optuna.Study, cfg: HpoConfig) -> None:
    """Store the bounds the study searches, once, for every later command and worker."""
    spec = cfg.search.space.get("learning_rate")
    if cfg.search.lr_bounds == "auto" and spec is not None and BOUNDS_ATTR not in study.user_attrs:
        study.set_user_attr(BOUNDS_ATTR, [spec.low, spec.high])


def stored_bounds(cfg: HpoConfig, name: str) -> tuple[float, float] | None:
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage_url(cfg), cfg.search))
    except KeyError:  # no such study yet
        return None
    bounds = study.user_attrs.get(BOUNDS_ATTR)
    if not bounds or not all(math.isfinite(b) for b in bounds):
        return None
    return float(bounds[0]), float(bounds[1])
