"""The shape of the code, enforced: imports run down the layers, one door to Optuna's internals, registries own
their schemes, small modules and functions, and the README's tables generated from the code they describe."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hpo_action.config.docs import END, START, table
from hpo_action.layout import ENTRIES

from .helpers import ROOT

PACKAGE = ROOT / "hpo_action"
# The shared ground, then the stages in the order of the flow, then the entry points (docs/architecture.md).
GROUND = {"config", "errors", "layout", "files", "drills", "interrupts", "metrics", "notices", "redaction", "sources"}
STAGES = ["data", "train", "search", "judge", "report", "ship"]
ENTRY = {"cli", "pipeline", "preflight", "worker", "session", "init", "__main__", "__init__"}
OPTUNA_PRIVATE = ("._storage", "._trial_id", "._thread_local", "._stop_flag", "._study_id")


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _room(path: Path) -> str:
    """The top-level name a module belongs to: a stage folder, or the ground/entry module's own name."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imported_rooms(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    rooms = set()
    for name in names:
        parts = name.split(".")
        if parts[0] != "hpo_action" or len(parts) < 2:
            continue
        if (PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").is_file():
            rooms.add(parts[1])
    return rooms


def _allowed(room: str) -> set[str]:
    if room in ENTRY:
        return GROUND | set(STAGES) | ENTRY
    if room in GROUND:
        return set(GROUND)
    return GROUND | set(STAGES[: STAGES.index(room) + 1])


def test_every_module_belongs_to_a_layer():
    unknown = {_room(path) for path in _modules()} - GROUND - set(STAGES) - ENTRY
    assert not unknown, f"add these to a layer in docs/architecture.md and here: {unknown}"


def test_imports_only_run_down_the_layers():
    violations = []
    for path in _modules():
        room = _room(path)
        for target in _imported_rooms(path) - _allowed(room):
            violations.append(f"{path.relative_to(ROOT)} ({room}) imports {target}")
    assert not violations, "\n".join(violations)


def test_optuna_internals_are_touched_in_one_module_only():
    offenders = [
        f"{path.relative_to(ROOT)}: {attr}"
        for path in _modules()
        if path.name != "optuna_compat.py"
        for attr in OPTUNA_PRIVATE
        if attr in path.read_text()
    ]
    assert not offenders, offenders


def _imported_names(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement names (those under `if TYPE_CHECKING:` too), with its line."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append((node.lineno, node.module))
    return names


# Where each search engine may be imported: its backend (search/backend.py is the interface the rest reads).
ENGINE_HOMES = {
    "optuna": [("search", "optuna_backend")],  # optuna_compat.py, the one door to Optuna's internals, is in it
    "ray": [("search", "ray_backend.py"), ("search", "ray_trial.py")],
}


@pytest.mark.parametrize("engine", sorted(ENGINE_HOMES))
def test_only_a_search_backend_imports_its_engine(engine: str):
    """Every other module, the reports and the gate included, reads typed records (search/backend.py,
    search/summary.py); an import under `if TYPE_CHECKING:` counts too."""
    offenders = []
    for path in _modules():
        parts = path.relative_to(PACKAGE).parts
        if any(parts[: len(home)] == home for home in ENGINE_HOMES[engine]):
            continue
        names = _imported_names(path)
        offenders += [f"{path.relative_to(ROOT)}:{line}" for line, name in names if name.split(".")[0] == engine]
    assert not offenders, offenders


def test_reports_read_typed_records_not_a_backend():
    """report/ renders RunSummary, StudyView and SearchResult; it never imports a backend's module."""
    offenders = [
        f"{path.relative_to(ROOT)}:{line} {name}"
        for path in (PACKAGE / "report").rglob("*.py")
        for line, name in _imported_names(path)
        if name.startswith(("hpo_action.search.optuna_backend", "hpo_action.search.ray_", "optuna", "ray"))
    ]
    assert not offenders, offenders


def test_only_registries_know_their_uri_schemes():
    """Schemes, a registry's client library and its environment variables stay in ship/registry/."""
    offenders = []
    for path in _modules():
        if "registry" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                scheme = node.value in ("hf://", "hf", "mlflow://", "mlflow")
                if scheme or node.value.startswith("MLFLOW_"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            imported = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.append(node.module)
            if any(name.split(".")[0] == "mlflow" for name in imported):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports mlflow")
    assert not offenders, offenders


def test_functions_stay_small():
    """A smell detector, not a target: a function this long is usually several steps that want names. Modules have
    no line cap; a module is as long as its one concept needs (docs/architecture.md)."""
    long_functions = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long_functions, long_functions


def test_readme_config_table_is_generated_from_the_field_descriptions():
    readme = (ROOT / "README.md").read_text()
    assert START in readme and END in readme, "README.md needs the config-table markers"
    shown = readme.split(START, 1)[1].split(END, 1)[0].strip()
    assert shown == table(), "regenerate it: python -m hpo_action.config.docs"


def test_readme_output_table_lists_the_run_layout():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Output folder", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([^`]+)` \|", section, flags=re.M)
    assert listed == [name for name, _ in ENTRIES]


@pytest.mark.parametrize("command", [[], ["run"], ["search"], ["gate"], ["report"], ["init"], ["publish"]])
def test_help_is_fast_and_never_loads_torch(command: list[str]):
    code = "import sys\nfrom hpo_action.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
    code += "print('torch' in sys.modules)\n"
    proc = subprocess.run([sys.executable, "-c", code, *command, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: hpo-action" in proc.stdout
    assert proc.stdout.strip().endswith("False"), "--help imported torch"


DATA_SUFFIXES = {".jsonl", ".json", ".csv", ".parquet", ".arrow"}
# A cited path; one that continues with a <placeholder> names a pattern, not a file.
CITED = re.compile(
    r"(?<![\w/.-])((?:shared|benchmarks|docs|templates|examples|tests|hpo_action)/[\w./-]*\w)(?![\w./-]*<)"
)


def test_the_repository_root_holds_no_data():
    """Data lives with what uses it (examples/, tests/data/); a stray copy at the root is referenced by nothing."""
    stray = sorted(p.name for p in ROOT.iterdir() if p.is_file() and p.suffix in DATA_SUFFIXES)
    assert not stray, f"move or delete: {stray}"


def test_every_file_the_code_cites_is_in_the_repository():
    """A citation in code or in a shipped template must resolve inside this repository (no design notes from
    elsewhere, no deleted benchmark)."""
    sources = [*_modules(), *ROOT.glob("benchmarks/*.py"), *ROOT.glob("templates/**/*.*"), ROOT / "action.yml"]
    missing = []
    for path in sources:
        for cited in CITED.findall(path.read_text(encoding="utf-8")):
            if cited.startswith("shared/") or not (ROOT / cited).exists():
                missing.append(f"{path.relative_to(ROOT)}: {cited}")
    assert not missing, missing


def test_torch_is_pinned_in_one_place():
    """pyproject.toml pins torch; the Makefile, the README's install line and CI install from it."""
    places = {
        name: re.findall(r"torch\s*(?:[=<>!~]=|[<>])\s*[\d.]+", (ROOT / name).read_text())
        for name in ("pyproject.toml", "Makefile", "README.md", ".ci/run", "action.yml")
    }
    assert len(places.pop("pyproject.toml")) == 1
    assert not any(places.values()), places
