"""Forgetting remedies inside TRL's SFT loop: replay rows flagged through the collator, and distillation to the
base model (`kl_to_base`), as one `SFTTrainer` subclass.

With λ > 0 the training loss is the SFT loss plus λ · KL(p_base ‖ p_θ), averaged over the completion tokens of
the replay rows of the micro-batch (of all its rows when the trial has no replay). The base distribution comes from
the same model with its LoRA/QLoRA adapter disabled (no second copy), or, for full fine-tuning, from a frozen
reference copy handed in. With λ = 0, or while evaluating, the loss is TRL's own, untouched: eval_loss stays
comparable across trials whatever λ they drew.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import SFTTrainer

from hpo_action.data.replay import REPLAY_COLUMN


class RemedyTrainer(SFTTrainer):
    """`SFTTrainer` with the KL-to-base term; `reference` is the frozen base for full fine-tuning, else None."""

    def __init__(self, *args: Any, kl_to_base: float = 0.0, reference: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kl_to_base, self.reference = float(kl_to_base), reference
        self.data_collator = _FlagCollator(self.data_collator)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None and REPLAY_COLUMN not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, REPLAY_COLUMN]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
        flags = inputs.pop(REPLAY_COLUMN, None)
        if self.kl_to_base == 0 or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs["use_cache"] = False
        forward = {key: value for key, value in inputs.items() if key != "labels"}
        outputs = model(**forward)
        labels = inputs["labels"][:, 1:]
        mask = labels != -100
        log_probs = torch.log_softmax(outputs.logits[:, :-1].float(), dim=-1)
        nll = -log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
        count = mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = nll.sum() / torch.as_tensor(count).clamp(min=1)
        rows = flags.bool() if flags is not None else torch.ones(len(labels), dtype=torch.bool, device=labels.device)
        kl = self._kl(model, forward, rows, log_probs, mask)
        if num_items_in_batch is not None:  # the SFT part is already scaled for accumulation; scale the mean alike
            kl = kl / self.current_gradient_accumulation_steps
        self._metrics["train"]["kl_to_base"].append(float(kl.detach()))
        loss = loss + self.kl_to_base * kl
        return (loss, outputs) if return_outputs else loss

    def _kl(
        self, model: Any, forward: dict[str, Any], rows: torch.Tensor, log_probs: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Mean over the chosen rows' completion tokens of KL(p_base ‖ p_θ); zero when no row is chosen."""
        tokens = mask & rows[:, None]
        if not bool(tokens.any()):
            return log_probs.sum() * 0.0  # keeps the graph (and DDP) happy without moving the loss
        chosen = {k: v[rows] if torch.is_tensor(v) and v.dim() > 0 else v for k, v in forward.items()}
        with torch.no_grad():
            base_logits = self._base_logits(model, chosen)
        base = torch.log_softmax(base_logits[:, :-1].float(), dim=-1)
        per_token = (base.exp() * (base - log_probs[rows])).sum(-1)
        return (per_token * tokens[rows]).sum() / tokens.sum()

    def _base_logits(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        if self.reference is not None:
            return self.reference(**inputs).logits
        unwrapped = self.accelerator.unwrap_model(model)
        with unwrapped.disable_adapter():  # the base is the same weights without the adapter: no second copy
            return unwrapped(**inputs).logits


class _FlagCollator:
    """TRL's collator, with the replay flag of each row carried through as a tensor (it drops unknown keys)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if not examples or REPLAY_COLUMN not in examples[0]:
            return self.inner(examples)
        flags = [int(example[REPLAY_COLUMN]) for example in examples]
        batch = self.inner([{k: v for k, v in example.items() if k != REPLAY_COLUMN} for example in examples])
        batch[REPLAY_COLUMN] = torch.tensor(flags)
        return batch
