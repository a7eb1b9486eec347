"""A model's parameter count from its configuration alone: no weights are downloaded or allocated (the model is
built on PyTorch's meta device). `hpo-action init --model` sizes its starter by it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpo_action.errors import ConfigError
from hpo_action.train.demo_model import demo_config, is_demo_model


def parameter_count(name: str, revision: str | None = None, trust_remote_code: bool = False) -> int:
    """Parameters of the causal LM `name`: the demo model, a local folder with a config.json, or a Hub id (its
    config.json through huggingface_hub: online, or from the local cache)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = _config(name, revision, trust_remote_code)
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, TypeError, ImportError) as err:
        raise ConfigError(f"--model: cannot build {name} from its config.json ({type(err).__name__}: {err})") from None
    return sum(param.numel() for param in model.parameters())  # a tied head is counted once


def _config(name: str, revision: str | None, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    if is_demo_model(name):
        return demo_config()
    folder = Path(name).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise ConfigError(f"--model: {folder} has no config.json; point it at a model folder (or give a Hub id)")
    try:
        return AutoConfig.from_pretrained(
            str(folder) if folder.is_dir() else name, revision=revision, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as err:  # not a folder, not on the Hub, offline and not cached
        raise ConfigError(
            f"--model: cannot read the config.json of {name} ({type(err).__name__}); give a local model folder, "
            "or a Hub id with the Hub in reach"
        ) from None
