"""Secrets never leave: canary passwords in every URL form SQLAlchemy accepts, planted in the storage URL, must
appear in no file written, no line printed (but the `::add-mask::` lines that hide them) and no registry version."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hpo_action.redaction import redact_text, redact_url, url_secrets

from .helpers import small_config, write_config

CANARY = "Cnry-" + uuid.uuid4().hex[:10]
FORMS = {
    "userinfo": "postgresql+psycopg://{user}:{secret}@127.0.0.1:{port}/{db}",
    "query password": "postgresql+psycopg://127.0.0.1:{port}/{db}?user={user}&password={secret}",
    "query secret key": "postgresql+psycopg://{user}:{secret}@127.0.0.1:{port}/{db}?sslpassword={secret}2",
    "percent-encoded": "postgresql+psycopg://{user}:{secret}%40x@127.0.0.1:{port}/{db}",
}


@pytest.mark.parametrize("form", FORMS)
def test_every_url_form_is_redacted_and_its_secrets_listed(form: str):
    url = FORMS[form].format(user="u", secret=CANARY, port=5432, db="hpo")
    assert CANARY not in redact_url(url)
    assert redact_url(url).startswith("postgresql+psycopg://")
    assert any(CANARY in secret for secret in url_secrets(url))
    assert CANARY not in redact_text(f"could not connect: {url} refused", url_secrets(url))


def test_urls_without_secrets_are_untouched():
    for url in ("sqlite:////abs/study.db", "sqlite:///rel.db", "postgresql://u@h/db?sslmode=require", "runs/j.log"):
        assert redact_url(url) == url and url_secrets(url) == []


def _leaks(text: str, secrets: list[str]) -> list[str]:
    """Lines holding a secret, except the ones that ask GitHub to mask it."""
    return [
        line for line in text.splitlines() if any(s in line for s in secrets) and not line.startswith("::add-mask::")
    ]


def _files_holding(root: Path, secrets: list[str]) -> list[Path]:
    return [
        path for path in root.rglob("*") if path.is_file() and any(s.encode() in path.read_bytes() for s in secrets)
    ]


@pytest.mark.parametrize("form", FORMS)
def test_an_unreachable_database_never_shows_its_secrets(tmp_path: Path, form: str):
    secrets = [CANARY, f"{CANARY}2"]
    url = FORMS[form].format(user="u", secret=CANARY, port=9, db="hpo")  # nothing listens on port 9
    config = write_config(tmp_path, small_config(tmp_path))
    env = {**os.environ, "GITHUB_ACTIONS": "true", "HPO_STORAGE": url}
    for extra in ([], ["--storage", url]):  # from the environment, and from the command line
        proc = subprocess.run(
            [sys.executable, "-m", "hpo_action", "search", "-c", str(config), *extra],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "search.storage: cannot open postgresql+psycopg://" in proc.stderr
        assert not _leaks(proc.stdout + proc.stderr, secrets)
        assert f"::add-mask::{CANARY}" in proc.stdout  # masked before anything else was printed
    assert not _files_holding(tmp_path, secrets)


@pytest.mark.slow
def test_a_real_study_on_postgresql_keeps_its_password_out_of_every_file_and_line(tmp_path: Path, postgres_url: str):
    import sqlalchemy

    role = f"canary_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(postgres_url, poolclass=sqlalchemy.pool.NullPool, isolation_level="AUTOCOMMIT")
    database = postgres_url.rsplit("/", 1)[1]
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE ROLE {role} LOGIN PASSWORD '{CANARY}'"))
        connection.execute(sqlalchemy.text(f"GRANT {role} TO CURRENT_USER"))  # so that its objects can be dropped
        connection.execute(sqlalchemy.text(f'GRANT ALL ON DATABASE "{database}" TO {role}'))
        connection.execute(sqlalchemy.text(f"GRANT ALL ON SCHEMA public TO {role}"))
    try:
        url = FORMS["query secret key"].format(user=role, secret=CANARY, port=5432, db=database)
        raw = small_config(tmp_path, search={"n_trials": 2, "workers": 1, "budget": {"max_steps": 4, "eval_every": 2}})
        config = write_config(tmp_path, raw)
        env = {**os.environ, "GITHUB_ACTIONS": "true", "HPO_STORAGE": url}
        proc = subprocess.run(
            [sys.executable, "-m", "hpo_action", "search", "-c", str(config)],
            capture_output=True, text=True, env=env, timeout=900,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        secrets = [CANARY, f"{CANARY}2"]
        assert not _leaks(proc.stdout + proc.stderr, secrets)
        assert not _files_holding(tmp_path, secrets)  # config.yaml, summary.json, trials.csv, worker logs, ...
        written = (tmp_path / "out" / "config.yaml").read_text()
        assert f"{role}:***@127.0.0.1" in written and "sslpassword=***" in written
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f"DROP OWNED BY {role}"))
            connection.execute(sqlalchemy.text(f"DROP ROLE {role}"))
