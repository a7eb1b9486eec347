"""hpo-action: pruned Optuna searches of TRL SFT fine-tuning, gated on statistical significance."""

from __future__ import annotations

from hpo_action.config import HpoConfig, load_config, parse_config
from hpo_action.errors import ConfigError, DataError, GateError, HpoActionError, RegistryError, TrialError

__all__ = [
    "ConfigError",
    "DataError",
    "GateError",
    "HpoActionError",
    "HpoConfig",
    "RegistryError",
    "TrialError",
    "load_config",
    "parse_config",
]
__version__ = "0.1.0"
