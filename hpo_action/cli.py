"""Click entry point: parse → one pipeline call → print. Errors become one line and an exit code here."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from hpo_action.config import (
    GATE_TESTS,
    GITHUB_ISSUER,
    PRUNERS,
    SAMPLERS,
    GateConfig,
    HpoConfig,
    apply_overrides,
    load_config,
    parse_set_option,
)
from hpo_action.errors import ConfigError, HpoActionError
from hpo_action.interrupts import exit_interrupted, remember_ctrl_c
from hpo_action.notices import say
from hpo_action.redaction import redact_text, secrets_in_data, url_secrets
from hpo_action.report import github

# CLI flag → dotted config key; None values (flag not given) leave the config as it is.
OVERRIDES = {
    "timeout": "search.timeout",
    "output": "output.dir",
    "storage": "search.storage",
    "study_name": "search.study_name",
    "seed": "search.seed",
    "sampler": "search.sampler",
    "pruner": "search.pruner",
    "method": "model.method",
    "model": "model.name",
    "max_steps": "search.budget.max_steps",
    "eval_every": "search.budget.eval_every",
    "registry": "registry.uri",
    "workers": "search.workers",
}


def study_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by every command that runs a study, defined once."""
    options = [
        click.option(
            "-c",
            "--config",
            "config_path",
            required=True,
            type=click.Path(dir_okay=False),
            help="YAML config, e.g. examples/quickstart/hpo.yaml.",
        ),
        click.option(
            "--n-trials",
            type=click.IntRange(min=0),
            help="Run N more trials (default: up to search.n_trials); 0 runs none, e.g. after search workers.",
        ),
        click.option(
            "--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds after which no trial starts."
        ),
        click.option("--output", help="Output folder (overrides output.dir)."),
        click.option(
            "--storage",
            help="Optuna storage URL or journal file (default: $HPO_STORAGE, else search.storage, else sqlite in the "
            "output folder). Prefer HPO_STORAGE for a URL with a password: it never appears in the process list.",
        ),
        click.option("--study-name", help="Study name (default: derived from the config)."),
        click.option("--seed", type=int, help="Sampler seed."),
        click.option("--sampler", type=click.Choice(SAMPLERS), help="Sampler."),
        click.option("--pruner", type=click.Choice(PRUNERS), help="Pruner."),
        click.option("--method", type=click.Choice(["lora", "qlora", "full"]), help="Fine-tuning method."),
        click.option("--model", help="Base model (overrides model.name)."),
        click.option("--max-steps", type=click.IntRange(min=1), help="Training steps per trial."),
        click.option("--eval-every", type=click.IntRange(min=1), help="Evaluate every N steps."),
        click.option(
            "--workers",
            type=click.IntRange(min=0),
            help="Worker processes on this machine (one GPU each when present); 0 runs trials in this process.",
        ),
        click.option(
            "--set",
            "set_items",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override any config key, e.g. --set train.learning_rate=1e-3 (repeatable).",
        ),
    ]
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


def _config_from(config_path: str, set_items: tuple[str, ...], **flags: Any) -> HpoConfig:
    cfg = load_config(config_path)
    _protect(cfg)
    if flags.get("storage") is None and os.environ.get("HPO_STORAGE"):  # a database URL kept off the command line
        flags["storage"] = os.environ["HPO_STORAGE"]
    overrides = {OVERRIDES[name]: value for name, value in flags.items() if name in OVERRIDES and value is not None}
    overrides.update(parse_set_option(item) for item in set_items)  # `--set key=null` unsets the key
    return apply_overrides(cfg, overrides) if overrides else cfg


# Every secret this command knows (command line, environment, config file): scrubbed from every error message.
_SECRETS: list[str] = []


def _protect(cfg: HpoConfig) -> None:
    """The config file's own secrets (a password in search.storage, in a registry URI) join the command line's:
    masked in GitHub Actions before the command prints its first line, and scrubbed from its errors."""
    _remember(url_secrets(cfg.search.storage or "") + secrets_in_data(cfg.model_dump()))


def _remember(secrets: list[str]) -> None:
    new = [secret for secret in dict.fromkeys(secrets) if secret not in _SECRETS]
    _SECRETS.extend(new)
    env = github.actions_env()
    if env is not None:
        github.mask(new, env)


def _starting(command: str, config_path: str, cfg: HpoConfig) -> None:
    """The first line, printed before the slow imports (torch, transformers) so a run is never silent."""
    say(f"hpo-action {command} {config_path}: {cfg.model.name} ({cfg.model.method}); loading torch and transformers")


def _trusted_publishing(uri: str | None) -> None:
    """In GitHub Actions with `id-token: write` and no HF token, huggingface_hub exchanges the job's OIDC token."""
    from hpo_action.ship.registry import oidc_resource

    env = github.actions_env()
    resource = oidc_resource(env, uri) if env is not None else None
    if resource:
        os.environ["HF_OIDC_RESOURCE"] = resource


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="hpo-action")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """hpo-action: tune TRL SFT hyperparameters with Optuna, gate on significance, publish the winner."""
    ctx.obj = {"debug": debug}


@cli.command()
@study_options
@click.option(
    "--champion-predictions",
    type=click.Path(dir_okay=False),
    help="The champion's test predictions JSONL; the candidate is gated against it instead of the base model.",
)
@click.option(
    "--registry", help="Publish a promoted model here: a folder, hf://namespace/name or mlflow://<model name>[@alias]."
)
@click.option("--fail-on-reject", is_flag=True, help="Exit 3 unless the gate promotes.")
@click.option(
    "--skip-search",
    is_flag=True,
    help="Run no trial: evaluate, gate and publish the study's best (the leader after `search` workers).",
)
@click.option(
    "--allow-partial",
    is_flag=True,
    help="With --skip-search: gate the study's best even when trials are missing, running or waiting for a retry.",
)
@click.option(
    "--comment-pr",
    is_flag=True,
    help="In GitHub Actions, write the summary as one PR comment, updated in place (needs pull-requests: write).",
)
@click.option(
    "--allow-unsigned-champion",
    is_flag=True,
    help="Gate against a champion without a signature (a registry that predates signing); its files are still "
    "checked against its attestation when it has one.",
)
def run(
    config_path: str,
    n_trials: int | None,
    set_items: tuple[str, ...],
    champion_predictions: str | None,
    fail_on_reject: bool,
    skip_search: bool,
    allow_partial: bool,
    comment_pr: bool,
    allow_unsigned_champion: bool,
    **flags: Any,
) -> None:
    """Run the whole job: search (resuming a study already there), evaluate the best trial once on the
    held-out test split, and gate it against the champion (or the base model) and the forgetting sets.

    Example: hpo-action run -c examples/quickstart/hpo.yaml --workers 2
    """
    if skip_search and n_trials:
        raise ConfigError("--skip-search runs no trial: drop --n-trials")
    n_trials = 0 if skip_search else n_trials
    cfg = _config_from(config_path, set_items, **flags)
    _starting("run", config_path, cfg)
    from hpo_action.pipeline import run as run_job

    _trusted_publishing(cfg.registry.uri)
    champion = Path(champion_predictions) if champion_predictions else None
    result = run_job(
        cfg,
        n_trials,
        champion,
        comment_pr=comment_pr,
        allow_partial=allow_partial,
        allow_unsigned_champion=allow_unsigned_champion,
    )
    if fail_on_reject and not result.promote:
        sys.exit(3)


@cli.command()
@study_options
def search(config_path: str, n_trials: int | None, set_items: tuple[str, ...], **flags: Any) -> None:
    """Search only: run the missing trials of the study and write trials.csv, best/ and summary.json.

    Example: hpo-action search -c hpo.yaml --n-trials 4 --storage postgresql+psycopg://user@db/hpo
    """
    cfg = _config_from(config_path, set_items, **flags)
    _starting("search", config_path, cfg)
    from hpo_action.pipeline import search as run_search

    run_search(cfg, extra_trials=n_trials)


@cli.command("lr-find")
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML config.")
@click.option("--steps", type=click.IntRange(min=10), default=100, show_default=True, help="Steps of the test.")
@click.option("--start-lr", type=click.FloatRange(min=0, min_open=True), default=1e-6, show_default=True)
@click.option("--end-lr", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
@click.option("--output", help="Output folder (overrides output.dir); writes lr_find/ there.")
@click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
def lr_find_command(
    config_path: str, steps: int, start_lr: float, end_lr: float, output: str | None, set_items: tuple[str, ...]
) -> None:
    """Learning-rate range test: train the defaults with a rate growing exponentially from --start-lr to
    --end-lr, smooth the loss, suggest a rate and plot the curve (`search.lr_bounds: auto` runs it before a study).

    Example: hpo-action lr-find -c examples/quickstart/hpo.yaml
    """
    from hpo_action.pipeline import lr_find

    cfg = _config_from(config_path, set_items, output=output)
    result = lr_find(cfg, steps, start_lr, end_lr)
    click.echo(f"suggested learning rate: {result.suggestion:.3g} (smoothed loss minimum at {result.minimum:.3g})")


@cli.command("evaluate")
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML config.")
@click.option("--adapter", type=click.Path(file_okay=False), help="PEFT adapter folder, e.g. runs/best.")
@click.option("--base", is_flag=True, help="Score the base model itself.")
@click.option("--split", type=click.Choice(["test", "validation", "train"]), default="test", show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Predictions JSONL to write.")
@click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
def evaluate_command(
    config_path: str, adapter: str | None, base: bool, split: str, out: str, set_items: tuple[str, ...]
) -> None:
    """Score the base model or an adapter once, per example, on a split (metrics from evaluate.metrics).

    Example: hpo-action evaluate -c hpo.yaml --adapter runs/best --out candidate.jsonl
    """
    from hpo_action.pipeline import evaluate_split

    if bool(adapter) == base:
        raise ConfigError("evaluate: pass exactly one of --adapter PATH or --base")
    cfg = _config_from(config_path, set_items)
    evaluate_split(cfg, adapter and Path(adapter), split, Path(out))


@cli.command("tune-decoding")
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML config.")
@click.option("--adapter", required=True, type=click.Path(file_okay=False), help="Trained adapter folder (runs/best).")
@click.option(
    "--n-trials", type=click.IntRange(min=1), help="Decoding trials, greedy included (evaluate.decoding_trials)."
)
@click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
def tune_decoding(config_path: str, adapter: str, n_trials: int | None, set_items: tuple[str, ...]) -> None:
    """Tune temperature, top_p, top_k, repetition_penalty and max_new_tokens of a trained adapter on the validation
    split (greedy is trial 0 and is kept unless beaten); writes ADAPTER/generation_config.json, which every later
    evaluation and publication of the adapter uses.

    Example: hpo-action tune-decoding -c hpo.yaml --adapter runs/best --n-trials 24
    """
    from hpo_action.pipeline import tune_decoding as run_tuning

    cfg = _config_from(config_path, set_items)
    run_tuning(cfg, Path(adapter), n_trials)


@cli.command()
@click.option(
    "--registry", "uri", required=True, help="A folder, hf://namespace/name or mlflow://<model name>[@alias]."
)
@click.option("--from", "run_dir", required=True, type=click.Path(file_okay=False), help="A gated run folder.")
@click.option("--dry-run", is_flag=True, help="Render the card and list the commit's files without writing.")
def publish(uri: str, run_dir: str, dry_run: bool) -> None:
    """Publish a promoted run as the new champion (compare-and-swap against the champion the gate read).

    Example: hpo-action publish --registry ./registry --from runs --dry-run
    """
    from hpo_action.ship.publish import publish_run

    _trusted_publishing(uri)
    outcome = publish_run(Path(run_dir), uri, dry_run=dry_run)
    if outcome.champion is None:
        click.echo(outcome.card)
        click.echo("would publish: " + ", ".join(outcome.files), err=True)
    else:
        champion = outcome.champion
        click.echo(f"published v{champion.version} to {champion.uri} (revision {champion.revision[:12]})")


@cli.command()
@click.option(
    "--registry", "uri", required=True, help="A folder, hf://namespace/name or mlflow://<model name>[@alias]."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: version, path, revision, uri, params.")
def champion(uri: str, as_json: bool) -> None:
    """Show the current champion of a registry.

    Example: hpo-action champion --registry ./registry --json
    """
    import json

    from hpo_action.ship.registry import open_registry

    _trusted_publishing(uri)
    current = open_registry(uri).read_champion()
    if as_json:
        click.echo(json.dumps(current.to_json() if current else None, indent=2))
    elif current is None:
        click.echo(f"{uri}: no champion yet")
    else:
        click.echo(f"v{current.version} at {current.path} (revision {current.revision[:12]})")


@cli.command()
@click.argument("target", metavar="REGISTRY[:VERSION]")
@click.option("--key", type=click.Path(dir_okay=False), help="Key signatures: the PEM public key (or private key).")
@click.option("--identity", help="Keyless signatures: the signer to trust, e.g. the workflow's URI at its ref.")
@click.option(
    "--issuer",
    default=GITHUB_ISSUER,
    show_default=True,
    help="Keyless signatures: the OIDC issuer the certificate must name.",
)
@click.option("--allow-unsigned", is_flag=True, help="Accept an unsigned version (its files are still checked).")
@click.option("--json", "as_json", is_flag=True, help="Print the signer and the gate's evidence as JSON.")
def verify(
    target: str, key: str | None, identity: str | None, issuer: str, allow_unsigned: bool, as_json: bool
) -> None:
    """Verify a published version (the champion unless VERSION is given): its model-signing signature, every file
    against the signed manifest, and the gate's attestation; print who signed it, when, from which workflow, and
    the evidence. Exit 0 verified; 1 a file, the signature or the attestation does not match (named), or the
    version is unsigned; 2 bad input (no such version, no key or identity to check against).

    Example: hpo-action verify hf://me/adapter:3 --identity https://github.com/me/repo/.github/workflows/hpo.yml@refs/heads/main
    """
    import json

    from hpo_action.ship.signing import Trust
    from hpo_action.ship.verify import parse_target, verify_version

    uri, version = parse_target(target)
    _trusted_publishing(uri)
    trust = Trust(key=Path(key) if key else None, identity=identity, issuer=issuer)
    checked = verify_version(uri, version, trust, allow_unsigned)
    if as_json:
        click.echo(json.dumps(checked.to_json(), indent=2))
    else:
        click.echo("\n".join(checked.describe()))


def _gate_default(name: str) -> str:
    return f"(default {GateConfig.model_fields[name].default})"


@cli.command("gate")
@click.option("--candidate", required=True, type=click.Path(dir_okay=False), help="Candidate predictions JSONL.")
@click.option(
    "--champion",
    "--reference",
    "reference",
    required=True,
    type=click.Path(dir_okay=False),
    help="Champion (or base model) predictions JSONL, paired by id.",
)
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Read the gate section (and the primary metric) from this hpo.yaml; flags override it.",
)
@click.option(
    "--metric",
    help="Primary metric (default: the config's, else the first one evaluate recorded, else the only numeric field).",
)
@click.option("--test", type=click.Choice(GATE_TESTS), help=GateConfig.model_fields["test"].description)
@click.option("--direction", type=click.Choice(["maximize", "minimize"]), help="Override the metric's direction.")
@click.option("--alpha", type=float, help=f"Level of every one-sided test {_gate_default('alpha')}.")
@click.option("--min-effect", type=float, help=f"Improvement the test must exceed {_gate_default('min_effect')}.")
@click.option("--target-effect", type=float, help=f"Smallest gain worth having {_gate_default('target_effect')}.")
@click.option("--power", type=float, help=f"Power of the MDE and needed n {_gate_default('power')}.")
@click.option(
    "--score-range",
    type=float,
    nargs=2,
    metavar="LOW HIGH",
    help="The range of every per-example score, for the betting test (loss and perplexity have their own).",
)
@click.option("--resamples", type=int, help=f"Resamples of the resampling tests {_gate_default('resamples')}.")
@click.option("--seed", type=int, help=f"Seed of the resampling tests {_gate_default('seed')}.")
@click.option("--forgetting", multiple=True, metavar="NAME=CAND,REF[,MARGIN[,METRIC]]", help="Repeatable.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write gate.json here.")
@click.option("--fail-on-reject", is_flag=True, help="Exit 3 unless the decision is promote.")
def gate_command(
    candidate: str,
    reference: str,
    config_path: str | None,
    metric: str | None,
    forgetting: tuple[str, ...],
    out: str | None,
    fail_on_reject: bool,
    **settings: Any,
) -> None:
    """Gate two prediction files: a significant improvement on the primary metric, non-inferiority on forgetting
    sets. Without METRIC, a forgetting pair is gated on the primary metric's name.

    Example: hpo-action gate --candidate cand.jsonl --champion champ.jsonl --forgetting copy=c.jsonl,b.jsonl,0.02
    """
    from hpo_action.judge.gate_files import parse_forgetting_files
    from hpo_action.pipeline import gate_files

    base = GateConfig()
    if config_path is not None:
        loaded = load_config(config_path)
        base, metric = loaded.gate, metric or loaded.primary_metric
    given = {key: value for key, value in settings.items() if value is not None}
    try:
        cfg = GateConfig.model_validate({**base.model_dump(exclude={"forgetting"}), **given})
    except ValidationError as err:
        first = err.errors()[0]
        where = "-".join(map(str, first["loc"])).replace("_", "-") or "gate"
        raise ConfigError(f"--{where}: {first['msg'].removeprefix('Value error, ')}") from None
    files = parse_forgetting_files(forgetting)
    result = gate_files(Path(candidate), Path(reference), cfg, metric, files, out and Path(out))
    if fail_on_reject and not result.promote:
        sys.exit(3)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--out", type=click.Path(dir_okay=False), help="Write here instead of RUN_DIR/report.md.")
def report(run_dir: str, out: str | None) -> None:
    """Write a finished run's report.md (verdict, gate and forgetting tables, best parameters, trials).

    Example: hpo-action report runs --out report.md
    """
    from hpo_action.pipeline import report as write_report

    click.echo(f"wrote {write_report(Path(run_dir), out and Path(out))}")


@cli.command()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML config.")
@click.option("--write", is_flag=True, help="Write the micro-batch and accumulation pair into the config file.")
@click.option("--limit", type=click.IntRange(min=1), default=256, show_default=True, help="Largest batch to try.")
@click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
def plan(config_path: str, write: bool, limit: int, set_items: tuple[str, ...]) -> None:
    """Find the largest per-device batch that fits on this CUDA GPU for the configured model, method and
    max_length (trial steps that catch out-of-memory), and print the micro-batch x accumulation pair for the
    configured effective batch. CUDA only.

    Example: hpo-action plan -c hpo.yaml --write
    """
    from hpo_action.pipeline import plan as plan_batch

    cfg = _config_from(config_path, set_items)
    plan_batch(cfg, Path(config_path) if write else None, limit)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON (code, severity, evidence, remedy).")
def doctor(run_dir: str, as_json: bool) -> None:
    """Diagnose a finished run from its trial curves, search space and gate: each finding with its evidence and
    the remedy (learning rate too high or too low, overfitting, spikes, OOM, too few trials, an over-eager pruner,
    the best trial at a range's edge, a test set too small for the target effect).

    Example: hpo-action doctor runs --json
    """
    import json

    from hpo_action.pipeline import doctor as diagnose_run

    findings = diagnose_run(Path(run_dir))
    if as_json:
        click.echo(json.dumps([finding.to_json() for finding in findings], indent=2))
        return
    if not findings:
        click.echo(f"{run_dir}: no findings: nothing in the curves, the space or the gate looks wrong")
    for finding in findings:
        click.echo(finding.text())


@cli.command()
@click.argument("folder", default=".", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite files that are already there.")
@click.option(
    "--size",
    type=click.Choice(["small", "medium", "large"]),
    help="Dataset size (<1k, 1k-10k, >10k rows): method, train defaults, budget and space from its guidance.",
)
@click.option(
    "--data",
    "data_file",
    type=click.Path(dir_okay=False, exists=True),
    help="Your training file: its row count picks the size and the step budget.",
)
@click.option(
    "--model",
    help="The base model (Hub id or local folder): its parameter count, read from its config.json, sizes the starter.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cuda", "cpu"]),
    default="auto",
    show_default=True,
    help="Where it will train (auto: this machine): QLoRA only on CUDA.",
)
def init(folder: str, force: bool, size: str | None, data_file: str | None, model: str | None, device: str) -> None:
    """Start a project: a commented hpo.yaml that runs as is on the tiny demo model and data/, a GitHub workflow
    (.github/workflows/hpo.yml) and .gitignore lines. With --size, --data or --model, the method, batch, train
    defaults, budget and space follow templates/starting_points.yaml for the data's size, the model's parameter
    count and the device. Refuses to overwrite without --force.

    Example: hpo-action init my-project --data train.jsonl --model Qwen/Qwen2.5-0.5B
    """
    from hpo_action.data.loading import count_rows
    from hpo_action.init import write_starter

    rows = count_rows(Path(data_file)) if data_file else None
    if size is not None and rows is not None:
        raise ConfigError("init: pass --size or --data, not both (--data infers the size from its rows)")
    for path in write_starter(Path(folder), force=force, size=size, rows=rows, model=model, device=device):
        click.echo(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    """Console script: HpoActionError → `error: …` on stderr and its exit code; no traceback unless --debug. Every
    message leaves with the secrets of the command line and the environment scrubbed (and, in GitHub Actions,
    masked before anything is printed)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    env = github.actions_env()
    from hpo_action.ship.registry import registry_secrets

    _SECRETS.clear()  # this invocation's secrets (tests call main() many times in one process)
    _remember(github.secret_values(dict(os.environ), args) + registry_secrets(dict(os.environ)))  # before any print
    remember_ctrl_c()
    try:
        cli.main(args=args, prog_name="hpo-action", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        exit_interrupted()
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except HpoActionError as err:
        if debug:
            raise
        _fail(f"hpo-action: {type(err).__name__}", str(err), err.exit_code, env)
    except Exception as err:
        if debug:
            raise
        message = f"unexpected {type(err).__name__}: {err} (rerun with --debug for the traceback)"
        _fail(f"hpo-action: unexpected {type(err).__name__}", message, 1, env)


def _fail(title: str, message: str, code: int, env: dict[str, str] | None) -> None:
    message = redact_text(message, _SECRETS)
    if env is not None:
        github.error(title, message)
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
