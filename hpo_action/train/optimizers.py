"""What a trial's optimizer and schedule add to a plain TRL run: LoRA+ (a higher rate for the B matrices, through
PEFT's optimizer helper), layer-wise learning-rate decay for full fine-tuning (the lowest layers get the smallest
rate), the cosine schedule with a floor, NEFTune noise, and the per-trial training length and packing."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from hpo_action.data.tokenize import first_trained_position
from hpo_action.errors import TrialError

if TYPE_CHECKING:
    import datasets
    import torch

_LAYER = re.compile(r"\.(?:layers|layer|h|blocks)\.(\d+)\.")


def sft_arguments(params: dict[str, Any], data_max_length: int) -> dict[str, Any]:
    """SFTConfig arguments from the toolbox's parameters (scheduler floor, NEFTune, packing)."""
    arguments: dict[str, Any] = {"neftune_noise_alpha": float(params.get("neftune_noise_alpha") or 0) or None}
    if params.get("lr_scheduler_type") == "cosine_with_min_lr":
        arguments["lr_scheduler_kwargs"] = {"min_lr_rate": float(params.get("min_lr_rate", 0.1))}
    if params.get("packing"):
        length = int(params.get("max_length") or data_max_length)
        arguments.update(packing=True, packing_strategy="bfd", max_length=length, eval_packing=False)
    return arguments


def trial_train_dataset(dataset: datasets.Dataset, params: dict[str, Any], data_max_length: int) -> datasets.Dataset:
    """The tokenized training rows for this trial: cut to its max_length, then packed when asked; the
    validation rows stay as tokenized, so every trial's objective is measured on the same examples."""
    length = int(params.get("max_length") or data_max_length)
    if length < data_max_length:
        dataset = dataset.map(
            lambda row: {"input_ids": row["input_ids"][:length], "labels": row["labels"][:length]},
            keep_in_memory=True,
        ).filter(lambda row: first_trained_position(row["labels"]) is not None, keep_in_memory=True)
        if len(dataset) == 0:
            raise TrialError(f"max_length {length}: no training row keeps a completion token; raise it")
    if params.get("packing"):
        from trl.data_utils import pack_dataset

        dataset = pack_dataset(dataset, length, "bfd", map_kwargs={"keep_in_memory": True})
    return dataset


def build_optimizer(model: Any, params: dict[str, Any], args: Any) -> torch.optim.Optimizer | None:
    """LoRA+ or layer-wise decay when a trial asks for them; None leaves the optimizer to the trainer."""
    ratio = float(params.get("loraplus_lr_ratio", 1.0))
    decay = float(params.get("layerwise_lr_decay", 1.0))
    if ratio == 1.0 and decay == 1.0:
        return None
    from transformers import Trainer

    optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    if ratio != 1.0:
        from peft.optimizers import create_loraplus_optimizer

        kwargs.pop("lr", None)
        return create_loraplus_optimizer(
            model,
            optimizer_cls,
            lr=args.learning_rate,
            loraplus_lr_ratio=ratio,
            loraplus_weight_decay=args.weight_decay,
            **kwargs,
        )
    return optimizer_cls(layerwise_groups(model, args.learning_rate, decay, args.weight_decay), **kwargs)


def layerwise_groups(model: Any, lr: float, decay: float, weight_decay: float) -> list[dict[str, Any]]:
    """Parameter groups with rate lr·decay^depth: the top layer trains at lr, each layer below at `decay` times
    the one above, the embeddings below the first layer; the final norm and an untied head train at lr. A head
    tied to the input embeddings (one matrix) trains at the embeddings' rate, the lowest: a weight has one rate,
    and this one is also the input every layer reads, which the decay is there to change least. No weight decay
    on biases and norms (one-dimensional parameters)."""
    import torch

    n_layers = _count_layers(model)
    embeddings = {
        id(param)
        for module in model.modules()
        if isinstance(module, torch.nn.Embedding)
        for param in module.parameters()
    }
    groups: dict[tuple[int, bool], list[Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        match = _LAYER.search(f".{name}")
        depth = n_layers - 1 - int(match.group(1)) if match else (n_layers if id(param) in embeddings else 0)
        groups.setdefault((depth, param.ndim >= 2), []).append(param)
    return [
        {"params": found, "lr": lr * decay**depth, "weight_decay": weight_decay if decays else 0.0}
        for (depth, decays), found in sorted(groups.items())
    ]


def _count_layers(model: Any) -> int:
    config = getattr(model, "config", None)
    layers = getattr(config, "num_hidden_layers", None)
    if not layers:
        raise TrialError("layerwise_lr_decay: the model's config has no num_hidden_layers; set it to 1 (off)")
    return int(layers)
