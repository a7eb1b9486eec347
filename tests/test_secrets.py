"""Secrets never leave: canary passwords in every URL form SQLAlchemy accepts, planted in the storage URL, must
appear in no file written, no line printed (but the `::add-mask::` lines that hide them) and no registry version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

import pytest

from hpo_action.redaction import redact_text, redact_url, url_secrets

from .helpers import small_config, write_config

CANARY = "Cnry-" + uuid.uuid4().hex[:10]
FORMS = {  # every one is a URL SQLAlchemy reads (its password runs to the next `@`), but the last two
    "userinfo": "postgresql+psycopg://{user}:{secret}@127.0.0.1:{port}/{db}",
    "query password": "postgresql+psycopg://127.0.0.1:{port}/{db}?user={user}&password={secret}",
    "query secret key": "postgresql+psycopg://{user}:{secret}@127.0.0.1:{port}/{db}?sslpassword={secret}2",
    "percent-encoded": "postgresql+psycopg://{user}:{secret}%40x@127.0.0.1:{port}/{db}",
    "bracket": "postgresql+psycopg://{user}:{secret}[x@127.0.0.1:{port}/{db}",
    "reserved characters": "postgresql+psycopg://{user}:{secret}/?#x@127.0.0.1:{port}/{db}",
    "hash in a query value": "postgresql+psycopg://127.0.0.1:{port}/{db}?password=x#{secret}",
    "unclosed IPv6 bracket": "postgresql+psycopg://{user}:{secret}@[::1:{port}/{db}",
    "several @": "postgresql+psycopg://{user}:{secret}@x@127.0.0.1:{port}/{db}",
}
UNREADABLE = {  # no parser reads these; they are hidden whole up to the last `@`
    "one slash": "postgresql+psycopg:/{user}:{secret}@127.0.0.1:{port}/{db}",
    "no scheme": "{user}:{secret}@127.0.0.1:{port}/{db}",
}
# The password as each form writes it (the percent-encoded one also decoded): each is masked whole.
PASSWORDS = {
    "percent-encoded": [f"{CANARY}%40x", f"{CANARY}@x"],
    "bracket": [f"{CANARY}[x"],
    "reserved characters": [f"{CANARY}/?#x"],
    "hash in a query value": [f"x#{CANARY}"],
}
# Forms a PostgreSQL server accepts as they are, with the password the role gets.
SERVED = {"query secret key": CANARY, "bracket": f"{CANARY}[x", "reserved characters": f"{CANARY}/?#x"}


@pytest.mark.parametrize("form", [*FORMS, *UNREADABLE])
def test_every_url_form_is_redacted_and_its_secrets_listed(form: str):
    url = {**FORMS, **UNREADABLE}[form].format(user="u", secret=CANARY, port=5432, db="hpo")
    assert CANARY not in redact_url(url)
    assert "127.0.0.1:5432/hpo" in redact_url(url) or form == "unclosed IPv6 bracket"  # the server still named
    assert any(CANARY in secret for secret in url_secrets(url))
    assert CANARY not in redact_text(f"could not connect: {url} refused", url_secrets(url))


def test_a_percent_encoded_password_is_listed_in_both_forms():
    url = FORMS["percent-encoded"].format(user="u", secret=CANARY, port=5432, db="hpo")
    assert {f"{CANARY}%40x", f"{CANARY}@x"} <= set(url_secrets(url))
    assert redact_url(url) == "postgresql+psycopg://u:***@127.0.0.1:5432/hpo"


def test_urls_without_secrets_are_untouched():
    for url in ("sqlite:////abs/study.db", "sqlite:///rel.db", "postgresql://u@h/db?sslmode=require", "runs/j.log"):
        assert redact_url(url) == url and url_secrets(url) == []


def _leaks(text: str, secrets: list[str]) -> list[str]:
    """Lines holding a secret, except the ones that ask GitHub to mask it."""
    return [
        line for line in text.splitlines() if any(s in line for s in secrets) and not line.startswith("::add-mask::")
    ]


def _files_holding(root: Path, secrets: list[str], besides: Iterable[Path] = ()) -> list[Path]:
    """Files (but the user's own, `besides`) whose name or bytes hold a secret."""
    return [
        path
        for path in root.rglob("*")
        if path not in besides
        and (
            any(s in path.name for s in secrets)
            or (path.is_file() and any(s.encode() in path.read_bytes() for s in secrets))
        )
    ]


def _search(config: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    """`hpo-action search` in GitHub Actions mode, stdout and stderr in one stream in the order they were written."""
    return subprocess.run(
        [sys.executable, "-m", "hpo_action", "search", "-c", str(config), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**env, "GITHUB_ACTIONS": "true"},
        timeout=300,
    )  # fmt: skip


def _masked_first(output: str, secret: str) -> bool:
    """The `::add-mask::` line for `secret` is there, and only other mask lines come before it."""
    lines = output.splitlines()
    line = f"::add-mask::{secret.replace('%', '%25')}"
    return line in lines and all(earlier.startswith("::add-mask::") for earlier in lines[: lines.index(line)])


SOURCES = ("HPO_STORAGE", "--storage", "--set", "yaml")


@pytest.mark.parametrize("form", FORMS)
def test_an_unreachable_database_never_shows_its_secrets(tmp_path: Path, form: str):
    secrets = [CANARY, f"{CANARY}2"]
    url = FORMS[form].format(user="u", secret=CANARY, port=9, db="hpo")  # nothing listens on port 9
    env = {key: value for key, value in os.environ.items() if key != "HPO_STORAGE"}
    # Every source takes several forms (all four the bracket): two per form keep the test within a minute or two.
    index = list(FORMS).index(form)
    sources = SOURCES if form == "bracket" else (SOURCES[index % 4], SOURCES[(index + 1) % 4])
    for source in sources:
        raw = small_config(tmp_path, search={"storage": url} if source == "yaml" else {})
        config = write_config(tmp_path, raw)
        extra = {"--storage": ["--storage", url], "--set": ["--set", f"search.storage={url}"]}.get(source, [])
        proc = _search(config, {**env, "HPO_STORAGE": url} if source == "HPO_STORAGE" else env, *extra)
        assert proc.returncode == 2, (source, proc.stdout[-2000:])
        assert "search.storage: cannot open postgresql+psycopg://" in proc.stdout, source
        assert not _leaks(proc.stdout, secrets), source
        assert all(_masked_first(proc.stdout, password) for password in PASSWORDS.get(form, [CANARY])), source
    assert not _files_holding(tmp_path, secrets, besides=[config])


def test_a_real_study_keeps_a_password_from_its_config_out_of_every_file_and_line(tmp_path: Path):
    """A real tiny search whose storage URL, in the YAML file, carries a password that the old redaction printed
    (after a `#` in a query value): config.yaml and summary.json record the URL with *** in its place."""
    url = f"sqlite:///{tmp_path}/db/study.db?uri=true&password=x#{CANARY}"  # SQLite ignores the password
    (tmp_path / "db").mkdir()
    raw = small_config(tmp_path, search={"n_trials": 1, "storage": url, "budget": {"max_steps": 2, "eval_every": 2}})
    proc = _search(write_config(tmp_path, raw), {k: v for k, v in os.environ.items() if k != "HPO_STORAGE"})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert not _leaks(proc.stdout, [CANARY]) and _masked_first(proc.stdout, f"x#{CANARY}")
    assert not _files_holding(tmp_path / "out", [CANARY])  # config.yaml, summary.json, trials.csv, plots, ...
    assert f"{tmp_path}/db/study.db?uri=true&password=***" in (tmp_path / "out" / "config.yaml").read_text()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["storage"].endswith("&password=***")


@pytest.mark.slow
@pytest.mark.parametrize("form", SERVED)
def test_a_real_study_on_postgresql_keeps_its_password_out_of_every_file_and_line(
    tmp_path: Path, postgres_url: str, form: str
):
    import sqlalchemy

    role = f"canary_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(postgres_url, poolclass=sqlalchemy.pool.NullPool, isolation_level="AUTOCOMMIT")
    database = postgres_url.rsplit("/", 1)[1]
    port = sqlalchemy.engine.make_url(postgres_url).port or 5432
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE ROLE {role} LOGIN PASSWORD '{SERVED[form]}'"))
        connection.execute(sqlalchemy.text(f"GRANT {role} TO CURRENT_USER"))  # so that its objects can be dropped
        connection.execute(sqlalchemy.text(f'GRANT ALL ON DATABASE "{database}" TO {role}'))
        connection.execute(sqlalchemy.text(f"GRANT ALL ON SCHEMA public TO {role}"))
    try:
        url = FORMS[form].format(user=role, secret=CANARY, port=port, db=database)
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
        assert f"{role}:***@127.0.0.1" in written
        assert "sslpassword=***" in written or form != "query secret key"
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f"DROP OWNED BY {role}"))
            connection.execute(sqlalchemy.text(f"DROP ROLE {role}"))
