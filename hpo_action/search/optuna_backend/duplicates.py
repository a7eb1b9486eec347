"""No configuration is trained twice by accident: each invocation and worker samples with its own seed, and a
proposal that repeats a configuration the study already has (finished or running) is asked again.

A resumed study, a second `search` command, a worker and a matrix job used to seed their sampler with
`search.seed` alone and re-drew the same parameters. The seed is now derived from `search.seed` plus what makes
the invocation unique and is recorded in the storage (the study's trial count at start, the invocation's number,
claimed under the trial-slot lock so that two commands started at the same moment get two numbers, the worker
launch, the matrix job's `HPO_ACTION_SEED_STREAM`), so a study stays reproducible from its storage. The deliberate
retry of an interrupted trial (Optuna's `RetryHeartbeatStaleTrialCallback`) keeps its parameters on purpose.

A discarded repeat is stored as a PRUNED trial (what Optuna's FAQ does with a duplicate: a state that says it
stopped early, never that it failed) with the user attribute `duplicate_of`; it is never counted or reported.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from typing import TYPE_CHECKING, Any

from hpo_action.config import HpoConfig
from hpo_action.errors import ConfigError
from hpo_action.search.space import searched

if TYPE_CHECKING:
    import optuna

STREAM_ENV = "HPO_ACTION_SEED_STREAM"  # e.g. ${{ strategy.job-index }}: concurrent jobs on one study
DUPLICATE_ATTR = "duplicate_of"  # user attribute of a proposal that repeated trial N and was asked again
INVOCATIONS_ATTR = "invocations"  # study user attribute: how many times the study was opened (the next number)
MAX_REASKS = 25  # proposals in a row that may be asked again before a repeat is accepted (tiny spaces)


def derive_seed(base: int, *parts: int) -> int:
    """`base` itself when every part is 0 (a fresh, single study keeps search.seed); otherwise a 32-bit hash."""
    if not any(parts):
        return base
    digest = hashlib.sha256(":".join(str(p) for p in (base, *parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def seed_stream() -> int:
    """The matrix job's index (or any integer naming a concurrent invocation); 0 when unset."""
    value = os.environ.get(STREAM_ENV, "").strip()
    if not value:
        return 0
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{STREAM_ENV}: {value!r} is not an integer; set it to the job index, e.g. 0, 1, 2") from None


def is_discarded(trial: optuna.trial.FrozenTrial) -> bool:
    """A repeated proposal: recorded (PRUNED, `duplicate_of`) for the sampler's history, never counted or reported
    as a trial."""
    return DUPLICATE_ATTR in trial.user_attrs


def claim_invocation(study: optuna.Study) -> int:
    """This invocation's number on the study (0 for the first), stored at once; call it under the slot lock."""
    number = int(study.user_attrs.get(INVOCATIONS_ATTR, 0))
    study.set_user_attr(INVOCATIONS_ATTR, number + 1)
    return number


def duplicate_of(study: optuna.Study, number: int, params: dict[str, Any]) -> int | None:
    """The trial that already holds trial `number`'s configuration, or None. Holding it: complete, pruned,
    running, or failed other than by an interruption. The heartbeat retry of an interrupted trial repeats its
    parameters on purpose and is never a duplicate."""
    trials = study.get_trials(deepcopy=False)
    superseded = {n for t in trials for n in retry_history(t)}
    if not params or any(t.number == number and retry_history(t) for t in trials):
        return None
    for other in trials:
        if other.number == number or is_discarded(other) or other.state.name == "WAITING":
            continue
        interrupted = other.number in superseded or str(other.user_attrs.get("error", "")).startswith("interrupted")
        if other.state.name == "FAIL" and interrupted:
            continue
        if other.params == params:
            return other.number
    return None


def retry_history(trial: optuna.trial.FrozenTrial) -> list[int]:
    """The interrupted trials this one retries (Optuna's record), without its experimental-API warning."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental since Optuna 3.0, and still there in 5
        return RetryHeartbeatStaleTrialCallback.retry_history(trial)


def space_size(cfg: HpoConfig) -> float:
    """How many distinct configurations the space holds: finite only when every searched range is discrete."""
    size = 1.0
    for spec in searched(cfg).values():
        if spec.type == "categorical":
            size *= len(spec.choices)
        elif spec.type == "int" and not spec.log:
            size *= (int(spec.high) - int(spec.low)) // int(spec.step or 1) + 1
        elif spec.type == "float" and spec.step and not spec.log:
            size *= round((spec.high - spec.low) / spec.step) + 1
        else:
            return math.inf
    return size


def exhausted(study: optuna.Study, cfg: HpoConfig) -> bool:
    """Every configuration of a finite space has been tried: any further trial would repeat one."""
    size = space_size(cfg)
    if math.isinf(size):
        return False
    held = {
        tuple(sorted(t.params.items()))
        for t in study.get_trials(deepcopy=False)
        if t.params and not is_discarded(t) and t.state.name != "WAITING"
    }
    return len(held) >= size
