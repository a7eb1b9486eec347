"""Shared fixtures: an isolated HF/GitHub/MLflow environment, the tiny demo model built once, a PostgreSQL database,
a real MLflow server. Plain helpers live in tests/helpers.py."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpo_action.train.threads import available_cores

from .helpers import isolate_env

MAX_WORKERS = 4  # `pytest -n auto`: each worker starts its own MLflow server; more would mostly wait

_XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
if _XDIST_WORKERS > 1:
    # Workers x torch threads <= cores: each pytest-xdist worker (and every process it starts) takes its share of
    # the cores, set here before any test imports torch. A lower OMP_NUM_THREADS of the caller's stays.
    _share = max(1, available_cores() // _XDIST_WORKERS)
    _asked = os.environ.get("OMP_NUM_THREADS", "")
    if _asked.isdigit() and int(_asked) > 0:
        _share = min(_share, int(_asked))
    os.environ["OMP_NUM_THREADS"] = str(_share)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: without it installed, pytest runs serially
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: the cores this process may really use (affinity, cgroup quota), not the host's count."""
    return max(1, min(available_cores(), MAX_WORKERS))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist, the slow tests first (stable otherwise): the long ones then spread over the workers at
    the start instead of leaving one worker running the last of them alone at the end. A serial run keeps the file
    order."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session", autouse=True)
def _demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the tiny demo model once per test run, outside the user's cache: under pytest-xdist in the run's
    shared temporary folder, so the first worker builds it and the others wait for it (ensure_demo_model locks)."""
    explicit = os.environ.get("HPO_ACTION_TEST_CACHE")
    if explicit:
        cache = Path(explicit)
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        cache = tmp_path_factory.getbasetemp().parent / "hpo-cache"  # the run's folder above popen-gw<N>
        cache.mkdir(exist_ok=True)
    else:
        cache = tmp_path_factory.mktemp("hpo-cache")
    os.environ["HPO_ACTION_CACHE"] = str(cache)
    return cache


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test touches the real HF cache, the network or a GitHub runner's files."""
    isolate_env(monkeypatch, tmp_path)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the PostgreSQL server `.ci/run` starts (HPO_ACTION_TEST_POSTGRES), dropped afterwards,
    so every test also creates Optuna's tables; skips, saying why, without a server."""
    url = os.environ.get("HPO_ACTION_TEST_POSTGRES")
    if not url:
        pytest.skip("no PostgreSQL server: set HPO_ACTION_TEST_POSTGRES (bash .ci/postgres starts one)")
    import sqlalchemy

    admin = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, isolation_level="AUTOCOMMIT")
    name = f"hpo_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except Exception as err:
        pytest.skip(f"PostgreSQL at HPO_ACTION_TEST_POSTGRES cannot create a test database: {type(err).__name__}")
    yield f"{url.rsplit('/', 1)[0]}/{name}"
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'DROP DATABASE "{name}" WITH (FORCE)'))


MLFLOW_CANARY = "Cnry-mlflow-" + uuid.uuid4().hex[:12]  # the test server's admin password: must never be printed


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real `mlflow server` for the whole session (tests/mlflow_server.py); skips only without MLflow."""
    pytest.importorskip("mlflow", reason="MLflow is not installed: pip install -e '.[dev]' (or '.[mlflow]')")
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth server needs mlflow[auth]: pip install -e '.[dev]'")
    from .mlflow_server import MlflowServer

    with MlflowServer(tmp_path_factory.mktemp("mlflow-server"), MLFLOW_CANARY) as server:
        yield server


@pytest.fixture
def mlflow_env(mlflow_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The client side: the tracking URI and the admin's credentials in MLflow's own variables."""
    from .mlflow_server import ADMIN

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MLFLOW_CANARY)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    return mlflow_server
