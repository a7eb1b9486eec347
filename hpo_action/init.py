"""`hpo-action init`: a starter project that runs as written (tiny demo model and data), a workflow, .gitignore lines.

The starter config is the packaged, commented `hpo.yaml` with a few values retargeted to the bundled demo, so its
comments still explain each key when the user switches to a real model and real data.
"""

from __future__ import annotations

import json
import random
import re
import string
from pathlib import Path

from hpo_action.errors import ConfigError
from hpo_action.files import template

CONFIG = "hpo.yaml"
WORKFLOW = ".github/workflows/hpo.yml"
GITIGNORE = ".gitignore"
HEADER = """\
# Written by `hpo-action init`: it runs as is, on the bundled tiny demo model and the demo data in data/
# (a shift-cipher task the model cannot do yet), on a CPU in a few minutes, with no download.
# For real work: set model.name, point data.* at your files, and widen search.budget and search.space.
"""
# Dotted key → (value or None to keep it, comment or None to keep the template's).
DEMO_VALUES: dict[str, tuple[str | None, str | None]] = {
    "model.name": ("hpo-action/tiny-demo", "built in code on first use; for real work a Hub id or a local folder"),
    "data.max_length": ("64", None),
    "search.n_trials": ("12", None),
    "search.timeout": ("300", None),
    "search.budget": ("{max_steps: 60, eval_every: 10}", "steps per trial; real models: e.g. 300 and 50"),
    "search.space": (None, "the demo's ranges; for real LoRA: LR 1e-5..3e-4 (start 2e-4), rank 8-64"),
    "search.space.learning_rate": ("{low: 1.0e-4, high: 1.0e-1, log: true}", None),
    "search.space.lora_r": ("{choices: [2, 4, 8, 16]}", None),
    "train.per_device_train_batch_size": ("8", None),
    "train.gradient_accumulation_steps": ("1", None),
    "evaluate.max_new_tokens": ("12", None),
    "gate.forgetting": (
        "[{name: copy, data: data/forget_copy.jsonl, metric: exact_match, margin: 0.05}]",
        "the demo model's pretraining skill must survive",
    ),
}
# The demo task; examples/quickstart/make_data.py writes the quickstart files with this same generator.
DEMO_SEED = 20240607
DEMO_SPLITS = {"train": 640, "validation": 80, "test": 200, "forget_copy": 400, "replay_copy": 240}
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?P<value>[^#]*?)(?P<gap> *)(?P<comment>#.*)?$")


def write_starter(folder: Path, force: bool = False) -> list[Path]:
    """Write hpo.yaml, data/*.jsonl and the workflow, and add .gitignore lines; returns the files written.
    Refuses (ConfigError, naming the files) to overwrite any of them unless `force`."""
    folder = Path(folder)
    files = {folder / CONFIG: starter_config(), folder / WORKFLOW: template("workflows/hpo.yml").read_text("utf-8")}
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


def starter_config() -> str:
    """The packaged hpo.yaml with DEMO_VALUES applied line by line, keeping its layout and comments."""
    todo = dict(DEMO_VALUES)
    path: list[tuple[int, str]] = []
    lines = []
    for line in template("hpo.yaml").read_text("utf-8").splitlines():
        match = _KEY_LINE.match(line)
        if match:
            indent = len(match["indent"])
            while path and path[-1][0] >= indent:
                path.pop()
            path.append((indent, match["key"]))
            dotted = ".".join(key for _, key in path)
            if dotted in todo:
                line = _replace(match, *todo.pop(dotted))
        lines.append(line)
    if todo:
        raise RuntimeError(f"templates/hpo.yaml lacks {', '.join(sorted(todo))}: update hpo_action.init.DEMO_VALUES")
    return HEADER + "\n".join(lines) + "\n"


def _replace(match: re.Match[str], value: str | None, comment: str | None) -> str:
    line = f"{match['indent']}{match['key']}:" + (f" {value}" if value is not None else match["value"].rstrip())
    comment = f"# {comment}" if comment else match["comment"]
    if not comment:
        return line
    column = match.start("comment") if match["comment"] else 0  # keep the template's comment column
    return (line.ljust(column) if len(line) < column else line + " ") + comment


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
