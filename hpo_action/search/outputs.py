"""The study's output folder: trials.csv, best/ and summary.json, each written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_action.config import HpoConfig
from hpo_action.files import write_text_atomic

if TYPE_CHECKING:
    import optuna

BEST_DIR = "best"


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One flat row per trial: number, state, value, steps, seconds, params, error."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "steps": t.user_attrs.get("steps", max(t.intermediate_values, default=None)),
            "seconds": t.user_attrs.get("seconds"),
        }
        row.update({f"param_{k}": v for k, v in sorted(t.params.items())})
        row.update({f"forgetting_{k}": v for k, v in t.user_attrs.get("forgetting_excess", {}).items()})
        row["error"] = t.user_attrs.get("error", "")
        rows.append(row)
    return rows


def write_trials_csv(study: optuna.Study, path: Path) -> None:
    rows = trial_rows(study)
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or ["number", "state", "value", "steps", "seconds"])
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def publish_best(study: optuna.Study, output: Path, trials_dir: Path, params: dict[str, Any]) -> Path | None:
    """Copy the best trial's saved adapter to best/ with params.json; None when it was not kept."""
    best = study.best_trial
    source = trials_dir / str(best.number)
    if not source.is_dir():
        return None
    target = output / BEST_DIR
    staging = Path(tempfile.mkdtemp(dir=output, prefix=".best-"))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        info = {"trial": best.number, "value": best.value, "params": params}
        (staging / "params.json").write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
        if target.exists():
            old = output / f".best-old-{os.getpid()}"
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def summarize(study: optuna.Study, cfg: HpoConfig, storage: str, elapsed: float, best_dir: Path | None) -> dict:
    """What the run found, as JSON for later steps (gate, report, the GitHub Action)."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    summary: dict[str, Any] = {
        "study_name": study.study_name,
        "storage": storage,
        "objective": cfg.search.objective.model_dump(),
        "method": cfg.model.method,
        "base_model": cfg.model.name,
        "sampler": cfg.search.sampler,
        "pruner": cfg.search.pruner,
        "n_trials": sum(counts.values()),
        "states": counts,
        "elapsed_s": round(elapsed, 2),
        "total_steps": sum(int(r["steps"] or 0) for r in trial_rows(study)),
        "best": None,
    }
    try:
        best = study.best_trial
    except ValueError:
        return summary
    summary["best"] = {
        "number": best.number,
        "value": best.value,
        "params": best.params,
        "metrics": best.user_attrs.get("metrics", {}),
        "forgetting_excess": best.user_attrs.get("forgetting_excess", {}),
        "adapter": str(best_dir) if best_dir else None,
    }
    return summary


def write_summary(summary: dict, path: Path) -> None:
    write_text_atomic(path, json.dumps(summary, indent=2, default=str) + "\n")
