"""Tokenize once: token ids and labels (loss on the completion only), cached on disk for every trial and resume.

Every error is one line that names the config key, the row and the fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_action.config import DataConfig
from hpo_action.data.loading import ReplaySet, Splits, first_line, rows_fingerprint
from hpo_action.data.rows import Rows
from hpo_action.data.splits import Folds
from hpo_action.errors import DataError
from hpo_action.notices import say

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

# Bump when tokenize_rows changes its output, so old caches are not reused.
_CACHE_VERSION = 1


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of everything that changes token ids: vocab, rules, added/special tokens, chat template, bos/eos/pad."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    parts = {
        "class": type(tokenizer).__name__,
        "vocab": sorted(tokenizer.get_vocab().items()),
        "backend": _backend_rules(backend) if backend is not None else None,
        "added": sorted((i, t.content, t.special) for i, t in tokenizer.added_tokens_decoder.items()),
        "special": tokenizer.special_tokens_map,
        "chat_template": getattr(tokenizer, "chat_template", None),
        "ids": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id],
        "bos_prefix": _bos_prefix(tokenizer),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def tokenize_rows(
    rows: Rows, tokenizer: PreTrainedTokenizerBase, cfg: DataConfig, *, role: str = "data"
) -> dict[str, list]:
    """Token ids and labels (-100 outside the completion), right-truncated to cfg.max_length.

    Rows with no label left after truncation are dropped and counted in a warning; `role` only names the
    split in messages.
    """
    if not rows:
        return {"id": [], "input_ids": [], "labels": []}
    if cfg.format == "messages":
        prompts, completions = _render_chats(rows, tokenizer, role)
        bos: list[int] = []  # the chat template writes its own bos
    elif cfg.format == "prompt_completion":
        prompts, completions = [r["prompt"] for r in rows], [r["completion"] for r in rows]
        bos = _bos_prefix(tokenizer)
    else:  # text: the whole text is the completion of an empty prompt
        prompts, completions = [""] * len(rows), [r["text"] for r in rows]
        bos = _bos_prefix(tokenizer)

    max_length = cfg.max_length
    prompt_ids = _encode(tokenizer, prompts)
    completion_ids = _encode(tokenizer, completions)
    eos_id, eos_token = tokenizer.eos_token_id, tokenizer.eos_token
    out: dict[str, list] = {"id": [], "input_ids": [], "labels": []}
    dropped: list[str] = []
    for row, prompt, completion, text in zip(rows, prompt_ids, completion_ids, completions, strict=True):
        if eos_id is not None and not text.rstrip().endswith(eos_token):
            completion = [*completion, eos_id]
        masked = len(bos) + len(prompt)
        if masked >= max_length or not completion:
            dropped.append(row["id"])
            continue
        out["id"].append(row["id"])
        out["input_ids"].append((bos + prompt + completion)[:max_length])
        out["labels"].append(([-100] * masked + completion)[:max_length])
    if dropped:
        counts = f"{len(dropped)} of {len(rows)} rows"
        logger.warning(
            f"{role}: dropped {counts}: no completion token within data.max_length={max_length} (first: {dropped[0]!r})"
        )
    return out


def first_trained_position(labels: list[int]) -> int | None:
    """Where a row's first completion token a trainer learns from sits (position 0 predicts nothing); None when the
    row keeps none, so truncating it to `n` tokens keeps one exactly when this is below `n`."""
    return next((i for i, label in enumerate(labels) if i > 0 and label != -100), None)


def tokenize_splits(
    splits: Splits, tokenizer: PreTrainedTokenizerBase, cfg: DataConfig, cache_dir: Path
) -> tuple[datasets.Dataset, datasets.Dataset, bool]:
    """Tokenized (train, validation, cache_hit); test is never tokenized here because the study never sees it."""
    parts, hit = _cached(
        {"train": (splits.train, "data.train", cfg), "validation": (splits.validation, "data.validation", cfg)},
        tokenizer,
        cfg,
        cache_dir,
    )
    return parts["train"], parts["validation"], hit


def tokenize_for_study(
    splits: Splits, tokenizer: PreTrainedTokenizerBase, cfg: DataConfig, cache_dir: Path
) -> tuple[list[tuple[datasets.Dataset, datasets.Dataset]], bool]:
    """The (train, validation) pairs a trial trains on: one, or one per fold under kfold; and the cache hit."""
    if splits.folds is not None:
        return tokenize_folds(splits.folds, tokenizer, cfg, cache_dir)
    train, validation, hit = tokenize_splits(splits, tokenizer, cfg, cache_dir)
    return [(train, validation)], hit


def tokenize_folds(
    folds: Folds, tokenizer: PreTrainedTokenizerBase, cfg: DataConfig, cache_dir: Path
) -> tuple[list[tuple[datasets.Dataset, datasets.Dataset]], bool]:
    """Each fold's tokenized (train, validation), with the pool tokenized once; and whether the cache had it."""
    parts, hit = _cached({"pool": (list(folds.pool), "data.train", cfg)}, tokenizer, cfg, cache_dir)
    pool = parts["pool"]
    fold_of = [folds.assignment[row_id] for row_id in pool["id"]]
    split = []
    for fold in range(folds.k):
        train = [i for i, f in enumerate(fold_of) if f != fold]
        validation = [i for i, f in enumerate(fold_of) if f == fold]
        if not validation:
            raise DataError(f"data.k: fold {fold} keeps no row within data.max_length={cfg.max_length}")
        split.append((pool.select(train), pool.select(validation)))
    return split, hit


def tokenize_replay(
    replay: tuple[ReplaySet, ...], tokenizer: PreTrainedTokenizerBase, cfg: DataConfig, cache_dir: Path
) -> tuple[list[datasets.Dataset], bool]:
    """Each data.replay source tokenized in its own format (a prompt/completion row's loss on its completion, a
    chat row's on its last assistant turn), into the same input_ids/labels columns as train: once per study."""
    if not replay:
        return [], True
    parts, hit = _cached(
        {f"replay-{i}": (r.rows, r.key, r.data_cfg) for i, r in enumerate(replay)}, tokenizer, cfg, cache_dir
    )
    return list(parts.values()), hit


def _cached(
    parts: dict[str, tuple[Rows, str, DataConfig]],
    tokenizer: PreTrainedTokenizerBase,
    cfg: DataConfig,
    cache_dir: Path,
) -> tuple[dict[str, datasets.Dataset], bool]:
    """Tokenized datasets by name (each from its rows, `role` naming it in errors, and its own data settings:
    a replay source's format may differ from `cfg`'s), and whether they were cached.

    The cache folder is keyed by data, tokenizer, format and max_length, and appears atomically (written to a
    temp folder, then renamed), so a crash never leaves half a cache and concurrent writers agree.
    """
    import datasets

    fingerprints = [rows_fingerprint(rows) for rows, _, _ in parts.values()] + [tokenizer_fingerprint(tokenizer)]
    names = list(parts) if list(parts) != ["train", "validation"] else []  # holdout keeps its old cache key
    own = [own.format for _, _, own in parts.values() if own.format != cfg.format]  # replay's own formats
    key = hashlib.sha256(
        json.dumps([_CACHE_VERSION, *fingerprints, cfg.format, cfg.max_length, *names, *own]).encode()
    ).hexdigest()
    cache_dir = Path(cache_dir)
    target = cache_dir / f"tokenized-{key[:16]}"
    if target.is_dir():
        try:
            return {name: datasets.load_from_disk(target / name) for name in parts}, True
        except (OSError, ValueError) as err:  # damaged by hand: rebuild rather than fail every run
            logger.warning("tokenized cache %s is unreadable (%s); rebuilding it", target, err)
            shutil.rmtree(target, ignore_errors=True)

    counts = " and ".join(f"{len(rows)} {name}" for name, (rows, _, _) in parts.items())
    say(f"tokenizing {counts} examples (once, cached)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache_dir))
    try:
        for name, (rows, role, own) in parts.items():
            columns = tokenize_rows(rows, tokenizer, own, role=role)
            if not columns["id"]:
                raise DataError(
                    f"{role}: no row keeps a completion token within data.max_length={cfg.max_length}; "
                    "raise data.max_length or shorten the prompts"
                )
            datasets.Dataset.from_dict(columns).save_to_disk(str(tmp / name))
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            # Another process finished the same cache first; its copy is identical.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {name: datasets.load_from_disk(target / name) for name in parts}, False


def _render_chats(rows: Rows, tokenizer: PreTrainedTokenizerBase, role: str) -> tuple[list[str], list[str]]:
    """Split each rendered chat into the prompt (earlier turns + generation prompt) and the last turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            f"{role}: format messages needs a tokenizer with a chat_template; use a chat model or text format"
        )
    prompts, completions = [], []
    for row in rows:
        messages = row["messages"]
        try:
            prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(messages, tokenize=False)
        except Exception as err:  # jinja raises its own errors, e.g. for roles the template rejects
            raise DataError(f"{role}: row id {row['id']!r}: the chat template failed: {first_line(err)}") from None
        if not full.startswith(prompt):
            raise DataError(
                f"{role}: row id {row['id']!r}: the chat template is not prefix-stable (the chat without its last "
                "turn, plus the generation prompt, does not start the full chat), so the loss cannot be put on the "
                "last assistant turn alone"
            )
        prompts.append(prompt)
        completions.append(full[len(prompt) :])
    return prompts, completions


def _encode(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """One batched call, which the fast tokenizer runs in parallel; truncation happens after joining the parts."""
    return tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]


def _backend_rules(backend: Any) -> dict[str, Any]:
    """The fast backend's JSON: merges, normalizer and post-processor, which the vocab misses.

    Truncation and padding are left out: they are per-call state that the last call left behind.
    """
    rules = json.loads(backend.to_str())
    rules.pop("truncation", None)
    rules.pop("padding", None)
    return rules


def _bos_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """[bos] when the tokenizer adds one by itself (Llama-style), else []: the model was trained that way."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    ids = tokenizer("x")["input_ids"]
    return [bos] if ids and ids[0] == bos else []
