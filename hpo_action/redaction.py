"""Secrets never reach a log line or a file: one redaction for every string a database URL can be.

SQLAlchemy reads a password from the userinfo (`user:password@host`, where the password runs to the next `@` and
may hold `[`, `/`, `?`, `#`, spaces), from the query (`?password=`), or from any query key that names a secret
(`sslpassword`, `token`, `api_key`, ...). The redaction never depends on a URL parser succeeding: it reads the
string the way SQLAlchemy does, and whatever it cannot read with certainty (several `@`, no `scheme://` but an
`@`) is hidden whole up to the last `@`. `url_secrets` lists the secret values (percent-encoded and decoded) so
they can be masked in GitHub Actions logs and scrubbed from any message.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

HIDDEN = "***"
# Query keys that carry a secret (matched anywhere in the key, case-insensitively).
_SECRET_KEY = re.compile(r"pass|pwd|secret|token|key|auth|credential|signature|sig$", re.I)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


@dataclass(frozen=True)
class _Read:
    """A URL cut where its secrets sit: `head` and `user` are kept, `secrets` are the userinfo's possible passwords
    (hidden), `tail` is host, path and query (kept, but for the values of secret-named query keys)."""

    head: str
    user: str  # what stands for the userinfo in the redacted URL, `@` included ("" when there is none)
    secrets: tuple[str, ...]
    tail: str


def _read(url: str) -> _Read:
    """Read `url` as SQLAlchemy does; where that is ambiguous, everything up to the last `@` counts as secret."""
    scheme = _SCHEME.match(url)
    head, rest = (url[: scheme.end()], url[scheme.end() :]) if scheme else ("", url)
    if "@" not in rest:
        return _Read(head, "", (), rest)
    last_at = rest.rindex("@")
    if scheme is None:  # no URL a parser reads, yet an `@`: what precedes it may be a password
        return _Read("", f"{HIDDEN}@", (rest[:last_at],), rest[last_at + 1 :])
    stop = next((i for i, char in enumerate(rest) if char in ":/"), len(rest))  # SQLAlchemy's user name ends here
    if last_at < stop:  # user@host: a user name, no password
        return _Read(head, rest[: last_at + 1], (), rest[last_at + 1 :])
    colon = rest.find(":", 0, last_at)
    if colon < 0:  # no `:` before the `@`, so no password (e.g. sqlite:////srv/me@work/study.db)
        return _Read(head, "", (), rest)
    if rest[stop] == ":" and rest.count("@", stop) == 1:  # the one clear shape, user:password@host
        return _Read(head, f"{rest[:stop]}:{HIDDEN}@", (rest[stop + 1 : last_at],), rest[last_at + 1 :])
    # Several `@`, or a `:` after a `/`: SQLAlchemy's password runs to the first `@` after the user name's `:`,
    # the user may have meant the last `@`; hide everything up to the last one.
    # (The pieces are masked too; one of 1-2 characters would mask every such letter of a log, so not those.)
    pieces = (rest[:last_at], rest[colon + 1 : last_at], rest[colon + 1 : rest.index("@", colon)])
    return _Read(head, f"{HIDDEN}@", tuple(p for p in pieces if len(p) >= 3), rest[last_at + 1 :])


def _query_pairs(tail: str) -> list[tuple[str, str, str]]:
    query = tail.partition("?")[2]
    return [pair.partition("=") for pair in query.split("&")] if query else []


def _is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(urllib.parse.unquote_plus(key)))


def url_secrets(url: str) -> list[str]:
    """The secret values in a URL: the userinfo password and every secret-named query value, raw and decoded,
    longest first."""
    read = _read(url)
    found = [*read.secrets, *(value for key, sep, value in _query_pairs(read.tail) if sep and _is_secret_key(key))]
    values = {v for raw in found for v in (raw, urllib.parse.unquote(raw), urllib.parse.unquote_plus(raw)) if v}
    return sorted(values, key=len, reverse=True)


def redact_url(url: str) -> str:
    """The URL with its password and secret query values replaced by ***; what cannot be read for sure is
    hidden whole up to its last `@`."""
    read = _read(url)
    where, qmark, query = read.tail.partition("?")
    if qmark:
        query = "&".join(
            f"{key}={HIDDEN}" if sep and _is_secret_key(key) else f"{key}{sep}{value}"
            for key, sep, value in _query_pairs(read.tail)
        )
    return f"{read.head}{read.user}{where}{qmark}{query}"


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Text (a message, a log line, a file) with every URL redacted and every known secret value replaced."""
    text = _URL.sub(lambda match: redact_url(match.group(0)), text)
    for secret in sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text


def secrets_in_words(words: Iterable[str]) -> list[str]:
    """The URL secrets in command-line words: a word may be a URL, `--opt=URL` or `key=URL` (`--set
    search.storage=...`); the URL runs from its scheme to the end of the word (spaces included)."""
    found: list[str] = []
    for word in words:
        scheme = _SCHEME.search(word)
        if scheme is not None:
            found.extend(url_secrets(word[scheme.start() :]))
    return found


def secrets_in_data(node: object) -> list[str]:
    """The URL secrets in every string of nested mappings and lists (a loaded config)."""
    if isinstance(node, str):
        return secrets_in_words([node])
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, list | tuple):
        return [secret for child in node for secret in secrets_in_data(child)]
    return []
