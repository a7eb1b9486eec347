"""A loopback stand-in for the Hugging Face Hub: the endpoints `HubRegistry` drives through the real `HfApi`.

Repos live in memory as git-like commits (sha1 of tree, parent and message), branches and tags. Only what the
client calls is served; anything else answers 501 so a new call shows up as a failing test, not a silent pass.
Tokens are compared but never stored in the request log, which records only whether one was sent and valid.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_id(content: bytes) -> str:
    """The oid the client compares with its own `git_hash` to skip unchanged files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def commit(self, branch: str, message: str, files: dict[str, bytes]) -> Commit:
        parent = self.branches.get(branch)
        tree = "\n".join(f"{path} {git_blob_id(data)}" for path, data in sorted(files.items()))
        sha = hashlib.sha1(f"tree {tree}\nparent {parent}\n\n{message}".encode()).hexdigest()
        new = Commit(sha=sha, parent=parent, message=message, files=dict(files))
        self.commits[sha] = new
        self.branches[branch] = sha
        return new

    def resolve(self, revision: str) -> Commit | None:
        sha = self.branches.get(revision) or self.tags.get(revision)
        if sha is None and revision in self.commits:
            sha = revision
        return self.commits.get(sha) if sha else None

    def history(self, branch: str = "main") -> list[Commit]:
        """Commits reachable from `branch`, newest first."""
        out, sha = [], self.branches.get(branch)
        while sha is not None:
            out.append(self.commits[sha])
            sha = self.commits[sha].parent
        return out


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    status: int
    token_sent: bool
    authorized: bool


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    times: int


class HubState:
    """Everything the server knows; tests read it directly to assert what happened."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.log: list[Logged] = []
        self.lock = threading.RLock()
        self._failures: list[_Failure] = []
        # Called with (repo, branch) as a commit arrives, before its parent check: lets a test move main mid-publish.
        self.before_commit: Callable[[Repo, str], None] | None = None
        self.exchanged: list[str] = []  # the resources OIDC tokens were exchanged for
        self.lose_commit_answers = 0  # apply the next N commits to main, then answer 500 as if the reply was lost
        self._drips: list[_Failure] = []
        self.closing = threading.Event()  # ends every drip when the server stops

    def is_valid(self, token: str | None) -> bool:
        return token is not None and token == self.token

    def fail(self, method: str, path_regex: str, status: int, times: int = 1) -> None:
        """Answer the next `times` requests matching `method` and `path_regex` with `status`."""
        self._failures.append(_Failure(method, re.compile(path_regex), status, times))

    def drip(self, method: str, path_regex: str, times: int = 1) -> None:
        """Answer the next `times` matching requests 200 with a body sent one byte every `DRIP_SECONDS`, never
        finished (the connection closes after DRIP_BYTES): an endpoint that is slow, not silent, so no per-read
        timeout ever trips. Nothing is applied."""
        self._drips.append(_Failure(method, re.compile(path_regex), HTTPStatus.OK, times))

    def injected_drip(self, method: str, path: str) -> bool:
        for drip in self._drips:
            if drip.times > 0 and drip.method == method and drip.pattern.search(path):
                drip.times -= 1
                return True
        return False

    def injected_failure(self, method: str, path: str) -> int | None:
        for failure in self._failures:
            if failure.times > 0 and failure.method == method and failure.pattern.search(path):
                failure.times -= 1
                return failure.status
        return None

    def requests(self, method: str | None = None, contains: str = "") -> list[Logged]:
        return [r for r in self.log if (method is None or r.method == method) and contains in r.path]


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


DRIP_SECONDS = 0.5
DRIP_BYTES = 40  # then the connection closes mid-body: 20 s, far past any timeout a test sets

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_API = rf"^/api/models/{_REPO}"
_RESOLVE = rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)$"
# (method, raw path before unquoting, handler): a branch like candidates/x arrives as one quoted segment.
_ROUTES = [
    (method, re.compile(pattern), handler)
    for method, pattern, handler in (
        ("POST", r"^/api/repos/create$", "_create_repo"),
        ("POST", r"^/api/validate-yaml$", "_validate_yaml"),
        ("GET", r"^/api/agent-harnesses$", "_agent_harnesses"),
        ("POST", r"^/oauth/token$", "_exchange_oidc"),
        ("GET", rf"{_API}(/revision/(?P<rev>[^/]+))?$", "_repo_info"),
        ("GET", rf"{_API}/refs$", "_refs"),
        ("GET", rf"{_API}/tree/(?P<rev>[^/]+)(?P<sub>/.*)?$", "_tree"),
        ("POST", rf"{_API}/preupload/(?P<rev>[^/]+)$", "_preupload"),
        ("POST", rf"{_API}/commit/(?P<rev>[^/]+)$", "_commit"),
        ("POST", rf"{_API}/branch/(?P<branch>[^/]+)$", "_create_branch"),
        ("DELETE", rf"{_API}/branch/(?P<branch>[^/]+)$", "_delete_branch"),
        ("POST", rf"{_API}/tag/(?P<rev>[^/]+)$", "_create_tag"),
        ("GET", _RESOLVE, "_resolve"),
        ("HEAD", _RESOLVE, "_resolve"),
    )
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HubHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # stderr noise; the state keeps its own log
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        state = self.server.state
        split = urlsplit(self.path)
        # Revisions arrive quoted with safe="" (a branch like candidates/x is one segment): unquote per segment.
        path = "/".join(unquote(part) for part in split.path.split("/"))
        self.query = parse_qs(split.query)
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization") or ""
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        self.authorized = state.is_valid(token)
        self.logged_path, self.token_sent, self.logged = path, token is not None, False
        status = HTTPStatus.INTERNAL_SERVER_ERROR
        if state.injected_drip(self.command, path):
            self._drip()
            return
        try:
            with state.lock:
                injected = state.injected_failure(self.command, path)
                if injected is not None:
                    raise HubError(injected, "injected failure")
                status = self._route(split.path)
        except HubError as error:
            status = error.status
            self._send_json(error.status, {"error": error.message}, code=error.code, message=error.message)
        finally:
            if not self.logged:  # no response was sent (an error in the fake itself)
                self._log(status)

    def _drip(self) -> None:
        """Headers at once, then one byte of a body that never ends, until DRIP_BYTES, the client leaves or the
        server stops."""
        self._log(HTTPStatus.OK)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(1 << 20))
        self.end_headers()
        self.close_connection = True
        try:
            for _ in range(DRIP_BYTES):
                if self.server.state.closing.wait(DRIP_SECONDS):
                    break
                self.wfile.write(b" ")
                self.wfile.flush()
        except OSError:  # the client gave up
            pass

    def _log(self, status: int) -> None:
        """Record the request before its response leaves: a client that has its answer finds it in the log."""
        self.server.state.log.append(
            Logged(self.command, self.logged_path, int(status), self.token_sent, self.authorized)
        )
        self.logged = True

    def _route(self, raw_path: str) -> int:
        for method, pattern, name in _ROUTES:
            match = pattern.match(raw_path)
            if match and method == self.command:
                handler: Callable[..., int] = getattr(self, name)
                return handler(**{k: unquote(v) if v else v for k, v in match.groupdict().items()})
        raise HubError(HTTPStatus.NOT_IMPLEMENTED, f"not served by the test hub: {self.command} {raw_path}")

    # helpers

    def _send_json(self, status: int, payload: Any, code: str | None = None, message: str | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", code=code, message=message)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
        code: str | None = None,
        message: str | None = None,
    ) -> None:
        self._log(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if code:
            self.send_header("X-Error-Code", code)
        if message:
            self.send_header("X-Error-Message", message)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _require_write(self) -> None:
        if not self.authorized:
            raise HubError(HTTPStatus.UNAUTHORIZED, "Invalid credentials in Authorization header")

    def _repo(self, repo: str) -> Repo:
        found = self.server.state.repos.get(repo)
        if found is None or (found.private and not self.authorized):
            raise HubError(
                HTTPStatus.UNAUTHORIZED if not self.authorized else 404, "Repository not found", "RepoNotFound"
            )
        return found

    def _commit_at(self, repo: Repo, rev: str) -> Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise HubError(HTTPStatus.NOT_FOUND, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    def _json_body(self) -> Any:
        return json.loads(self.body or b"{}")

    # endpoints

    def _create_repo(self) -> int:
        self._require_write()
        payload = self._json_body()
        repo_id = f"{payload['organization']}/{payload['name']}"
        state = self.server.state
        if repo_id in state.repos:
            raise HubError(HTTPStatus.CONFLICT, "You already created this model repo")
        repo = Repo(repo_id=repo_id, private=payload.get("visibility") == "private")
        repo.commit("main", "initial commit", {".gitattributes": GITATTRIBUTES})
        state.repos[repo_id] = repo
        self._send_json(HTTPStatus.OK, {"url": f"{self.server.endpoint}/{repo_id}", "name": repo_id})
        return HTTPStatus.OK

    def _validate_yaml(self) -> int:
        self._send_json(HTTPStatus.OK, {"errors": [], "warnings": []})
        return HTTPStatus.OK

    def _agent_harnesses(self) -> int:
        """huggingface_hub fetches this once per process to build its user agent; an empty registry."""
        self._send_json(HTTPStatus.OK, {"standardEnvVars": [], "harnesses": {}})
        return HTTPStatus.OK

    def _exchange_oidc(self) -> int:
        """RFC 8693 token exchange, as huggingface_hub's trusted-publishing login calls it."""
        payload = self._json_body()
        if not payload.get("subject_token") or not payload.get("resource"):
            raise HubError(HTTPStatus.BAD_REQUEST, "subject_token and resource are required")
        self.server.state.exchanged.append(payload["resource"])
        token = self.server.state.token
        self._send_json(HTTPStatus.OK, {"access_token": token, "token_type": "bearer", "expires_in": 3600})
        return HTTPStatus.OK

    def _repo_info(self, repo: str, rev: str | None = None) -> int:
        found = self._repo(repo)
        commit = self._commit_at(found, rev or "main")
        siblings = [{"rfilename": path} for path in sorted(commit.files)]
        self._send_json(HTTPStatus.OK, {"id": repo, "sha": commit.sha, "private": found.private, "siblings": siblings})
        return HTTPStatus.OK

    def _refs(self, repo: str) -> int:
        found = self._repo(repo)

        def refs(kind: str, names: dict[str, str]) -> list[dict[str, str]]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": sha} for n, sha in sorted(names.items())]

        payload = {"branches": refs("heads", found.branches), "tags": refs("tags", found.tags), "converts": []}
        payload["pullRequests"] = []
        self._send_json(HTTPStatus.OK, payload)
        return HTTPStatus.OK

    def _tree(self, repo: str, rev: str, sub: str | None = None) -> int:
        commit = self._commit_at(self._repo(repo), rev)
        prefix = (sub or "").strip("/")
        recursive = self.query.get("recursive", ["False"])[0].lower() == "true"
        entries: dict[str, dict[str, Any]] = {}
        for path, data in sorted(commit.files.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1 :] if prefix else path
            parts = rest.split("/")
            base = f"{prefix}/" if prefix else ""
            for depth in range(1, len(parts)):
                folder = base + "/".join(parts[:depth])
                entries.setdefault(folder, {"type": "directory", "path": folder, "size": 0, "oid": "0" * 40})
                if not recursive:
                    break
            if recursive or len(parts) == 1:
                entries[path] = {"type": "file", "path": path, "size": len(data), "oid": git_blob_id(data)}
        self._send_json(HTTPStatus.OK, list(entries.values()))
        return HTTPStatus.OK

    def _preupload(self, repo: str, rev: str) -> int:
        self._require_write()
        commit = self._commit_at(self._repo(repo), rev)
        files = []
        for item in self._json_body()["files"]:
            existing = commit.files.get(item["path"])
            oid = git_blob_id(existing) if existing is not None else None
            files.append({"path": item["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        self._send_json(HTTPStatus.OK, {"files": files})
        return HTTPStatus.OK

    def _commit(self, repo: str, rev: str) -> int:
        self._require_write()
        found = self._repo(repo)
        if rev not in found.branches:
            raise HubError(HTTPStatus.NOT_FOUND, f"Invalid rev id: {rev}", "RevisionNotFound")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        if self.server.state.before_commit is not None:
            self.server.state.before_commit(found, rev)
        head = found.branches[rev]
        parent = header.get("parentCommit")
        if parent is not None and not head.startswith(parent):
            raise HubError(HTTPStatus.PRECONDITION_FAILED, "A commit has happened since. Please refresh and try again.")
        files = dict(found.commits[head].files)
        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "deletedFile":
                if value["path"] not in files:
                    raise HubError(HTTPStatus.NOT_FOUND, "A file with this name doesn't exist", "EntryNotFound")
                del files[value["path"]]
            elif line["key"] == "deletedFolder":
                files = {p: d for p, d in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            elif line["key"] != "header":
                raise HubError(HTTPStatus.NOT_IMPLEMENTED, f"commit operation {line['key']} is not served")
        new = found.commit(rev, header["summary"], files)
        if rev == "main" and self.server.state.lose_commit_answers > 0:
            self.server.state.lose_commit_answers -= 1
            raise HubError(HTTPStatus.INTERNAL_SERVER_ERROR, "upstream timeout (the commit was applied)")
        url = f"{self.server.endpoint}/{repo}/commit/{new.sha}"
        self._send_json(HTTPStatus.OK, {"commitUrl": url, "commitOid": new.sha, "pullRequestUrl": None})
        return HTTPStatus.OK

    def _create_branch(self, repo: str, branch: str) -> int:
        self._require_write()
        found = self._repo(repo)
        if branch in found.branches:
            raise HubError(HTTPStatus.CONFLICT, f"Reference already exists: refs/heads/{branch}")
        start = self._json_body().get("startingPoint") or "main"
        found.branches[branch] = self._commit_at(found, start).sha
        self._send_json(HTTPStatus.OK, {})
        return HTTPStatus.OK

    def _delete_branch(self, repo: str, branch: str) -> int:
        self._require_write()
        found = self._repo(repo)
        if branch == "main" or branch not in found.branches:
            raise HubError(
                HTTPStatus.NOT_FOUND if branch != "main" else HTTPStatus.FORBIDDEN, f"cannot delete {branch}"
            )
        del found.branches[branch]
        self._send_json(HTTPStatus.OK, {})
        return HTTPStatus.OK

    def _create_tag(self, repo: str, rev: str) -> int:
        self._require_write()
        found = self._repo(repo)
        tag = self._json_body()["tag"]
        if tag in found.tags:
            raise HubError(HTTPStatus.CONFLICT, f"Tag {tag} already exists")
        found.tags[tag] = self._commit_at(found, rev).sha
        self._send_json(HTTPStatus.OK, {})
        return HTTPStatus.OK

    def _resolve(self, repo: str, rev: str, file: str) -> int:
        commit = self._commit_at(self._repo(repo), rev)
        data = commit.files.get(file)
        if data is None:
            raise HubError(HTTPStatus.NOT_FOUND, "Entry not found", "EntryNotFound")
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{git_blob_id(data)}"'}
        self._send(HTTPStatus.OK, data, "application/octet-stream", headers=headers)
        return HTTPStatus.OK


class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: HubState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        self.endpoint = f"http://127.0.0.1:{self.server_address[1]}"


class HubServer:
    """A running loopback hub: `endpoint` to point the client at, `state` to inspect."""

    def __init__(self, token: str) -> None:
        self.state = HubState(token)
        self._httpd = _HubHTTPServer(self.state)
        self.endpoint = self._httpd.endpoint
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
