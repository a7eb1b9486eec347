"""One trial: parameters → SFTConfig (+ LoRA) → a short TRL SFT run that reports to the pruner.

The base model and the tokenized data come in already loaded, so a trial costs its training steps and
little else; that is the point of hpo-action over `Trainer.hyperparameter_search`.
"""

from __future__ import annotations

import errno
import gc
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hpo_action import drills
from hpo_action.config import HpoConfig
from hpo_action.errors import TrialError
from hpo_action.layout import mark
from hpo_action.train.models import BaseModel
from hpo_action.train.optimizers import build_optimizer, sft_arguments, trial_train_dataset
from hpo_action.train.threads import limit_torch_threads

if TYPE_CHECKING:
    import datasets

    from hpo_action.train.checkpoints import TrialCheckpoints
    from hpo_action.train.lr_find import LrRamp

Reporter = Callable[[float, int], bool]
"""Called with (objective value, step) at each evaluation; returns True when the trial should be pruned."""


BATCH_KEYS = ("per_device_train_batch_size", "gradient_accumulation_steps")


class OutOfMemory(TrialError):
    """The accelerator ran out of memory; the trial fails (or is retried with a smaller per-device batch)."""

    def __init__(self, batch: int, accumulation: int) -> None:
        super().__init__(f"OOM at per-device batch {batch} (gradient accumulation {accumulation})")
        self.batch = batch


def halve_batch(params: dict[str, Any]) -> dict[str, Any]:
    """The same effective batch in half the memory: half the per-device batch, twice the accumulation."""
    batch, accumulation = (int(params[k]) for k in BATCH_KEYS)
    return {**params, BATCH_KEYS[0]: batch // 2, BATCH_KEYS[1]: accumulation * 2}


def describe_error(err: BaseException) -> str:
    return str(err) if isinstance(err, TrialError) else f"{type(err).__name__}: {err}"


class Pruned(Exception):
    """Raised inside training when the reporter says stop; the caller turns it into optuna.TrialPruned."""

    def __init__(self, step: int, value: float, train_curve: list[tuple[int, float]] | None = None) -> None:
        super().__init__(f"pruned at step {step} (value {value:.6g})")
        self.step, self.value = step, value
        self.train_curve = train_curve or []


@dataclass
class TrialResult:
    """What one finished trial measured."""

    value: float
    metrics: dict[str, float]
    curve: list[tuple[int, float]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    forgetting: dict[str, float] = field(default_factory=dict)  # the probe's constraint value: > 0 infeasible
    train_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, training loss) at each log
    fold_values: list[float] = field(default_factory=list)  # kfold: each fold's objective (value is their mean)
    forgetting_drop: dict[str, float] = field(default_factory=dict)  # drop against the base (> 0: worse)


@dataclass(frozen=True)
class ProbeReading:
    """One probe's result after a trial: the drop against the base (> 0: worse) and the constraint value (≤ 0:
    feasible; for a forgetting set, how far the gate's lower bound on its probe rows falls below −margin)."""

    drop: float
    excess: float


class Probe(Protocol):
    """Scored after each trial (e.g. a forgetting set); the trial is feasible when every reading's excess ≤ 0."""

    name: str

    def measure(self, model: Any, tokenizer: Any) -> ProbeReading: ...


class TrialRunner:
    """Runs trials against one loaded base model and one tokenized dataset, kept for the whole study."""

    def __init__(
        self,
        cfg: HpoConfig,
        base: BaseModel,
        train: datasets.Dataset,
        validation: datasets.Dataset,
        probes: tuple[Probe, ...] = (),
        replay: list[datasets.Dataset] | None = None,
        reference: Any = None,
    ):
        self.cfg, self.base, self.probes = cfg, base, probes
        self.train_dataset = train.select_columns(["input_ids", "labels"])
        self.eval_dataset = validation.select_columns(["input_ids", "labels"])
        self.replay = replay or []
        self.reference = reference  # full fine-tuning with kl_to_base: the frozen base the KL is taken against
        self.training: Any = None  # the model of the trial being trained, for probe_now
        # Everything alive now (libraries, base model, data) lives as long as the worker: freezing it keeps
        # the per-trial garbage collections (ours and accelerate's) from walking ~500k long-lived objects.
        gc.collect()
        gc.freeze()

    def run(
        self,
        params: dict[str, Any],
        report: Reporter | None = None,
        save_to: Callable[[TrialResult], Path | None] | None = None,
        trial_number: int | None = None,
        checkpoints: TrialCheckpoints | None = None,
    ) -> TrialResult:
        """Train with `params`; `save_to(result)` names a folder for the weights or None to discard them. With
        `checkpoints`, a checkpoint is written at each evaluation and training resumes from the last one there."""
        import torch
        from transformers import set_seed

        started = time.perf_counter()
        limit_torch_threads()  # the machine's load may have changed since the last trial
        set_seed(self.cfg.train.seed)  # the adapter's random init must not depend on earlier trials
        tracker = self._tracker(report)
        model = self.base.attach(params)
        trainer = None
        try:
            with tempfile.TemporaryDirectory(prefix="hpo-trial-") as scratch:
                resume_from = checkpoints.prepare() if checkpoints is not None else None
                callbacks = [tracker.callback()]
                if checkpoints is not None:
                    callbacks.append(_saved_callback(checkpoints))
                    tracker.replay(checkpoints.log_history())
                folder = str(checkpoints.folder) if checkpoints is not None else scratch
                trainer = self._trainer(model, params, folder, callbacks, checkpointing=checkpoints is not None)
                # Only now is the model the one the evaluations describe: a resumed trial's replayed evaluations
                # came before its checkpoint's weights are loaded, and a probe then would read the fresh adapter.
                self.training = model
                try:
                    drills.fire("train", trial_number)
                    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
                except torch.cuda.OutOfMemoryError:
                    raise OutOfMemory(*(int(params[k]) for k in BATCH_KEYS)) from None
                if not tracker.curve or tracker.curve[-1][0] != trainer.state.global_step:
                    tracker.record(trainer.evaluate(), trainer.state.global_step)
            value = tracker.curve[-1][1]
            readings = {p.name: p.measure(model, self.base.tokenizer) for p in self.probes}
            result = TrialResult(
                value=value,
                metrics=tracker.last_metrics,
                curve=tracker.curve,
                steps=trainer.state.global_step,
                seconds=time.perf_counter() - started,
                stopped_early=tracker.stopped_early,
                forgetting={name: reading.excess for name, reading in readings.items()},
                forgetting_drop={name: reading.drop for name, reading in readings.items()},
                train_curve=tracker.train_curve,
            )
            target = save_to(result) if save_to else None
            if target is not None:
                self._save(model, target, trial_number)
            return result
        finally:
            del trainer
            self.training = None
            self.base.detach(model)

    def _tracker(self, report: Reporter | None) -> _Tracker:
        """The trial's view of its evaluations: the study's objective, budget and timeout, reported to `report`."""
        search = self.cfg.search
        objective = search.objective
        return _Tracker(
            objective.metric, objective.direction, report, self.cfg.train, search.budget.max_steps, search.trial_timeout
        )

    def probe_now(self) -> dict[str, ProbeReading]:
        """Every probe on the model being trained, mid-trial (the pruner's rungs under the forgetting constraint);
        empty between trials and while a resumed trial's evaluations before its checkpoint are replayed."""
        if self.training is None:
            return {}
        return {p.name: p.measure(self.training, self.base.tokenizer) for p in self.probes}

    def base_metrics(self, params: dict[str, Any]) -> dict[str, float]:
        """The validation metrics of `params`' model before its first step (a LoRA adapter starts as the identity,
        so this is the base model), from the trial's own evaluation: one pass over the validation rows."""
        limit_torch_threads()
        model = self.base.attach(params)
        trainer = None
        try:
            with tempfile.TemporaryDirectory(prefix="hpo-base-") as scratch:
                trainer = self._trainer(model, params, scratch, [])
                return {k: float(v) for k, v in trainer.evaluate().items() if isinstance(v, (int, float))}
        finally:
            del trainer
            self.base.detach(model)

    def range_test(self, params: dict[str, Any], ramp: LrRamp) -> list[tuple[int, float]]:
        """The training loss at each step of one run whose learning rate follows `ramp` in place of the trial's
        schedule (every parameter group keeps its ratio to the others: LoRA+, layer-wise decay). Everything else
        is a trial of `params`: the model and adapter, the rows (replay mixed in, cut or packed), `optim`, the
        KL to the base, the batch. No evaluation, no probes, nothing saved; it stops when `ramp.stop` says so."""
        from transformers import set_seed

        limit_torch_threads()
        set_seed(self.cfg.train.seed)
        params = {**params, "learning_rate": ramp.start}
        watch = _RampWatch(ramp)
        model = self.base.attach(params)
        trainer = None
        try:
            with tempfile.TemporaryDirectory(prefix="hpo-lr-find-") as scratch:
                trainer = self._trainer(model, params, scratch, [watch.callback()], ramp=ramp)
                trainer.train()
        finally:
            del trainer
            self.base.detach(model)
        return watch.losses

    def _trainer(
        self,
        model: Any,
        params: dict[str, Any],
        output_dir: str,
        callbacks: list[Any],
        ramp: LrRamp | None = None,
        checkpointing: bool = False,
    ) -> Any:
        """TRL's SFTTrainer with the forgetting remedies (replay flags, KL to the base) and this trial's
        optimizer, rows (replay mixed in, cut or packed to its max_length) and quiet logging; with `ramp`, the
        range test's schedule in place of the trial's; with `checkpointing`, a checkpoint in `output_dir` at each
        evaluation."""
        from hpo_action.train.remedies import RemedyTrainer

        steps = ramp.steps if ramp is not None else self.cfg.search.budget.max_steps
        mixed = self._train_rows(params, steps)
        sequential = mixed is not self.train_dataset
        args = self._sft_config(params, output_dir, sequential=sequential, ramp=ramp, checkpointing=checkpointing)
        trainer = RemedyTrainer(
            model=model,
            args=args,
            train_dataset=trial_train_dataset(mixed, params, self.cfg.data.max_length),
            eval_dataset=self.eval_dataset,
            processing_class=self.base.tokenizer,
            callbacks=callbacks,
            optimizers=(build_optimizer(model, params, args), None),
            kl_to_base=float(params.get("kl_to_base", 0.0)),
            reference=self.reference,
        )
        _quiet(trainer)
        if ramp is not None:  # the optimizer the trial would get (args.optim unless LoRA+ or layer-wise decay)
            trainer.lr_scheduler = ramp.scheduler(trainer.create_optimizer())
        return trainer

    def _train_rows(self, params: dict[str, Any], steps: int) -> datasets.Dataset:
        """The train split, or, with replay, this run's mixed rows in training order (the replay share drawn)."""
        ratio = float(params.get("replay_ratio", 0.0))
        if not self.replay or ratio <= 0:
            return self.train_dataset
        from hpo_action.data.replay import mix

        batch = int(params["per_device_train_batch_size"]) * int(params["gradient_accumulation_steps"])
        weights = [source.weight for source in self.cfg.data.replay]
        return mix(self.train_dataset, self.replay, weights, ratio, steps * batch, self.cfg.train.seed)

    def _sft_config(
        self,
        params: dict[str, Any],
        output_dir: str,
        sequential: bool = False,
        ramp: LrRamp | None = None,
        checkpointing: bool = False,
    ) -> Any:
        from trl import SFTConfig

        budget = self.cfg.search.budget
        arguments = dict(
            output_dir=output_dir,
            max_steps=budget.max_steps,
            eval_strategy="steps",
            eval_steps=budget.eval_every,
            logging_steps=budget.eval_every,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=self.base.device == "cpu",
            bf16=self.base.bf16,
            fp16=self.base.fp16,
            seed=self.cfg.train.seed,
            data_seed=self.cfg.train.seed,
            learning_rate=float(params["learning_rate"]),
            per_device_train_batch_size=int(params["per_device_train_batch_size"]),
            per_device_eval_batch_size=int(params["per_device_eval_batch_size"]),
            gradient_accumulation_steps=int(params["gradient_accumulation_steps"]),
            weight_decay=float(params["weight_decay"]),
            warmup_steps=float(params["warmup_ratio"]),
            lr_scheduler_type=params["lr_scheduler_type"],
            max_grad_norm=float(params["max_grad_norm"]),
            optim=params["optim"],
            gradient_checkpointing=bool(params["gradient_checkpointing"]),
            max_length=None,
            dataset_kwargs={"skip_prepare_dataset": True},
            dataloader_num_workers=0,
            train_sampling_strategy="sequential" if sequential else "random",  # a mixed order is already shuffled
        )
        if ramp is not None:  # the range test: every step logged, nothing evaluated
            arguments.update(max_steps=ramp.steps, eval_strategy="no", logging_steps=1)
        if checkpointing:  # the Trainer's own checkpoint at each evaluation, one deep (train/checkpoints.py)
            arguments.update(save_strategy="steps", save_steps=budget.eval_every, save_total_limit=1)
        return SFTConfig(**{**arguments, **sft_arguments(params, self.cfg.data.max_length)})

    def _save(self, model: Any, target: Path, trial_number: int | None) -> None:
        """Write beside the target and rename: a full disk leaves no half-written adapter behind. A save that
        cannot fit fails before it starts, as a full disk (ENOSPC), so the study stops with the same message."""
        partial = target.with_name(f".{target.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        needed = int(1.2 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)) + (1 << 20)
        free = shutil.disk_usage(target.parent).free
        if free < needed:
            raise OSError(errno.ENOSPC, f"No space left on device: {free} bytes free, the adapter needs ~{needed}")
        try:
            self.base.save(model, partial)
            self.base.tokenizer.save_pretrained(partial)
            mark(partial, "trial", trial=trial_number)
            drills.fire("save", trial_number)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(partial, target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise


class _Tracker:
    """Records the eval curve, reports it to the pruner, stops early and fails on non-finite losses."""

    def __init__(
        self,
        metric: str,
        direction: str,
        report: Reporter | None,
        train_cfg: Any,
        max_steps: int,
        timeout: float | None = None,
    ) -> None:
        self.metric, self.sign = metric, (1.0 if direction == "minimize" else -1.0)
        self.max_steps = max_steps
        self.report = report
        self.timeout, self.started = timeout, time.monotonic()
        self.patience = train_cfg.early_stopping_patience
        self.threshold = train_cfg.early_stopping_threshold
        self.curve: list[tuple[int, float]] = []
        self.train_curve: list[tuple[int, float]] = []
        self.last_metrics: dict[str, float] = {}
        self.best = math.inf
        self.bad_evals = 0
        self.stopped_early = False

    def record(self, metrics: dict[str, float], step: int) -> bool:
        """Store one evaluation; returns True when early stopping says stop."""
        if self.metric not in metrics:
            known = ", ".join(sorted(k for k in metrics if k.startswith("eval_")))
            raise TrialError(f"search.objective.metric: {self.metric!r} is not reported; available: {known}")
        value = float(metrics[self.metric])
        if not math.isfinite(value):
            raise TrialError(f"non-finite {self.metric} ({value}) at step {step}: learning rate too high?")
        self.curve.append((step, value))
        self.last_metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        # The last evaluation is reported too, but a trial that ran all its steps is complete: nothing is saved
        # by stopping it there, and a pruner's verdict at that point would hide a finished result.
        if self.report is not None and self.report(value, step) and step < self.max_steps:
            raise Pruned(step, value, self.train_curve)
        score = self.sign * value
        if score < self.best - self.threshold:
            self.best, self.bad_evals = score, 0
        else:
            self.bad_evals += 1
        return self.patience is not None and self.bad_evals >= self.patience

    def replay(self, log_history: list[dict[str, Any]]) -> None:
        """A resumed trial's evaluations and training losses before its checkpoint, as the first run logged
        them: the curves continue where they stopped, and the pruner and early stopping see them again."""
        for entry in log_history:
            step = int(entry.get("step", 0))
            if "loss" in entry:
                self.train_curve.append((step, float(entry["loss"])))
            metrics = {k: v for k, v in entry.items() if k != "step"}
            if self.metric in metrics and self.record(metrics, step):
                self.stopped_early = True

    def check_time(self, step: int) -> None:
        """Stop a trial that ran past search.trial_timeout: it fails, and the study goes on."""
        elapsed = time.monotonic() - self.started
        if self.timeout is not None and elapsed > self.timeout:
            raise TrialError(f"trial timeout: stopped after {elapsed:.0f} s at step {step} (search.trial_timeout)")

    def callback(self) -> Any:
        from transformers import TrainerCallback

        tracker = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
                tracker.check_time(state.global_step)

            def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
                loss = (logs or {}).get("loss")
                if loss is not None and not math.isfinite(float(loss)):
                    raise TrialError(f"non-finite training loss ({loss}) at step {state.global_step}")
                if loss is not None:
                    tracker.train_curve.append((state.global_step, float(loss)))

            def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # type: ignore[no-untyped-def]
                if tracker.record(metrics or {}, state.global_step):
                    tracker.stopped_early = True
                    control.should_training_stop = True

        return _Callback()


class _RampWatch:
    """The range test's view of training: every step's loss; stops at a non-finite loss or when the ramp says."""

    def __init__(self, ramp: LrRamp) -> None:
        self.ramp = ramp
        self.losses: list[tuple[int, float]] = []

    def callback(self) -> Any:
        from transformers import TrainerCallback

        watch = self

        class _Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
                loss = (logs or {}).get("loss")
                if loss is None:
                    return
                watch.losses.append((state.global_step, float(loss)))
                if not math.isfinite(float(loss)) or watch.ramp.stop([v for _, v in watch.losses]):
                    control.should_training_stop = True

        return _Callback()


def _saved_callback(checkpoints: TrialCheckpoints) -> Any:
    """Marks each checkpoint complete once the Trainer has written it (and deleted the one before); hands the
    resumed optimizer and scheduler to the checkpoints before the first step (PBT changes the rate there)."""
    from transformers import TrainerCallback

    class _Callback(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):  # type: ignore[no-untyped-def]
            checkpoints.resumed(optimizer, lr_scheduler)

        def on_save(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            checkpoints.saved(state.global_step)

    return _Callback()


def _quiet(trainer: Any) -> None:
    """The trainer's printer callback floods CI logs with one dict per evaluation; our progress replaces it."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
