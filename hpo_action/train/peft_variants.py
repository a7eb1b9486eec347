"""The adapter a trial trains: LoRA with its variants as trial parameters.

- `use_rslora` (scaling alpha/sqrt(r)), `use_dora` (weight-decomposed LoRA);
- `init_lora_weights`: PEFT's initialisations. PiSSA and OLoRA rewrite the base weights they adapt (W becomes
  W_res = W − BA), so the weights are kept aside before the adapter is made and given back after the trial
  (the next trial starts from the bit-identical base), and the adapter is saved the way PEFT requires
  (`path_initial_model_for_weight_conversion`): converted to a plain LoRA of twice the rank that loads on the
  ORIGINAL base model;
- `target_modules` presets: attention only, attention + MLP, or every linear layer (PEFT's all-linear).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_action.config import ModelConfig, mutates_base
from hpo_action.errors import TrialError

if TYPE_CHECKING:
    import torch

_ATTENTION_PARTS = ("attn", "attention")
_MLP_PARTS = ("mlp", "ffn", "feed_forward")
_INITIAL = "initial"  # the folder name PEFT loads the pre-training adapter from (as an adapter name)


def init_value(name: str) -> bool | str:
    """PEFT's init_lora_weights value: 'default' is PEFT's own default (True)."""
    return True if name == "default" else name


def lora_config(params: dict[str, Any], model_cfg: ModelConfig, model: Any) -> Any:
    """The LoraConfig of one trial's parameters."""
    from peft import LoraConfig

    init = str(params.get("init_lora_weights", "default"))
    if bool(params.get("use_dora")) and mutates_base(init):
        raise TrialError(f"use_dora cannot be combined with init_lora_weights {init!r}: PEFT cannot convert it back")
    return LoraConfig(
        r=int(params["lora_r"]),
        lora_alpha=int(params["lora_alpha"]),
        lora_dropout=float(params["lora_dropout"]),
        target_modules=resolve_targets(params.get("target_modules"), model_cfg.target_modules, model),
        use_rslora=bool(params.get("use_rslora", False)),
        use_dora=bool(params.get("use_dora", False)),
        init_lora_weights=init_value(init),
        task_type="CAUSAL_LM",
    )


def resolve_targets(preset: str | None, configured: str | list[str], model: Any) -> str | list[str]:
    """The modules a preset names: the full paths of the linear layers inside attention (and MLP) blocks, or
    PEFT's all-linear (every linear layer but the output head); no preset keeps model.target_modules."""
    if preset is None:
        return configured
    if preset == "all_linear":
        return "all-linear"
    import torch

    wanted = _ATTENTION_PARTS + (_MLP_PARTS if preset == "attention_mlp" else ())
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and any(w in part for part in name.split(".")[:-1] for w in wanted)
    ]
    if not names:
        raise TrialError(
            f"target_modules {preset}: {type(model).__name__} has no linear layer inside a block named like "
            f"{'/'.join(wanted)}; set model.target_modules to its module names instead"
        )
    return names


@dataclass
class KeptBase:
    """The base weights an initialisation rewrites, kept on the CPU, and the adapter as it was before training
    (for the conversion at save time); both go away with the trial."""

    weights: dict[str, torch.Tensor]
    initial_root: Path

    @property
    def initial(self) -> Path:
        return self.initial_root / _INITIAL

    def restore(self, model: Any) -> None:
        """Copy the kept weights back, bit for bit, then drop the kept copy and the initial adapter."""
        import torch

        with torch.no_grad():
            for name, module in model.named_modules():
                if name in self.weights:
                    module.weight.copy_(self.weights[name].to(module.weight.device))
        shutil.rmtree(self.initial_root, ignore_errors=True)


def keep_base(model: Any, lora: Any) -> KeptBase | None:
    """Before an initialisation that rewrites the base: a copy of every linear layer's weight; else None."""
    if not mutates_base(lora.init_lora_weights):
        return None
    import torch

    weights = {
        name: module.weight.detach().to("cpu", copy=True)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    return KeptBase(weights=weights, initial_root=Path(tempfile.mkdtemp(prefix="hpo-initial-adapter-")))


def save_initial(peft_model: Any, kept: KeptBase) -> None:
    """Save the adapter before any training, as PEFT's conversion needs it (its config marked as a plain init, so
    loading it does not rewrite the base again)."""
    config = peft_model.peft_config["default"]
    init = config.init_lora_weights
    config.init_lora_weights = True
    try:
        peft_model.save_pretrained(str(kept.initial))
    finally:
        config.init_lora_weights = init


def save_adapter(model: Any, folder: Path, kept: KeptBase | None) -> None:
    """save_pretrained; after PiSSA or OLoRA, converted to a plain LoRA that loads on the original base model."""
    if kept is None:
        model.save_pretrained(folder)
    else:
        model.save_pretrained(folder, path_initial_model_for_weight_conversion=str(kept.initial))
