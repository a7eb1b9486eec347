from __future__ import annotations

import optuna
import pytest

from hpo_action.config import parse_config
from hpo_action.search.space import grid, suggest, trial_defaults, warm_start_params


def _cfg(space, method="lora", **train):
    return parse_config(
        {
            "model": {"name": "hpo-action/tiny-demo", "method": method},
            "data": {"train": "t.jsonl"},
            "search": {"space": space},
            "train": train,
        }
    )


def test_warm_start_is_the_train_defaults_moved_into_the_space():
    cfg = _cfg(
        {
            "learning_rate": {"low": 1e-3, "high": 1e-1, "log": True},
            "lora_r": {"low": 2, "high": 16, "step": 2},
            "lora_alpha": {"choices": [8, 64]},
            "lora_dropout": 0.1,
        },
        learning_rate=3e-3,
        lora_r=17,
        lora_alpha=32,
    )
    assert warm_start_params(cfg) == {"learning_rate": 3e-3, "lora_r": 16, "lora_alpha": 8}
    lowered = _cfg({"learning_rate": {"low": 1e-3, "high": 1e-1, "log": True}}, learning_rate=1e-5)
    assert warm_start_params(lowered) == {"learning_rate": 1e-3}


def test_suggest_fills_every_trial_parameter_and_honours_fixed_values():
    cfg = _cfg({"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "lora_dropout": 0.2})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    params = suggest(study.ask(), cfg)
    assert set(params) == set(trial_defaults(cfg))
    assert 1e-4 <= params["learning_rate"] <= 1e-2
    assert params["lora_dropout"] == 0.2


def test_lora_parameters_are_not_searched_for_full_fine_tuning():
    cfg = _cfg({"lora_r": {"low": 2, "high": 8}, "learning_rate": {"low": 1e-6, "high": 1e-4, "log": True}}, "full")
    trial = optuna.create_study().ask()
    suggest(trial, cfg)
    assert set(trial.params) == {"learning_rate"}


@pytest.mark.parametrize(
    ("spec", "values"),
    [
        ({"low": 1e-4, "high": 1e-2, "log": True}, [1e-4, 1e-3, 1e-2]),
        ({"low": 0.0, "high": 0.1}, [0.0, 0.05, 0.1]),
        ({"low": 2, "high": 16}, [2, 9, 16]),
        ({"choices": ["cosine", "linear"]}, ["cosine", "linear"]),
    ],
)
def test_grid_points(spec, values):
    name = "lr_scheduler_type" if "choices" in spec else "learning_rate" if "log" in spec else "lora_r"
    if spec == {"low": 0.0, "high": 0.1}:
        name = "weight_decay"
    got = grid(_cfg({name: spec}), points=3)[name]
    assert got == pytest.approx(values) if not isinstance(values[0], str) else got == values
