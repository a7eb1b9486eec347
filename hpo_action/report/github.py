"""GitHub Actions glue: step outputs, the job summary, annotations, masks and the sticky PR comment.

Every function takes the environment as a dict, so tests drive it without a runner; `actions_env()` is the
only place that reads `os.environ`. Plots never go to a public image host: the summary and the comment name
them as files of the run's artifacts and of the registry's version.
"""

from __future__ import annotations

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
from hpo_action.judge.decision import GateDecision
from hpo_action.redaction import secrets_in_words, url_secrets
from hpo_action.search.summary import RunSummary

MARKER = "<!-- hpo-action -->"  # finds our PR comment again, so it is updated instead of piling up
SUMMARY_LIMIT = 1024 * 1024  # GitHub rejects a step summary over 1 MiB
COMMENT_LIMIT = 65536  # GitHub's limit on a comment body, in characters
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_ID_TOKEN", "GITHUB_TOKEN", "GH_TOKEN")
_OUTPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def actions_env() -> dict[str, str] | None:
    """The environment when running in GitHub Actions, else None; the one read of os.environ in this module."""
    return dict(os.environ) if os.environ.get("GITHUB_ACTIONS") == "true" else None


def secret_values(env: dict[str, str], argv: Iterable[str] = ()) -> list[str]:
    """Tokens in the environment and the secrets of every URL (arguments, HPO_STORAGE): to mask in the log and to
    scrub from any message."""
    found = [env[name] for name in TOKEN_VARIABLES if env.get(name)]
    return found + secrets_in_words(argv) + url_secrets(env.get("HPO_STORAGE", ""))


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
    me = _identity(api, token)
    existing = None
    page = 1
    while existing is None:
        comments = _request("GET", f"{api}/repos/{repo}/issues/{number}/comments?per_page=100&page={page}", token)
        # Ours: the marker AND written by this token's own identity; never another user's comment.
        existing = next(
            (c for c in comments if MARKER in (c.get("body") or "") and (c.get("user") or {}).get("login") == me), None
        )
        if len(comments) < 100:
            break
        page += 1
    if existing is not None:
        updated = _request("PATCH", f"{api}/repos/{repo}/issues/comments/{existing['id']}", token, {"body": text})
    else:
        updated = _request("POST", f"{api}/repos/{repo}/issues/{number}/comments", token, {"body": text})
    return str(updated.get("html_url") or updated.get("url") or "")


BOT_LOGIN = "github-actions[bot]"  # who comments with the job's GITHUB_TOKEN


def _identity(api: str, token: str) -> str:
    """The login comments made with this token carry: the user of a personal token, else (an installation token,
    which may not read /user) the Actions bot."""
    try:
        user = _request("GET", f"{api}/user", token)
    except HpoActionError:
        return BOT_LOGIN
    return str((user or {}).get("login") or BOT_LOGIN)


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


def step_outputs(
    summary: RunSummary,
    decision: GateDecision,
    champion_version: int | None,
    model_url: str | None,
    report: Path,
    published: Path | None = None,
) -> dict[str, str]:
    """The action's outputs: decision, promoted, best-value, best-params (JSON), champion-version, model-url,
    report-path, and published-path (a local folder holding exactly the files this run published, signature
    and attestation included: what a build-provenance attestation should name)."""
    best = summary.best
    return {
        "decision": decision.decision,
        "promoted": "true" if decision.promote else "false",
        "best-value": "" if best is None else repr(float(best.value)),
        "best-params": json.dumps(best.params if best else {}, sort_keys=True, default=str),
        "champion-version": "" if champion_version is None else str(champion_version),
        "model-url": model_url or "",
        "report-path": str(report.resolve()),
        "published-path": str(published.resolve()) if published is not None else "",
    }


def publish_step(
    markdown: str,
    outputs: dict[str, str],
    env: dict[str, str],
    comment_pr: bool = False,
    stream: TextIO | None = None,
) -> None:
    """End of `hpo-action run` in Actions: the step outputs, the job summary and, when asked, the sticky PR
    comment (the same markdown as report.md, with a link to the run)."""
    write_outputs(outputs, env)
    write_summary(markdown, env)
    if not comment_pr:
        return
    number = pull_request_number(env)
    if number is None:
        warning("hpo-action", "comment-pr: this run is not for a pull request, so no comment was written", stream)
        return
    run_url = github_run_url(env)
    link = f"\n[The run: logs, artifacts and plots]({run_url})\n" if run_url else ""
    url = upsert_comment(markdown + link, env, number)
    print(f"hpo-action comment on PR #{number}: {url}", file=stream or sys.stdout, flush=True)


def github_run_url(env: dict[str, str]) -> str | None:
    keys = ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    if env.get("GITHUB_ACTIONS") != "true" or not all(env.get(k) for k in keys):
        return None
    return f"{env['GITHUB_SERVER_URL']}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
