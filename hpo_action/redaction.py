"""Secrets never reach a log line or a file: database URLs are shown without their password."""

from __future__ import annotations


def redact_url(url: str) -> str:
    """Hide the password of a database URL before it reaches a log."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url
