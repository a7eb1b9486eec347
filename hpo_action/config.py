"""Typed configuration loaded from YAML; every check on user input lives here.

Errors name the key, the bad value and the fix, because a CI log is often the only thing the user sees.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hpo_action.errors import ConfigError

Method = Literal["lora", "qlora", "full"]
SAMPLERS = ("tpe", "random", "grid", "gp", "cmaes", "qmc")
PRUNERS = ("hyperband", "successive_halving", "median", "percentile", "wilcoxon", "none")
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")

# Starting learning rate by method (shared/DOMAIN.md): the warm-start trial uses it when the config sets none.
DEFAULT_LEARNING_RATE: dict[str, float] = {"lora": 2e-4, "qlora": 1e-4, "full": 2e-5}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name: str = Field(description="Hub id, local folder, or 'hpo-action/tiny-demo' (bundled, no download).")
    method: Method = Field("lora", description="lora | qlora (4-bit, needs CUDA) | full fine-tuning.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="'auto' picks bfloat16 where the device supports it, else float32."
    )
    trust_remote_code: bool = Field(False, description="Run model code from the repo; off unless you trust it.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of the base model.")
    target_modules: str | list[str] = Field("all-linear", description="LoRA target modules.")


class Columns(_Section):
    id: str = "id"
    prompt: str = "prompt"
    completion: str = "completion"
    messages: str = "messages"
    text: str = "text"


class DataConfig(_Section):
    format: Literal["prompt_completion", "messages", "text"] = Field(
        "prompt_completion", description="Row format: prompt/completion pairs, chat messages, or plain text."
    )
    train: str = Field(description="Local .jsonl/.csv/.parquet file, or a Hub dataset id ('org/name[:split]').")
    validation: str | None = Field(None, description="Validation source; when unset, a seeded fraction of train.")
    validation_fraction: float = Field(0.1, gt=0, lt=1, description="Share of train held out when no validation.")
    test: str | None = Field(None, description="Held-out test source; the study never sees it.")
    max_length: int = Field(512, ge=8, description="Tokens per example; longer ones are truncated.")
    seed: int = Field(0, description="Seed of the train/validation split.")
    columns: Columns = Field(default_factory=Columns, description="Column names in the source files.")


class ParamSpec(_Section):
    """One search dimension: float/int range, categorical choices, or a fixed value."""

    type: Literal["float", "int", "categorical", "fixed"] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    value: Any = None
    methods: list[Method] | None = Field(None, description="Methods this parameter applies to; all when unset.")

    @model_validator(mode="before")
    @classmethod
    def _infer_type(cls, data: Any) -> Any:
        """A bare scalar is a fixed value; otherwise infer the type from the keys given (ints stay ints)."""
        if not isinstance(data, dict):
            return {"type": "fixed", "value": data}
        if data.get("type") is None:
            bounds = [data.get("low"), data.get("high")]
            if "choices" in data:
                kind = "categorical"
            elif any(b is not None for b in bounds):
                ints = all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
                kind = "int" if ints and not data.get("log") else "float"
            else:
                kind = "fixed"
            data = {**data, "type": kind}
        return data

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type in ("float", "int"):
            if self.low is None or self.high is None:
                raise ValueError(f"a {self.type} parameter needs both low and high")
            if self.low > self.high:
                raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
            if self.log and self.low <= 0:
                raise ValueError("log: true needs low > 0")
            if self.log and self.step is not None:
                raise ValueError("log and step cannot be combined")
        if self.type == "categorical" and not self.choices:
            raise ValueError("a categorical parameter needs a non-empty 'choices' list")
        return self


class Objective(_Section):
    metric: str = Field("eval_loss", description="Metric from the trainer's evaluation, e.g. eval_loss.")
    direction: Literal["minimize", "maximize"] | None = Field(
        None, description="Inferred from the metric name when unset: loss/perplexity minimize, others maximize."
    )

    @model_validator(mode="after")
    def _infer_direction(self) -> Objective:
        if self.direction is None:
            lower_better = any(k in self.metric for k in ("loss", "perplexity", "entropy"))
            object.__setattr__(self, "direction", "minimize" if lower_better else "maximize")
        return self


class Budget(_Section):
    max_steps: int = Field(100, ge=1, description="Optimizer steps per trial: the pruner's max resource.")
    eval_every: int = Field(10, ge=1, description="Evaluate (and report to the pruner) every N steps.")

    @model_validator(mode="after")
    def _eval_within_budget(self) -> Budget:
        if self.eval_every > self.max_steps:
            raise ValueError(f"eval_every ({self.eval_every}) must not exceed max_steps ({self.max_steps})")
        return self


class TrainConfig(_Section):
    """Trial defaults: every name here can be searched in search.space; the rest keep these values."""

    learning_rate: float | None = Field(None, gt=0, description="Default per method: lora 2e-4, qlora 1e-4, full 2e-5.")
    per_device_train_batch_size: int = Field(8, ge=1)
    per_device_eval_batch_size: int = Field(32, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    lr_scheduler_type: str = "cosine"
    max_grad_norm: float = Field(1.0, gt=0)
    optim: str = "adamw_torch"
    seed: int = Field(42, description="Training seed (adapter init, data order); the same for every trial.")
    gradient_checkpointing: bool = False
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop a trial after this many evaluations without improvement; off when unset."
    )
    early_stopping_threshold: float = Field(0.0, ge=0, description="Minimum improvement that resets patience.")


TRIAL_PARAMETERS = tuple(name for name in TrainConfig.model_fields if name != "seed")
LORA_ONLY = ("lora_r", "lora_alpha", "lora_dropout")


class SearchConfig(_Section):
    n_trials: int = Field(20, ge=1, description="Trials the study should hold in the end (finished ones count).")
    timeout: float | None = Field(None, gt=0, description="Seconds after which no new trial starts.")
    sampler: Literal[SAMPLERS] = "tpe"  # type: ignore[valid-type]
    sampler_options: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments.")
    pruner: Literal[PRUNERS] = "hyperband"  # type: ignore[valid-type]
    pruner_options: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments.")
    seed: int = Field(0, description="Sampler seed.")
    storage: str | None = Field(None, description="Optuna RDB URL or journal file; default sqlite in output.dir.")
    study_name: str | None = Field(None, description="Default: derived from the config, stable across runs.")
    objective: Objective = Field(default_factory=Objective)
    budget: Budget = Field(default_factory=Budget)
    warm_start: bool = Field(True, description="Enqueue the train defaults as the first trial.")
    forgetting_constraint: bool = Field(
        False, description="Score gate.forgetting sets after each trial; trials that forget are infeasible."
    )
    forgetting_probe_size: int = Field(64, ge=1, description="Rows per forgetting set scored after each trial.")
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
    oom_retry: bool = Field(
        False, description="After a CUDA OOM, retry once with half the per-device batch and twice the accumulation."
    )
    space: dict[str, ParamSpec] = Field(default_factory=dict)

    @field_validator("space")
    @classmethod
    def _known_parameters(cls, space: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        for name in space:
            if name not in TRIAL_PARAMETERS:
                raise ValueError(f"unknown parameter {name!r}{_did_you_mean(name, TRIAL_PARAMETERS)}")
        return space


METRICS = ("loss", "exact_match", "choice_accuracy", "perplexity")
BOOLEAN_METRICS = ("exact_match", "choice_accuracy")
LOWER_IS_BETTER = ("loss", "perplexity")
GATE_TESTS = ("mcnemar-midp", "mcnemar-exact", "tango", "permutation+bootstrap", "bootstrap", "permutation", "t")
Direction = Literal["minimize", "maximize"]


def metric_direction(metric: str, override: str | None = None) -> str:
    """Built-in metrics carry their direction (loss and perplexity: lower is better); a setting overrides it."""
    if override:
        return override
    return "minimize" if metric in LOWER_IS_BETTER or "loss" in metric else "maximize"


class EvaluateConfig(_Section):
    """How the best trial (and the reference) are scored, once, per example, on the held-out split."""

    metrics: list[Literal[METRICS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["loss"], description="Per-example metrics; the first is the gate's primary metric."
    )
    max_new_tokens: int = Field(32, ge=1, description="Greedy generation length for exact_match.")
    normalize: list[Literal["strip", "lower", "collapse_whitespace", "strip_punctuation"]] = Field(
        default_factory=lambda: ["strip"], description="Applied to output and reference before exact_match."
    )
    batch_size: int = Field(32, ge=1)


class ForgettingBenchmark(_Section):
    """A skill the base model had that the candidate must keep (non-inferiority against the base)."""

    name: str
    kind: Literal["data", "lm_eval"] = Field("data", description="Rows in a local file, or lm-eval-harness tasks.")
    data: str | None = Field(None, description="kind data: local file with rows of data.format (or `format`).")
    format: Literal["prompt_completion", "messages", "text"] | None = None
    tasks: list[str] = Field(default_factory=list, description="kind lm_eval: task names.")
    include_path: str | None = Field(None, description="kind lm_eval: a folder of local task YAMLs.")
    limit: int | None = Field(None, ge=1, description="kind lm_eval: examples per task.")
    metric: str = Field("loss", description="kind data: a built-in metric; kind lm_eval: a task metric (acc).")
    margin: float = Field(
        0.02,
        ge=0,
        description="Largest tolerated loss of the metric, in its own units (0.02: two points of accuracy).",
    )
    direction: Direction | None = None

    @model_validator(mode="after")
    def _source_for_kind(self) -> ForgettingBenchmark:
        if self.kind == "data" and not self.data:
            raise ValueError(f"forgetting benchmark {self.name!r} needs 'data' (a local file)")
        if self.kind == "data" and self.metric not in METRICS:
            raise ValueError(f"forgetting benchmark {self.name!r}: metric must be one of {', '.join(METRICS)}")
        if self.kind == "lm_eval" and not self.tasks:
            raise ValueError(f"forgetting benchmark {self.name!r} of kind lm_eval needs 'tasks'")
        return self


class GateConfig(_Section):
    """Promotion rule: a significant improvement on the primary metric, and no forgetting (see README, The gate)."""

    metric: str | None = Field(None, description="Primary metric; default: the first of evaluate.metrics.")
    direction: Direction | None = Field(None, description="Overrides the metric's built-in direction.")
    test: Literal[GATE_TESTS] | None = Field(  # type: ignore[valid-type]
        None,
        description="Default: mcnemar-midp for boolean metrics (tango when min_effect > 0), "
        "permutation+bootstrap for scores.",
    )
    alpha: float = Field(0.05, gt=0, lt=0.5, description="Level of every one-sided test.")
    min_effect: float = Field(
        0.0, ge=0, description="Promote only if the improvement is significantly above this (the test's H0)."
    )
    target_effect: float = Field(
        0.05,
        gt=0,
        description="The smallest gain worth having: reject when the upper bound rules it out; it sets needed_n.",
    )
    power: float = Field(0.8, ge=0.5, lt=1, description="Power at which the MDE and needed_n are computed.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Level of the two-sided interval shown as `ci`.")
    resamples: int = Field(10_000, ge=100, description="Resamples of the bootstrap and permutation tests.")
    seed: int = Field(0, description="Seed of the resampling tests.")
    forgetting: list[ForgettingBenchmark] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> GateConfig:
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


class RegistryConfig(_Section):
    """Where promoted models go: a local folder (default) or the Hugging Face Hub (hf://namespace/name)."""

    uri: str | None = Field(None, description="Folder path or hf://namespace/name; unset: nothing is published.")
    private: bool = Field(True, description="Create Hub repos private.")
    license: str = Field("other", description="License in the model card's metadata.")


class OutputConfig(_Section):
    dir: str = Field("runs", description="Where study.db, trials.csv, best/ and summary.json go.")
    keep_all_adapters: bool = Field(False, description="Keep every completed trial's adapter, not only the best.")


class HpoConfig(_Section):
    model: ModelConfig
    data: DataConfig
    search: SearchConfig = Field(default_factory=SearchConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)

    @model_validator(mode="after")
    def _method_defaults(self) -> HpoConfig:
        if self.train.learning_rate is None:
            self.train.learning_rate = DEFAULT_LEARNING_RATE[self.model.method]
        if self.gate.metric is not None and self.gate.metric not in self.evaluate.metrics:
            raise ValueError(
                f"gate.metric {self.gate.metric!r} is not among evaluate.metrics {self.evaluate.metrics}; add it there"
            )
        return self

    @property
    def primary_metric(self) -> str:
        return self.gate.metric or self.evaluate.metrics[0]

    def active_space(self) -> dict[str, ParamSpec]:
        """The search dimensions that apply to this config's method."""
        method = self.model.method
        return {
            name: spec
            for name, spec in self.search.space.items()
            if (spec.methods is None or method in spec.methods) and not (method == "full" and name in LORA_ONLY)
        }

    def fingerprint(self) -> str:
        """Hash of what defines the study's objective; sampler, counts and paths do not change it."""
        parts = {
            "model": self.model.model_dump(),
            "data": self.data.model_dump(),
            "space": {k: v.model_dump() for k, v in sorted(self.search.space.items())},
            "objective": self.search.objective.model_dump(),
            "budget": self.search.budget.model_dump(),
            "train": self.train.model_dump(),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _did_you_mean(name: str, options: Any) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the key at `loc`, to suggest its real field names."""
    model: type[BaseModel] | None = HpoConfig
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def _format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    if first["type"] == "extra_forbidden":
        owner = _model_at(loc)
        hint = _did_you_mean(str(loc[-1]), owner.model_fields) if owner else ""
        message = f"unknown key{hint}"
    else:
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] != "missing" and "input" in first and not isinstance(first["input"], dict):
            message += f" (got {first['input']!r})"
    more = len(err.errors()) - 1
    suffix = f" [+{more} more problem{'s' if more > 1 else ''}]" if more else ""
    return f"{source}: {key}: {message}{suffix}"


def parse_config(raw: dict[str, Any], source: str = "config", base_dir: Path | None = None) -> HpoConfig:
    """Validate a raw mapping; relative paths resolve against `base_dir` (the config file's folder)."""
    try:
        cfg = HpoConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None
    if base_dir is not None:
        _resolve_paths(cfg, base_dir)
    _check_numbers(cfg, source)
    return cfg


def load_config(path: str | Path) -> HpoConfig:
    """Read and validate a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (pass an existing YAML file with -c)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} is not valid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with model, data and search sections")
    return parse_config(raw, source=str(path), base_dir=path.resolve().parent)


def apply_overrides(cfg: HpoConfig, overrides: dict[str, Any], source: str = "command line") -> HpoConfig:
    """Return a re-validated copy with dotted keys (e.g. 'search.timeout') replaced; None values are skipped."""
    raw = cfg.model_dump(exclude_none=False)
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {} if node.get(part) is None else node[part]
                if not isinstance(node[part], dict):
                    raise ConfigError(f"{source}: {dotted}: {part!r} is not a section")
            node = node[part]
        node[leaf] = value
    return parse_config(raw, source=source)


def parse_set_option(item: str) -> tuple[str, Any]:
    """Parse one `--set key.path=value` item; the value is read as YAML (numbers, lists, booleans)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.learning_rate=1e-3")
    try:
        return key.strip(), yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None


def _resolve(base_dir: Path, value: str, always: bool = False) -> str:
    """Resolve a relative path against the config folder, leaving Hub ids ('org/name') alone."""
    candidate = Path(value).expanduser()
    if candidate.is_absolute():
        return str(candidate)
    local = base_dir / candidate
    looks_local = always or value.startswith((".", "~")) or value.lower().endswith(DATA_SUFFIXES)
    return str(local.resolve()) if looks_local or local.exists() else value


def _resolve_paths(cfg: HpoConfig, base_dir: Path) -> None:
    data = cfg.data
    data.train = _resolve(base_dir, data.train)
    if data.validation:
        data.validation = _resolve(base_dir, data.validation)
    if data.test:
        data.test = _resolve(base_dir, data.test)
    for benchmark in cfg.gate.forgetting:
        if benchmark.data:
            benchmark.data = _resolve(base_dir, benchmark.data, always=True)
        if benchmark.include_path:
            benchmark.include_path = _resolve(base_dir, benchmark.include_path, always=True)
    if cfg.registry.uri and "://" not in cfg.registry.uri:  # a folder; schemes are the registry's business
        cfg.registry.uri = _resolve(base_dir, cfg.registry.uri, always=True)
    if not cfg.model.name.startswith("hpo-action/"):
        cfg.model.name = _resolve(base_dir, cfg.model.name)
    cfg.output.dir = _resolve(base_dir, cfg.output.dir, always=True)
    storage = cfg.search.storage
    if storage and storage.startswith("sqlite:///") and not storage.startswith("sqlite:////"):
        relative = storage.removeprefix("sqlite:///")
        if relative and relative != ":memory:":
            cfg.search.storage = "sqlite:///" + _resolve(base_dir, relative, always=True)
    elif storage and "://" not in storage:
        cfg.search.storage = _resolve(base_dir, storage, always=True)


def _check_numbers(cfg: HpoConfig, source: str) -> None:
    for name, spec in cfg.search.space.items():
        for bound in (spec.low, spec.high):
            if bound is not None and not math.isfinite(bound):
                raise ConfigError(f"{source}: search.space.{name}: bounds must be finite numbers")
