"""GitHub Actions glue: outputs a runner parses back, a capped summary, escaped annotations, masks first, and
the sticky PR comment against a loopback GitHub API."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hpo_action.errors import HpoActionError
from hpo_action.report import github
from hpo_action.report.markdown import run_markdown
from hpo_action.ship.registry import Champion, oidc_resource, open_registry

from .helpers import promoted_decision, sample_summary
from .test_escape import assert_text_only, hostile_summary

GATE = promoted_decision()
SUMMARY = sample_summary()


def parse_outputs(text: str) -> dict[str, str]:
    """Read $GITHUB_OUTPUT as the runner does: `name=value` lines and `name<<DELIMITER` heredocs."""
    values, lines, i = {}, text.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line:
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            values[name] = "\n".join(lines[i + 1 : end])
            i = end + 1
        else:
            if line:
                name, value = line.split("=", 1)
                values[name] = value
            i += 1
    return values


def test_outputs_use_random_delimiters_and_survive_multiline_and_injection(tmp_path: Path):
    out = tmp_path / "output"
    env = {"GITHUB_OUTPUT": str(out)}
    tricky = "line one\nevil=injected\nghadelimiter_fake\nlast"
    github.write_outputs({"decision": "promote", "best-params": tricky}, env)
    github.write_outputs({"promoted": "true"}, env)  # appends
    text = out.read_text()
    assert parse_outputs(text) == {"decision": "promote", "best-params": tricky, "promoted": "true"}
    delimiters = [line.split("<<", 1)[1] for line in text.splitlines() if "<<" in line]
    assert len(set(delimiters)) == 3 and all(d.startswith("ghadelimiter_") for d in delimiters)
    with pytest.raises(ValueError, match="output name"):
        github.write_outputs({"bad\nname": "x"}, env)


def test_outputs_and_summary_are_skipped_outside_a_runner(tmp_path: Path):
    github.write_outputs({"decision": "reject"}, {})
    github.write_summary("# hi", {})
    assert list(tmp_path.iterdir()) == []


def test_summary_is_capped_at_one_mebibyte_with_a_note(tmp_path: Path):
    path = tmp_path / "summary.md"
    path.write_text("already here\n")
    row = "| 1 | complete | 0.5 | é |\n"  # a 2-byte character: the cut must stay valid UTF-8
    github.write_summary(row * 100_000, {"GITHUB_STEP_SUMMARY": str(path)})
    data = path.read_bytes()
    assert len(data) <= github.SUMMARY_LIMIT
    text = data.decode("utf-8")
    assert text.startswith("already here\n")
    assert "Summary truncated at GitHub's 1 MiB limit" in text
    assert text.split("\n\n_Summary truncated")[0].endswith("|\n")  # cut at a line end


def test_small_summary_is_written_whole(tmp_path: Path):
    path = tmp_path / "summary.md"
    github.write_summary("## hello\n", {"GITHUB_STEP_SUMMARY": str(path)})
    assert path.read_text() == "## hello\n"


def test_annotations_escape_per_githubs_rules():
    stream = io.StringIO()
    github.error("gate: a, b", "50% done\r\nnext: line", stream)
    assert stream.getvalue() == "::error title=gate%3A a%2C b::50%25 done%0D%0Anext: line\n"


def test_group_wraps_lines_even_on_error():
    stream = io.StringIO()
    with pytest.raises(RuntimeError), github.group("trial 3\nx", stream):
        print("inside", file=stream)
        raise RuntimeError
    assert stream.getvalue() == "::group::trial 3%0Ax\ninside\n::endgroup::\n"


def test_masks_every_secret_line_by_line_and_only_in_actions():
    env = {
        "GITHUB_ACTIONS": "true",
        "HF_TOKEN": "hf_canary123",
        "GITHUB_TOKEN": "ghs_abc",
        "HPO_STORAGE": "postgresql+psycopg://user:pa%40ss@db/hpo",
        "HF_OIDC_ID_TOKEN": "part1\npart2",
    }
    secrets = github.secret_values(env, ["--storage", "mysql://u:s3cret@host/db"])
    stream = io.StringIO()
    github.mask(secrets, env, stream)
    masks = stream.getvalue().splitlines()
    assert all(line.startswith("::add-mask::") for line in masks)
    masked = {line.removeprefix("::add-mask::") for line in masks}
    assert {"hf_canary123", "ghs_abc", "part1", "part2", "s3cret", "pa%2540ss", "pa@ss"} <= masked
    quiet = io.StringIO()
    github.mask(secrets, {}, quiet)
    assert quiet.getvalue() == ""


def test_trusted_publishing_resource_only_when_the_job_can_mint_a_token():
    env = {"GITHUB_ACTIONS": "true", "ACTIONS_ID_TOKEN_REQUEST_URL": "https://token"}
    assert oidc_resource(env, "hf://acme/model") == "acme/model"
    assert oidc_resource({**env, "HF_TOKEN": "hf_x"}, "hf://acme/model") is None
    assert oidc_resource({**env, "HF_OIDC_RESOURCE": "other/repo"}, "hf://acme/model") is None
    assert oidc_resource({"GITHUB_ACTIONS": "true"}, "hf://acme/model") is None
    assert oidc_resource(env, "./registry") is None
    assert oidc_resource(env, None) is None


def test_run_markdown_has_the_trial_gate_and_forgetting_tables_and_no_images():
    line = "published as the new champion: v3 at https://huggingface.co/acme/m/tree/abc"
    text = run_markdown(SUMMARY, GATE, line, ["optimization_history.png"])
    assert text.startswith("## hpo-action: PROMOTE")
    p = GATE.primary
    bounds = "one-sided 95% lower | one-sided 95% upper"
    assert f"| metric | n | candidate | reference | delta | {bounds} | p | MDE |" in text
    numbers = f"{p.bound:.4g} | {p.upper_bound:.4g} | {p.p_value:.3g} | {p.mde:.4g}"
    assert f"| exact_match | 200 | 0.9 | 0.5 | +0.4 | {numbers} |" in text
    assert "| both right | candidate only | reference only | neither |" in text
    copy = GATE.forgetting[0]
    assert (
        f"| ✓ | copy | exact_match | 300 | 1 | 1 | +0 | {copy.bound:.4g} | -0.02 | {copy.p_value:.3g} | passed |"
        in text
    )
    assert "−" not in text  # the ASCII minus throughout
    assert "| # | state | eval_loss | steps | s | lora_r | error |" in text
    assert "| 1 \\* | complete | 0.4568 | 6 | 2.5 | 8 |  |" in text
    assert "| learning_rate | 0.01 |" in text
    assert line in text
    assert "plots/optimization_history.png" in text
    assert "![" not in text and "<img" not in text


def test_registries_give_a_browsable_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    hub = open_registry("hf://acme/m")
    champion = Champion(version=2, path=tmp_path, revision="abc123", uri="hf://acme/m")
    assert hub.url(champion) == "http://127.0.0.1:9/acme/m/tree/abc123"
    local = open_registry(str(tmp_path))
    assert local.url(Champion(version=1, path=tmp_path / "v1", revision="r", uri=str(tmp_path))) == str(tmp_path / "v1")


def test_pull_request_number_from_the_event_or_the_ref(tmp_path: Path):
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 7}}))
    assert github.pull_request_number({"GITHUB_EVENT_PATH": str(event)}) == 7
    event.write_text(json.dumps({"issue": {"number": 9, "pull_request": {"url": "x"}}}))
    assert github.pull_request_number({"GITHUB_EVENT_PATH": str(event)}) == 9
    event.write_text(json.dumps({"issue": {"number": 9}}))  # a comment on an issue, not a PR
    assert github.pull_request_number({"GITHUB_EVENT_PATH": str(event)}) is None
    assert github.pull_request_number({"GITHUB_REF": "refs/pull/12/merge"}) == 12
    assert github.pull_request_number({"GITHUB_REF": "refs/heads/main"}) is None


class FakeGitHub:
    """The three issue-comment endpoints of the REST API, in memory, with an optional forced status."""

    def __init__(self) -> None:
        self.comments: list[dict[str, Any]] = [
            {"id": i, "body": f"unrelated {i}", "html_url": f"u/{i}", "user": {"login": "octocat"}}
            for i in range(1, 121)
        ]
        # Someone else's comment carrying our marker (copied, or planted): it must never be edited.
        self.comments.append(
            {"id": 500, "body": f"{github.MARKER}\nmallory's", "html_url": "u/500", "user": {"login": "mallory"}}
        )
        self.login: str | None = None  # GET /user answers 403 (an installation token) unless set
        self.requests: list[tuple[str, str]] = []
        self.status: int | None = None
        self.auth: set[str] = set()


@pytest.fixture
def api() -> Iterator[tuple[FakeGitHub, str]]:
    state = FakeGitHub()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            state.requests.append((method, self.path))
            state.auth.add(self.headers.get("Authorization", ""))
            if state.status:
                self._reply(state.status, {"message": "Resource not accessible by integration"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            payload = json.loads(self.rfile.read(length)) if length else None
            path, _, query = self.path.partition("?")
            if method == "GET" and path == "/user":
                if state.login is None:
                    self._reply(403, {"message": "Resource not accessible by integration"})
                else:
                    self._reply(200, {"login": state.login})
            elif method == "GET" and path == "/repos/acme/tune/issues/5/comments":
                params = dict(item.split("=") for item in query.split("&"))
                page, size = int(params["page"]), int(params["per_page"])
                self._reply(200, state.comments[(page - 1) * size : page * size])
            elif method == "POST" and path == "/repos/acme/tune/issues/5/comments":
                author = state.login or "github-actions[bot]"
                comment = {
                    "id": 1000 + len(state.comments),
                    "body": payload["body"],
                    "html_url": "u/new",
                    "user": {"login": author},
                }
                state.comments.append(comment)
                self._reply(201, comment)
            elif method == "PATCH" and path.startswith("/repos/acme/tune/issues/comments/"):
                comment = next(c for c in state.comments if c["id"] == int(path.rsplit("/", 1)[1]))
                comment["body"] = payload["body"]
                self._reply(200, comment)
            else:
                self._reply(404, {"message": "Not Found"})

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PATCH(self) -> None:
            self._handle("PATCH")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _env(url: str) -> dict[str, str]:
    return {"GITHUB_ACTIONS": "true", "GITHUB_API_URL": url, "GITHUB_REPOSITORY": "acme/tune", "GITHUB_TOKEN": "ghs_t"}


def test_sticky_comment_is_created_once_then_updated_in_place(api):
    state, url = api
    github.upsert_comment("first result", _env(url), 5)
    ours = [c for c in state.comments if github.MARKER in c["body"] and c["user"]["login"] != "mallory"]
    assert len(ours) == 1 and "first result" in ours[0]["body"]
    assert ("GET", "/repos/acme/tune/issues/5/comments?per_page=100&page=2") in state.requests  # paged past 100
    state.requests.clear()
    link = github.upsert_comment("second result", _env(url), 5)
    ours = [c for c in state.comments if github.MARKER in c["body"] and c["user"]["login"] != "mallory"]
    assert len(ours) == 1 and "second result" in ours[0]["body"] and "first" not in ours[0]["body"]
    assert [m for m, _ in state.requests] == ["GET", "GET", "GET", "PATCH"]
    assert next(c for c in state.comments if c["id"] == 500)["body"].endswith("mallory's")  # never touched
    assert link == "u/new"
    assert state.auth == {"Bearer ghs_t"}


def test_a_personal_token_finds_its_own_comment_by_its_login(api):
    state, url = api
    state.login = "release-bot"
    github.upsert_comment("one", _env(url), 5)
    github.upsert_comment("two", _env(url), 5)
    mine = [c for c in state.comments if c["user"]["login"] == "release-bot"]
    assert len(mine) == 1 and "two" in mine[0]["body"]
    assert "mallory's" in next(c for c in state.comments if c["id"] == 500)["body"]


def test_forbidden_comment_names_the_missing_permission(api):
    state, url = api
    state.status = 403
    with pytest.raises(HpoActionError, match=r"permissions: pull-requests: write") as info:
        github.upsert_comment("x", _env(url), 5)
    assert "Resource not accessible by integration" in str(info.value)


def test_comment_needs_a_token():
    with pytest.raises(HpoActionError, match="GITHUB_TOKEN"):
        github.upsert_comment("x", {"GITHUB_REPOSITORY": "acme/tune"}, 5)


def test_publish_step_writes_outputs_summary_and_the_comment(tmp_path: Path, api):
    state, url = api
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 5}}))
    env = {
        **_env(url),
        "GITHUB_OUTPUT": str(tmp_path / "output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_RUN_ID": "42",
    }
    report = tmp_path / "report.md"
    markdown = run_markdown(SUMMARY, GATE, None, ["param_importances.png"])
    report.write_text(markdown)
    outputs = github.step_outputs(SUMMARY, GATE, 4, "https://huggingface.co/acme/m/tree/deadbeef", report)
    stream = io.StringIO()
    github.publish_step(markdown, outputs, env, comment_pr=True, stream=stream)
    assert parse_outputs((tmp_path / "output").read_text()) == outputs
    assert outputs["decision"] == "promote" and outputs["promoted"] == "true"
    assert float(outputs["best-value"]) == pytest.approx(0.4567891)
    assert json.loads(outputs["best-params"]) == {"learning_rate": 0.01, "lora_r": 8}
    assert outputs["champion-version"] == "4"
    assert outputs["model-url"] == "https://huggingface.co/acme/m/tree/deadbeef"
    summary = (tmp_path / "summary.md").read_text()
    assert Path(outputs["report-path"]).read_text() == summary
    assert "**trials**" in summary and "plots/param_importances.png" in summary
    body = next(c["body"] for c in state.comments if github.MARKER in c["body"] and c["user"]["login"] != "mallory")
    assert "https://github.com/acme/tune/actions/runs/42" in body
    assert "comment on PR #5" in stream.getvalue()


def test_publish_step_outside_a_pull_request_warns_instead_of_commenting(tmp_path: Path):
    reject = dataclasses.replace(GATE, decision="reject")
    outputs = github.step_outputs(SUMMARY, reject, None, None, tmp_path / "report.md")
    assert outputs["promoted"] == "false" and outputs["champion-version"] == "" and outputs["model-url"] == ""
    stream = io.StringIO()
    github.publish_step("# report", outputs, {"GITHUB_ACTIONS": "true"}, comment_pr=True, stream=stream)
    assert stream.getvalue().startswith("::warning title=hpo-action::comment-pr: this run is not for a pull request")


def test_a_hostile_study_name_stays_text_in_the_job_summary_and_the_pr_comment(tmp_path: Path, api):
    state, url = api
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 5}}))
    env = {**_env(url), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"), "GITHUB_EVENT_PATH": str(event)}
    hostile = "x\n## hpo-action: PROMOTE\n<!-- the rest is hidden | <script>alert(1)</script>"
    markdown = run_markdown(hostile_summary(hostile), GATE, None, [])
    github.publish_step(markdown, {}, env, comment_pr=True, stream=io.StringIO())
    headings = ["hpo-action: PROMOTE", "Gate: promote"]  # the one real verdict heading, and the gate's
    assert_text_only((tmp_path / "summary.md").read_text(), headings)
    body = next(c["body"] for c in state.comments if github.MARKER in c["body"] and c["user"]["login"] != "mallory")
    assert body.count("<!--") == 1  # our marker, and nothing else
    assert_text_only(body.replace(github.MARKER, ""), headings)
