r"""The first GPU benchmark: hpo-action trials (LoRA in bf16, QLoRA in 4-bit) on a random-init 0.5B causal LM, the
same LoRA run by a plain `trl.SFTTrainer` with TRL's default SFTConfig, and the batch planner.

Nothing is downloaded. The model has Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864,
vocabulary 151,936, tied embeddings, q/k/v biases: 494M parameters; saved as a Llama, see gpu_phases.build), random
weights and the demo model's character tokenizer; the data is generated, rows of one length (tokens per step are
exact). Phases, each in its own process (benchmarks/gpu_phases.py) under its own timeout and one overall budget,
the JSON rewritten after each: build; lora (`hpo-action search`, 3 trials x 60 steps); trl (TRL's defaults, 60
steps); qlora (3 x 60); plan (`hpo-action plan`). Sized to end inside its 360 s budget on one H100/H200; it has
never run on a GPU yet.

On the device machine (python3 with a CUDA torch, no package registry) the missing packages travel as wheels.
Here, once (about 36 MiB into .whl/, which git ignores):

    python benchmarks/gpu_wheels.py

then one device `run` with carry [".whl"], timeout_s 480, and the command:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 && python3 benchmarks/gpu_trials.py --out $OUT

(Where pip reaches a registry: `python -m pip install -e ".[qlora]"`, then the last command.)
It prints one table and writes $OUT/gpu_trials.json: device, library versions, every number, each phase's wall
time. A rerun of some phases: `--phases qlora,plan` (build always runs). On a CPU, the code paths in under a
minute (a 2-layer float32 model, 4 steps; QLoRA and plan are skipped: they need CUDA):

    python benchmarks/gpu_trials.py --tiny --out /tmp/gpu-tiny
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import random
import shutil
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("build", "lora", "trl", "qlora", "plan")
LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "optuna", "bitsandbytes", "tokenizers")
# the device image's own packages the carried ones lean on: worth reading when an import fails there
BENEATH = ("huggingface_hub", "safetensors", "numpy", "pandas", "pyarrow", "pydantic", "click", "regex", "fsspec")


@dataclass(frozen=True)
class Scale:
    """Model shape, data and budgets of one mode."""

    shape: dict[str, int]
    save_dtype: str  # the checkpoint's dtype (a real 0.5B model ships in bf16)
    model_dtype: str  # model.dtype in the generated configs ('auto': hpo-action's own choice)
    max_length: int
    train_rows: int
    validation_rows: int
    trials: int
    max_steps: int
    eval_every: int
    plan_limit: int
    budget_s: float  # the whole script; a phase that would start later is skipped
    timeouts: dict[str, float] = field(default_factory=dict)  # per phase


FULL = Scale(
    shape=dict(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
    ),
    save_dtype="bfloat16",
    model_dtype="auto",
    max_length=512,
    train_rows=512,
    validation_rows=32,
    trials=3,
    max_steps=60,
    eval_every=30,
    plan_limit=256,
    budget_s=360,
    timeouts={"build": 90, "lora": 120, "trl": 90, "qlora": 120, "plan": 90},
)
TINY = Scale(
    shape=dict(
        vocab_size=4096,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    save_dtype="float32",
    model_dtype="float32",
    max_length=64,
    train_rows=64,
    validation_rows=16,
    trials=2,
    max_steps=4,
    eval_every=2,
    plan_limit=8,
    budget_s=110,
    timeouts={"build": 40, "lora": 50, "trl": 40, "qlora": 40, "plan": 40},
)


def say(message: str) -> None:
    print(f"[gpu_trials] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- inputs


def write_data(folder: Path, scale: Scale) -> dict[str, Path]:
    """Caesar-shift rows (the quickstart's task) of one length: prompt + completion + EOS = max_length - 1 tokens
    with the character tokenizer, so no row is padded or truncated."""
    rng = random.Random(0)
    letters = string.ascii_lowercase
    width = (scale.max_length - 11) // 2  # "shift: " + word + " = " + shifted word + EOS
    paths = {}
    for split, count in (("train", scale.train_rows), ("validation", scale.validation_rows)):
        paths[split] = folder / f"{split}.jsonl"
        with paths[split].open("w") as handle:
            for i in range(count):
                word = "".join(rng.choice(letters) for _ in range(width))
                shifted = "".join(letters[(letters.index(c) + 1) % 26] for c in word)
                row = {"id": f"{split}-{i:05d}", "prompt": f"shift: {word} = ", "completion": shifted}
                handle.write(json.dumps(row) + "\n")
    return paths


def write_config(folder: Path, method: str, model: Path, data: dict[str, Path], scale: Scale) -> Path:
    """An hpo.yaml for one arm: trials in this process (workers 0, so its memory peak is the trials'), batch 8 x 1
    (TRL's default too), a small space (learning rate, LoRA rank); trial 0 is the train defaults (the warm start)."""
    path = folder / f"hpo-{method}.yaml"
    trial_timeout = scale.timeouts[method] - 10
    path.write_text(
        f"""model:
  name: {model}
  method: {method}
  dtype: {scale.model_dtype}
data:
  format: prompt_completion
  train: {data["train"]}
  validation: {data["validation"]}
  max_length: {scale.max_length}
search:
  n_trials: {scale.trials}
  sampler: tpe
  pruner: hyperband
  seed: 0
  workers: 0
  trial_timeout: {trial_timeout}
  budget: {{max_steps: {scale.max_steps}, eval_every: {scale.eval_every}}}
  space:
    learning_rate: {{low: 5.0e-5, high: 5.0e-4, log: true}}
    lora_r: {{choices: [8, 16, 32]}}
train:
  per_device_train_batch_size: 8
  gradient_accumulation_steps: 1
  per_device_eval_batch_size: 16
output:
  dir: {folder / f"runs-{method}"}
"""
    )
    return path


# ---------------------------------------------------------------------------------------------------- phases


@dataclass
class Bench:
    """The run: where it writes, its deadline, and everything measured so far (written after every phase)."""

    scale: Scale
    work: Path
    out: Path
    deadline: float
    results: dict[str, Any]

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        target = self.out / "gpu_trials.json"
        partial = target.with_suffix(".json.partial")
        partial.write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        partial.replace(target)

    def record(self, phase: str, entry: dict[str, Any]) -> dict[str, Any]:
        self.results["phases"][phase] = entry
        self.write()
        return entry

    def skip(self, phase: str, reason: str) -> dict[str, Any]:
        say(f"phase {phase}: skipped: {reason}")
        return self.record(phase, {"status": "skipped", "reason": reason})

    def run(self, phase: str, kind: str, spec: dict[str, Any], what: str) -> dict[str, Any]:
        """One phase in its own process: announced, timed, stopped at its timeout (Ctrl-C first, so it writes what
        it measured, then SIGKILL), its result recorded at once."""
        left = self.deadline - time.monotonic()
        timeout = min(self.scale.timeouts[phase], left)
        if timeout < 20:
            return self.skip(phase, f"out of time: {left:.0f} s left of the {self.scale.budget_s:.0f} s budget")
        say(f"phase {phase}: {what} (timeout {timeout:.0f} s)")
        spec_path, result_path = self.work / f"{phase}.spec.json", self.work / f"{phase}.result.json"
        spec_path.write_text(json.dumps(spec, default=str))
        result_path.unlink(missing_ok=True)
        command = [sys.executable, str(ROOT / "benchmarks" / "gpu_phases.py"), kind, str(spec_path), str(result_path)]
        started = time.monotonic()
        with (self.out / "gpu_trials.log").open("a") as log:
            log.write(f"==> phase {phase}: {what}\n")
        code, timed_out = run_bounded(command, timeout, self.out / "gpu_trials.log")
        entry = json.loads(result_path.read_text()) if result_path.is_file() else {"status": "failed"}
        entry["process_exit_code"] = code
        if timed_out:
            entry["status"], entry["reason"] = "timeout", f"stopped after {timeout:.0f} s"
        entry["wall_s"] = round(time.monotonic() - started, 1)
        say(f"phase {phase}: {entry['status']} in {entry['wall_s']} s")
        return self.record(phase, entry)


def run_bounded(command: list[str], timeout: float, log: Path) -> tuple[int, bool]:
    """Run `command`, its output copied line by line to our stderr and appended to `log` (the device returns only
    the end of what a command prints); past `timeout`, Ctrl-C its process group, then kill it. Returns its exit
    code, and True when it ran out of time."""
    # Offline: everything is local. Without it, huggingface_hub's telemetry thread and datasets' load counter call
    # out; here TRL's 4 tiny steps then ran 0.7-2.1 s each instead of 0.09 (cause not traced further), and on the
    # device, which reaches nothing, each call could only wait for its timeout.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    pipe = subprocess.PIPE
    process = subprocess.Popen(command, env=env, start_new_session=True, stdout=pipe, stderr=subprocess.STDOUT)
    pump = threading.Thread(target=copy_lines, args=(process.stdout, log), daemon=True)
    pump.start()
    timed_out = False
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        say(f"timeout: interrupting {Path(command[1]).name} {command[2]} after {timeout:.0f} s")
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    pump.join(timeout=10)
    return process.returncode, timed_out


def copy_lines(source: Any, log: Path) -> None:
    with log.open("a", encoding="utf-8", errors="replace") as handle:
        for raw in iter(source.readline, b""):
            line = raw.decode("utf-8", errors="replace")
            sys.stderr.write(line)
            sys.stderr.flush()
            handle.write(line)
            handle.flush()


def run_phases(bench: Bench, wanted: tuple[str, ...]) -> None:
    scale, work = bench.scale, bench.work
    model = work / "model"
    data = write_data(work, scale)
    configs = {m: write_config(work, m, model, data, scale) for m in ("lora", "qlora")}
    for method in configs:  # a study left in a reused --work folder would resume instead of running its trials
        shutil.rmtree(work / f"runs-{method}", ignore_errors=True)
    bench.results["inputs"] = {"configs": {m: p.read_text() for m, p in configs.items()}, "scale": asdict(scale)}
    shape = {"shape": scale.shape, "save_dtype": scale.save_dtype, "max_length": scale.max_length}
    built = bench.run("build", "build", {**shape, "folder": str(model)}, "random-init model and tokenizer")
    if built.get("status") != "ok":
        for phase in PHASES[1:]:
            bench.skip(phase, "no model: the build phase failed")
        return
    cuda = bool(built.get("cuda"))
    steps = f"{scale.trials} trials x {scale.max_steps} steps"
    for phase in PHASES[1:]:
        if phase not in wanted:
            bench.skip(phase, "not in --phases")
        elif phase in ("qlora", "plan") and not cuda:
            bench.skip(phase, "needs CUDA")
        elif phase in ("lora", "qlora"):
            bench.run(phase, "search", {"config": str(configs[phase])}, f"hpo-action search, {phase}, {steps}")
        elif phase == "trl":
            spec = {"config": str(configs["lora"]), "max_steps": scale.max_steps}
            bench.run(phase, "trl", spec, f"plain SFTTrainer, TRL's default SFTConfig, {scale.max_steps} steps")
        else:
            spec = {"config": str(configs["lora"]), "limit": scale.plan_limit}
            bench.run(phase, "plan", spec, f"hpo-action plan (lora, max_length {scale.max_length})")


# ---------------------------------------------------------------------------------------------------- report


def arm_numbers(entry: dict[str, Any]) -> dict[str, Any]:
    """An arm's headline numbers: trial 0 (the train defaults, the same LoRA config as the TRL run) and the
    median over every trial that ran steps."""
    timed = [t for t in entry.get("trials", []) if t.get("s_per_step")]
    first = next((t for t in timed if t["number"] == 0), None)
    finals = [t["eval_loss"] for t in entry.get("trials", []) if t.get("eval_loss") is not None]

    def median(key: str) -> float | None:
        values = [t[key] for t in timed if t.get(key) is not None]
        return statistics.median(values) if values else None

    states: dict[str, int] = {}
    for trial in entry.get("trials", []):
        states[trial["state"]] = states.get(trial["state"], 0) + 1
    return {
        "states": states,
        "trial0": {k: first.get(k) for k in ("s_per_step", "tokens_per_s", "train_s_per_step", "train_tokens_per_s")}
        if first
        else None,
        "median_s_per_step": median("s_per_step"),
        "median_tokens_per_s": median("tokens_per_s"),
        "best_eval_loss": min(finals) if finals else None,
    }


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """hpo-action tokens/s ÷ TRL-default tokens/s on the same model, data, LoRA config and steps."""
    lora, trl = results["phases"].get("lora", {}), results["phases"].get("trl", {})
    theirs = trl.get("tokens_per_s")
    first = (lora.get("numbers") or {}).get("trial0") or {}
    if not theirs or not first.get("tokens_per_s"):
        return {"note": "not computed: the lora or the trl phase has no throughput"}
    found = {"trial0_wall": first["tokens_per_s"] / theirs}
    if first.get("train_tokens_per_s"):
        found["trial0_training_only"] = first["train_tokens_per_s"] / theirs
    found["definition"] = (
        "trial0_wall: hpo-action trial 0's training tokens / its recorded seconds (attach, training, evaluations, "
        "save) over TRL's tokens / train_runtime; trial0_training_only: the evaluations taken out"
    )
    return found


def fmt(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def table(results: dict[str, Any]) -> str:
    phases, device = results["phases"], results.get("device", {})
    lines = [
        f"hpo-action GPU trials ({results['mode']}): {device.get('device', '?')}; "
        + ", ".join(f"{k} {results['versions'][k]}" for k in LIBRARIES),
        f"{'arm':<22}{'status':<9}{'dtype':<22}{'trials':<22}{'s/step t0':>10}{'tok/s t0':>10}"
        f"{'s/step med':>11}{'peak GiB':>9}{'eval_loss':>10}{'wall s':>8}",
    ]
    for arm in ("lora", "qlora"):
        entry = phases.get(arm, {})
        numbers, first = entry.get("numbers") or {}, (entry.get("numbers") or {}).get("trial0") or {}
        states = ", ".join(f"{n} {s}" for s, n in (numbers.get("states") or {}).items()) or entry.get("reason", "")
        dtype = entry.get("dtype", "-") + (" + 4-bit nf4" if arm == "qlora" and "dtype" in entry else "")
        lines.append(
            f"{'hpo-action ' + arm:<22}{entry.get('status', '-'):<9}{dtype:<22}{states[:21]:<22}"
            f"{fmt(first.get('s_per_step')):>10}{fmt(first.get('tokens_per_s'), ',.0f'):>10}"
            f"{fmt(numbers.get('median_s_per_step')):>11}{fmt(entry.get('peak_memory_gib')):>9}"
            f"{fmt(numbers.get('best_eval_loss'), '.4g'):>10}{fmt(entry.get('wall_s')):>8}"
        )
    trl = phases.get("trl", {})
    precision = f"{trl.get('weights_dtype', '-')}{'+bf16 amp' if trl.get('bf16_autocast') else ''}"
    precision += ", GC" if trl.get("gradient_checkpointing") else ""
    lines.append(
        f"{'TRL defaults (LoRA)':<22}{trl.get('status', '-'):<9}{precision:<22}{trl.get('reason', '1 run')[:21]:<22}"
        f"{fmt(trl.get('s_per_step')):>10}{fmt(trl.get('tokens_per_s'), ',.0f'):>10}{'':>11}"
        f"{fmt(trl.get('peak_memory_gib')):>9}{fmt(trl.get('eval_loss'), '.4g'):>10}{fmt(trl.get('wall_s')):>8}"
    )
    found = results.get("ratio", {})
    lines.append(
        "ratio hpo-action ÷ TRL defaults (tokens/s, trial 0): "
        + (f"{found['trial0_wall']:.2f}x wall" if "trial0_wall" in found else found.get("note", "-"))
        + (f", {found['trial0_training_only']:.2f}x training only" if "trial0_training_only" in found else "")
    )
    plan = phases.get("plan", {})
    planned = plan.get("describe") or plan.get("reason") or plan.get("error", "-")
    lines.append(f"plan: {plan.get('status', '-')}: {planned} (phase wall {fmt(plan.get('wall_s'))} s)")
    walls = ", ".join(f"{p} {fmt(phases.get(p, {}).get('wall_s'))}" for p in PHASES)
    lines.append(f"phase wall times (s): {walls}; total {fmt(results.get('total_s'))}")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    found = {}
    for name in (*LIBRARIES, *BENEATH):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def commit() -> str | None:
    """The checked-out commit, when the tree is a git checkout (the device machine's copy may not be)."""
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() or None


def main() -> None:
    parser = argparse.ArgumentParser(description="GPU benchmark: hpo-action LoRA, QLoRA, TRL's defaults, plan.")
    parser.add_argument("--tiny", action="store_true", help="A 2-layer float32 model and 4 steps: checks on a CPU.")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="Folder for gpu_trials.json.")
    parser.add_argument("--work", help="Folder for the model, data and runs (default: a temporary folder).")
    parser.add_argument("--budget-s", type=float, help="Seconds for the whole script (default: the mode's).")
    parser.add_argument("--phases", default=",".join(PHASES[1:]), help="Phases after build, comma-separated.")
    args = parser.parse_args()
    scale = TINY if args.tiny else FULL
    if args.budget_s:
        scale = replace(scale, budget_s=args.budget_s)
    started = time.monotonic()
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-trials-")).resolve()  # removed at the end unless given
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"mode": "tiny" if args.tiny else "full", "commit": commit(), "versions": versions()}
    results["phases"] = {}
    if args.tiny:
        results["note"] = "tiny mode: a check of the code paths on a small model; its numbers say nothing about speed"
    bench = Bench(scale, work, Path(args.out).resolve(), started + scale.budget_s, results)
    bench.out.mkdir(parents=True, exist_ok=True)
    (bench.out / "gpu_trials.log").write_text("")  # every phase's output, also what the device's tail cuts off
    say(f"mode {results['mode']}, budget {scale.budget_s:.0f} s, work folder {work}, results in {bench.out}")
    run_phases(bench, tuple(p.strip() for p in args.phases.split(",")))
    built = results["phases"]["build"]
    results["device"] = {k: built.get(k) for k in ("device", "capability", "total_memory_gib", "torch_cuda")}
    for arm in ("lora", "qlora"):
        if results["phases"][arm].get("trials"):
            results["phases"][arm]["numbers"] = arm_numbers(results["phases"][arm])
    results["ratio"] = ratios(results)
    results["total_s"] = round(time.monotonic() - started, 1)
    bench.write()
    print(table(results), flush=True)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
