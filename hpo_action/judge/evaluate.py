"""Per-example scoring of a base model or an adapter on a split, written as a predictions file for the gate.

The gate pairs candidate and champion example by example, so every score here is per row, deterministic
(greedy decoding, eval mode, no dropout) and independent of the batch size: padding never changes a value.
Sampled decoding (settings the decoding search chose, judge/generation.py) is seeded per batch, so it is
reproducible for the same batch size.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_action.config import DataConfig, EvaluateConfig, ModelConfig
from hpo_action.data.tokenize import tokenize_rows
from hpo_action.errors import ConfigError, DataError, HpoActionError
from hpo_action.judge.generation import Decoding, read_decoding
from hpo_action.judge.predictions import write_predictions
from hpo_action.metrics import NORMALIZERS, Metric, resolve_metric
from hpo_action.notices import progress
from hpo_action.train.model_source import public_model_name
from hpo_action.train.models import BaseModel, adapter_sha256, load_base_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSettings:
    """What to score and how; checked on creation so a typo fails before the model loads."""

    metrics: tuple[str, ...] = ("loss", "exact_match")
    max_new_tokens: int = 32
    normalize: tuple[str, ...] = ("strip",)
    batch_size: int = 32
    decoding: Decoding | None = None  # None: greedy with max_new_tokens

    @classmethod
    def from_config(cls, cfg: EvaluateConfig, decoding: Decoding | None = None) -> EvalSettings:
        return cls(tuple(cfg.metrics), cfg.max_new_tokens, tuple(cfg.normalize), cfg.batch_size, decoding)

    @property
    def generation(self) -> Decoding:
        return self.decoding or Decoding(max_new_tokens=self.max_new_tokens)

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ConfigError("evaluate.metrics: name at least one metric")
        for name in self.metrics:
            resolve_metric(name)
        unknown = [step for step in self.normalize if step not in NORMALIZERS]
        if unknown:
            raise ConfigError(f"evaluate.normalize: unknown {unknown[0]!r}; choose from {', '.join(NORMALIZERS)}")
        for key in ("max_new_tokens", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"evaluate.{key}: must be at least 1 (got {getattr(self, key)})")


class _Batch:
    """The rows being scored and, computed on first use and shared by every metric that asks, what the model
    does on them (the `ScoringBatch` of hpo_action.metrics)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        tokenized: dict[str, list],
        rows: list[dict[str, Any]],
        data_cfg: DataConfig,
        settings: EvalSettings,
    ) -> None:
        self.model, self.tokenizer, self.data_cfg, self.settings = model, tokenizer, data_cfg, settings
        self.ids: list[str] = tokenized["id"]
        self.input_ids: list[list[int]] = tokenized["input_ids"]
        self.labels: list[list[int]] = tokenized["labels"]
        self.prompts = [seq[: _prompt_length(lab)] for seq, lab in zip(self.input_ids, self.labels, strict=True)]
        self.rows = {row["id"]: row for row in rows}
        self.normalize = settings.normalize
        self.generated: list[str] | None = None
        self._losses: list[float] | None = None

    def references(self) -> list[str]:
        return [_reference(self.rows[row_id], self.data_cfg) for row_id in self.ids]

    def outputs(self) -> list[str]:
        if self.generated is None:
            self.generated = _generate(self.model, self.tokenizer, self.prompts, self.settings)
        return self.generated

    def losses(self) -> list[float]:
        if self._losses is None:
            pairs = _label_nll(self.model, self.tokenizer, self.input_ids, self.labels, self.settings)
            self._losses = [total / count for total, count in pairs]
            for row_id, loss in zip(self.ids, self._losses, strict=True):
                if not math.isfinite(loss):
                    raise HpoActionError(
                        f"evaluate: row id {row_id!r}: the model gave a non-finite loss ({loss}); "
                        "a float16 overflow? try model.dtype: float32 or bfloat16"
                    )
        return self._losses

    def choice_correct(self) -> list[bool]:
        choices = [_choices(self.rows[row_id], "choice_accuracy") for row_id in self.ids]
        return _choice_correct(self.model, self.tokenizer, self.prompts, choices, self.settings)


def score_rows(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict[str, Any]],
    data_cfg: DataConfig,
    settings: EvalSettings,
) -> list[dict[str, Any]]:
    """One dict per row: {"id", <metric>: value, ..., "output": generated text (when a metric generated)}.

    Prompts and label tokens come from `tokenize_rows`, so the loss is exactly the training loss and
    generation starts from exactly the prompt the model was trained on. Rows without a scored token
    (dropped by truncation) are skipped with a warning rather than scored as NaN.
    """
    import torch

    metrics = [resolve_metric(name) for name in settings.metrics]
    needs_prompt = [m.name for m in metrics if m.needs_prompt]
    if needs_prompt and data_cfg.format == "text":
        raise DataError(f"evaluate: metric {needs_prompt[0]} needs prompts; data.format is text (use loss)")
    tokenized = tokenize_rows(rows, tokenizer, data_cfg, role="evaluate")
    kept = [i for i, labels in enumerate(tokenized["labels"]) if any(t != -100 for t in labels[1:])]
    if len(kept) < len(tokenized["id"]):
        first = next(row_id for i, row_id in enumerate(tokenized["id"]) if i not in set(kept))
        dropped = len(tokenized["id"]) - len(kept)
        logger.warning(f"evaluate: skipped {dropped} rows with no predicted label token (first: {first!r})")
    batch = _Batch(model, tokenizer, {k: [v[i] for i in kept] for k, v in tokenized.items()}, rows, data_cfg, settings)
    empty = next((row_id for row_id, prompt in zip(batch.ids, batch.prompts, strict=True) if not prompt), None)
    if needs_prompt and empty is not None:
        raise DataError(f"evaluate: row id {empty!r}: metric {needs_prompt[0]} needs a non-empty prompt")
    with _eval_mode(model), torch.no_grad():
        columns = {m.name: _checked(m, list(m.score(batch)), len(batch.ids)) for m in metrics}
    if batch.generated is not None:
        columns["output"] = batch.generated
    return [{"id": row_id, **{key: values[n] for key, values in columns.items()}} for n, row_id in enumerate(batch.ids)]


def _checked(metric: Metric, values: list[Any], n: int) -> list[Any]:
    """A metric's scores as the gate needs them: one per row, booleans or finite numbers by its kind."""
    if len(values) != n:
        raise HpoActionError(f"evaluate: metric {metric.name!r} returned {len(values)} values for {n} rows")
    for value in values:
        boolean = isinstance(value, bool)
        if metric.kind == "boolean" and not boolean:
            raise HpoActionError(f"evaluate: metric {metric.name!r} is boolean but returned {value!r}")
        if metric.kind == "score" and (boolean or not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise HpoActionError(f"evaluate: metric {metric.name!r} must return finite numbers, got {value!r}")
    return values


def attach_trained(base: BaseModel, folder: Path) -> tuple[PreTrainedModel, dict[str, Any]]:
    """The trained model in eval mode: a PEFT adapter on the loaded base (wrapped in place), or a full model."""
    digest = adapter_sha256(folder)
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(base.model, str(folder), is_trainable=False)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder, dtype=base.dtype).to(base.device)
    model.eval()
    # Public names only: the meta ships with a version (the adapter is known by its hash, not by its folder).
    meta = {"model": public_model_name(base.config), "adapter": Path(folder).resolve().name, "adapter_sha256": digest}
    return model, meta


def load_for_eval(
    model_cfg: ModelConfig, adapter: Path | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[str, Any]]:
    """The base model, or base + the trained weights in `adapter`, in eval mode, and what identifies it."""
    if adapter is not None:
        adapter_sha256(adapter)  # fail before the slow model load
    base = load_base_model(model_cfg)
    if adapter is None:
        base.model.eval()
        meta = {"model": public_model_name(model_cfg), "adapter": None, "adapter_sha256": None}
        return base.model, base.tokenizer, meta
    model, meta = attach_trained(base, Path(adapter))
    return model, base.tokenizer, meta


def evaluate(
    model_cfg: ModelConfig,
    data_cfg: DataConfig,
    rows: list[dict[str, Any]],
    settings: EvalSettings,
    adapter: Path | None,
    out: Path | None,
    data_fingerprint: str,
) -> list[dict[str, Any]]:
    """Load, score and (when `out` is given) write predictions plus the meta that makes them reproducible."""
    model, tokenizer, meta = load_for_eval(model_cfg, adapter)
    if settings.decoding is None:
        settings = replace(settings, decoding=read_decoding(adapter))  # the adapter's own settings, if it has some
    label = f"evaluating {'the base model' if adapter is None else adapter}"
    return score_and_write(model, tokenizer, rows, data_cfg, settings, out, meta, data_fingerprint, label)


def score_and_write(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict[str, Any]],
    data_cfg: DataConfig,
    settings: EvalSettings,
    out: Path | None,
    meta: dict[str, Any],
    data_fingerprint: str,
    label: str = "evaluating",
) -> list[dict[str, Any]]:
    """Score an already loaded model, with a progress bar over the examples; with `out`, write the predictions
    and their meta.json. Chunks are whole batches, so the scores equal those of one `score_rows` call."""
    records: list[dict[str, Any]] = []
    chunk = settings.batch_size * math.ceil(math.ceil(len(rows) / 20) / settings.batch_size) or 1
    with progress(label, len(rows), " examples") as advance:
        for start in range(0, len(rows), chunk):
            records += score_rows(model, tokenizer, rows[start : start + chunk], data_cfg, settings)
            advance(len(rows[start : start + chunk]))
    if out is not None:
        meta = {
            **meta,
            "data_fingerprint": data_fingerprint,
            "metrics": list(settings.metrics),
            "vocab_size": len(tokenizer),  # the gate clips per-example loss to [0, ln vocab_size]
            "settings": asdict(settings),
            "n": len(records),
            "versions": _versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_predictions(records, out, meta)
    return records


@contextmanager
def _eval_mode(model: PreTrainedModel) -> Iterator[None]:
    """Eval mode (no dropout) for the scoring, then the caller's mode back, e.g. mid-training."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _prompt_length(labels: list[int]) -> int:
    """The prompt is everything before the first label token (BOS and chat markup included)."""
    return next(i for i, t in enumerate(labels) if t != -100)


def _reference(row: dict[str, Any], data_cfg: DataConfig) -> str:
    return row["messages"][-1]["content"] if data_cfg.format == "messages" else row["completion"]


def _choices(row: dict[str, Any], metric: str) -> tuple[list[str], int]:
    """The row's choices and the index of the right one; `answer` is an index or the right string."""
    where = f"evaluate: row id {row['id']!r}: {metric}"
    choices = row.get("choices")
    if isinstance(choices, str):  # CSV cells hold the list as JSON text
        try:
            choices = json.loads(choices)
        except json.JSONDecodeError:
            raise DataError(f"{where}: 'choices' is text that is not a JSON list") from None
    if not (isinstance(choices, list) and choices and all(isinstance(c, str) and c for c in choices)):
        raise DataError(f"{where} needs 'choices', a non-empty list of non-empty strings (got {choices!r})")
    answer = row.get("answer")
    if isinstance(answer, str) and answer in choices:
        return choices, choices.index(answer)
    if isinstance(answer, str) and answer.strip().isdigit():
        answer = int(answer)
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
        return choices, answer
    raise DataError(f"{where} needs 'answer', an index below {len(choices)} or one of the choices (got {answer!r})")


def _label_nll(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    input_ids: list[list[int]],
    labels: list[list[int]],
    settings: EvalSettings,
) -> list[tuple[float, int]]:
    """(summed NLL, token count) of each row's label tokens, in right-padded batches (causal: pads come last)."""
    import torch
    import torch.nn.functional as F

    pad = _pad_id(tokenizer)
    results: list[tuple[float, int]] = []
    for start in range(0, len(input_ids), settings.batch_size):
        batch_ids, batch_labels = (
            input_ids[start : start + settings.batch_size],
            labels[start : start + settings.batch_size],
        )
        width = max(len(ids) for ids in batch_ids)
        ids = torch.tensor([row + [pad] * (width - len(row)) for row in batch_ids], device=model.device)
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in batch_ids], device=model.device)
        target = torch.tensor([row + [-100] * (width - len(row)) for row in batch_labels], device=model.device)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), target[:, 1:], ignore_index=-100, reduction="none")
        sums = nll.double().sum(dim=1).tolist()
        counts = (target[:, 1:] != -100).sum(dim=1).tolist()
        results.extend(zip(sums, counts, strict=True))
    return results


def _generate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]], settings: EvalSettings
) -> list[str]:
    """Continuations (greedy unless the settings sample), left-padded by hand (the tokenizer is left as it is),
    cut at the first EOS. Sampling draws from a generator seeded with (seed + the batch's first row), inside a
    forked RNG, so a decoding trial is reproducible and nothing else's randomness moves."""
    import torch

    pad = _pad_id(tokenizer)
    stop = _eos_ids(model, tokenizer)
    decoding = settings.generation
    devices = [model.device.index or 0] if model.device.type == "cuda" else []
    outputs: list[str] = []
    for start in range(0, len(prompts), settings.batch_size):
        batch = prompts[start : start + settings.batch_size]
        width = max(len(p) for p in batch)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=model.device)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(decoding.seed + start)
            generated = model.generate(
                input_ids=ids, attention_mask=mask, pad_token_id=pad, eos_token_id=stop, **decoding.generate_kwargs()
            )
        for new in generated[:, width:].tolist():
            end = next((i for i, t in enumerate(new) if t in stop), len(new))
            outputs.append(tokenizer.decode(new[:end], skip_special_tokens=True))
    return outputs


def _choice_correct(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    choices: list[tuple[list[str], int]],
    settings: EvalSettings,
) -> list[bool]:
    """Score every prompt + choice by the summed log-prob of the choice tokens; right if the argmax is the answer."""
    input_ids, labels = [], []
    for prompt, (options, _) in zip(prompts, choices, strict=True):
        for option_ids in tokenizer(options, add_special_tokens=False)["input_ids"]:
            input_ids.append(prompt + option_ids)
            labels.append([-100] * len(prompt) + option_ids)
    scores = iter(-total for total, _ in _label_nll(model, tokenizer, input_ids, labels, settings))
    correct = []
    for options, answer in choices:
        row_scores = [next(scores) for _ in options]
        correct.append(max(range(len(options)), key=row_scores.__getitem__) == answer)
    return correct


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """Any id works for padding (it is masked out); pad, else eos, else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokenizer's EOS plus the model's own (chat models often end a turn with another token)."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({i for i in [tokenizer.eos_token_id, *ids] if i is not None})


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    from hpo_action import __version__

    return {name: version(name) for name in ("torch", "transformers", "peft")} | {"hpo_action": __version__}
