"""Where the default remedy ranges come from: a grid of replay_ratio × kl_to_base at learning rates high enough to
forget, on a task unlike the quickstart (forgetting_tradeoff.py's `alphabet`: a skill scored by per-token loss
with a 0.1-nat margin, not exact match on copy), one trial per cell, the same steps as the quickstart.

    python benchmarks/remedy_ranges.py [--task alphabet] [--rates 0.01 0.03] [--out FILE]

Per cell: the validation loss of the new task (eval_loss), the probe's drop against the base model, and whether
the gate's own test on the probe rows passes (feasible). hpo_action/config/remedies.py reads nothing from here;
its docstring quotes the result (benchmarks/results/remedy_ranges.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from forgetting_tradeoff import QUICKSTART, RESULTS, Task

REPLAY = (0.0, 0.1, 0.25, 0.5, 0.75)
KL = (0.0, 0.3, 1.0, 3.0)
GENERIC_LORA = {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "warmup_ratio": 0.03}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="alphabet", choices=["quickstart", "alphabet"])
    parser.add_argument("--rates", nargs="+", type=float, default=[0.03])
    parser.add_argument("--out", type=Path, default=RESULTS / "remedy_ranges.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from hpo_action.config import apply_overrides, load_config
    from hpo_action.search.space import trial_defaults
    from hpo_action.session import quiet_libraries
    from hpo_action.train.models import load_base_model
    from hpo_action.train.trial import TrialRunner

    quiet_libraries()
    cfg = load_config(QUICKSTART / "hpo.yaml")
    overrides = {"search.space": {}, "search.forgetting_constraint": True, "search.forgetting_probe_size": 58}
    cfg = apply_overrides(cfg, overrides, source="grid")  # alphabet: 117 rows, half of them probed
    started = time.monotonic()
    base = load_base_model(cfg.model)
    task = Task(args.task, cfg, Path(tempfile.mkdtemp(prefix="remedy-ranges-")), base)
    rows = []
    for rate in args.rates:
        for replay in REPLAY:
            for kl in KL:
                params = {**trial_defaults(task.cfg), **GENERIC_LORA, "learning_rate": rate}
                params.update(replay_ratio=replay, kl_to_base=kl)
                runner = TrialRunner(task.cfg, base, task.train, task.validation, task.probes, task.replay)
                result = runner.run(params)
                ((name, drop),) = result.forgetting_drop.items()
                row = {
                    "learning_rate": rate,
                    "replay_ratio": replay,
                    "kl_to_base": kl,
                    "eval_loss": round(result.value, 4),
                    "probe_drop": round(drop, 4),
                    "feasible": result.forgetting[name] <= 0,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
                out = {"task": args.task, "steps": cfg.search.budget.max_steps, "rows": rows}
                out["wall_s"] = round(time.monotonic() - started, 1)
                args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
