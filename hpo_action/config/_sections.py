"""The config's sections as pydantic models: every field typed, described and checked on load."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from hpo_action.config._evaluate import EvaluateConfig
from hpo_action.config._ray import check_ray
from hpo_action.config._spec import Method, ParamSpec, _Section, did_you_mean
from hpo_action.config._variants import (
    LORA_VARIANTS,
    TARGET_PRESETS,
    VALIDATION_STRATEGIES,
    check_init_name,
    check_space_values,
    check_strategy,
    check_variants,
)
from hpo_action.config.remedies import default_remedy_space
from hpo_action.metrics import metric_direction, resolve_metric
from hpo_action.sources import HUB_ID

Format = Literal["prompt_completion", "messages", "text"]
Direction = Literal["minimize", "maximize"]
SAMPLERS = ("tpe", "random", "grid", "gp", "cmaes", "qmc")
PRUNERS = ("hyperband", "successive_halving", "median", "percentile", "wilcoxon", "none")
GATE_TESTS = (
    "mcnemar-midp",
    "mcnemar-exact",
    "tango",
    "betting",
    "permutation+bootstrap",
    "bootstrap",
    "permutation",
    "t",
)
# Starting learning rate by method (docs/domain.md): the warm-start trial uses it when the config sets none.
DEFAULT_LEARNING_RATE: dict[str, float] = {"lora": 2e-4, "qlora": 1e-4, "full": 2e-5}
LORA_ONLY = ("lora_r", "lora_alpha", "lora_dropout", *LORA_VARIANTS)
FULL_ONLY = ("layerwise_lr_decay",)
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
FORGETTING = "forgetting"  # the objective: the largest drop on the forgetting probes ('forgetting:NAME': one set)


def is_forgetting_objective(metric: str) -> bool:
    """`forgetting` or `forgetting:NAME`: an objective scored on the per-trial forgetting probes."""
    return metric == FORGETTING or metric.startswith(f"{FORGETTING}:")


class ModelConfig(_Section):
    """The base model to fine-tune and how."""

    name: str = Field(description="Hub id, local folder, or 'hpo-action/tiny-demo' (bundled, no download).")
    method: Method = Field("lora", description="lora | qlora (4-bit, needs CUDA) | full fine-tuning.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="'auto' picks bfloat16 where the device supports it, else float32."
    )
    trust_remote_code: bool = Field(False, description="Run model code from the repo; off unless you trust it.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of the base model.")
    target_modules: str | list[str] = Field("all-linear", description="LoRA target modules.")
    card_base_model: str | None = Field(
        None,
        description="Hub id the model card credits as the base when model.name is a local folder "
        "(unset: the card names the folder by its name only; a local path is never published).",
    )

    @field_validator("card_base_model")
    @classmethod
    def _hub_id(cls, value: str | None) -> str | None:
        """The card names it in its metadata, its text and its loading code: only a Hub id belongs there."""
        if value is not None and not HUB_ID.match(value):
            raise ValueError(f"{value!r} is not a Hub model id (org/name, such as Qwen/Qwen2.5-0.5B)")
        return value


class Columns(_Section):
    """Column names in the source files, when they differ from the canonical ones."""

    id: str = Field("id", description="Unique example id; without it, a hash of the content.")
    prompt: str = Field("prompt", description="prompt_completion: the input.")
    completion: str = Field("completion", description="prompt_completion: the target the loss is on.")
    messages: str = Field("messages", description="messages: the chat, ending with the assistant turn.")
    text: str = Field("text", description="text: the whole text (the loss is on all of it).")


class ReplaySource(_Section):
    """Rows of a skill to keep, mixed into the training batches (replay); read in their own format, like a
    gate.forgetting set, so a skill kept in raw prompt/completion rows is replayed as such beside chat training."""

    data: str = Field(description="Local .jsonl/.csv/.parquet file, or a Hub dataset id, in its own `format`.")
    weight: float = Field(1.0, gt=0, description="This source's share of the replay rows, relative to the others.")
    format: Format | None = Field(None, description="The file's row format; default data.format.")
    columns: Columns | None = Field(None, description="The file's column names; default data.columns.")

    @model_validator(mode="before")
    @classmethod
    def _bare_source(cls, data: Any) -> Any:
        return {"data": data} if isinstance(data, str) else data


class DataConfig(_Section):
    """Training, validation and test data."""

    format: Format = Field(
        "prompt_completion", description="Row format: prompt/completion pairs, chat messages, or plain text."
    )
    train: str = Field(description="Local .jsonl/.csv/.parquet file, or a Hub dataset id ('org/name[:split]').")
    validation: str | None = Field(None, description="Validation source; when unset, a seeded fraction of train.")
    validation_fraction: float = Field(0.1, gt=0, lt=1, description="Share of train held out when no validation.")
    test: str | None = Field(None, description="Held-out test source; the study never sees it.")
    max_length: int = Field(512, ge=8, description="Tokens per example; longer ones are truncated.")
    seed: int = Field(0, description="Seed of the train/validation split.")
    columns: Columns = Field(default_factory=Columns, description="Column names in the source files.")
    validation_strategy: Literal[VALIDATION_STRATEGIES] = Field(  # type: ignore[valid-type]
        "holdout",
        description="holdout (one validation split), kfold (every trial trains k times; the mean is the "
        "objective), or time (the latest rows by time_field validate).",
    )
    k: int = Field(5, ge=2, le=20, description="kfold: number of folds (train and validation pooled, then split).")
    time_field: str | None = Field(
        None, description="time: the column with each row's time (ISO 8601 text or epoch seconds)."
    )
    replay: list[ReplaySource] = Field(
        default_factory=list,
        description="Replay sources mixed into each training batch at train.replay_ratio; never the forgetting sets.",
    )

    @model_validator(mode="after")
    def _strategy_inputs(self) -> DataConfig:
        check_strategy(self)
        return self


class Objective(_Section):
    """What the study optimizes: a metric the trainer reports at each evaluation."""

    metric: str = Field(
        "eval_loss",
        description="Metric from the trainer's evaluation, e.g. eval_loss; in search.objectives also 'forgetting' "
        "(the largest drop on the forgetting probes) or 'forgetting:NAME' (one set's drop).",
    )
    direction: Direction | None = Field(
        None, description="Inferred from the metric when unset (the metric registry; loss, perplexity: minimize)."
    )

    @model_validator(mode="after")
    def _infer_direction(self) -> Objective:
        if self.direction is None:
            inferred = "minimize" if is_forgetting_objective(self.metric) else metric_direction(self.metric)
            object.__setattr__(self, "direction", inferred)
        return self


class Budget(_Section):
    """Training steps per trial and how often the pruner hears about them."""

    max_steps: int = Field(100, ge=1, description="Optimizer steps per trial: the pruner's max resource.")
    eval_every: int = Field(10, ge=1, description="Evaluate (and report to the pruner) every N steps.")
    max_steps_limit: int = Field(
        100_000,
        ge=1,
        description="The largest max_steps accepted, a guard against typos (1e9); raise it to go further.",
    )

    @model_validator(mode="after")
    def _eval_within_budget(self) -> Budget:
        if self.eval_every > self.max_steps:
            raise ValueError(f"eval_every ({self.eval_every}) must not exceed max_steps ({self.max_steps})")
        if self.max_steps > self.max_steps_limit:
            raise ValueError(
                f"max_steps ({self.max_steps}) exceeds max_steps_limit ({self.max_steps_limit}); if you mean it, "
                "raise search.budget.max_steps_limit"
            )
        return self


class TrainConfig(_Section):
    """Trial defaults: every name here can be searched in search.space; the rest keep these values."""

    learning_rate: float | None = Field(None, gt=0, description="Default per method: lora 2e-4, qlora 1e-4, full 2e-5.")
    per_device_train_batch_size: int = Field(8, ge=1, description="Micro-batch per device.")
    per_device_eval_batch_size: int = Field(32, ge=1, description="Batch for the trial's evaluations.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (the update is scaled by alpha/r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of max_steps spent warming the rate up.")
    lr_scheduler_type: str = Field("cosine", description="A transformers scheduler name (linear, cosine, ...).")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    optim: str = Field("adamw_torch", description="A transformers optimizer name.")
    seed: int = Field(42, description="Training seed (adapter init, data order); the same for every trial.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations: less memory, slower steps.")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop a trial after this many evaluations without improvement; off when unset."
    )
    early_stopping_threshold: float = Field(0.0, ge=0, description="Minimum improvement that resets patience.")
    min_lr_rate: float = Field(
        0.1, ge=0, lt=1, description="cosine_with_min_lr: the floor of the schedule, as a share of the peak rate."
    )
    use_rslora: bool = Field(False, description="LoRA: rank-stabilized scaling alpha/sqrt(r) instead of alpha/r.")
    use_dora: bool = Field(False, description="LoRA: DoRA, weight-decomposed (magnitude and direction) adapters.")
    init_lora_weights: str = Field(
        "default",
        description="LoRA init: default, gaussian, pissa, pissa_niter_N or olora (pissa and olora are saved "
        "converted, so the adapter loads on the original base model).",
    )
    loraplus_lr_ratio: float = Field(
        1.0, ge=1, description="LoRA+: learning rate of B over A (PEFT's optimizer helper); 1 is plain LoRA."
    )
    target_modules: Literal[TARGET_PRESETS] | None = Field(  # type: ignore[valid-type]
        None,
        description="LoRA target preset: attention, attention_mlp or all_linear; unset: model.target_modules.",
    )
    layerwise_lr_decay: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Full fine-tuning: each layer below the top trains at this factor of the one above; 1 is off.",
    )
    neftune_noise_alpha: float = Field(0.0, ge=0, description="NEFTune embedding noise (e.g. 5); 0 is off.")
    max_length: int | None = Field(
        None, ge=8, description="Training tokens per example, at most data.max_length (the default)."
    )
    packing: bool = Field(False, description="Pack training examples into max_length rows (TRL's BFD packing).")
    replay_ratio: float = Field(0.0, ge=0, lt=1, description="Share of each training batch drawn from data.replay.")
    kl_to_base: float = Field(
        0.0,
        ge=0,
        description="λ of λ·KL(p_base‖p_θ) added to the loss on the completion tokens of replay rows (of all rows "
        "without replay); 0 is plain SFT.",
    )

    _known_init = field_validator("init_lora_weights")(check_init_name)


TRIAL_PARAMETERS = tuple(name for name in TrainConfig.model_fields if name != "seed")


class RaySearch(_Section):
    """search.backend ray: Ray Tune's scheduler, the population and what each trial gets (README, Ray Tune)."""

    scheduler: Literal["pbt", "pb2", "asha"] = Field(
        "pbt",
        description="pbt: Population Based Training (exploit copies a better trial's checkpoint, explore perturbs "
        "the continuous training parameters) | pb2: Population Based Bandits (PBT whose explore picks the new "
        "values inside their ranges with a Gaussian process; needs scikit-learn) | asha: asynchronous successive "
        "halving (stops poor trials early).",
    )
    search_alg: Literal["random", "optuna"] = Field(
        "random",
        description="How each trial's starting parameters are drawn: Ray's random sampling, or Optuna's TPE "
        "through Ray's Optuna integration (asha only: PBT and PB2 take no search algorithm).",
    )
    perturbation_interval: int | None = Field(
        None,
        ge=1,
        description="pbt, pb2: steps between exploit/explore decisions, a multiple of search.budget.eval_every "
        "(default 2 × eval_every).",
    )
    quantile_fraction: float = Field(
        0.25, gt=0, le=0.5, description="pbt, pb2: the bottom share of trials copies the top share at each decision."
    )
    resample_probability: float = Field(
        0.25, ge=0, le=1, description="pbt: chance that explore redraws a parameter instead of scaling it 0.8/1.2."
    )
    synch: bool = Field(
        False,
        description="pbt, pb2: judge the population at a decision once every live trial has reached it, so which "
        "trial copies which depends on the scores alone, not on which trial ran faster. Off (Ray's default, "
        "asynchronous): faster, but a trial is judged against whoever has reported, at whatever step they reached.",
    )
    reduction_factor: int = Field(3, ge=2, description="asha: keep 1 in this many trials at each rung.")
    cpus_per_trial: int = Field(
        1, ge=1, description="CPU cores per trial (its torch threads); local Ray gets this machine's real cores."
    )
    gpus_per_trial: float = Field(0.0, ge=0, description="GPUs per trial; 1 on a GPU cluster (one trial per GPU).")
    storage: str | None = Field(
        None,
        description="Ray Tune's storage_path (experiment state and trial checkpoints): a local folder, a shared "
        "filesystem or an S3-compatible URI on a cluster; default output.dir/ray.",
    )


class Finalists(_Section):
    """search.finalists: retrain the best trials on more training seeds and choose by a bound on their mean."""

    top_k: int = Field(
        0,
        ge=0,
        description="After the search, retrain this many of the best completed trials on `seeds` more training "
        "seeds and choose the one with the best one-sided 90% Student-t bound on its mean objective (seed sd pooled "
        "over the finalists; 0: off; else at least 2).",
    )
    seeds: int = Field(2, ge=1, description="Extra training seeds per finalist (train.seed + 1, + 2, ...).")

    @model_validator(mode="after")
    def _two_or_none(self) -> Finalists:
        if self.top_k == 1:
            raise ValueError("top_k: 1 finalist has nothing to be compared with; use 0 (off) or 2 or more")
        return self


class SearchConfig(_Section):
    """The study: how many trials, how they are proposed and stopped, where the study lives."""

    backend: Literal["optuna", "ray"] = Field(
        "optuna",
        description="optuna (default: samplers, pruners, storage below) or ray (Ray Tune: PBT, PB2 or ASHA in "
        "search.ray, local Ray or the cluster at RAY_ADDRESS; needs the ray extra). n_trials is then the population "
        "size.",
    )
    ray: RaySearch = Field(default_factory=RaySearch, description="search.backend ray: scheduler and resources.")
    n_trials: int = Field(20, ge=1, description="Trials the study should hold in the end (finished ones count).")
    timeout: float | None = Field(None, gt=0, description="Seconds after which no new trial starts.")
    sampler: Literal[SAMPLERS] = Field("tpe", description="tpe, random, grid, gp, cmaes or qmc.")  # type: ignore[valid-type]
    sampler_options: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the sampler.")
    pruner: Literal[PRUNERS] = Field(  # type: ignore[valid-type]
        "hyperband", description="hyperband, successive_halving, median, percentile, wilcoxon or none."
    )
    pruner_options: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the pruner.")
    seed: int = Field(0, description="Sampler seed.")
    storage: str | None = Field(None, description="Optuna RDB URL or journal file; default sqlite in output.dir.")
    study_name: str | None = Field(None, description="Default: derived from the config, stable across runs.")
    objective: Objective = Field(default_factory=Objective, description="The metric the study optimizes.")
    objectives: list[Objective] = Field(
        default_factory=list,
        description="Two or more objectives for a multi-objective (Pareto) search, e.g. eval_loss and forgetting. "
        "The first is pruned on and picks the finalist among the trials that forget within every margin.",
    )
    budget: Budget = Field(default_factory=Budget, description="Steps per trial and the evaluation cadence.")
    finalists: Finalists = Field(
        default_factory=Finalists, description="Seed-robust choice of the best trial (off by default)."
    )
    warm_start: bool = Field(
        True,
        description="Enqueue the train defaults as the first trial (and, when the forgetting remedies are searched "
        "and forgetting is probed, the defaults with both remedies at the top of their range as the second).",
    )
    forgetting_constraint: bool = Field(
        False, description="Score gate.forgetting sets after each trial; trials that forget are infeasible."
    )
    forgetting_probe_size: int | None = Field(
        None,
        ge=1,
        description="Rows of each forgetting set scored after each trial (its probe part, which the gate never "
        "tests; the gate uses the rest); default 30% of the set.",
    )
    workers: int = Field(
        1,
        ge=0,
        description="Worker processes on this machine, each keeping the base model loaded (one GPU each when "
        "GPUs are present); a trial that kills its worker fails alone. 0 runs trials in this process.",
    )
    heartbeat_interval: int = Field(
        60, ge=1, description="Seconds between a running trial's heartbeats in an RDB storage (sqlite, postgresql)."
    )
    grace_period: int | None = Field(
        None, ge=1, description="Seconds without a heartbeat after which a trial is failed; default 2 × interval."
    )
    retry_interrupted: int = Field(
        1, ge=0, description="Times a trial whose worker vanished (killed, preempted) is retried with its parameters."
    )
    lr_bounds: Literal["configured", "auto"] = Field(
        "configured",
        description="auto: before a new study, run the learning-rate range test (`hpo-action lr-find`) and narrow "
        "the learning_rate range to a decade either side of its suggestion.",
    )
    oom_retry: bool = Field(
        False, description="After a CUDA OOM, retry once with half the per-device batch and twice the accumulation."
    )
    trial_timeout: float | None = Field(
        None,
        gt=0,
        description="Seconds a trial may run; past it the trial stops at its next step, is recorded FAIL ('trial "
        "timeout') and the study goes on. One stuck inside a step is stopped at 1.5× plus 60 s: its worker is "
        "replaced, or with workers 0 the command stops (exit 1; run it again to resume).",
    )
    resume_trials: bool = Field(
        False,
        description="Checkpoint each trial at every evaluation (adapter or weights, optimizer, scheduler, RNG, "
        "step) in output.dir/checkpoints/<trial>/, one deep; a trial killed mid-run resumes from its last "
        "checkpoint when the same command runs again. Deleted when the trial ends. Not with kfold.",
    )
    space: dict[str, ParamSpec] = Field(
        default_factory=dict,
        description="The searched (or fixed) parameters. With data.replay, a gate.forgetting data set and the "
        "forgetting probed, replay_ratio (0.05-0.5) and kl_to_base (0.1-3, log; not for full) are searched unless "
        "named here.",
    )

    @field_validator("space")
    @classmethod
    def _known_parameters(cls, space: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        for name, spec in space.items():
            if name not in TRIAL_PARAMETERS:
                raise ValueError(f"unknown parameter {name!r}{did_you_mean(name, TRIAL_PARAMETERS)}")
            check_space_values(TrainConfig, name, spec)
        return space

    @model_validator(mode="after")
    def _first_objective(self) -> SearchConfig:
        """With `objectives`, `objective` is their first: the one the pruner and the finalist rule read."""
        if not self.objectives:
            return self
        first, metrics = self.objectives[0], [o.metric for o in self.objectives]
        if len(metrics) < 2:
            raise ValueError("objectives: name two or more (one objective is search.objective)")
        if len(set(metrics)) < len(metrics):
            raise ValueError(f"objectives: each metric once (got {metrics})")
        if is_forgetting_objective(first.metric):
            raise ValueError("objectives: the first must be a trainer metric (e.g. eval_loss): it is pruned on")
        if "objective" in self.model_fields_set and self.objective != first:
            raise ValueError("objective and objectives[0] differ; drop search.objective when objectives is set")
        object.__setattr__(self, "objective", first)
        return self

    @model_validator(mode="after")
    def _finalists_supported(self) -> SearchConfig:
        if self.finalists.top_k and (self.multi_objective or self.backend == "ray"):
            what = "a multi-objective study" if self.multi_objective else "backend ray"
            raise ValueError(f"finalists.top_k: {what} cannot retrain finalists; set it to 0 or use one objective")
        return self

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


# lm-eval's per-sample accuracies (0 or 1 each): the only lm-eval metrics with a margin default and a known range.
LM_EVAL_ACCURACIES = ("acc", "acc_norm", "acc_mutual_info", "acc_bytes", "exact_match")
RANGED_SCORES = ("loss", "perplexity")  # scores whose range the gate knows: [0, ln V] and [1, V]
BOOLEAN_MARGIN = 0.02  # two points of accuracy: the default margin of a boolean forgetting metric


class ForgettingBenchmark(_Section):
    """A skill the base model had that the candidate must keep (non-inferiority against the base)."""

    name: str = Field(description="A short, file-name-safe name (letters, digits, '.', '_', '-').")
    kind: Literal["data", "lm_eval"] = Field("data", description="Rows in a local file, or lm-eval-harness tasks.")
    data: str | None = Field(None, description="kind data: local file with rows of its own `format`.")
    format: Format | None = Field(None, description="kind data: the file's row format; default data.format.")
    columns: Columns | None = Field(None, description="kind data: the file's column names; default data.columns.")
    tasks: list[str] = Field(default_factory=list, description="kind lm_eval: task names.")
    include_path: str | None = Field(None, description="kind lm_eval: a folder of local task YAMLs.")
    limit: int | None = Field(None, ge=1, description="kind lm_eval: examples per task.")
    metric: str = Field("loss", description="kind data: a metric of the registry; kind lm_eval: a task metric (acc).")
    margin: float | None = Field(
        None,
        ge=0,
        description="Largest tolerated loss of the metric, in its own units; default 0.02 (two points) for a boolean "
        "metric; a score metric (loss) has no default and must set it.",
    )
    direction: Direction | None = Field(None, description="Overrides the metric's direction.")

    @model_validator(mode="after")
    def _source_for_kind(self) -> ForgettingBenchmark:
        if not SAFE_NAME.match(self.name):
            raise ValueError(f"name {self.name!r} must be letters, digits, '.', '_' or '-' (it names output files)")
        if self.kind == "data" and not self.data:
            raise ValueError(f"forgetting benchmark {self.name!r} needs 'data' (a local file)")
        if self.kind == "data":
            resolve_metric(self.metric)
        if self.margin is None:
            if not self.is_boolean:
                raise ValueError(
                    f"margin: {self.metric} is a score, so there is no default margin; set the largest tolerated "
                    f"worsening of {self.name!r} in {self.metric} units (e.g. margin: 0.05)"
                )
            object.__setattr__(self, "margin", BOOLEAN_MARGIN)
        if self.kind == "lm_eval" and not self.tasks:
            raise ValueError(f"forgetting benchmark {self.name!r} of kind lm_eval needs 'tasks'")
        return self

    @property
    def is_boolean(self) -> bool:
        """Right or wrong per example (a margin in accuracy points makes sense): a boolean metric of the registry,
        or an lm-eval accuracy (`acc`, `exact_match,strict-match`)."""
        if self.kind == "lm_eval":
            return self.metric.partition(",")[0] in LM_EVAL_ACCURACIES
        return resolve_metric(self.metric).kind == "boolean"

    @property
    def range_known(self) -> bool:
        """The gate knows this metric's range without gate.score_range: a boolean, an accuracy, loss, perplexity."""
        return self.is_boolean or (self.kind == "data" and self.metric in RANGED_SCORES)


class GateConfig(_Section):
    """Promotion rule: a significant improvement on the primary metric, and no forgetting (see README, The gate)."""

    metric: str | None = Field(None, description="Primary metric; default: the first of evaluate.metrics.")
    direction: Direction | None = Field(None, description="Overrides the metric's built-in direction.")
    test: Literal[GATE_TESTS] | None = Field(  # type: ignore[valid-type]
        None,
        description="Default: mcnemar-midp for boolean metrics (tango when min_effect > 0), "
        "betting for scores (valid at every n for scores in a known range).",
    )
    alpha: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="Error budget: with sequence fixed, the level of every one-sided test; otherwise the chance of "
        "any false promotion over the registry's whole life.",
    )
    sequence: Literal["fixed", "alpha-spending", "online", "online-fdr"] = Field(
        "online",
        description="Error control across the registry's successive gates (the registry counts them). online: "
        "gate k tests at alpha*6/(pi^2 k^2), plus the previous gate's level when it promoted (online fallback); "
        "alpha-spending: alpha*6/(pi^2 k^2); online-fdr: LORD++, false discovery rate at alpha (each promotion earns "
        "alpha for later gates); fixed: alpha at every gate. Without a registry every gate is fixed.",
    )
    min_effect: float = Field(
        0.0, ge=0, description="Promote only if the improvement is significantly above this (the test's H0)."
    )
    target_effect: float = Field(
        0.05,
        gt=0,
        description="The smallest gain worth having: reject when the upper bound rules it out; it sets needed_n.",
    )
    power: float = Field(0.8, ge=0.5, lt=1, description="Power at which the MDE and needed_n are computed.")
    score_range: tuple[float, float] | None = Field(
        None,
        description="[LOW, HIGH]: the range of every per-example score of the primary metric (and of a forgetting "
        "score other than loss/perplexity), for the betting test; a score outside it is an error. Without it, loss "
        "is clipped to [0, ln V] and perplexity to [1, V] (V the vocabulary size); another score metric needs it.",
    )
    resamples: int = Field(10_000, ge=100, description="Resamples of the bootstrap and permutation tests.")
    seed: int = Field(0, description="Seed of the resampling tests.")
    forgetting: list[ForgettingBenchmark] = Field(
        default_factory=list, description="Skills to keep: [{name, data or tasks, metric, margin, format, columns}]."
    )

    @model_validator(mode="after")
    def _consistent(self) -> GateConfig:
        if self.score_range is not None and not self.score_range[0] < self.score_range[1]:
            raise ValueError(f"score_range must be [LOW, HIGH] with LOW < HIGH, got {list(self.score_range)}")
        if self.target_effect <= self.min_effect:
            raise ValueError(f"target_effect ({self.target_effect}) must exceed min_effect ({self.min_effect})")
        if (self.resamples + 1) * self.alpha < 10:  # fewer than 10 resamples beyond the critical value
            least = math.ceil(10 / self.alpha) - 1
            raise ValueError(f"resamples ({self.resamples}) is too few for alpha {self.alpha}: use at least {least}")
        names = [benchmark.name for benchmark in self.forgetting]
        duplicate = next((name for name in names if names.count(name) > 1), None)
        if duplicate is not None:
            raise ValueError(f"forgetting name {duplicate!r} is used twice; give each benchmark its own name")
        return self

    def margins(self) -> dict[str, float]:
        """Each forgetting set's margin, by name (a set without one is left out): what the search's forgetting
        checks compare a probe's drop with."""
        return {b.name: float(b.margin) for b in self.forgetting if b.margin is not None}


SigningMethod = Literal["auto", "sigstore", "key", "off"]
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"


class SigningConfig(_Section):
    """How `publish` signs a version (a model-signing Sigstore bundle over every file) and how `run` and `verify`
    check the champion's signature."""

    method: SigningMethod = Field(
        "auto",
        description="sigstore: keyless, with the GitHub Actions job's OIDC identity (id-token: write) | key: the "
        "EC private key at registry.signing.key | off: unsigned (the card says so) | auto: sigstore in a GitHub "
        "Actions job that can mint an OIDC token, else key when one is set, else off.",
    )
    key: str | None = Field(
        None,
        description="PEM EC private key (P-256/384/521) for method key; `run` checks the champion with its public "
        "half. Keep it out of the repository.",
    )
    identity: str | None = Field(
        None,
        description="Keyless: the signer a champion's certificate must name (unset in GitHub Actions: this workflow, "
        "https://github.com/OWNER/REPO/.github/workflows/FILE@REF).",
    )
    issuer: str = Field(GITHUB_ISSUER, description="Keyless: the OIDC issuer the champion's certificate must name.")

    @model_validator(mode="after")
    def _key_for_key(self) -> SigningConfig:
        if self.method == "key" and not self.key:
            raise ValueError("registry.signing.key: method key signs with a PEM private key; set its path")
        return self


class RegistryConfig(_Section):
    """Where promoted models go: a local folder (default), the Hugging Face Hub (hf://namespace/name) or the MLflow
    Model Registry (mlflow://<registered model name>[@alias])."""

    uri: str | None = Field(
        None,
        description="Folder path, hf://namespace/name or mlflow://MODEL_NAME[@ALIAS] (MLflow); unset: nothing "
        "is published.",
    )
    private: bool = Field(True, description="Create Hub repos private.")
    license: str = Field("other", description="License in the model card's metadata.")
    title: str | None = Field(
        None,
        description="The model card's title (unset: the Hub repo's name, or '<base model>-<method>' for a folder).",
    )
    timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds one registry operation (read the champion, publish) may take on the Hub or MLflow, "
        "reads and retries included.",
    )
    keep_candidates: bool = Field(
        False, description="Keep the Hub's candidates/<run> staging branches after a promotion (deleted by default)."
    )
    signing: SigningConfig = Field(
        default_factory=SigningConfig, description="Signatures on published versions and checks of the champion's."
    )


class OutputConfig(_Section):
    """The run's output folder."""

    dir: str = Field("runs", description="Where study.db, trials.csv, best/ and summary.json go.")
    keep_all_adapters: bool = Field(False, description="Keep every completed trial's adapter, not only the best.")


class HpoConfig(_Section):
    """A whole hpo-action config (hpo.yaml)."""

    model: ModelConfig = Field(description="The base model and the fine-tuning method.")
    data: DataConfig = Field(description="Training, validation and test data.")
    search: SearchConfig = Field(default_factory=SearchConfig, description="The Optuna study.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Trial defaults.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="The output folder.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Per-example scoring.")
    gate: GateConfig = Field(default_factory=GateConfig, description="The promotion rule.")
    registry: RegistryConfig = Field(default_factory=RegistryConfig, description="Where promotions are published.")

    @model_validator(mode="after")
    def _metrics_agree(self) -> HpoConfig:
        if self.gate.metric is not None and self.gate.metric not in self.evaluate.metrics:
            raise ValueError(
                f"gate.metric {self.gate.metric!r} is not among evaluate.metrics {self.evaluate.metrics}; add it there"
            )
        if self.data.format == "text":
            prompted = next((m for m in self.evaluate.metrics if resolve_metric(m).needs_prompt), None)
            if prompted:
                raise ValueError(f"evaluate.metrics: {prompted} needs prompts, and data.format text has none; use loss")
        for benchmark in self.gate.forgetting:
            text = benchmark.kind == "data" and (benchmark.format or self.data.format) == "text"
            if text and resolve_metric(benchmark.metric).needs_prompt:
                raise ValueError(
                    f"gate.forgetting[{benchmark.name}].metric: {benchmark.metric} needs prompts, and the set's "
                    "format is text; use loss, or set its format"
                )
        return self

    @model_validator(mode="after")
    def _remedies_have_what_they_need(self) -> HpoConfig:
        """Replay needs replay data; a forgetting objective needs a forgetting set the probes can score."""
        if self.may_be_nonzero("replay_ratio") and not self.data.replay:
            raise ValueError("train.replay_ratio: a share of replay rows needs data.replay (the rows to replay)")
        scored = [b.name for b in self.gate.forgetting if b.kind == "data"]
        for objective in self.search.objectives:
            if not is_forgetting_objective(objective.metric):
                continue
            name = objective.metric.partition(":")[2]
            if not scored or (name and name not in scored):
                wanted = f"a gate.forgetting set named {name!r}" if name else "a gate.forgetting set of kind data"
                raise ValueError(f"search.objectives: {objective.metric!r} needs {wanted} (the per-trial probes)")
        return self

    @model_validator(mode="after")
    def _score_range_known(self) -> HpoConfig:
        """The betting test needs each score's range: loss and perplexity have theirs; say so now, not after the
        search, when another score metric would reach the gate without gate.score_range."""
        if self.gate.score_range is not None or self.gate.test not in (None, "betting"):
            return self
        unknown = [b.metric for b in self.gate.forgetting if not b.range_known]
        primary = self.primary_metric
        unknown += [primary] if resolve_metric(primary).kind == "score" and primary not in RANGED_SCORES else []
        for name in unknown[:1]:
            raise ValueError(
                f"gate.score_range: {name!r} is a score of unknown range, which the gate's score test needs; "
                "set gate.score_range: [LOW, HIGH] (every per-example value inside), or another gate.test"
            )
        return self

    @model_validator(mode="after")
    def _resumable(self) -> HpoConfig:
        """A k-fold trial trains k models in a row from one folder: a checkpoint could not say which fold it is."""
        if self.search.resume_trials and self.data.validation_strategy == "kfold":
            raise ValueError(
                "search.resume_trials: k-fold trials cannot resume from a checkpoint; set it to false or use "
                "data.validation_strategy holdout"
            )
        return self

    @model_validator(mode="after")
    def _ray_supported(self) -> HpoConfig:
        check_ray(self)
        return self

    @model_validator(mode="after")
    def _variants_fit(self) -> HpoConfig:
        check_variants(self)
        return self

    @property
    def primary_metric(self) -> str:
        """The gate's metric: `gate.metric`, else the first of `evaluate.metrics` (by the metric's own name)."""
        return resolve_metric(self.gate.metric or self.evaluate.metrics[0]).name

    @property
    def learning_rate(self) -> float:
        """`train.learning_rate`, else the method's default, resolved whenever it is read, after every override."""
        return self.train.learning_rate or DEFAULT_LEARNING_RATE[self.model.method]

    def active_space(self) -> dict[str, ParamSpec]:
        """The search dimensions that apply to this config's method."""
        method = self.model.method
        return {
            name: spec
            for name, spec in self.space_with_defaults().items()
            if (spec.methods is None or method in spec.methods)
            and not (method == "full" and name in LORA_ONLY)
            and not (method != "full" and name in FULL_ONLY)
        }

    def space_with_defaults(self) -> dict[str, ParamSpec]:
        """search.space and the remedy ranges searched by default (config/remedies.py)."""
        return {**self.search.space, **default_remedy_space(self)}

    def may_be_nonzero(self, parameter: str) -> bool:
        """Whether some trial can run with this numeric trial parameter above zero (its default, or the space)."""
        spec = self.active_space().get(parameter)
        if spec is None:
            return bool(getattr(self.train, parameter))
        return any(bool(v) for v in (spec.high, spec.value, *(spec.choices or ())) if v is not None)

    def resolved_train(self) -> dict[str, Any]:
        """The train section with the defaults that depend on other keys filled in (learning rate, max_length)."""
        return {
            **self.train.model_dump(),
            "learning_rate": self.learning_rate,
            "max_length": self.train.max_length or self.data.max_length,
        }

    @property
    def folds(self) -> int:
        """How many times one trial trains: k under kfold validation, else once."""
        return self.data.k if self.data.validation_strategy == "kfold" else 1

    def fingerprint(self) -> str:
        """Hash of what defines the study's objective; sampler, counts and paths do not change it."""
        parts = {
            "model": self.model.model_dump(),
            "data": self.data.model_dump(),
            "space": {k: v.model_dump() for k, v in sorted(self.space_with_defaults().items())},
            "objective": self.search.objective.model_dump(),
            "budget": self.search.budget.model_dump(),
            "train": {**self.train.model_dump(), "learning_rate": self.learning_rate},
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
