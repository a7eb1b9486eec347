"""GitHub Actions glue: step outputs, the job summary, annotations, masks and the sticky PR comment.

Every function takes the environment as a dict, so tests drive it without a runner; `actions_env()` is the
only place that reads `os.environ`. Plots never go to a public image host: the summary and the comment name
them as files of the run's artifacts and of the registry's version.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from hpo_action.errors import HpoActionError
from hpo_action.judge.gate import GateDecision
from hpo_action.report.tables import verdict_markdown
from hpo_action.ship.card import github_run_url
from hpo_action.ship.registry import Champion

MARKER = "<!-- hpo-action -->"  # finds our PR comment again, so it is updated instead of piling up
SUMMARY_LIMIT = 1024 * 1024  # GitHub rejects a step summary over 1 MiB
COMMENT_LIMIT = 65536  # GitHub's limit on a comment body, in characters
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_ID_TOKEN", "GITHUB_TOKEN", "GH_TOKEN")
_URL_PASSWORD = re.compile(r"://[^/\s:@]*:([^@\s/]+)@")
_OUTPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def actions_env() -> dict[str, str] | None:
    """The environment when running in GitHub Actions, else None; the one read of os.environ in this module."""
    return dict(os.environ) if os.environ.get("GITHUB_ACTIONS") == "true" else None


def secret_values(env: dict[str, str], argv: Iterable[str] = ()) -> list[str]:
    """Tokens in the environment and database passwords in URLs (arguments, HPO_STORAGE), to mask in logs."""
    found = [env[name] for name in TOKEN_VARIABLES if env.get(name)]
    for text in (*argv, env.get("HPO_STORAGE", "")):
        for password in _URL_PASSWORD.findall(text):
            found.extend({password, urllib.parse.unquote(password)})
    return found


def mask(secrets: Iterable[str], env: dict[str, str], stream: TextIO | None = None) -> None:
    """`::add-mask::` each secret (line by line, as the runner matches them); call before printing anything."""
    if env.get("GITHUB_ACTIONS") != "true":
        return
    stream = stream or sys.stdout
    seen: set[str] = set()
    for secret in secrets:
        for line in secret.splitlines():
            if line.strip() and line not in seen:
                seen.add(line)
                print(f"::add-mask::{_escape_data(line)}", file=stream)
    stream.flush()


def oidc_resource(env: dict[str, str], registry_uri: str | None) -> str | None:
    """The repo to scope a trusted-publishing token to (HF_OIDC_RESOURCE), when the job can mint an OIDC token
    (`permissions: id-token: write`) and no token or resource was given; huggingface_hub does the exchange."""
    if env.get("GITHUB_ACTIONS") != "true" or not registry_uri or not registry_uri.startswith("hf://"):
        return None
    if any(env.get(name) for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE")):
        return None
    if not env.get("ACTIONS_ID_TOKEN_REQUEST_URL"):
        return None
    return registry_uri.removeprefix("hf://").strip("/")


@contextmanager
def group(title: str, stream: TextIO | None = None) -> Iterator[None]:
    """Fold the enclosed log lines under `title` in the run's log."""
    stream = stream or sys.stdout
    print(f"::group::{_escape_data(title)}", file=stream, flush=True)
    try:
        yield
    finally:
        print("::endgroup::", file=stream, flush=True)


def error(title: str, message: str, stream: TextIO | None = None) -> None:
    """An error annotation, shown on the run's page and in the PR's checks."""
    _command("error", title, message, stream)


def warning(title: str, message: str, stream: TextIO | None = None) -> None:
    _command("warning", title, message, stream)


def _command(kind: str, title: str, message: str, stream: TextIO | None) -> None:
    print(f"::{kind} title={_escape_property(title)}::{_escape_data(message)}", file=stream or sys.stdout, flush=True)


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def write_outputs(values: dict[str, str], env: dict[str, str]) -> None:
    """Append step outputs to $GITHUB_OUTPUT, each as a heredoc with a random delimiter, so no value (multi-line,
    or one holding `name=…` lines) can end early or set another output."""
    path = env.get("GITHUB_OUTPUT")
    if not path:
        return
    chunks = []
    for name, value in values.items():
        if not _OUTPUT_NAME.match(name):
            raise ValueError(f"invalid step output name {name!r}")
        delimiter = f"ghadelimiter_{uuid.uuid4()}"
        while delimiter in value:
            delimiter = f"ghadelimiter_{uuid.uuid4()}"
        chunks.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
    with open(path, "a", encoding="utf-8", newline="\n") as handle:
        handle.write("".join(chunks))


def write_summary(markdown: str, env: dict[str, str]) -> None:
    """Append to $GITHUB_STEP_SUMMARY, cut at a line so the step's summary stays within GitHub's 1 MiB."""
    path = env.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    used = Path(path).stat().st_size if Path(path).is_file() else 0
    note = "\n\n_Summary truncated at GitHub's 1 MiB limit; the full tables are in the run's artifacts._\n"
    with open(path, "a", encoding="utf-8", newline="\n") as handle:
        handle.write(_truncate(markdown, SUMMARY_LIMIT - used, note))


def _truncate(text: str, limit_bytes: int, note: str) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit_bytes:
        return text
    room = max(0, limit_bytes - len(note.encode("utf-8")))
    head = data[:room].decode("utf-8", errors="ignore")
    return head[: head.rfind("\n") + 1] + note


def read_trials(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def champion_info(champion: Champion | None, promoted: bool, env: dict[str, str]) -> dict[str, Any] | None:
    """What the summary and the outputs say about the registry's champion after this run."""
    if champion is None:
        return None
    if champion.uri.startswith("hf://"):
        endpoint = (env.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
        url = f"{endpoint}/{champion.uri.removeprefix('hf://')}/tree/{champion.revision}"
    else:
        url = str(champion.path)
    return {"version": champion.version, "uri": champion.uri, "url": url, "published": promoted}


def summary_markdown(
    summary: dict[str, Any],
    trials_rows: list[dict[str, Any]],
    gate: GateDecision | None,
    champion: dict[str, Any] | None = None,
    plots: Iterable[str] = (),
) -> str:
    """The job summary: verdict, gate tables, forgetting table, best parameters, the trial table and where the
    plots are (file names, not images: nothing is sent to a public host)."""
    lines = [f"## hpo-action: {gate.decision.upper()}" if gate else "## hpo-action: search", ""]
    best = summary.get("best")
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary.get("states", {}).items()))
    lines.append(
        f"`{summary.get('base_model')}` ({summary.get('method')}) · study `{summary.get('study_name')}` · "
        f"{summary.get('n_trials', len(trials_rows))} trials ({states or 'none'}) · "
        f"{summary.get('sampler')} sampler, {summary.get('pruner')} pruner · {_fmt(summary.get('elapsed_s'))} s"
    )
    lines.append("")
    if gate:
        lines += verdict_markdown(gate)
    if champion:
        what = "published as the new champion" if champion["published"] else "champion unchanged"
        lines += [f"**Registry:** {what}: v{champion['version']} at {champion['url']}", ""]
    metric = (summary.get("objective") or {}).get("metric", "value")
    if best:
        lines += [f"### Best trial #{best['number']}: {metric} = {_fmt(best['value'])}", ""]
        lines += _table(["parameter", "value"], [[name, _fmt(value)] for name, value in sorted(best["params"].items())])
    if trials_rows:
        lines += ["### Trials", ""]
        lines += _trials_table(trials_rows, metric, best["number"] if best else None)
    names = ", ".join(f"`plots/{name}`" for name in plots)
    if names:
        lines += [
            "### Plots",
            "",
            f"{names} in the output folder: upload it as a workflow artifact; a published version keeps them in the "
            "registry. They are not sent to any image host.",
            "",
        ]
    return "\n".join(lines)


def _trials_table(rows: list[dict[str, Any]], metric: str, best: int | None) -> list[str]:
    params = sorted({k for row in rows for k in row if k.startswith("param_")})
    body = []
    for row in rows:
        number = str(row["number"])
        body.append(
            [
                f"**{number}** ★" if best is not None and number == str(best) else number,
                str(row["state"]).lower(),
                _fmt(row.get("value")),
                _fmt(row.get("steps")),
                _fmt(row.get("seconds")),
                *(_fmt(row.get(p)) for p in params),
                _cell(str(row.get("error") or ""))[:120],
            ]
        )
    return _table(["#", "state", metric, "steps", "s", *(p.removeprefix("param_") for p in params), "error"], body)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows),
        "",
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _fmt(value: Any) -> str:
    """Numbers (also as read back from trials.csv) to 4 significant digits; empty cells as '-'."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(number)) if number.is_integer() and abs(number) < 1e15 else f"{number:.4g}"


def pull_request_number(env: dict[str, str]) -> int | None:
    """The PR this run is for: from the event payload (pull_request, or a comment on a PR), else refs/pull/N/."""
    event_path = env.get("GITHUB_EVENT_PATH")
    if event_path and Path(event_path).is_file():
        event = json.loads(Path(event_path).read_text(encoding="utf-8"))
        if isinstance(event.get("pull_request"), dict):
            return int(event["pull_request"]["number"])
        issue = event.get("issue")
        if isinstance(issue, dict) and issue.get("pull_request"):
            return int(issue["number"])
    match = re.match(r"^refs/pull/(\d+)/", env.get("GITHUB_REF", ""))
    return int(match.group(1)) if match else None


def upsert_comment(body: str, env: dict[str, str], number: int) -> str:
    """Create the PR's hpo-action comment, or update the one that carries MARKER; returns its URL."""
    token = env.get("GITHUB_TOKEN")
    if not token:
        raise HpoActionError("--comment-pr needs GITHUB_TOKEN in the environment (e.g. env: GITHUB_TOKEN: …)")
    api = env.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    repo = env.get("GITHUB_REPOSITORY")
    if not repo:
        raise HpoActionError("--comment-pr needs GITHUB_REPOSITORY (owner/name) in the environment")
    text = _truncate(
        f"{MARKER}\n{body}", COMMENT_LIMIT, "\n\n_Comment truncated; the full summary is on the run's page._\n"
    )
    existing = None
    page = 1
    while existing is None:
        comments = _request("GET", f"{api}/repos/{repo}/issues/{number}/comments?per_page=100&page={page}", token)
        existing = next((c for c in comments if MARKER in (c.get("body") or "")), None)
        if len(comments) < 100:
            break
        page += 1
    if existing is not None:
        updated = _request("PATCH", f"{api}/repos/{repo}/issues/comments/{existing['id']}", token, {"body": text})
    else:
        updated = _request("POST", f"{api}/repos/{repo}/issues/{number}/comments", token, {"body": text})
    return str(updated.get("html_url") or updated.get("url") or "")


def _request(method: str, url: str, token: str, payload: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        url,
        method=method,
        data=None if payload is None else json.dumps(payload).encode("utf-8"),
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "hpo-action",
            **({"Content-Type": "application/json"} if payload is not None else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        detail = _github_message(err)
        if err.code == 403:
            raise HpoActionError(
                f"GitHub refused to write the PR comment (403{detail}): the job needs `permissions: pull-requests: "
                "write`, and a pull request from a fork only gets a read-only GITHUB_TOKEN"
            ) from None
        if err.code == 401:
            raise HpoActionError(f"GitHub rejected GITHUB_TOKEN (401{detail}) while writing the PR comment") from None
        raise HpoActionError(f"GitHub API {method} {url} failed: HTTP {err.code}{detail}") from None
    except urllib.error.URLError as err:
        raise HpoActionError(f"cannot reach the GitHub API at {url}: {err.reason}") from None


def _github_message(err: urllib.error.HTTPError) -> str:
    try:
        message = json.loads(err.read() or b"{}").get("message")
    except (ValueError, AttributeError):
        return ""
    return f": {message}" if message else ""


def after_run(
    result: GateDecision,
    output_dir: Path,
    env: dict[str, str],
    champion: Champion | None = None,
    comment_pr: bool = False,
    stream: TextIO | None = None,
) -> dict[str, str]:
    """End of `hpo-action run` in Actions: step outputs, the job summary (also kept as report.md in the output
    folder) and, when asked, the sticky PR comment; returns the outputs."""
    output_dir = Path(output_dir)
    summary = json.loads((output_dir / "summary.json").read_text(encoding="utf-8"))
    best = summary.get("best") or {}
    params_file = output_dir / "best" / "params.json"
    params = json.loads(params_file.read_text(encoding="utf-8"))["params"] if params_file.is_file() else None
    info = champion_info(champion, result.promote, env)
    plots = sorted(path.name for path in (output_dir / "plots").glob("*.png"))
    markdown = summary_markdown(summary, read_trials(output_dir / "trials.csv"), result, info, plots)
    report = output_dir / "report.md"
    report.write_text(markdown, encoding="utf-8")
    outputs = {
        "decision": result.decision,
        "promoted": "true" if result.promote else "false",
        "best-value": "" if best.get("value") is None else repr(float(best["value"])),
        "best-params": json.dumps(params if params is not None else best.get("params", {}), sort_keys=True),
        "champion-version": str(info["version"]) if info else "",
        "model-url": info["url"] if info else "",
        "report-path": str(report.resolve()),
    }
    write_outputs(outputs, env)
    write_summary(markdown, env)
    if comment_pr:
        number = pull_request_number(env)
        if number is None:
            warning("hpo-action", "comment-pr: this run is not for a pull request, so no comment was written", stream)
        else:
            run_url = github_run_url(env)
            link = f"\n[The run: logs, artifacts and plots]({run_url})\n" if run_url else ""
            url = upsert_comment(markdown + link, env, number)
            print(f"hpo-action comment on PR #{number}: {url}", file=stream or sys.stdout, flush=True)
    return outputs
