"""One trial of the Ray Tune backend, as it runs inside a Ray worker: the same `Runner` as an Optuna trial, with
the Trainer's checkpoint (train/checkpoints.py) reported to Ray at each evaluation, so that PBT can copy it into
another trial and ASHA can stop it.

A PBT exploit restarts a trial from another trial's checkpoint with perturbed parameters: the weights, optimizer
and scheduler state and the data position come from the checkpoint, and the new learning rate and weight decay are
set on the resumed optimizer before the first step. Each checkpoint carries the schedule its weights trained under,
so the winner's schedule is its lineage, not only its own segments.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from hpo_action.config import HpoConfig
from hpo_action.data.loading import Splits
from hpo_action.layout import mark
from hpo_action.search.space import trial_defaults
from hpo_action.train.checkpoints import FOLDER_KIND, TrialCheckpoints, identity
from hpo_action.train.runner import Runner
from hpo_action.train.threads import SHARE_ENV

OBJECTIVE = "objective"  # the reported key Ray's schedulers compare
STEP = "step"  # the reported key Ray's schedulers count time in: optimizer steps
FINAL = "final"  # 1 in the report a trial makes when it ran to its end (with its adapter and probe results)
SCHEDULE_FILE = "schedule.json"
PARAMS_FILE = "params.json"
STATE_FILE = "trainer_state.json"  # the Trainer writes it last: a checkpoint folder has it
ADAPTER = "adapter"

MakeRunner = Callable[[HpoConfig, Splits, Any, Console], Runner]
_RUNNERS: dict[str, Runner] = {}  # per Ray worker process: the base model and the tokenized data, loaded once


@dataclass(frozen=True)
class TrialSpec:
    """What every trial needs, shipped to the workers once through Ray's object store."""

    cfg: HpoConfig
    splits: Splits
    make_runner: MakeRunner  # session.trial_runner: the entry point that loads the model and tokenizes


class RayCheckpoints(TrialCheckpoints):
    """The trial's Trainer checkpoints in a local folder, each reported to Ray with the last evaluation once
    written; seeded from the checkpoint Ray restored this trial from (its own, or a better trial's under PBT)."""

    def __init__(self, folder: Path, params: dict[str, Any], cfg: HpoConfig) -> None:
        super().__init__(folder, identity(params, cfg.fingerprint()))
        self.params, self.max_steps = params, cfg.search.budget.max_steps
        self.reported = {k: params[k] for k in sorted(cfg.active_space())}
        self.schedule: list[list[Any]] = [[0, self.reported]]
        self.value: float | None = None
        self._before: dict[str, Any] | None = None  # the parameters the restored checkpoint was trained with

    def adopt(self, source: Path) -> None:
        """Take the Trainer checkpoint Ray restored (an evaluation's checkpoint itself, or a trial's end with its
        last checkpoint inside) into this trial's folder, claimed for this trial's parameters."""
        inner = sorted(source.glob("checkpoint-*"), key=lambda p: int(p.name.rpartition("-")[2]))
        trainer = source if (source / STATE_FILE).is_file() else inner[-1] if inner else None
        if trainer is None:
            return
        step = int(json.loads((trainer / STATE_FILE).read_text(encoding="utf-8"))["global_step"])
        self.folder.mkdir(parents=True, exist_ok=True)
        shutil.copytree(trainer, self.folder / f"checkpoint-{step}")
        mark(self.folder, FOLDER_KIND, identity=self.identity)
        lineage = json.loads((source / SCHEDULE_FILE).read_text(encoding="utf-8"))
        self.schedule = [entry for entry in lineage if entry[0] < step]
        if self.schedule[-1][1] != self.reported:
            self.schedule.append([step, self.reported])
        self._before = json.loads((source / PARAMS_FILE).read_text(encoding="utf-8"))

    def record(self, value: float, step: int) -> bool:
        """The runner's reporter: keep the evaluation for the checkpoint report that follows it; never prunes
        (Ray's scheduler stops trials itself)."""
        self.value = value
        return False

    def resumed(self, optimizer: Any, scheduler: Any) -> None:
        """A checkpoint trained at another rate or weight decay (PBT explore): scale the resumed optimizer's rates
        (every group keeps its ratio: LoRA+, layer-wise decay) and the scheduler's base rates to the new one."""
        if self._before is None or optimizer is None:
            return
        factor = float(self.params["learning_rate"]) / float(self._before["learning_rate"])
        decay = float(self.params["weight_decay"])
        for group in optimizer.param_groups:
            group["lr"] *= factor
            if "initial_lr" in group:
                group["initial_lr"] *= factor
            if group.get("weight_decay"):
                group["weight_decay"] = decay
        inner = getattr(scheduler, "scheduler", scheduler)  # accelerate wraps the scheduler
        if inner is not None and hasattr(inner, "base_lrs"):
            inner.base_lrs = [rate * factor for rate in inner.base_lrs]

    def saved(self, step: int) -> None:
        """Checkpoint-<step> is written: stamp it with its parameters and lineage and report it (the last step is
        reported once, with the adapter and the probes, by `train_trial`)."""
        super().saved(step)
        self.stamp(self.folder / f"checkpoint-{step}")
        if step < self.max_steps and self.value is not None:
            _report(self.report_metrics(step), self.folder / f"checkpoint-{step}")

    def stamp(self, folder: Path) -> None:
        (folder / SCHEDULE_FILE).write_text(json.dumps(self.schedule, default=str), encoding="utf-8")
        (folder / PARAMS_FILE).write_text(json.dumps(self.params, default=str), encoding="utf-8")

    def report_metrics(self, step: int) -> dict[str, Any]:
        return {OBJECTIVE: self.value, STEP: step, FINAL: 0, **{f"param_{k}": v for k, v in self.reported.items()}}


def train_trial(config: dict[str, Any], spec: TrialSpec) -> None:
    """Ray Tune's function trainable: train one trial of `config` (the searched parameters), resuming from the
    checkpoint Ray hands it, and report each evaluation and the end."""
    from ray import tune

    cfg = spec.cfg
    os.environ[SHARE_ENV] = str(cfg.search.ray.cpus_per_trial)  # torch threads: this trial's CPU share
    runner = _runner(spec)
    params = {**trial_defaults(cfg), **config}
    scratch = Path(tempfile.mkdtemp(prefix="hpo-ray-trial-"))
    checkpoints = RayCheckpoints(scratch / "checkpoints", params, cfg)
    try:
        restored = tune.get_checkpoint()
        if restored is not None:
            with restored.as_directory() as folder:
                checkpoints.adopt(Path(folder))
        final = scratch / "final"
        result = runner.run(
            params, report=checkpoints.record, save_to=lambda _: final / ADAPTER, checkpoints=checkpoints
        )
        last = sorted(checkpoints.folder.glob("checkpoint-*"), key=lambda p: int(p.name.rpartition("-")[2]))
        if last:  # a trial that copies this one after its end resumes from here
            shutil.copytree(last[-1], final / last[-1].name)
        checkpoints.stamp(final)
        metrics = {
            **checkpoints.report_metrics(result.steps),
            OBJECTIVE: result.value,
            FINAL: 1,
            "resumed_from_step": checkpoints.resumed_from_step,
            "checkpoint_bytes": checkpoints.checkpoint_bytes,
            "record": json.dumps(
                {
                    "metrics": result.metrics,
                    "curve": result.curve,
                    "train_curve": result.train_curve,
                    "forgetting": result.forgetting,
                    "forgetting_drop": result.forgetting_drop,
                    "stopped_early": result.stopped_early,
                    "schedule": checkpoints.schedule,
                    "params": params,
                },
                default=str,
            ),
        }
        _report(metrics, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _runner(spec: TrialSpec) -> Runner:
    """The worker's runner for this config, loaded by the first trial it runs and kept for the next ones."""
    key = spec.cfg.fingerprint()
    if key not in _RUNNERS:
        _RUNNERS.clear()
        _RUNNERS[key] = spec.make_runner(spec.cfg, spec.splits, None, Console(file=sys.stderr))
    return _RUNNERS[key]


def _report(metrics: dict[str, Any], folder: Path) -> None:
    from ray import tune

    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(folder)))
