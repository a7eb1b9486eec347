"""A real `mlflow server` for the tests: SQLite backend, a local artifact store served through the server, basic
auth with an admin whose password is a canary, on loopback at an ephemeral port (uvicorn binds port 0 and logs the
port it got). Started once per test session: MLflow takes tens of seconds to start."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ADMIN = "admin"
_LISTENING = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")
START_LIMIT_S = 600  # only a server that never comes up hits this; start-up takes 20-70 s on a loaded 2-core machine


class MlflowServer:
    """`with MlflowServer(folder, password) as server:` → server.url, server.password; stopped (its process group
    killed) on exit."""

    def __init__(self, folder: Path, password: str) -> None:
        self.folder, self.password = folder, password
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self.log = folder / "server.log"

    def __enter__(self) -> MlflowServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        auth = self.folder / "basic_auth.ini"
        auth.write_text(
            "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
            f"database_uri = sqlite:///{self.folder / 'auth.db'}\nadmin_username = {ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "auth_cache_ttl_seconds = 3600\n"  # check each password once, not once per request (PBKDF2: ~1 s)
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
            "MLFLOW_AUTH_CONFIG_PATH": str(auth),
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job runner: it only slows the start
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        command = [
            sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
            "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination", str(self.folder / "artifacts"),
            "--host", "127.0.0.1", "--port", "0", "--workers", "1",
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                command, cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self.url = self._wait_for_port()
            self._wait_for_health()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_for_port(self) -> str:
        started = time.monotonic()
        while time.monotonic() - started < START_LIMIT_S:
            found = _LISTENING.search(self.log.read_text(errors="replace"))
            if found:
                return found.group(1)
            if self._process is not None and self._process.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(f"mlflow server did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    def _wait_for_health(self) -> None:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=10) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server at {self.url} never answered /health")

    def __exit__(self, *_: object) -> None:
        """Stop the whole process group: `mlflow server` and the uvicorn worker it started."""
        process = self._process
        if process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        process.wait()
