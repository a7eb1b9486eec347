"""Forgetting benchmarks from lm-evaluation-harness: its tasks scored per sample, so the gate can pair them.

lm-eval reports a task's aggregate; the gate needs the per-example scores of base and candidate on the same
examples, so this runs lm-eval with `log_samples` and keys every sample by `<task>/<doc_id>`.

Booleans: acc-type metrics (acc, acc_norm, acc_mutual_info, acc_bytes, exact_match) whose per-sample values
are all 0 or 1 become booleans, so the gate pairs them with McNemar; other numbers stay floats (a permutation
test). Paths inside task YAMLs (e.g. `dataset_kwargs.data_files`) are lm-eval's: relative to the working
directory, not to the hpo-action config.

lm-eval is an optional extra (`pip install 'hpo-action[lm-eval]'`), imported only here, inside the function.
"""

from __future__ import annotations

import functools
import numbers
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hpo_action.config import LM_EVAL_ACCURACIES, ForgettingBenchmark
from hpo_action.errors import ConfigError
from hpo_action.judge.predictions import RecordsById

BINARY_METRICS = LM_EVAL_ACCURACIES


def score_lm_eval(model: Any, tokenizer: Any, benchmark: ForgettingBenchmark, batch_size: int = 16) -> RecordsById:
    """Per-sample results of lm-eval tasks, keyed '<task>/<doc_id>', each {'id': key, benchmark.metric: value}.

    `benchmark.metric` is a metric name (`acc`), or lm-eval's `metric,filter` (`exact_match,strict-match`)
    for tasks that score one answer under several filters. The model may be PEFT-wrapped; its train/eval
    mode and the global random state are left as they were.
    """
    where = f"gate.forgetting[{benchmark.name}]"
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError as err:  # the text names a missing dependency of a broken install, too
        raise ConfigError(f"{where}: kind lm_eval needs lm-eval: pip install 'hpo-action[lm-eval]' ({err})") from None

    manager = _task_manager(benchmark, where)
    training = model.training
    try:
        with _kept_random_state():
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=list(benchmark.tasks),
                limit=benchmark.limit,
                log_samples=True,
                bootstrap_iters=0,  # aggregate stderrs are not used; the gate tests the paired samples
                task_manager=manager,
            )
    finally:
        model.train(training)
    assert results is not None  # None only on non-zero ranks of a distributed run
    return _per_sample(results["samples"], benchmark.metric, where)


def _task_manager(benchmark: ForgettingBenchmark, where: str) -> Any:
    """Index only `include_path` when it has every task: lm-eval's built-in index takes seconds to build."""
    wanted = [t for t in benchmark.tasks if not Path(t).is_file()]  # a YAML path is also a task
    if benchmark.include_path:
        local = _index(benchmark.include_path, with_builtins=False)
        if all(local.match_tasks([t]) for t in wanted):
            return local
    manager = _index(benchmark.include_path, with_builtins=True)
    unknown = [t for t in wanted if not manager.match_tasks([t])]
    if unknown:
        raise ConfigError(
            f"{where}.tasks: unknown lm-eval task {unknown[0]!r}"
            + (f" (not in include_path {benchmark.include_path})" if benchmark.include_path else "")
            + "; list them with `lm-eval ls tasks`"
        )
    return manager


@functools.cache
def _index(include_path: str | None, with_builtins: bool) -> Any:
    """One task index per folder and process: base and candidate are scored on the same tasks."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=with_builtins)


@contextmanager
def _kept_random_state() -> Iterator[None]:
    """simple_evaluate seeds python, numpy and torch globally; the caller's random streams must not change."""
    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng():
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def _per_sample(samples: dict[str, list[dict[str, Any]]], metric: str, where: str) -> RecordsById:
    """`{task: [sample]}` from lm-eval → `{'<task>/<doc_id>': {'id': ..., metric: value}}`."""
    name, _, wanted_filter = metric.partition(",")
    records: RecordsById = {}
    for task, rows in samples.items():
        available = sorted({m for row in rows for m in row["metrics"]})
        if name not in available:
            raise ConfigError(
                f"{where}.metric: task {task!r} has no per-sample metric {name!r}; it has {', '.join(available)}"
            )
        filters = sorted({row["filter"] for row in rows})
        chosen = wanted_filter or (filters[0] if len(filters) == 1 else None)
        if chosen not in filters:
            options = ", ".join(f"{name},{f}" for f in filters)
            problem = f"has no filter {wanted_filter!r}" if wanted_filter else f"scores {name!r} under several filters"
            raise ConfigError(f"{where}.metric: task {task!r} {problem}; use one of {options}")
        values = {f"{task}/{row['doc_id']}": _number(row[name]) for row in rows if row["filter"] == chosen}
        if any(v is None for v in values.values()):
            raise ConfigError(
                f"{where}.metric: {name!r} of task {task!r} is computed over the whole corpus, not per sample, "
                "so it cannot be paired; pick a per-sample metric such as acc"
            )
        binary = name in BINARY_METRICS and all(v in (0, 1) for v in values.values())
        for key, value in values.items():
            records[key] = {"id": key, metric: bool(value) if binary else value}
    return records


def _number(value: Any) -> bool | float | None:
    """A sample's value as a bool or float; None for a corpus-level metric's per-sample tuple."""
    import numpy as np

    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return None
