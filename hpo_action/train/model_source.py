"""Where the base model comes from, checked before anything loads or any worker starts: an existing folder, the
bundled demo, or a Hub id that the Hub (or, when the Hub is out of reach, the local cache) can serve. A typo or a
machine without network is one line, not a stack of retries after the workers have started."""

from __future__ import annotations

import os
from pathlib import Path

from hpo_action.config import ModelConfig
from hpo_action.errors import ConfigError
from hpo_action.notices import say
from hpo_action.sources import is_hub_id
from hpo_action.train.demo_model import DEMO_MODEL_ID, is_demo_model

PROBE_SECONDS = 5.0  # one request; a Hub that needs longer to answer a model's metadata is out of reach for us


def check_model_source(model: ModelConfig) -> None:
    """Fail with one line when `model.name` can be neither read from a folder nor fetched from the Hub; when the
    Hub is unreachable but the model is cached, switch this process and its workers to offline mode."""
    name = model.name
    if is_demo_model(name) or Path(name).expanduser().is_dir():
        return
    if Path(name).expanduser().is_absolute() or not is_hub_id(name):
        raise ConfigError(f"model.name: folder not found: {name}; check the path, or give a Hub id ('org/name')")
    _check_hub_model(model)


def public_model_name(model: ModelConfig) -> str:
    """The base model's name as published files give it (adapter_config.json, summary.json, the predictions'
    meta): the Hub id, 'hpo-action/tiny-demo' for the bundled demo, and for a local folder model.card_base_model or
    else the folder's own name. Never a path: it means nothing on another machine and shows this one's layout."""
    if is_demo_model(model.name):
        return DEMO_MODEL_ID
    if is_hub_id(model.name):
        return model.name
    return model.card_base_model or Path(model.name).name


def _check_hub_model(model: ModelConfig) -> None:
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if constants.HF_HUB_OFFLINE:
        if not _cached(model):
            raise ConfigError(
                f"model.name: {model.name} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                "download it on a machine with network first, or use a local folder"
            )
        return
    try:
        HfApi().model_info(model.name, revision=model.revision, timeout=PROBE_SECONDS)
    except GatedRepoError:
        raise ConfigError(f"model.name: {model.name} is gated; accept its terms on the Hub and set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise ConfigError(f"model.revision: {model.name} has no revision {model.revision!r}") from None
    except RepositoryNotFoundError:
        raise ConfigError(
            f"model.name: {model.name} is not on the Hub (or it is private: set HF_TOKEN); check the spelling"
        ) from None
    except Exception as err:  # connection refused, DNS, timeout, a 5xx: the Hub is out of reach
        if not _cached(model):
            raise ConfigError(
                f"model.name: the Hub ({constants.ENDPOINT}) is out of reach ({type(err).__name__}) and "
                f"{model.name} is not in the local cache; check the network, or use a local folder"
            ) from None
        _go_offline()
        say(f"the Hub is out of reach; using the cached copy of {model.name} (HF_HUB_OFFLINE=1)")


def _cached(model: ModelConfig) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model.name, "config.json", revision=model.revision), str)


def _go_offline() -> None:
    """Offline mode for this process (huggingface_hub reads the flag once, at import) and for its workers."""
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
