"""The batch planner: the largest per-device micro-batch that fits on a CUDA device for the configured model,
method and max_length, found by real training steps that catch out-of-memory errors (doubling, then bisection,
as accelerate's find_executable_batch_size does downwards); and the micro-batch x accumulation pair that keeps
the configured effective batch.

A step is a forward and backward pass of `batch` rows of max_length random tokens and an AdamW step, with the
configured adapter (or full fine-tuning) and gradient checkpointing: the memory a trial's step needs, since
every row of a packed or full-length batch is that long.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hpo_action.config import HpoConfig
from hpo_action.train.models import BaseModel, free_memory


@dataclass(frozen=True)
class BatchPlan:
    """What the planner found, and the pair it proposes."""

    device: str
    max_length: int
    largest: int  # the largest micro-batch that trained a step (0: not even 1 fits)
    limit: int  # the largest tried; `largest == limit` means the limit, not the memory, stopped the search
    effective: int  # per-device batch x accumulation, as configured
    micro: int
    accumulation: int
    seconds: float
    tried: tuple[tuple[int, bool], ...]  # (batch, fitted) in the order tried

    def describe(self) -> str:
        bound = "(the limit, not memory, stopped the search)" if self.largest == self.limit else ""
        return (
            f"{self.device}, max_length {self.max_length}: the largest micro-batch that fits is {self.largest} "
            f"{bound}; for the effective batch {self.effective}: per_device_train_batch_size {self.micro} x "
            f"gradient_accumulation_steps {self.accumulation} (found in {self.seconds:.0f} s, "
            f"{len(self.tried)} trial steps)"
        ).replace("  ", " ")


def is_out_of_memory(err: BaseException) -> bool:
    """A CUDA out-of-memory error, whichever way it surfaced (typed, or a RuntimeError from a kernel or cuBLAS)."""
    text = str(err).lower()
    typed = type(err).__name__ == "OutOfMemoryError"
    return typed or (isinstance(err, RuntimeError) and ("out of memory" in text or "cublas_status_alloc" in text))


def largest_fitting(
    step: Callable[[int], None],
    limit: int,
    is_oom: Callable[[BaseException], bool] = is_out_of_memory,
    cleanup: Callable[[], None] = lambda: None,
) -> tuple[int, list[tuple[int, bool]]]:
    """The largest batch in [1, limit] for which `step(batch)` does not run out of memory, assuming that a batch
    fits whenever a larger one does: double from 1 until a step fails, then bisect between the last batch that
    fitted and the first that did not. Any other error propagates; `cleanup` runs after every step, once the
    error (and the tensors its traceback holds) is gone. Returns (largest, [(batch, fitted), ...])."""
    tried: list[tuple[int, bool]] = []

    def fits(batch: int) -> bool:
        fitted = True
        try:
            step(batch)
        except Exception as err:
            if not is_oom(err):
                raise
            fitted = False
        cleanup()
        tried.append((batch, fitted))
        return fitted

    good, bad, batch = 0, None, 1
    while batch <= limit:
        if not fits(batch):
            bad = batch
            break
        good, batch = batch, batch * 2
    if bad is None:  # every power of two up to the limit fitted: try the limit itself
        if good < limit and fits(limit):
            return limit, tried
        bad = limit if good < limit else limit + 1
    while bad - good > 1:
        middle = (good + bad) // 2
        good, bad = (middle, bad) if fits(middle) else (good, middle)
    return good, tried


def split_effective(effective: int, largest: int) -> tuple[int, int]:
    """(micro-batch, accumulation): the largest micro-batch that fits and divides the effective batch exactly."""
    micro = max(d for d in range(1, max(1, min(effective, largest)) + 1) if effective % d == 0)
    return micro, effective // micro


def plan_batch(cfg: HpoConfig, base: BaseModel, params: dict[str, Any], limit: int) -> BatchPlan:
    """Measure on the CUDA device `base` lives on; `params` are the trial defaults (adapter shape, optimizer)."""
    import torch

    started = time.perf_counter()
    length = int(params["max_length"])
    model = base.attach(params)
    if params.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    vocab = int(model.config.vocab_size)

    def step(batch: int) -> None:
        ids = torch.randint(0, vocab, (batch, length), device=base.device)
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()

    def cleanup() -> None:
        optimizer.zero_grad(set_to_none=True)
        free_memory()

    try:
        largest, tried = largest_fitting(step, limit, cleanup=cleanup)
    finally:
        optimizer.zero_grad(set_to_none=True)
        base.detach(model)
    effective = int(params["per_device_train_batch_size"]) * int(params["gradient_accumulation_steps"])
    micro, accumulation = split_effective(effective, largest) if largest else (0, 0)
    name = torch.cuda.get_device_name(base.model.device) if base.device == "cuda" else base.device
    seconds = time.perf_counter() - started
    return BatchPlan(name, length, largest, limit, effective, micro, accumulation, seconds, tuple(tried))
