"""A worker process: load the base model and the tokenized data once, then run trials of the shared study until
it holds its target. Started by the supervisor (`python -m hpo_action.worker PARENT_PID ERROR.json`), which
sends its assignment (config, target, deadline, sampler seed) as JSON on stdin."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from hpo_action.config import HpoConfig
from hpo_action.errors import HpoActionError


def main(argv: list[str]) -> None:
    parent, error_path = int(argv[0]), Path(argv[1])
    _die_with_parent(parent)
    _import_training_libraries()  # while the supervisor still checks the config and opens the study
    received = sys.stdin.read()
    if not received:  # the supervisor stopped before assigning work (bad input, Ctrl-C)
        return
    assignment = json.loads(received)
    assignment["config"]["search"]["seed"] = assignment["seed"]
    try:
        work(HpoConfig.model_validate(assignment["config"]), int(assignment["target"]), assignment["deadline"])
    except HpoActionError as err:  # handed to the supervisor, which raises it as its own
        error_path.write_text(json.dumps({"type": type(err).__name__, "message": str(err)}))
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


def work(cfg: HpoConfig, target: int, deadline: float | None) -> None:
    from hpo_action.data.loading import load_splits
    from hpo_action.report.terminal import make_console
    from hpo_action.search.optuna_backend.study import open_study, run_trials
    from hpo_action.session import quiet_libraries, trial_runner

    quiet_libraries()
    runner = trial_runner(cfg, load_splits(cfg.data), None, make_console(stderr=True))
    study = open_study(cfg)
    run_trials(study, cfg, runner, target, deadline, prune_adapters=False)


def _import_training_libraries() -> None:
    import peft  # noqa: F401
    import torch  # noqa: F401
    import trl  # noqa: F401


def _die_with_parent(parent: int) -> None:
    """A worker must not outlive its supervisor (SIGKILLed, job cancelled): it would go on running trials."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
