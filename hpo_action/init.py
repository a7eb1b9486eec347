"""`hpo-action init`: a starter project that runs as written (tiny demo model and data), a workflow, .gitignore lines.

The starter config is the packaged, commented `hpo.yaml` with a few values retargeted to the bundled demo, so its
comments still explain each key when the user switches to a real model and real data.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

from hpo_action.config.edit import Change, set_values
from hpo_action.config.starting import describe_params, starting_points
from hpo_action.errors import ConfigError
from hpo_action.files import template

CONFIG = "hpo.yaml"
DEMO_MODEL = "hpo-action/tiny-demo"
WORKFLOW = ".github/workflows/hpo.yml"
GITIGNORE = ".gitignore"
HEADER = """\
# Written by `hpo-action init`: it runs as is, on the bundled tiny demo model and the demo data in data/
# (a shift-cipher task the model cannot do yet, learned without forgetting the copy skill it has), on a CPU in a
# few minutes, with no download. For real work: set model.name, point data.* at your files (data.replay: rows of
# the skills to keep), and widen search.budget and search.space.
"""
SIZED_HEADER = """\
# Written by `hpo-action init` for {size} data ({counted}), {model} ({params} parameters)
# and {device}: the method, batch, train defaults, step budget and search space follow
# templates/starting_points.yaml. It points at the demo data in data/; for real work point data.* at yours.
"""
# Dotted key → (value or None to keep it, comment or None to keep the template's).
DEMO_VALUES: dict[str, Change] = {
    "model.name": (DEMO_MODEL, "built in code on first use; for real work a Hub id or a local folder"),
    "data.max_length": ("64", None),
    "data.replay": ("[data/replay_copy.jsonl]", "copy rows (other words than forget_copy.jsonl) mixed in"),
    "search.n_trials": ("10", None),
    "search.timeout": ("3600", None),
    "search.forgetting_constraint": ("true", "a trial that forgets copy beyond its margin is not chosen"),
    "search.forgetting_probe_size": ("128", "of the 400 rows of data/forget_copy.jsonl"),
    "search.budget": ("{max_steps: 100, eval_every: 25}", "steps per trial; real models: e.g. 300 and 50"),
    "search.space": (None, "the tiny model's ranges; replay_ratio and kl_to_base are searched by default"),
    "search.space.learning_rate": ("{low: 3.0e-3, high: 3.0e-2, log: true}", None),
    "search.space.lora_r": ("{choices: [8, 16]}", None),
    "train.per_device_train_batch_size": ("16", None),
    "train.gradient_accumulation_steps": ("1", None),
    "evaluate.max_new_tokens": ("12", None),
    "gate.forgetting": (
        "[{name: copy, data: data/forget_copy.jsonl, metric: exact_match, margin: 0.05}]",
        "the demo model's pretraining skill must survive",
    ),
}
# Searched by the template, fixed for the demo (alpha and dropout above).
DEMO_REMOVED = ("search.space.lora_alpha", "search.space.lora_dropout")
# The train defaults a dataset size sets (templates/starting_points.yaml).
SIZED_TRAIN_KEYS = ("lr_scheduler_type", "warmup_ratio", "weight_decay", "max_grad_norm")
# The demo task; examples/quickstart/make_data.py writes the quickstart files with this same generator.
DEMO_SEED = 20240607
DEMO_SPLITS = {"train": 640, "validation": 80, "test": 200, "forget_copy": 400, "replay_copy": 240}


def write_starter(
    folder: Path,
    force: bool = False,
    size: str | None = None,
    rows: int | None = None,
    model: str | None = None,
    device: str = "auto",
) -> list[Path]:
    """Write hpo.yaml, data/*.jsonl and the workflow, and add .gitignore lines; returns the files written.
    With `size` (or `rows`, the training rows the size is inferred from), the method, train defaults, batch, step
    budget and search space follow templates/starting_points.yaml for that data, `model` (the demo model when
    None; its parameter count read from its config) and `device` (auto: CUDA when torch sees it). Refuses
    (ConfigError, naming the files) to overwrite any of them unless `force`."""
    folder = Path(folder)
    sized = size is not None or rows is not None or model is not None
    config = sized_config(size, rows, model, _has_cuda(device)) if sized else starter_config()
    files = {folder / CONFIG: config, folder / WORKFLOW: template("workflows/hpo.yml").read_text("utf-8")}
    files.update({folder / "data" / f"{split}.jsonl": text for split, text in demo_data().items()})
    existing = [str(path) for path in files if path.exists()]
    if existing and not force:
        verb = "exists" if len(existing) == 1 else "exist"
        raise ConfigError(f"init: {', '.join(existing)} already {verb}; pass --force to overwrite")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    written = list(files)
    if _add_gitignore_lines(folder / GITIGNORE):
        written.append(folder / GITIGNORE)
    return written


def _has_cuda(device: str) -> bool:
    if device not in ("auto", "cuda", "cpu"):
        raise ConfigError(f"init --device: {device!r} is not one of auto, cuda, cpu")
    if device != "auto":
        return device == "cuda"
    import torch

    return torch.cuda.is_available()


def starter_config() -> str:
    """The packaged hpo.yaml with DEMO_VALUES applied line by line, keeping its layout and comments."""
    return HEADER + _demo_text()


def _demo_text() -> str:
    try:
        return set_values(template("hpo.yaml").read_text("utf-8"), DEMO_VALUES, remove=DEMO_REMOVED, strict=True)
    except ConfigError as err:
        raise RuntimeError(f"templates/hpo.yaml: {err}: update hpo_action.init.DEMO_VALUES") from None


def sized_config(size: str | None, rows: int | None, model: str | None = None, cuda: bool = False) -> str:
    """The demo starter with the method, train defaults, batch, step budget and search space that
    templates/starting_points.yaml gives a dataset size (given, or the one `rows` training rows fall in), the
    model (its parameter count) and the device."""
    from hpo_action.train.model_size import parameter_count

    guide = starting_points()
    tier = guide.tier(size) if size is not None else guide.tier_for_rows(rows or 0)
    params = parameter_count(model or DEMO_MODEL)
    start = guide.choose(tier, params, cuda)
    low, high = start.guide.learning_rate_range
    space = {"learning_rate": _flow({"low": low, "high": high, "log": True})}
    space.update({name: _flow(spec) for name, spec in start.guide.space.items()})
    steps = tier.max_steps(rows)
    counted = f"{rows} training rows" if rows is not None else f"about {tier.typical_rows} rows assumed"
    trials = guide.trials_per_parameter * len(space)
    train = {
        "learning_rate": start.guide.learning_rate,
        "per_device_train_batch_size": start.per_device_train_batch_size,
        "gradient_accumulation_steps": start.gradient_accumulation_steps,
        **{key: getattr(tier, key) for key in SIZED_TRAIN_KEYS},
        **start.guide.train,
    }
    changes: dict[str, Change] = {
        "model.method": (start.method, start.reason),
        "search.n_trials": (str(trials), f"{guide.trials_per_parameter} per searched parameter"),
        "search.timeout": ("7200", None),
        "search.budget": (
            _flow({"max_steps": steps, "eval_every": max(1, steps // guide.evaluations_per_trial)}),
            f"{tier.epochs} epochs over {counted} at an effective batch of {tier.effective_batch}",
        ),
        "search.space": (None, f"the {start.method} ranges of templates/starting_points.yaml"),
        **{f"search.space.{name}": (value, None) for name, value in space.items()},
        **{f"train.{key}": (_scalar(value), None) for key, value in train.items()},
        "train.learning_rate": (_scalar(start.guide.learning_rate), f"the warm start's {start.method} rate"),
    }
    if model is not None:
        changes["model.name"] = (model, f"{describe_params(params)} parameters (its config.json)")
    removed = [f"search.space.{name}" for name in ("lora_r", "lora_alpha", "lora_dropout") if name not in space]
    device = "a CUDA GPU" if cuda else "no CUDA GPU"
    header = SIZED_HEADER.format(
        size=tier.name, counted=counted, model=model or DEMO_MODEL, params=describe_params(params), device=device
    )
    return header + set_values(_demo_text(), changes, remove=removed)


def _flow(mapping: dict[str, object]) -> str:
    return "{" + ", ".join(f"{key}: {_scalar(value)}" for key, value in mapping.items()) + "}"


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if not isinstance(value, float):
        return str(value)
    mantissa, e, exponent = f"{value:g}".partition("e")
    return f"{mantissa}{'' if '.' in mantissa or not e else '.0'}{e}{exponent}"  # YAML reads 2e-05 as text


def demo_data() -> dict[str, str]:
    """The quickstart's splits as JSONL text: a Caesar shift by one letter, and the copy task the base model can do:
    `forget_copy` measures forgetting, `replay_copy` (other words) is replayed in training to prevent it."""
    rng = random.Random(DEMO_SEED)
    words: dict[str, None] = {}  # insertion-ordered set: distinct words, deterministic order
    while len(words) < sum(DEMO_SPLITS.values()):
        words["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 8)))] = None
    ordered = list(words)
    texts, start = {}, 0
    for split, count in DEMO_SPLITS.items():
        task = "copy" if split in ("forget_copy", "replay_copy") else "shift"
        rows = [
            {"id": f"{split}-{i:04d}", "prompt": f"{task}: {word} = ", "completion": _answer(task, word)}
            for i, word in enumerate(ordered[start : start + count])
        ]
        start += count
        texts[split] = "".join(json.dumps(row) + "\n" for row in rows)
    return texts


def _answer(task: str, word: str) -> str:
    if task == "copy":
        return word
    letters = string.ascii_lowercase
    return "".join(letters[(letters.index(char) + 1) % 26] for char in word)


def _add_gitignore_lines(path: Path) -> bool:
    """Append the template's lines that .gitignore lacks; True when it changed (running init twice adds nothing)."""
    wanted = template("gitignore").read_text("utf-8").splitlines()
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    present = {line.strip() for line in text.splitlines()}
    missing = [line for line in wanted if line.strip() and line.strip() not in present]
    if not any(not line.startswith("#") for line in missing):
        return False
    prefix = "\n" if text and not text.endswith("\n") else ""
    path.write_text(text + prefix + "\n".join(missing) + "\n", encoding="utf-8")
    return True
