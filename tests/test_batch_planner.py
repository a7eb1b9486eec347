"""The batch planner's search, with a fake out-of-memory step; its proposal; and `plan` on a machine without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hpo_action.cli import main
from hpo_action.config.edit import set_values
from hpo_action.train.batch_planner import is_out_of_memory, largest_fitting, split_effective

from .helpers import ROOT


class FakeOutOfMemoryError(RuntimeError):
    """What torch raises, by name: torch.cuda.OutOfMemoryError is a RuntimeError called OutOfMemoryError."""


FakeOutOfMemoryError.__name__ = "OutOfMemoryError"


def _step_that_fits_up_to(capacity: int, seen: list[int]):
    def step(batch: int) -> None:
        seen.append(batch)
        if batch > capacity:
            raise FakeOutOfMemoryError(f"CUDA out of memory. Tried to allocate {batch} GiB")

    return step


@pytest.mark.parametrize("capacity", [1, 2, 3, 5, 37, 64, 100, 255, 256])
def test_bisection_finds_the_largest_batch_that_fits(capacity: int):
    seen: list[int] = []
    cleaned: list[int] = []
    largest, tried = largest_fitting(_step_that_fits_up_to(capacity, seen), 256, cleanup=lambda: cleaned.append(1))
    assert largest == capacity
    assert [batch for batch, _ in tried] == seen and all(fitted == (b <= capacity) for b, fitted in tried)
    assert len(cleaned) == len(seen)  # memory is freed after every step, the failed ones too
    assert len(seen) <= 2 * 8 + 1  # doubling, then bisection: logarithmic in the limit


def test_nothing_fits_and_the_limit_stops_the_search():
    assert largest_fitting(_step_that_fits_up_to(0, []), 64)[0] == 0
    seen: list[int] = []
    assert largest_fitting(_step_that_fits_up_to(10_000, seen), 100)[0] == 100
    assert seen == [1, 2, 4, 8, 16, 32, 64, 100]


def test_an_error_that_is_not_out_of_memory_propagates():
    def broken(batch: int) -> None:
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError, match="shape mismatch"):
        largest_fitting(broken, 16)
    assert is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
    assert not is_out_of_memory(RuntimeError("expected scalar type Float"))


@pytest.mark.parametrize(
    ("effective", "largest", "pair"),
    [(32, 8, (8, 4)), (32, 12, (8, 4)), (32, 64, (32, 1)), (24, 5, (4, 6)), (7, 3, (1, 7))],
)
def test_the_pair_keeps_the_effective_batch(effective: int, largest: int, pair: tuple[int, int]):
    assert split_effective(effective, largest) == pair
    assert pair[0] * pair[1] == effective


def test_plan_on_a_cpu_says_it_plans_for_cuda_only(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "-c", str(ROOT / "examples" / "plan" / "hpo.yaml")])
    assert exit_info.value.code == 1
    assert "plans for CUDA only" in capsys.readouterr().err


def test_the_pair_is_written_into_the_config_keeping_its_comments(tmp_path: Path):
    text = (ROOT / "examples" / "plan" / "hpo.yaml").read_text()
    changes = {
        "train.per_device_train_batch_size": ("16", None),
        "train.gradient_accumulation_steps": ("2", None),
    }
    written = set_values(text, changes)
    assert yaml.safe_load(written)["train"] == {
        **yaml.safe_load(text)["train"],
        "per_device_train_batch_size": 16,
        "gradient_accumulation_steps": 2,
    }
    assert written.count("#") == text.count("#")  # every comment kept
    bare = set_values("model:\n  name: x\n", changes)  # a config without a train section gains one
    assert yaml.safe_load(bare) == {
        "model": {"name": "x"},
        "train": {"per_device_train_batch_size": 16, "gradient_accumulation_steps": 2},
    }
