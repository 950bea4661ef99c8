"""Credentials kept out of what arte prints and stores: a URL's user:password part (a key written
into `--teacher.base_url http://user:KEY@host/v1`) is shown as `***@`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """`url` with its user and password replaced by *** (unchanged when it has none)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def redact_urls(data: Any) -> Any:
    """A copy of a plain (JSON-like) config with every `base_url` value redacted."""
    if isinstance(data, dict):
        return {
            k: redact_url(v) if k == "base_url" and isinstance(v, str) else redact_urls(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [redact_urls(v) for v in data]
    return data
