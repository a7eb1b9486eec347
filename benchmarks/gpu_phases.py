"""The phases of benchmarks/gpu_trials.py, each run in its own process (its own GPU memory peak, its own timeout):

    python benchmarks/gpu_phases.py build|search|trl|plan SPEC.json RESULT.json

`build` saves the random-init model and its tokenizer; `search` runs `hpo-action search` through the CLI's own
entry point (trials in this process: search.workers 0, so this process's memory peak is the trials'); `trl` trains
a plain `SFTTrainer` with TRL's default SFTConfig; `plan` runs the batch planner. Each writes RESULT.json as it
ends, also after a failure or a Ctrl-C (what gpu_trials.py sends when a phase runs past its timeout).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # on the device machine hpo-action runs from the source tree, not installed
    sys.path.insert(0, str(ROOT))


def say(message: str) -> None:
    print(f"[gpu_phases] {message}", file=sys.stderr, flush=True)


def device_facts() -> dict[str, Any]:
    """What torch sees: the device's name, memory and bf16 support, or the CPU."""
    import torch

    if not torch.cuda.is_available():
        return {"cuda": False, "device": "cpu", "torch": torch.__version__}
    props = torch.cuda.get_device_properties(0)
    return {
        "cuda": True,
        "device": torch.cuda.get_device_name(0),
        "capability": list(torch.cuda.get_device_capability(0)),
        "total_memory_gib": round(props.total_memory / 2**30, 1),
        "bf16_supported": torch.cuda.is_bf16_supported(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
    }


def peak_memory() -> dict[str, Any]:
    """This process's peak of memory allocated by torch on the GPU (None on a CPU)."""
    import torch

    if not torch.cuda.is_available():
        return {"peak_memory_bytes": None, "peak_memory_gib": None}
    peak = torch.cuda.max_memory_allocated()
    return {"peak_memory_bytes": peak, "peak_memory_gib": round(peak / 2**30, 2)}


def row_lengths(lengths: list[int]) -> dict[str, Any]:
    return {"rows": len(lengths), "min": min(lengths), "max": max(lengths), "mean": statistics.fmean(lengths)}


# ---------------------------------------------------------------------------------------------------- build


def build(spec: dict[str, Any]) -> dict[str, Any]:
    """A random-init causal LM of Qwen2's architecture and the demo model's character tokenizer (the model's
    vocabulary is larger than the tokenizer's, as a real 0.5B model's is; rows only use the first ids), saved for
    from_pretrained. It is saved as a Llama with biases on q/k/v (Qwen2's computation, FLOPs and parameter count):
    saved as a Qwen2, AutoTokenizer would load the tokenizer as a Qwen2Tokenizer, whose byte-level pre-tokenizer
    drops the spaces of this character vocabulary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from hpo_action.train.demo_model import _build_tokenizer

    facts = device_facts()
    tokenizer = _build_tokenizer()
    tokenizer.model_max_length = int(spec["max_length"])
    shape = spec["shape"]
    config = LlamaConfig(
        **shape,
        attention_bias=True,  # Qwen2's q/k/v biases; Llama adds one on o_proj too (896 numbers a layer)
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        max_position_embeddings=max(4096, int(spec["max_length"])),
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    with torch.device("cuda" if facts["cuda"] else "cpu"):  # initializing 0.5B weights on the GPU takes seconds
        model = LlamaForCausalLM(config)
    model = model.to(getattr(torch, spec["save_dtype"]))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    folder = Path(spec["folder"])
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {
        **facts,
        "parameters": model.num_parameters(),
        "config": {**shape, "tie_word_embeddings": True, "architecture": "LlamaForCausalLM", "attention_bias": True},
        "saved_dtype": spec["save_dtype"],
        "tokenizer_size": len(tokenizer),
        "imports": import_check(),
    }


def import_check() -> dict[str, str]:
    """The version of each library a later phase imports, or why it does not import (bitsandbytes: QLoRA only)."""
    found = {}
    for name in ("transformers", "trl", "peft", "accelerate", "datasets", "optuna", "bitsandbytes"):
        try:
            module = __import__(name)
            found[name] = str(getattr(module, "__version__", "?"))
        except Exception as err:  # an ImportError, or bitsandbytes failing to find its CUDA library
            found[name] = f"not importable: {type(err).__name__}: {str(err).strip()[:200]}"
    return found


# ---------------------------------------------------------------------------------------------------- search


def search(spec: dict[str, Any]) -> dict[str, Any]:
    """`hpo-action search -c CONFIG` through the console script's own function, then what the study recorded."""
    from hpo_action.cli import main as cli_main

    exit_code: int | str | None = 0
    started = time.perf_counter()
    try:
        cli_main(["search", "-c", spec["config"]])
    except SystemExit as stop:  # the CLI's errors and Ctrl-C end in sys.exit(code)
        exit_code = stop.code
    wall = time.perf_counter() - started
    result: dict[str, Any] = {"exit_code": exit_code, "cli_seconds": round(wall, 2), **peak_memory()}
    result.update(study_record(spec["config"]))
    return result


def study_record(config_path: str) -> dict[str, Any]:
    """Per trial, from the product's own records (the trial's user attributes: steps, seconds, curve, metrics):
    seconds per optimizer step and training tokens per second; and the dtype the product picks on this device."""
    import optuna
    import torch

    from hpo_action.config import load_config
    from hpo_action.data.tokenize import tokenize_rows
    from hpo_action.search.naming import storage_url, study_name
    from hpo_action.train.models import load_tokenizer, pick_dtype

    cfg = load_config(config_path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = [json.loads(line) for line in Path(cfg.data.train).read_text().splitlines() if line.strip()]
    lengths = [len(ids) for ids in tokenize_rows(rows, load_tokenizer(cfg.model), cfg.data)["input_ids"]]
    per_row = statistics.fmean(lengths)
    record: dict[str, Any] = {
        "method": cfg.model.method,
        "dtype": str(pick_dtype(cfg.model.dtype, device)).removeprefix("torch."),
        "tokens_per_row": row_lengths(lengths),
        "trials": [],
    }
    try:
        study = optuna.load_study(study_name=study_name(cfg), storage=storage_url(cfg))
    except Exception as err:  # no study: the search failed before it created one
        record["study_error"] = f"{type(err).__name__}: {err}"
        return record
    batch = (cfg.train.per_device_train_batch_size, cfg.train.gradient_accumulation_steps)
    record["trials"] = [trial_row(t, batch, per_row) for t in study.trials]
    summary = Path(cfg.output.dir) / "summary.json"
    if summary.is_file():
        data = json.loads(summary.read_text())
        record["summary"] = {k: data.get(k) for k in ("states", "elapsed_s", "total_steps", "n_trials")}
        record["summary"]["best_value"] = (data.get("best") or {}).get("value")
    return record


def trial_row(trial: Any, batch: tuple[int, int], per_row: float) -> dict[str, Any]:
    """One trial's numbers. `seconds` is the product's own timing of the trial (adapter attach, training, the
    evaluations every eval_every steps, saving); `train_seconds` takes out the evaluations, as the number of
    evaluations times the last one's eval_runtime (absent for a pruned trial, which records no metrics)."""
    attrs = trial.user_attrs
    override = attrs.get("batch_override") or {}
    micro = int(override.get("per_device_train_batch_size", batch[0]))
    accumulation = int(override.get("gradient_accumulation_steps", batch[1]))
    steps, seconds = attrs.get("steps"), attrs.get("seconds")
    metrics = attrs.get("metrics") or {}
    row: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value if trial.values is not None and len(trial.values) == 1 else None,
        "params": trial.params,
        "steps": steps,
        "seconds": seconds,
        "batch": [micro, accumulation],
        "eval_loss": metrics.get("eval_loss"),
        "evaluations": len(attrs.get("curve") or []),
        "error": attrs.get("error", ""),
    }
    if steps and seconds:
        tokens = steps * micro * accumulation * per_row
        row["s_per_step"] = seconds / steps
        row["tokens_per_s"] = tokens / seconds
        if "eval_runtime" in metrics:
            row["train_seconds"] = max(seconds - row["evaluations"] * float(metrics["eval_runtime"]), 1e-9)
            row["train_s_per_step"] = row["train_seconds"] / steps
            row["train_tokens_per_s"] = tokens / row["train_seconds"]
    return row


# ---------------------------------------------------------------------------------------------------- trl


def trl_baseline(spec: dict[str, Any]) -> dict[str, Any]:
    """A plain SFTTrainer: the model by path (TRL loads it, in float32 by default), TRL's default SFTConfig with
    only output_dir and max_steps set (and use_cpu on a machine without CUDA, where TRL's default bf16 is refused
    otherwise), and the LoRA config of hpo-action's trial 0 (its train defaults), built by hpo-action's own function."""
    import tempfile

    import datasets
    import torch
    from trl import SFTConfig, SFTTrainer

    from hpo_action.config import load_config
    from hpo_action.search.space import trial_defaults
    from hpo_action.train.peft_variants import lora_config

    cfg = load_config(spec["config"])
    lora = lora_config(trial_defaults(cfg), cfg.model, None)
    train = datasets.load_dataset("json", data_files=str(cfg.data.train), split="train")
    train = train.select_columns(["prompt", "completion"])
    cpu_only = {} if torch.cuda.is_available() else {"use_cpu": True}
    result: dict[str, Any] = {"lora": {"r": lora.r, "alpha": lora.lora_alpha, "dropout": lora.lora_dropout}}
    with tempfile.TemporaryDirectory(prefix="trl-defaults-") as scratch:
        args = SFTConfig(output_dir=scratch, max_steps=int(spec["max_steps"]), **cpu_only)
        say(f"TRL defaults: loading {cfg.model.name} through SFTTrainer")
        loaded = time.perf_counter()
        trainer = SFTTrainer(model=str(cfg.model.name), args=args, train_dataset=train, peft_config=lora)
        result["setup_seconds"] = round(time.perf_counter() - loaded, 2)
        say(f"TRL defaults: training {args.max_steps} steps")
        started = time.perf_counter()
        output = trainer.train()
        result["train_wall_seconds"] = time.perf_counter() - started
        result.update(trl_numbers(trainer, output, args))
        eval_rows = datasets.load_dataset("json", data_files=str(cfg.data.validation), split="train")
        say("TRL defaults: one evaluation on the validation rows (not timed)")
        result["eval_loss"] = trainer.evaluate(eval_rows.select_columns(["prompt", "completion"]))["eval_loss"]
    result.update(peak_memory())
    return result


def trl_numbers(trainer: Any, output: Any, args: Any) -> dict[str, Any]:
    """What TRL chose (precision, checkpointing, batch) and the throughput of its train() call."""
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    steps = int(trainer.state.global_step)
    batch = args.per_device_train_batch_size * args.gradient_accumulation_steps
    seconds = float(output.metrics["train_runtime"])
    tokens = steps * batch * statistics.fmean(lengths)
    weights = next(trainer.model.parameters()).dtype
    return {
        "weights_dtype": str(weights).removeprefix("torch."),
        "bf16_autocast": bool(args.bf16),
        "fp16_autocast": bool(args.fp16),
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "learning_rate": args.learning_rate,
        "batch": [args.per_device_train_batch_size, args.gradient_accumulation_steps],
        "tokens_per_row": row_lengths(lengths),
        "steps": steps,
        "train_runtime": seconds,
        "s_per_step": seconds / steps,
        "tokens_per_s": tokens / seconds,
        "train_loss": float(output.training_loss),
    }


# ---------------------------------------------------------------------------------------------------- plan


def plan(spec: dict[str, Any]) -> dict[str, Any]:
    """`hpo-action plan`'s pipeline function (it prints the same line as the CLI), on the LoRA arm's config."""
    from dataclasses import asdict

    from hpo_action.config import load_config
    from hpo_action.pipeline import plan as plan_batch

    found = plan_batch(load_config(spec["config"]), None, int(spec["limit"]))
    return {**asdict(found), "describe": found.describe(), **peak_memory()}


PHASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "build": build,
    "search": search,
    "trl": trl_baseline,
    "plan": plan,
}


def main() -> None:
    kind, spec_path, result_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    spec = json.loads(spec_path.read_text())
    result: dict[str, Any] = {"kind": kind}
    try:
        result.update(PHASES[kind](spec))
        result["status"] = "ok" if result.get("exit_code", 0) == 0 else "failed"
    except BaseException as err:  # Ctrl-C (a phase timeout) included: what was measured so far still goes back
        result.update({"status": "failed", "error": f"{type(err).__name__}: {err}"[:2000]})
        result["traceback"] = traceback.format_exc()[-4000:]
    finally:
        partial = result_path.with_suffix(".partial")
        partial.write_text(json.dumps(result, indent=2, default=str) + "\n")
        partial.replace(result_path)
    if result["status"] != "ok":
        say(f"{kind}: {result.get('error') or 'exit code ' + str(result.get('exit_code'))}")
        sys.exit(1)


if __name__ == "__main__":
    main()
