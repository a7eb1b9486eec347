"""Secrets never reach a log line or a file: one redaction for every URL form a database URL can take.

SQLAlchemy URLs carry a password in the userinfo (`user:password@host`), in the query (`?password=`), or in any
query key that names a secret (`sslpassword`, `token`, `api_key`, ...). `redact_url` hides all of them;
`url_secrets` lists their values (percent-encoded and decoded) so they can be masked in GitHub Actions logs and
scrubbed from any message.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

HIDDEN = "***"
# Query keys that carry a secret (matched anywhere in the key, case-insensitively).
_SECRET_KEY = re.compile(r"pass|pwd|secret|token|key|auth|credential|signature|sig$", re.I)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def _split(url: str) -> urllib.parse.SplitResult | None:
    if "://" not in url:
        return None
    try:
        return urllib.parse.urlsplit(url)
    except ValueError:
        return None


def url_secrets(url: str) -> list[str]:
    """The secret values in a URL: the userinfo password and every secret-named query value, raw and decoded."""
    parts = _split(url)
    if parts is None:
        return []
    found: list[str] = []
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    if ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    for key, sep, value in (pair.partition("=") for pair in parts.query.split("&") if pair):
        if sep and value and _SECRET_KEY.search(urllib.parse.unquote_plus(key)):
            found.append(value)
    values = {v for raw in found for v in (raw, urllib.parse.unquote(raw), urllib.parse.unquote_plus(raw)) if v}
    return sorted(values, key=len, reverse=True)


def redact_url(url: str) -> str:
    """The URL with its password and secret query values replaced by ***; every other character is kept."""
    parts = _split(url)
    if parts is None:
        return url
    head, netloc = f"{parts.scheme}://", parts.netloc
    if not url.lower().startswith(head.lower() + netloc.lower()):
        return url  # not a shape urlsplit read back faithfully: leave it to redact_text's secret list
    rest = url[len(head) + len(netloc) :]
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{HIDDEN}@{host}" if ":" in userinfo else netloc
    path, qmark, tail = rest.partition("?")
    query, hash_sign, fragment = tail.partition("#")
    query = "&".join(
        f"{key}={HIDDEN}" if sep and _SECRET_KEY.search(urllib.parse.unquote_plus(key)) else f"{key}{sep}{value}"
        for key, sep, value in (pair.partition("=") for pair in query.split("&"))
    )
    return f"{head}{netloc}{path}{qmark}{query}{hash_sign}{fragment}"


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Text (a message, a log line, a file) with every URL redacted and every known secret value replaced."""
    text = _URL.sub(lambda match: redact_url(match.group(0)), text)
    for secret in sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text
