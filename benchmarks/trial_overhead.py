"""Per-trial overhead: hpo-action's trial loop against a naive loop, on the same K trial configurations.

The naive loop is what people write by hand around `SFTTrainer` (no `model_init` there): every trial loads
the model and tokenizer from disk, reads the raw data and lets SFTTrainer tokenize it, then trains. hpo-action
loads once, tokenizes once (cached), and attaches a fresh adapter per trial. Pruning is off on both sides,
so both run exactly the same optimizer steps with the same parameters and seeds.

    python benchmarks/trial_overhead.py [-c examples/quickstart/hpo.yaml] [--trials 6] [--train-rows N]

`--train-rows N` repeats the training rows (with fresh ids) up to N, to show how the per-trial cost of
tokenizing grows with the data in the naive loop and not in hpo-action.
Prints the wall times and their ratios and writes benchmarks/results/trial_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def trial_params(cfg: Any, k: int, seed: int) -> list[dict[str, Any]]:
    """K parameter sets drawn from the config's space, identical for both loops."""
    import optuna

    from hpo_action.search.space import suggest

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [suggest(study.ask(), cfg) for _ in range(k)]


def run_hpo_action(cfg: Any, params: list[dict[str, Any]], cache: Path) -> tuple[float, list[float]]:
    """Everything hpo-action does for K trials: load once, tokenize once, K trials on one base model."""
    from hpo_action.data.loading import load_splits
    from hpo_action.data.tokenize import tokenize_splits
    from hpo_action.train.models import load_base_model
    from hpo_action.train.trial import TrialRunner

    started = time.perf_counter()
    base = load_base_model(cfg.model)
    train, validation, _ = tokenize_splits(load_splits(cfg.data), base.tokenizer, cfg.data, cache)
    runner = TrialRunner(cfg, base, train, validation)
    values = [runner.run(p).value for p in params]
    return time.perf_counter() - started, values


def run_naive(cfg: Any, params: list[dict[str, Any]], trl_defaults: bool) -> tuple[float, list[float]]:
    """The hand-written loop: model, tokenizer and dataset preparation repeated in every trial.

    With `trl_defaults`, everything the trial parameters do not set keeps SFTConfig's defaults, as in a loop
    written by hand (TRL turns on gradient checkpointing and bf16 autocast, on the CPU too); without, it uses
    hpo-action's training settings, so that only the per-trial overhead differs.
    """
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from hpo_action.train.demo_model import ensure_demo_model

    path = str(ensure_demo_model())
    budget = cfg.search.budget
    settings = {} if trl_defaults else {"bf16": False, "gradient_checkpointing": False}
    started = time.perf_counter()
    values = []
    for p in params:
        model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
        tokenizer = AutoTokenizer.from_pretrained(path)
        columns = ["prompt", "completion"]
        train = datasets.load_dataset("json", data_files=cfg.data.train, split="train").select_columns(columns)
        validation = datasets.load_dataset("json", data_files=cfg.data.validation, split="train")
        with tempfile.TemporaryDirectory() as scratch:
            args = SFTConfig(
                output_dir=scratch,
                max_steps=budget.max_steps,
                eval_strategy="steps",
                eval_steps=budget.eval_every,
                logging_steps=budget.eval_every,
                save_strategy="no",
                report_to="none",
                disable_tqdm=True,
                use_cpu=True,
                seed=cfg.train.seed,
                data_seed=cfg.train.seed,
                learning_rate=p["learning_rate"],
                per_device_train_batch_size=p["per_device_train_batch_size"],
                per_device_eval_batch_size=p["per_device_eval_batch_size"],
                gradient_accumulation_steps=p["gradient_accumulation_steps"],
                weight_decay=p["weight_decay"],
                warmup_steps=p["warmup_ratio"],
                lr_scheduler_type=p["lr_scheduler_type"],
                max_grad_norm=p["max_grad_norm"],
                max_length=cfg.data.max_length,
                **settings,
            )
            lora = LoraConfig(
                r=p["lora_r"],
                lora_alpha=p["lora_alpha"],
                lora_dropout=p["lora_dropout"],
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            )
            trainer = SFTTrainer(
                model=model,
                args=args,
                train_dataset=train,
                eval_dataset=validation.select_columns(columns),
                processing_class=tokenizer,
                peft_config=lora,
            )
            trainer.remove_callback(PrinterCallback)
            trainer.train()
            values.append([h for h in trainer.state.log_history if "eval_loss" in h][-1]["eval_loss"])
    return time.perf_counter() - started, values


def without_remedies(cfg: Any) -> Any:
    """The config without replay and the KL to the base (the quickstart has both): the naive loop has neither, so
    both sides train the same rows with the same loss."""
    from hpo_action.config import apply_overrides

    return apply_overrides(
        cfg,
        {
            "data.replay": None,
            "search.forgetting_constraint": False,
            "search.space.replay_ratio": None,
            "search.space.kl_to_base": None,
            "train.replay_ratio": 0.0,
            "train.kl_to_base": 0.0,
        },
    )


def scale_train(cfg: Any, rows: int, folder: Path) -> Any:
    """The config with its training file repeated (fresh ids) up to `rows` rows."""
    source = [json.loads(line) for line in Path(cfg.data.train).read_text().splitlines() if line.strip()]
    target = folder / "train.jsonl"
    with target.open("w") as handle:
        for i in range(rows):
            handle.write(json.dumps({**source[i % len(source)], "id": f"scaled-{i}"}) + "\n")
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"train": str(target)})})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", default=str(ROOT / "examples" / "quickstart" / "hpo.yaml"))
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-rows", type=int, help="Repeat the training rows up to this many.")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "trial_overhead.json"))
    args = parser.parse_args()

    from hpo_action.config import load_config
    from hpo_action.session import quiet_libraries
    from hpo_action.train.demo_model import ensure_demo_model

    quiet_libraries()
    os.environ["HF_HUB_OFFLINE"] = "1"  # every input is local; telemetry calls would add noise to the TRL side
    cfg = without_remedies(load_config(args.config))
    scratch = Path(tempfile.mkdtemp(prefix="hpo-overhead-"))
    if args.train_rows:
        cfg = scale_train(cfg, args.train_rows, scratch)
    ensure_demo_model()  # built once beforehand: neither side pays for the first build
    params = trial_params(cfg, args.trials, args.seed)
    run_naive(cfg, params[:1], trl_defaults=False)  # warm-up: the first training in a process pays kernel set-up
    times: dict[str, list[float]] = {"hpo": [], "naive": [], "same": []}
    values: dict[str, list[float]] = {}
    for _ in range(args.rounds):  # interleaved rounds, medians: a shared machine's noise hits all three alike
        with tempfile.TemporaryDirectory() as cache:
            seconds, values["hpo"] = run_hpo_action(cfg, params, Path(cache))
        times["hpo"].append(seconds)
        for key, trl_defaults in (("naive", True), ("same", False)):
            seconds, values[key] = run_naive(cfg, params, trl_defaults=trl_defaults)
            times[key].append(seconds)
    hpo_s, naive_s, same_s = (statistics.median(times[k]) for k in ("hpo", "naive", "same"))

    budget = cfg.search.budget
    print(f"{args.trials} trials × {args.rounds} rounds, {budget.max_steps} steps each, eval every {budget.eval_every}")
    for label, key, seconds in (
        ("hpo-action", "hpo", hpo_s),
        ("naive loop, TRL defaults", "naive", naive_s),
        ("naive loop, hpo-action settings", "same", same_s),
    ):
        print(f"{label:32s} {seconds:8.2f} s  eval_loss {[round(v, 4) for v in values[key]]}")
    print(f"ratio_vs_naive = {hpo_s / naive_s:.3f}   (same settings, overhead only: {hpo_s / same_s:.3f})")
    result = {
        "ratio_vs_naive": round(hpo_s / naive_s, 4),
        "ratio_vs_naive_same_settings": round(hpo_s / same_s, 4),
        "trials": args.trials,
        "rounds": args.rounds,
        "hpo_action_s": round(hpo_s, 3),
        "naive_s": round(naive_s, 3),
        "naive_same_settings_s": round(same_s, 3),
        "max_steps": budget.max_steps,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
