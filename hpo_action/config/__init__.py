"""Typed configuration loaded from YAML; every check on user input lives here.

Errors name the key, the bad value and the fix, because a CI log is often the only thing the user sees.
"""

from __future__ import annotations

from hpo_action.config._load import (
    apply_overrides,
    load_config,
    parse_config,
    parse_set_option,
)
from hpo_action.config._sections import (
    DEFAULT_LEARNING_RATE,
    FORGETTING,
    FULL_ONLY,
    GATE_TESTS,
    LORA_ONLY,
    PRUNERS,
    SAMPLERS,
    TRIAL_PARAMETERS,
    Budget,
    Columns,
    DataConfig,
    EvaluateConfig,
    ForgettingBenchmark,
    GateConfig,
    HpoConfig,
    ModelConfig,
    Objective,
    OutputConfig,
    ParamSpec,
    RegistryConfig,
    ReplaySource,
    SearchConfig,
    TrainConfig,
    is_forgetting_objective,
)
from hpo_action.config._variants import (
    DECODING_PARAMETERS,
    LORA_INITS,
    TARGET_PRESETS,
    VALIDATION_STRATEGIES,
    mutates_base,
)

__all__ = [
    "DECODING_PARAMETERS",
    "DEFAULT_LEARNING_RATE",
    "FORGETTING",
    "FULL_ONLY",
    "GATE_TESTS",
    "LORA_INITS",
    "LORA_ONLY",
    "PRUNERS",
    "SAMPLERS",
    "TARGET_PRESETS",
    "TRIAL_PARAMETERS",
    "VALIDATION_STRATEGIES",
    "Budget",
    "Columns",
    "DataConfig",
    "EvaluateConfig",
    "ForgettingBenchmark",
    "GateConfig",
    "HpoConfig",
    "ModelConfig",
    "Objective",
    "OutputConfig",
    "ParamSpec",
    "RegistryConfig",
    "ReplaySource",
    "SearchConfig",
    "TrainConfig",
    "apply_overrides",
    "is_forgetting_objective",
    "load_config",
    "mutates_base",
    "parse_config",
    "parse_set_option",
]
