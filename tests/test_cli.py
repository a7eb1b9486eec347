"""The command line: bad input is one line on stderr, exit code 2, no traceback and no study written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpo_action.cli import main
from hpo_action.train.models import adapter_sha256

from .helpers import error_line, small_config, write_config


def _run(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return int(exit_info.value.code or 0), capsys.readouterr().err


def _bad(tmp_path: Path, mutate) -> Path:
    raw = small_config(tmp_path)
    mutate(raw, tmp_path)
    return write_config(tmp_path, raw)


def _set(section: str, key: str, value):
    return lambda raw, _: raw[section].__setitem__(key, value)


def _write(name: str, text: str):
    return lambda raw, folder: (folder / name).write_text(text)


CASES = {
    "unknown key": (_set("search", "n_trails", 3), "search.n_trails: unknown key; did you mean 'n_trials'?"),
    "wrong type": (_set("search", "n_trials", "many"), "search.n_trials: Input should be a valid integer"),
    "negative n_trials": (_set("search", "n_trials", -1), "search.n_trials: Input should be greater than or equal"),
    "unknown sampler": (_set("search", "sampler", "annealing"), "search.sampler: Input should be 'tpe'"),
    "missing file": (_set("data", "train", "nowhere.jsonl"), "data.train: file not found"),
    "empty file": (_write("train.jsonl", ""), "train.jsonl"),
    "malformed jsonl": (_write("train.jsonl", '{"prompt": "a", "completion": "b"}\n{oops\n'), "line 2"),
    "rows lacking fields": (_write("train.jsonl", '{"prompt": "a"}\n{"prompt": "b"}\n'), "'completion'"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line_and_writes_no_study(tmp_path: Path, capsys, case: str):
    mutate, expected = CASES[case]
    config = _bad(tmp_path, mutate)
    code, err = _run(capsys, "run", "-c", str(config))
    assert code == 2
    assert expected in err
    error_line(err)
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "study.db").exists()


def test_flags_override_the_config_and_are_checked(tmp_path: Path, capsys):
    config = write_config(tmp_path, small_config(tmp_path))
    code, err = _run(capsys, "run", "-c", str(config), "--set", "train.lora_r=zero")
    assert code == 2 and "train.lora_r" in err
    code, err = _run(capsys, "run", "-c", str(config), "--sampler", "nope")
    assert code == 2 and "nope" in err
    code, err = _run(capsys, "run", "-c", str(tmp_path / "missing.yaml"))
    assert code == 2 and "config file not found" in err


@pytest.mark.slow
def test_console_script_runs_a_study_end_to_end(tmp_path: Path):
    config = write_config(tmp_path, small_config(tmp_path))
    out = tmp_path / "elsewhere"
    proc = subprocess.run(
        [sys.executable, "-m", "hpo_action", "run", "-c", str(config), "--output", str(out), "--n-trials", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_trials"] == 2 and set(summary["states"]) <= {"COMPLETE", "PRUNED"}  # none failed
    assert "best trial" in proc.stderr
    gate = json.loads((out / "gate.json").read_text())  # the gate judged the best trial's weights
    assert gate["adapter_sha256"] == adapter_sha256(out / "best") and summary["best"]["adapter"] == "best"


def test_qlora_on_cpu_is_a_clear_bad_input(tmp_path: Path, capsys):
    config = write_config(tmp_path, small_config(tmp_path, model={"method": "qlora"}))
    code, err = _run(capsys, "search", "-c", str(config))
    assert code == 2
    assert "model.method: qlora needs a CUDA GPU" in err
    assert not (tmp_path / "out" / "study.db").exists()


def test_an_output_folder_that_cannot_be_created_is_bad_input(tmp_path: Path, capsys):
    (tmp_path / "taken").write_text("a file, not a folder")
    config = write_config(tmp_path, small_config(tmp_path))
    code, err = _run(capsys, "search", "-c", str(config), "--output", str(tmp_path / "taken" / "runs"))
    assert code == 2
    assert error_line(err).startswith("error: output.dir: cannot create") and "--output" in err
    assert (tmp_path / "taken").read_text() == "a file, not a folder"


def test_an_unreachable_storage_is_bad_input_and_its_password_stays_hidden(tmp_path: Path, capsys):
    config = write_config(tmp_path, small_config(tmp_path))
    url = "postgresql+psycopg://hpo:s3cret-pw@127.0.0.1:9/hpo"  # port 9 (discard): nothing listens
    code, err = _run(capsys, "search", "-c", str(config), "--storage", url, "--workers", "0")
    assert code == 2
    assert "search.storage: cannot open postgresql+psycopg://hpo:***@127.0.0.1:9/hpo" in err
    assert "s3cret-pw" not in err and error_line(err)
    assert not list((tmp_path / "out").glob("*.db")) and not (tmp_path / "out" / "trials").exists()


def test_ctrl_c_inside_a_library_exec_still_exits_130(tmp_path: Path):
    """A Ctrl-C often lands while a library is imported, inside the `exec` with which dataclasses build their
    methods. CPython remembers that and, under `python -m`, would end the process by SIGINT (-2) although the CLI
    handled the interrupt; the CLI must still say how to resume and exit 130."""
    (tmp_path / "interrupted_in_exec.py").write_text(
        "import hpo_action.cli as cli\n"
        "def load_config(path):\n"
        "    exec('raise KeyboardInterrupt')  # the Ctrl-C, landing inside an exec of a string\n"
        "cli.load_config = load_config\n"
        "cli.main()\n"
    )
    config = write_config(tmp_path, small_config(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "interrupted_in_exec", "search", "-c", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "interrupted: run the same command again to resume" in proc.stderr
    assert "Traceback" not in proc.stderr
