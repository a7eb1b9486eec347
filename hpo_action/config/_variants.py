"""Checks of the fine-tuning toolbox's keys (validation strategies, PEFT variants, decoding search): the values a
parameter may take and the combinations no trial could run, so they fail on load with the key named."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError

# init_lora_weights: PEFT's initialisations; pissa_niter_N is PiSSA with N fast-SVD iterations.
LORA_INITS = ("default", "gaussian", "pissa", "olora")
TARGET_PRESETS = ("attention", "attention_mlp", "all_linear")
VALIDATION_STRATEGIES = ("holdout", "kfold", "time")
LORA_VARIANTS = ("use_rslora", "use_dora", "init_lora_weights", "loraplus_lr_ratio", "target_modules")
DECODING_PARAMETERS = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens")


def check_init_name(cls: Any, value: str) -> str:
    """A LoRA initialisation PEFT knows (pydantic field validator of train.init_lora_weights)."""
    if value not in LORA_INITS and not re.fullmatch(r"pissa_niter_[1-9]\d*", value):
        raise ValueError(f"unknown init {value!r}; choose from {', '.join(LORA_INITS)} or pissa_niter_N")
    return value


def mutates_base(init: Any) -> bool:
    """PiSSA and OLoRA rewrite the base weights they adapt (W becomes W_res)."""
    return isinstance(init, str) and init.startswith(("pissa", "olora"))


def check_space_values(train_model: type[BaseModel], name: str, spec: Any) -> None:
    """Every value a searched parameter can take is one its train field accepts: a typo fails now, not in trial 7."""
    if spec.type in ("float", "int"):
        values = [spec.low, spec.high]
    else:
        values = spec.choices if spec.type == "categorical" else [spec.value]
    for value in values:
        try:
            train_model.model_validate({name: value})
        except ValidationError as err:
            message = err.errors()[0]["msg"].removeprefix("Value error, ")
            raise ValueError(f"{name}: {value!r} is not a valid value: {message}") from None


def check_strategy(data: Any) -> None:
    """The keys a validation strategy needs (a DataConfig)."""
    if data.validation_strategy == "time":
        if not data.time_field:
            raise ValueError("validation_strategy time needs data.time_field (the column with each row's time)")
        if data.validation:
            raise ValueError(
                "validation_strategy time holds out the latest rows itself: remove data.validation (or use holdout)"
            )


def check_variants(cfg: Any) -> None:
    """Combinations of an HpoConfig that no trial could run."""
    lengths = [("train.max_length", cfg.train.max_length)]
    spec = cfg.search.space.get("max_length")
    if spec is not None:
        values = {"categorical": spec.choices, "fixed": [spec.value]}.get(spec.type, [spec.high])
        lengths += [("search.space.max_length", value) for value in values]
    for key, value in lengths:
        if isinstance(value, (int, float)) and value > cfg.data.max_length:
            raise ValueError(
                f"{key} ({value}) exceeds data.max_length ({cfg.data.max_length}), the length the data is "
                "tokenized to; raise data.max_length"
            )
    inits = [cfg.train.init_lora_weights]
    spec = cfg.search.space.get("init_lora_weights")
    if spec is not None:
        inits += [*(spec.choices or []), spec.value]
    mutating = next((init for init in inits if mutates_base(init)), None)
    if cfg.model.method == "qlora" and mutating:
        raise ValueError(
            f"init_lora_weights {mutating!r} rewrites the base weights, which a 4-bit base cannot give back "
            "exactly; use method lora, or another init"
        )
    if (
        cfg.model.method != "full"
        and all(_values(cfg, "use_dora"))
        and all(map(mutates_base, _values(cfg, "init_lora_weights")))
    ):
        raise ValueError(
            f"use_dora with init_lora_weights {cfg.train.init_lora_weights!r}: PEFT cannot convert a DoRA adapter "
            "back for the original base, so no trial could run; drop one of them"
        )


def _values(cfg: Any, name: str) -> list[Any]:
    """Every value a trial may take for `name`: the searched ones, else the train default."""
    spec = cfg.search.space.get(name)
    if spec is None:
        return [getattr(cfg.train, name)]
    return list(spec.choices) if spec.type == "categorical" else [spec.value]
