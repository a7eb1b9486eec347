"""action.yml run the way a runner runs a composite action: inputs substituted into `env:`, each `run:` step
in bash with the runner's files and variables, step outputs parsed back and mapped to the action's outputs."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpo_action.cli import cli
from hpo_action.judge.decision import FORGETTING_RULE

from .helpers import ROOT, small_config, write_config

ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
CONSUMED_BY_THE_ACTION = {"extra-args", "hf-token", "install-extras", "working-directory"}
CANARY = "hf_canary_d41d8cd98f00b204e9800998ecf8427e"
_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_CONTEXT = re.compile(r"\b(inputs|github|steps)((?:\.[A-Za-z_][\w-]*)+)")


def evaluate(text: str, context: dict[str, Any]) -> str:
    """`${{ … }}` with the subset of the expression language the action uses: context lookups, string
    literals, ==, && and || (which GitHub evaluates like Python's `and`/`or` on these operands)."""

    def one(match: re.Match[str]) -> str:
        def lookup(ref: re.Match[str]) -> str:
            path = [ref.group(1), *ref.group(2)[1:].split(".")]
            return f"_ctx[{path!r}]"

        python = _CONTEXT.sub(lookup, match.group(1)).replace("&&", " and ").replace("||", " or ")
        resolve = _Resolver(context)
        return str(eval(python, {"__builtins__": {}}, {"_ctx": resolve}))

    return _EXPRESSION.sub(one, text)


class _Resolver:
    def __init__(self, context: dict[str, Any]) -> None:
        self.context = context

    def __getitem__(self, path: list[str]) -> Any:
        node: Any = self.context
        for part in path:
            node = node.get(part, "") if isinstance(node, dict) else ""
        return node


def parse_outputs(path: Path) -> dict[str, str]:
    values, lines, i = {}, path.read_text().split("\n") if path.exists() else [], 0
    while i < len(lines):
        if "<<" in lines[i]:
            name, delimiter = lines[i].split("<<", 1)
            end = lines.index(delimiter, i + 1)
            values[name] = "\n".join(lines[i + 1 : end])
            i = end + 1
        else:
            if lines[i]:
                name, value = lines[i].split("=", 1)
                values[name] = value
            i += 1
    return values


def run_action(
    workspace: Path, inputs: dict[str, str], extra_env: dict[str, str], steps: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Run the steps of action.yml (all by default); returns the action's outputs, the summary, each step's log
    and the exit code."""
    given = {name: spec.get("default", "") for name, spec in ACTION["inputs"].items()}
    unknown = set(inputs) - set(given)
    assert not unknown, f"not inputs of action.yml: {unknown}"
    given.update(inputs)
    runner_temp = workspace.parent / "runner-temp"
    runner_temp.mkdir(exist_ok=True)
    summary = runner_temp / "step-summary.md"
    context: dict[str, Any] = {"inputs": given, "github": {"token": "ghs_job_token"}, "steps": {}}
    logs: list[str] = []
    for index, step in enumerate(ACTION["runs"]["steps"] if steps is None else steps):
        assert step["shell"] == "bash"
        assert "${{" not in step["run"], "inputs must reach run: through env:, never ${{ }} in the script"
        output_file = runner_temp / f"output-{index}"
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "GITHUB_ACTIONS": "true",
            "GITHUB_ACTION_PATH": str(ROOT),
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_OUTPUT": str(output_file),
            "GITHUB_STEP_SUMMARY": str(summary),
            "RUNNER_TEMP": str(runner_temp),
            **extra_env,
            **{name: evaluate(str(value), context) for name, value in step.get("env", {}).items()},
        }
        cwd = workspace / evaluate(step.get("working-directory", "."), context)
        script = runner_temp / f"step-{index}.sh"
        script.write_text(step["run"])
        returncode, log = _run_step(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd, env)
        logs.append(log)
        if "id" in step:
            context["steps"][step["id"]] = {"outputs": parse_outputs(output_file)}
        if returncode != 0:
            return {"returncode": returncode, "logs": logs, "outputs": {}, "summary": ""}
    outputs = {name: evaluate(spec["value"], context) for name, spec in ACTION["outputs"].items()}
    files = "".join(p.read_text() for p in runner_temp.glob("output-*"))
    text = summary.read_text() if summary.exists() else ""
    return {"returncode": 0, "logs": logs, "outputs": outputs, "summary": text, "output_files": files}


def _run_step(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> tuple[int, str]:
    """Run one step in its own process group, as a runner does; on timeout, kill the whole group (bash and the
    hpo-action it started), so nothing outlives the test."""
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"step timed out after {timeout} s; its process group was killed:\n{out[-2000:]}")
    return proc.returncode, out


def test_a_timed_out_step_kills_its_whole_process_group(tmp_path: Path):
    pid_file = tmp_path / "child.pid"
    script = f"sleep 300 & echo $! > {pid_file}; wait"
    with pytest.raises(pytest.fail.Exception, match="timed out"):
        _run_step(["bash", "-c", script], tmp_path, dict(os.environ), timeout=2)
    child = int(pid_file.read_text())
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"the step's child {child} outlived the kill")


def _fake(folder: Path, name: str, body: str) -> None:
    """A stand-in executable on PATH that records its arguments as JSON."""
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(f"#!{sys.executable}\nimport json, os, sys\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_every_input_is_a_cli_option_or_consumed_by_the_action():
    options = {opt for param in cli.commands["run"].params for opt in param.opts}
    run_step = next(step for step in ACTION["runs"]["steps"] if step.get("id") == "run")
    install_step = ACTION["runs"]["steps"][0]
    for name in ACTION["inputs"]:
        variable = f"INPUT_{name.upper().replace('-', '_')}"
        in_env = {**install_step.get("env", {}), **run_step["env"]}
        if name == "working-directory":
            assert run_step["working-directory"] == "${{ inputs.working-directory }}"
            continue
        assert in_env[variable] == f"${{{{ inputs.{name} }}}}", name
        if name not in CONSUMED_BY_THE_ACTION:
            assert f"--{name}" in options, f"input {name!r} has no `hpo-action run --{name}`"
            assert f'"${variable}"' in run_step["run"] or f'"${variable}" = "true"' in run_step["run"], name


def test_arguments_reach_the_cli_verbatim_and_tokens_only_where_needed(tmp_path: Path):
    fakes = tmp_path / "bin"
    _fake(
        fakes,
        "python",
        'json.dump({"argv": sys.argv[1:], "hf": os.environ.get("HF_TOKEN"), "gh": os.environ.get("GITHUB_TOKEN"),'
        ' "input_token": os.environ.get("INPUT_HF_TOKEN"), "storage": os.environ.get("HPO_STORAGE"),'
        ' "input_storage": os.environ.get("INPUT_STORAGE")}, open(os.environ["RECORD"], "w"))',
    )
    record = tmp_path / "record.json"
    workspace = tmp_path / "ws"
    (workspace / "sub").mkdir(parents=True)
    inputs = {
        "config": "my config; echo pwned $(id).yaml",
        "n-trials": "3",
        "registry": "hf://acme/model",
        "extra-args": "--max-steps 6  --set 'search.seed=1'\n--eval-every 3",  # a multi-line YAML input
        "hf-token": CANARY,
        "storage": "postgresql+psycopg://u:DBCANARY@db/hpo",
        "working-directory": "sub",
        "fail-on-reject": "true",
    }
    env = {"HPO_ACTION_SKIP_INSTALL": "1", "RECORD": str(record), "PATH": f"{fakes}{os.pathsep}{os.environ['PATH']}"}
    result = run_action(workspace, inputs, env)
    assert result["returncode"] == 0, result["logs"]
    seen = json.loads(record.read_text())
    assert seen["argv"] == [
        "-m",
        "hpo_action",
        "run",
        "--config",
        "my config; echo pwned $(id).yaml",
        "--n-trials",
        "3",
        "--registry",
        "hf://acme/model",
        "--fail-on-reject",
        "--max-steps",
        "6",
        "--set",
        "'search.seed=1'",  # split on whitespace only: no shell quoting, no expansion
        "--eval-every",
        "3",  # every line of a multi-line input
    ]
    assert seen["hf"] == CANARY and seen["input_token"] is None
    assert seen["storage"] == "postgresql+psycopg://u:DBCANARY@db/hpo" and seen["input_storage"] is None  # not argv
    assert seen["gh"] == ""  # the job token reaches the CLI only with comment-pr
    assert "pwned" not in "".join(result["logs"])
    result = run_action(workspace, {"comment-pr": "true", "working-directory": "sub"}, env)
    seen = json.loads(record.read_text())
    assert seen["argv"] == ["-m", "hpo_action", "run", "--config", "hpo.yaml", "--comment-pr"]
    assert seen["gh"] == "ghs_job_token" and seen["hf"] is None


def test_install_step_installs_the_action_checkout_with_validated_extras(tmp_path: Path):
    fakes = tmp_path / "bin"
    _fake(fakes, "python", 'json.dump(sys.argv[1:], open(os.environ["RECORD"], "w"))')
    record = tmp_path / "record.json"
    env = {"RECORD": str(record), "PATH": f"{fakes}{os.pathsep}{os.environ['PATH']}"}
    install = ACTION["runs"]["steps"][:1]
    workspace = tmp_path / "ws"
    workspace.mkdir()
    assert run_action(workspace, {"install-extras": "qlora"}, env, install)["returncode"] == 0
    pip = ["-m", "pip", "install", "--disable-pip-version-check", f"{ROOT}[signing,qlora]"]
    assert json.loads(record.read_text()) == pip
    record.unlink()
    bad = run_action(workspace, {"install-extras": "qlora] && touch /tmp/x #"}, env, install)
    assert bad["returncode"] == 2 and not record.exists()
    assert "::error title=hpo-action::install-extras" in bad["logs"][0]
    skipped = run_action(workspace, {}, {**env, "HPO_ACTION_SKIP_INSTALL": "1"}, install)
    assert skipped["returncode"] == 0 and not record.exists()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "workspace"
    folder.mkdir()
    write_config(folder, small_config(folder))
    return folder


@pytest.mark.slow
def test_action_runs_the_quickstart_and_sets_outputs_and_summary(workspace: Path):
    result = run_action(
        workspace,
        {
            "config": "hpo.yaml",
            "n-trials": "2",
            "output": "runs-action",
            "registry": "registry",
            "extra-args": "--max-steps 6 --eval-every 3 --seed 1",
            "hf-token": CANARY,
        },
        {"HPO_ACTION_SKIP_INSTALL": "1"},
    )
    log = result["logs"][-1] if result["logs"] else ""
    assert result["returncode"] == 0, log[-4000:]
    outputs = result["outputs"]
    run_dir = workspace / "runs-action"
    gate = json.loads((run_dir / "gate.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["states"]) <= {"COMPLETE", "PRUNED"} and summary["n_trials"] == 2  # no trial failed
    assert outputs["decision"] == gate["decision"]  # the outputs are this run's verdict and best trial
    assert outputs["promoted"] == ("true" if gate["promote"] else "false")
    assert float(outputs["best-value"]) == pytest.approx(summary["best"]["value"])
    assert json.loads(outputs["best-params"]) == summary["best"]["params"]
    assert Path(outputs["report-path"]).read_text() == result["summary"]
    if outputs["promoted"] == "true":
        assert outputs["champion-version"] == "1" and Path(outputs["model-url"]).is_dir()
    summary = result["summary"]
    assert "**trials**" in summary and "| # | state | eval_loss |" in summary
    assert f"### Gate: {outputs['decision']}" in summary and "| metric | n | candidate | reference |" in summary
    assert f"**forgetting: non-inferiority against the base model, per set; {FORGETTING_RULE}**" in summary
    # The runner hides masked values; the CLI must ask for it before printing anything else.
    lines = log.splitlines()
    assert lines[0] == f"::add-mask::{CANARY}"
    visible = "\n".join(line for line in lines if not line.startswith("::add-mask::"))
    for text in (visible, summary, result["output_files"], *outputs.values()):
        assert CANARY not in text
