"""Click entry point: parse → one pipeline call → print. Errors become one line and an exit code here."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from .config import PRUNERS, SAMPLERS, HpoConfig, apply_overrides, load_config, parse_set_option
from .errors import HpoActionError

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
            "--n-trials", type=click.IntRange(min=1), help="Run N more trials (default: up to search.n_trials)."
        ),
        click.option(
            "--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds after which no trial starts."
        ),
        click.option("--output", help="Output folder (overrides output.dir)."),
        click.option("--storage", help="Optuna storage URL or journal file (default: sqlite in the output folder)."),
        click.option("--study-name", help="Study name (default: derived from the config)."),
        click.option("--seed", type=int, help="Sampler seed."),
        click.option("--sampler", type=click.Choice(SAMPLERS), help="Sampler."),
        click.option("--pruner", type=click.Choice(PRUNERS), help="Pruner."),
        click.option("--method", type=click.Choice(["lora", "qlora", "full"]), help="Fine-tuning method."),
        click.option("--model", help="Base model (overrides model.name)."),
        click.option("--max-steps", type=click.IntRange(min=1), help="Training steps per trial."),
        click.option("--eval-every", type=click.IntRange(min=1), help="Evaluate every N steps."),
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
    overrides = {OVERRIDES[name]: value for name, value in flags.items() if name in OVERRIDES}
    overrides.update(parse_set_option(item) for item in set_items)
    return apply_overrides(cfg, overrides) if any(v is not None for v in overrides.values()) else cfg


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="hpo-action")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """hpo-action: tune TRL SFT hyperparameters with Optuna, gate on significance, publish the winner."""
    ctx.obj = {"debug": debug}


@cli.command()
@study_options
def run(config_path: str, n_trials: int | None, set_items: tuple[str, ...], **flags: Any) -> None:
    """Run the whole job: search (resuming a study already there), then report.

    Example: hpo-action run -c examples/quickstart/hpo.yaml
    """
    from .pipeline import search as run_search

    cfg = _config_from(config_path, set_items, **flags)
    run_search(cfg, extra_trials=n_trials)


@cli.command()
@study_options
def search(config_path: str, n_trials: int | None, set_items: tuple[str, ...], **flags: Any) -> None:
    """Search only: run the missing trials of the study and write trials.csv, best/ and summary.json.

    Example: hpo-action search -c hpo.yaml --n-trials 4 --storage postgresql+psycopg://user@db/hpo
    """
    from .pipeline import search as run_search

    cfg = _config_from(config_path, set_items, **flags)
    run_search(cfg, extra_trials=n_trials)


def main(argv: list[str] | None = None) -> None:
    """Console script: HpoActionError → `error: …` on stderr and its exit code; no traceback unless --debug."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="hpo-action", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except HpoActionError as err:
        if debug:
            raise
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command again to resume", err=True)
        sys.exit(130)
    except Exception as err:
        if debug:
            raise
        click.echo(f"error: unexpected {type(err).__name__}: {err} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)
