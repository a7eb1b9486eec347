"""Learning without forgetting on tasks the remedies were never tuned on (issue 22 item 4).

    OMP_NUM_THREADS=1 python benchmarks/unseen_forgetting.py [--seeds 5] [--trials 6] [--tasks twice skip]
                                                             [--arms remedies none] [--out FILE]

The base model is not the demo model: a GPT-2 (transformers GPT2Config, 2 layers, width 96) with its own
character tokenizer and a ChatML-like chat template, both built here, pretrained here for 1500 steps on
two "old skills" in raw prompt/completion rows: `rev: abcd=` → `dcba` (reverse a word) and `nxt: abc=` → `bcd`
(each letter's successor). Each task fine-tunes it through `hpo-action run` (the pipeline the CLI calls) on a new
skill in chat rows (`messages`): `twice` (user `twice abc`, assistant `aabbcc`) or `skip` (user `skip abc`,
assistant `cde`), with both old skills as forgetting sets (800 rows each, per-token loss, margin 0.2 nats; 200
rows probed after each trial, the gate tests the other 600) and one replay source per skill, in the skill's own
raw format, on other words than the forgetting sets.

Arms, the same search otherwise (the task's hpo.yaml below, which names no remedy):
  remedies: the default settings, so replay_ratio and kl_to_base are searched over their default ranges with the
            second (strong-remedies) warm start (config/remedies.py);
  none:     replay and KL off (search.space replay_ratio 0, kl_to_base 0; train the same).
A seed sets the sampler's seed and the training seed. Per run: the gate's decision, the learned gain on the test
split, each forgetting set's delta and status, and whether the finalist was feasible on its search probes (every
set within its margin by the gate's own test on the probe rows) against whether it passed the gate on the gate
rows. Writes benchmarks/results/unseen_forgetting.json (a manifest: commit, settings, the data's hashes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import string
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COMMIT = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
RESULTS = ROOT / "benchmarks" / "results"
SPECIALS = ("<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>", "<|im_start|>", "<|im_end|>")
CHARS = tuple(string.ascii_lowercase + " :=\n")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PRETRAIN = {"steps": 1500, "batch": 32, "lr": 3e-3, "seed": 11, "n_layer": 2, "n_embd": 96, "n_head": 4}
SIZES = {"train": 400, "validation": 80, "test": 150, "forget": 800, "replay": 300}
PROBE_SIZE = 200  # of each forgetting set's rows scored after each trial; the gate tests the other 600
MARGIN = 0.2  # nats per token: about 15 % of the base's loss on either old skill
OLD_SKILLS = ("rev", "nxt")
TASKS = ("twice", "skip")


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 6)))


def old_skill(name: str, word: str) -> tuple[str, str]:
    """A raw prompt/completion pair of a pretraining skill."""
    if name == "rev":
        return f"rev: {word}=", word[::-1]
    shifted = "".join(string.ascii_lowercase[(string.ascii_lowercase.index(c) + 1) % 26] for c in word)
    return f"nxt: {word}=", shifted


def new_skill(task: str, word: str) -> tuple[str, str]:
    """The chat turn (user, assistant) of a task's new skill."""
    if task == "skip":
        return f"skip {word}", "".join(string.ascii_lowercase[(string.ascii_lowercase.index(c) + 2) % 26] for c in word)
    return f"twice {word}", "".join(c + c for c in word)


def build_tokenizer() -> Any:
    """One token per character, special tokens for the chat turns; decoding inverts encoding exactly."""
    from hpo_action.train.demo_model import character_tokenizer

    return character_tokenizer(SPECIALS, CHARS, CHAT_TEMPLATE, max_length=64)


def build_base(folder: Path) -> Path:
    """The GPT-2 base, pretrained on the two old skills in raw format; saved with its tokenizer to `folder`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(PRETRAIN["seed"])
    tokenizer = build_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=PRETRAIN["n_embd"],
        n_layer=PRETRAIN["n_layer"],
        n_head=PRETRAIN["n_head"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    rng = random.Random(PRETRAIN["seed"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN["lr"], weight_decay=0.01)
    steps = PRETRAIN["steps"]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 50) * (1 - s / steps))
    model.train()
    for _ in range(steps):
        pairs = [old_skill(rng.choice(OLD_SKILLS), _word(rng)) for _ in range(PRETRAIN["batch"])]
        rows, targets = [], []
        for prompt, completion in pairs:
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            rows.append(p + c)
            targets.append([-100] * len(p) + c)
        width = max(map(len, rows))
        ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
        labels = torch.tensor([t + [-100] * (width - len(t)) for t in targets])
        loss = model(input_ids=ids, attention_mask=(ids != tokenizer.pad_token_id).long(), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def cached_base() -> Path:
    """The pretrained base, built once per pretraining setting (deterministic) in the temp folder."""
    key = hashlib.sha256(json.dumps([PRETRAIN, SPECIALS, CHARS, CHAT_TEMPLATE]).encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"unseen-forgetting-base-{key}"
    if not (folder / "config.json").is_file():
        partial = Path(tempfile.mkdtemp(prefix=".unseen-base-"))
        build_base(partial)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    return folder


def _chat(user: str, assistant: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def write_task(task: str, folder: Path, seed: int = 5) -> dict[str, str]:
    """The task's files: new-skill chats (train/validation/test), each old skill's forgetting set and replay rows
    on disjoint words; returns their sha256 by name."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < sum(SIZES.values()) + len(OLD_SKILLS) * (SIZES["forget"] + SIZES["replay"]):
        word = _word(rng)
        if word not in seen:
            seen.add(word)
            words.append(word)
    files: dict[str, list[dict[str, Any]]] = {}
    at = 0
    for split in ("train", "validation", "test"):
        chunk, at = words[at : at + SIZES[split]], at + SIZES[split]
        files[split] = [{"id": f"{split}-{i:04d}", "messages": _chat(*new_skill(task, w))} for i, w in enumerate(chunk)]
    for skill in OLD_SKILLS:
        for part in ("forget", "replay"):
            chunk, at = words[at : at + SIZES[part]], at + SIZES[part]
            files[f"{part}_{skill}"] = [
                {"id": f"{part}_{skill}-{i:04d}", "prompt": p, "completion": c}
                for i, (p, c) in enumerate(old_skill(skill, w) for w in chunk)
            ]
    hashes = {}
    for name, rows in files.items():
        text = "".join(json.dumps(row) + "\n" for row in rows)
        (folder / f"{name}.jsonl").write_text(text)
        hashes[name] = hashlib.sha256(text.encode()).hexdigest()
    return hashes


def task_config(model: Path, data: Path) -> dict[str, Any]:
    """The hpo.yaml a user would write for the task: generic train defaults, no remedy named."""
    return {
        "model": {"name": str(model), "method": "lora"},
        "data": {
            "format": "messages",
            "train": str(data / "train.jsonl"),
            "validation": str(data / "validation.jsonl"),
            "test": str(data / "test.jsonl"),
            "max_length": 48,
            "replay": [
                {"data": str(data / f"replay_{skill}.jsonl"), "format": "prompt_completion"} for skill in OLD_SKILLS
            ],
        },
        "search": {
            "n_trials": 6,
            "sampler": "tpe",
            "workers": 0,
            "forgetting_probe_size": PROBE_SIZE,
            "seed": 0,
            "objective": {"metric": "eval_loss", "direction": "minimize"},
            "forgetting_constraint": True,
            "budget": {"max_steps": 60, "eval_every": 30},
            "space": {"learning_rate": {"low": 3e-3, "high": 3e-2, "log": True}, "lora_r": {"choices": [8, 16]}},
        },
        "train": {"learning_rate": 2e-4, "per_device_train_batch_size": 16, "lora_r": 16, "lora_alpha": 32},
        "output": {"dir": str(data.parent / "runs")},
        "evaluate": {"metrics": ["loss", "exact_match"], "max_new_tokens": 14},
        "gate": {
            "alpha": 0.05,
            "forgetting": [
                {
                    "name": skill,
                    "data": str(data / f"forget_{skill}.jsonl"),
                    "format": "prompt_completion",
                    "metric": "loss",
                    "margin": MARGIN,
                }
                for skill in OLD_SKILLS
            ],
        },
    }


def arm_overrides(arm: str) -> dict[str, Any]:
    if arm == "remedies":
        return {}
    return {
        "search.space.replay_ratio": 0.0,
        "search.space.kl_to_base": 0.0,
        "train.replay_ratio": 0.0,
        "train.kl_to_base": 0.0,
    }


def run_one(task: str, arm: str, seed: int, base_cfg: dict[str, Any], trials: int, folder: Path) -> dict[str, Any]:
    """One `hpo-action run` of a task and arm at a seed; the gate's decision and the finalist's search probes."""
    import optuna

    from hpo_action.config import apply_overrides, load_config
    from hpo_action.pipeline import run
    from hpo_action.report.terminal import make_console
    from hpo_action.search.naming import storage_url, study_name
    from hpo_action.search.optuna_backend.finalist import EXCESS_ATTR, chosen_trial, judged_trial

    out = folder / f"{task}-{arm}-{seed}"
    config_file = folder / f"{task}.yaml"
    config_file.write_text(json.dumps(base_cfg))  # JSON is YAML
    cfg = apply_overrides(
        load_config(config_file),
        {
            **arm_overrides(arm),
            "search.seed": seed,
            "train.seed": 42 + seed,
            "search.n_trials": trials,
            "output.dir": str(out),
        },
        source=f"{task}/{arm}/{seed}",
    )
    started = time.monotonic()
    row: dict[str, Any] = {"task": task, "arm": arm, "seed": seed}
    try:
        decision = run(cfg, console=make_console(stderr=True))
    except Exception as err:  # a run that ends without a decision (e.g. no trial within margins) is a result too
        row.update(decision="no decision", error=f"{type(err).__name__}: {err}"[:300])
        row["seconds"] = round(time.monotonic() - started, 1)
        return row
    study = optuna.load_study(study_name=study_name(cfg), storage=storage_url(cfg))
    finalist = judged_trial(study)  # the feasible finalist, or (none feasible) the closest to it
    excess = finalist.user_attrs.get(EXCESS_ATTR, {}) if finalist else {}
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    row.update(
        decision=decision.decision,
        primary={
            "metric": decision.primary.metric,
            "base": decision.primary.reference,
            "candidate": decision.primary.candidate,
            "gain": gain(decision.primary.metric, decision.primary.reference, decision.primary.candidate),
            "p": decision.primary.p_value,
        },
        forgetting={
            f.name: {"delta": f.delta, "bound": f.bound, "status": f.status, "n": f.n} for f in decision.forgetting
        },
        all_sets_passed=all(f.passed for f in decision.forgetting),
        finalist=finalist.number if finalist else None,
        finalist_params=dict(finalist.params) if finalist else None,
        feasible_at_search=all(v <= 0 for v in excess.values()) if finalist else None,
        closest_judged=finalist is not None and chosen_trial(study) is None,
        trials=len(study.trials),
        feasible_trials=sum(all(v <= 0 for v in t.user_attrs.get(EXCESS_ATTR, {1: 1}).values()) for t in complete),
        study=trial_lines(study),
    )
    row["seconds"] = round(time.monotonic() - started, 1)
    shutil.rmtree(out / "trials", ignore_errors=True)
    return row


def trial_lines(study: Any) -> list[dict[str, Any]]:
    """Every trial of a study, compactly: state, steps, value, parameters, probe drops, feasibility, and the pruner's
    rung checks under the forgetting constraint (search/optuna_backend/forgetting_rungs.py)."""
    from hpo_action.search.optuna_backend.finalist import DROP_ATTR, EXCESS_ATTR
    from hpo_action.search.optuna_backend.forgetting_rungs import RUNGS_ATTR

    lines = []
    for t in study.trials:
        excess = t.user_attrs.get(EXCESS_ATTR)
        lines.append(
            {
                "n": t.number,
                "state": t.state.name,
                "steps": t.user_attrs.get("steps"),
                "value": round(t.value, 4) if t.value is not None else None,
                "params": {k: round(v, 4) if isinstance(v, float) else v for k, v in t.params.items()},
                "drop": {k: round(v, 3) for k, v in t.user_attrs.get(DROP_ATTR, {}).items()},
                "feasible": all(v <= 0 for v in excess.values()) if excess else None,
                "rungs": [entry[:2] for entry in t.user_attrs.get(RUNGS_ATTR, [])],
                "warm": bool(t.user_attrs.get("warm_start")),
            }
        )
    return lines


def gain(metric: str, base: float, candidate: float) -> float:
    """The learned gain on the test split, positive when the candidate is better (lower loss)."""
    return base - candidate if metric == "loss" else candidate - base


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per task and arm: decision counts, median gain, median forgetting delta per set, promotions with every
    set passed, and feasible-at-search vs passed-at-gate agreement among finalists."""
    import statistics

    out: dict[str, Any] = {}
    for r in rows:  # recomputed from the two means, whatever the row stored
        if "primary" in r:
            r["primary"]["gain"] = gain(r["primary"]["metric"], r["primary"]["base"], r["primary"]["candidate"])
    for task in sorted({r["task"] for r in rows}):
        for arm in sorted({r["arm"] for r in rows}):
            own = [r for r in rows if r["task"] == task and r["arm"] == arm]
            if not own:
                continue
            gated = [r for r in own if "primary" in r]
            judged = [r for r in gated if r["feasible_at_search"] is not None]
            counts = {d: sum(r["decision"] == d for r in own) for d in ("promote", "reject", "inconclusive")}
            counts["no finalist"] = sum(r["decision"] == "no decision" for r in own)  # no trial within margins
            out[f"{task}/{arm}"] = {
                "runs": len(own),
                "decisions": counts,
                "promoted_every_set_passed": sum(r["decision"] == "promote" and r["all_sets_passed"] for r in gated),
                "median_gain": round(statistics.median(r["primary"]["gain"] for r in gated), 4) if gated else None,
                "median_forgetting_delta": {
                    s: round(statistics.median(r["forgetting"][s]["delta"] for r in gated), 4) for s in OLD_SKILLS
                }
                if gated
                else None,
                "search_gate_agreement": round(
                    sum(r["feasible_at_search"] == r["all_sets_passed"] for r in judged) / len(judged), 3
                )
                if judged
                else None,
                "finalists_judged": len(judged),
                "closest_judged": sum(bool(r.get("closest_judged")) for r in gated),  # no trial was feasible
                "sampled_trials": _sampled_counts(own),
            }
    return out


def _sampled_counts(runs: list[dict[str, Any]]) -> dict[str, int]:
    """The sampled (not warm-start) trials of these runs: how they ended, and the pruner's rung checks."""
    trials = [t for r in runs for t in r.get("study", []) if not t["warm"]]
    verdicts = [entry[1] for t in trials for entry in t["rungs"]]
    return {
        "n": len(trials),
        "complete": sum(t["state"] == "COMPLETE" for t in trials),
        "feasible": sum(t["state"] == "COMPLETE" and bool(t["feasible"]) for t in trials),
        "pruned": sum(t["state"] == "PRUNED" for t in trials),
        **{f"rung_{v}": verdicts.count(v) for v in ("forgot", "spared", "pruned", "continued")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--arms", nargs="+", default=["remedies", "none"], choices=["remedies", "none"])
    parser.add_argument("--out", type=Path, default=RESULTS / "unseen_forgetting.json")
    parser.add_argument("--summarize-only", action="store_true", help="Recompute the summary of --out's runs.")
    parser.add_argument(
        "--merge", nargs="+", type=Path, help="Write --out from these result files (e.g. one process per task)."
    )
    args = parser.parse_args()
    if args.merge:
        parts = [json.loads(path.read_text()) for path in args.merge]
        result = {**parts[0], "runs": [r for part in parts for r in part["runs"]]}
        hashes = {task: h for part in parts for task, h in part["manifest"]["data_sha256"].items()}
        merged = [p["manifest"]["command"] for p in parts]
        result["manifest"] = {**parts[0]["manifest"], "data_sha256": hashes, "merged": merged}
        result["complete"] = all(p["complete"] for p in parts)
        result["wall_s"] = max(p["wall_s"] for p in parts)  # the processes ran side by side
        result["summary"] = summarize(result["runs"])
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(json.dumps(result["summary"], indent=1))
        return
    if args.summarize_only:
        result = json.loads(args.out.read_text())
        result["summary"] = summarize(result["runs"])
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(json.dumps(result["summary"], indent=1))
        return
    warnings.filterwarnings("ignore")

    import torch

    from hpo_action.session import quiet_libraries

    torch.set_num_threads(1)
    quiet_libraries()
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="unseen-forgetting-"))
    model = cached_base()
    pretrain_s = round(time.monotonic() - started, 1)
    hashes, configs = {}, {}
    for task in args.tasks:
        hashes[task] = write_task(task, folder / task / "data")
        configs[task] = task_config(model, folder / task / "data")
    rows: list[dict[str, Any]] = []
    for seed in range(args.seeds):  # seed-major: a stopped benchmark still covers every task and arm evenly
        for task in args.tasks:
            for arm in args.arms:
                rows.append(run_one(task, arm, seed, configs[task], args.trials, folder / task))
                print(json.dumps(rows[-1]), flush=True)
                _write(args, rows, hashes, pretrain_s, time.monotonic() - started, complete=False)
    result = _write(args, rows, hashes, pretrain_s, time.monotonic() - started, complete=True)
    print(json.dumps(result["summary"], indent=1))
    shutil.rmtree(folder, ignore_errors=True)


def _write(
    args: Any, rows: list[dict[str, Any]], hashes: dict[str, Any], pretrain_s: float, elapsed: float, complete: bool
) -> dict[str, Any]:
    manifest = {
        "commit": COMMIT,  # the code that ran: read at start, not at each write
        "command": "OMP_NUM_THREADS=1 python benchmarks/unseen_forgetting.py "
        f"--seeds {args.seeds} --trials {args.trials} --tasks {' '.join(args.tasks)} --arms {' '.join(args.arms)}",
        "torch_threads": 1,
        "pretrain": PRETRAIN,
        "sizes": SIZES,
        "task_config": task_config(Path("<base>"), Path("<data>")),
        "data_sha256": hashes,
        "pretrain_s": pretrain_s,
    }
    result = {"manifest": manifest, "summary": summarize(rows), "complete": complete, "runs": rows}
    result["wall_s"] = round(elapsed, 1)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
