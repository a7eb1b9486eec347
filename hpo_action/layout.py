"""Every path of a run's output folder, named once. The README's output table is tested against `ENTRIES`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# Written into every folder hpo-action creates where it later deletes or replaces things (trials/<n>/, best/): it
# only ever deletes or replaces a folder that carries it, never what a person put there.
MARKER = ".hpo-action"

# (name in the output folder, what it holds): the README's "Output folder" table lists exactly these.
ENTRIES: tuple[tuple[str, str], ...] = (
    ("study.db", "the Optuna study (with the default SQLite storage)"),
    (
        "trials.csv",
        "number, state, value, steps, seconds, one column per parameter, per forgetting set its measured delta "
        "against the base (`forgetting_<set>`, < 0: forgot) and its constraint value (`margin_excess_<set>`: how far "
        "the gate's lower bound on the probe rows falls below −margin, > 0: infeasible), for a PBT trial its schedule "
        "(`[[step, {parameter: value}], ...]`: what its weights trained under, copied trials' lineage included), "
        "error",
    ),
    ("trials/", "the saved adapters of trials (only the best one after the study, unless output.keep_all_adapters)"),
    ("best/", "the best trial's adapter and tokenizer, plus params.json (all trial parameters and the value)"),
    (
        "summary.json",
        "the study: name, objectives, counts by state, every trial, the chosen trial and the rule that chose it; "
        "paths relative to the output folder (best adapter `best`, a SQLite study inside it `sqlite:///study.db`), "
        "the base model by its public name",
    ),
    (
        "finalists.csv",
        "search.finalists: each finalist's runs (the search's own seed first, then each extra seed: value, steps, "
        "error), its mean, seed sd, bound and whether it was chosen",
    ),
    ("finalists/", "search.finalists: the retrained finalists' weights while they are compared, deleted after"),
    (
        "checkpoints/",
        "search.resume_trials: each running trial's last checkpoint (checkpoint-<step>/), deleted when it ends",
    ),
    (
        "ray/",
        "search.backend ray: Ray Tune's experiment (state, each trial's checkpoints) unless search.ray.storage is "
        "elsewhere; the same command resumes it",
    ),
    ("cache/", "the tokenized train and validation splits, and the replay sources"),
    ("predictions/", "per-example predictions (+ .meta.json) of the reference and the candidate: test, forgetting"),
    ("gate.json", "the gate's decision: decision, promote, reasons, primary, forgetting, config"),
    ("plots/", "optimization history, parameter importances, intermediate values, the Pareto front (PNG)"),
    ("workers/", "one log per worker process"),
    ("config.yaml", "the resolved config the run used"),
    ("gated_against.json", "the champion the gate compared against (the base of publish's compare-and-swap)"),
    (
        "manifest.json",
        "the sha256 of every file the gate saw that publish ships (gate.json included), and the champion's digest",
    ),
    ("decoding.json", "the decoding search (evaluate.decoding_search): greedy's score, every trial, the choice"),
    ("report.md", "the run as markdown: verdict, gate and forgetting tables, best parameters, trials, doctor"),
    ("model_card.md", "the model card of the last publish from this folder"),
    ("lr_find/", "the learning-rate range test (`lr-find`, `search.lr_bounds: auto`): lr_find.json and lr_find.png"),
)


def mark(folder: Path, kind: str, **details: object) -> None:
    """Claim a folder hpo-action wrote (before it becomes visible under its final name), listing every file in it:
    a file that appears later and is not claimed is a person's, and stops hpo-action from deleting the folder."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MARKER)
    (folder / MARKER).write_text(json.dumps({"kind": kind, **details, "files": files}) + "\n", encoding="utf-8")


def claim(folder: Path, *names: str) -> None:
    """Add files hpo-action wrote into a folder it marked earlier (best/'s params.json, generation_config.json);
    nothing happens to a folder without a marker (e.g. an adapter given to `tune-decoding`)."""
    data = _marker(folder)
    if data is None:
        return
    data["files"] = sorted({*data.get("files", []), *names})
    (folder / MARKER).write_text(json.dumps(data) + "\n", encoding="utf-8")


def is_ours(folder: Path, kind: str) -> bool:
    data = _marker(folder)
    return data is not None and data.get("kind") == kind


def foreign_files(folder: Path) -> list[Path]:
    """The files in a marked folder that hpo-action did not write (none for a marker older than its file list)."""
    data = _marker(folder)
    if data is None or "files" not in data:
        return []
    ours = {*data["files"], MARKER}
    return sorted(p for p in folder.rglob("*") if not p.is_dir() and p.relative_to(folder).as_posix() not in ours)


def _marker(folder: Path) -> dict[str, object] | None:
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class RunLayout:
    """The files and folders of one run's output folder."""

    root: Path

    @property
    def study_db(self) -> Path:
        return self.root / "study.db"

    @property
    def trials_csv(self) -> Path:
        return self.root / "trials.csv"

    @property
    def trials_dir(self) -> Path:
        return self.root / "trials"

    @property
    def best_dir(self) -> Path:
        return self.root / "best"

    @property
    def best_params(self) -> Path:
        return self.best_dir / "params.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def predictions_dir(self) -> Path:
        return self.root / "predictions"

    def predictions(self, split: str, role: str) -> Path:
        """e.g. ("test", "candidate") → predictions/test.candidate.jsonl; roles: base, champion, candidate."""
        return self.predictions_dir / f"{split}.{role}.jsonl"

    @property
    def gate(self) -> Path:
        return self.root / "gate.json"

    @property
    def plots_dir(self) -> Path:
        return self.root / "plots"

    @property
    def workers_dir(self) -> Path:
        return self.root / "workers"

    @property
    def lr_find_dir(self) -> Path:
        return self.root / "lr_find"

    @property
    def run_config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def gated_against(self) -> Path:
        return self.root / "gated_against.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def decoding(self) -> Path:
        return self.root / "decoding.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def model_card(self) -> Path:
        return self.root / "model_card.md"

    @property
    def finalists_csv(self) -> Path:
        return self.root / "finalists.csv"

    @property
    def finalists_dir(self) -> Path:
        return self.root / "finalists"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def ray_dir(self) -> Path:
        return self.root / "ray"

    def trial_dir(self, number: int) -> Path:
        return self.trials_dir / str(number)

    def foreign_entries(self) -> list[Path]:
        """What sits where hpo-action deletes or replaces things but was not written by it: anything in trials/
        other than its marked, numbered trial folders (and their in-progress copies), an unmarked best/, and any
        file inside those marked folders that their marker does not list."""
        foreign = []
        if self.trials_dir.is_dir():
            for child in sorted(self.trials_dir.iterdir()):
                partial = child.name.startswith(".") and child.name.endswith(".partial")
                if not (partial or (child.name.isdigit() and child.is_dir() and is_ours(child, "trial"))):
                    foreign.append(child)
                elif not partial:
                    foreign.extend(foreign_files(child))
        if self.best_dir.exists() and not (self.best_dir.is_dir() and is_ours(self.best_dir, "trial")):
            foreign.append(self.best_dir)
        elif self.best_dir.exists():
            foreign.extend(foreign_files(self.best_dir))
        return foreign
