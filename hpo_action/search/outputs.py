"""The study's outputs, whichever backend ran it: trials.csv from the typed trial records, and best/ (the chosen
trial's weights and parameters), each written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hpo_action.errors import ConfigError, OutputError
from hpo_action.files import is_no_space, write_text_atomic
from hpo_action.layout import RunLayout, claim, foreign_files, is_ours
from hpo_action.search.summary import TrialRecord
from hpo_action.train.models import adapter_sha256


def write_trials_csv(records: list[TrialRecord], path: Path) -> None:
    """One row per trial: number, state, value, steps, seconds, one column per parameter, per forgetting set its
    measured delta against the base (`forgetting_<set>`, as the report's trade-off line shows it; < 0: forgot) and
    its constraint value (`margin_excess_<set>`: how far the gate's lower bound on the probe rows falls below
    −margin; > 0: infeasible), for a PBT trial its schedule ([[step, {parameter: value}], ...]), error."""
    rows = []
    for record in records:
        row: dict[str, Any] = {k: getattr(record, k) for k in ("number", "state", "value", "steps", "seconds")}
        row.update({f"param_{k}": v for k, v in record.params.items()})
        row.update({f"forgetting_{k}": 0.0 - drop for k, drop in record.forgetting_drop.items()})
        row.update({f"margin_excess_{k}": v for k, v in record.forgetting.items()})
        if record.schedule:  # PBT: the parameters its weights trained under, from each step on
            row["schedule"] = json.dumps(record.schedule, separators=(",", ":"))
        rows.append({**row, "error": record.error})
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or ["number", "state", "value", "steps", "seconds"])
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def publish_trial(
    source: Path, layout: RunLayout, number: int, value: float | None, params: dict[str, Any]
) -> Path | None:
    """Copy one trial's saved weights (`source`) to best/ with params.json, whichever backend ran it; None when
    they were not kept."""
    if not source.is_dir():
        return None
    target, output = layout.best_dir, layout.root
    foreign = [target] if target.exists() and not is_ours(target, "trial") else foreign_files(target)
    if foreign:
        raise OutputError(f"output.dir: {foreign[0]} was not written by hpo-action; move it away (it would be deleted)")
    staging = Path(tempfile.mkdtemp(dir=output, prefix=".best-"))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        info = {"trial": number, "value": value, "params": params}
        (staging / layout.best_params.name).write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
        claim(staging, layout.best_params.name)
        if target.exists() and adapter_sha256(target) == adapter_sha256(staging):
            os.replace(staging / layout.best_params.name, layout.best_params)  # the same weights: keep the verdict
            shutil.rmtree(staging, ignore_errors=True)
            return target
        for stale in (layout.gate, layout.manifest, layout.report):
            stale.unlink(missing_ok=True)
        if target.exists():
            old = output / f".best-old-{os.getpid()}"
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if is_no_space(err):
            raise OutputError(
                f"output.dir: no space left on the device while writing {target}; free space or set output.dir "
                "elsewhere, then run the same command again (the finished trials are kept)"
            ) from None
        raise
    return target


def check_writable(output: Path) -> None:
    """Try a real write: permission bits say nothing for root or on a read-only file system."""
    fix = "choose another folder with --output"
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"output.dir: cannot create {output}: {err.strerror} ({fix})") from None
    try:
        with tempfile.TemporaryFile(dir=output):
            pass
    except OSError as err:
        raise ConfigError(f"output.dir: {output} is not writable: {err.strerror} ({fix})") from None
