"""Secrets out of everything pytest-mlload prints or writes: one helper for URLs and text.

A URL may carry credentials (``http://user:pass@prometheus:9090``, ``?token=...``) and the
environment may hold a bearer token (:data:`PROMETHEUS_TOKEN_ENV`). Every message, report,
baseline and generated YAML shows such a URL through :func:`redact_url`, and any free text
that may quote one (a traceback, a server's error body) through :func:`scrub`::

    >>> redact_url("http://user:pass@h/")
    'http://user:***@h/'
    >>> scrub("GET http://u:s3cret@h/x failed (s3cret)", known_secrets("http://u:s3cret@h/"))
    'GET http://u:***@h/x failed (***)'
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping

__all__ = [
    "MASK",
    "PROMETHEUS_TOKEN_ENV",
    "credentials_of",
    "known_secrets",
    "redact_url",
    "scrub",
    "strip_credentials",
]

MASK = "***"
PROMETHEUS_TOKEN_ENV = "MLLOAD_PROMETHEUS_TOKEN"
# Query parameters whose values are secrets (compared lower-case, dashes as underscores).
_SECRET_PARAMS = frozenset(
    {"token", "access_token", "api_key", "apikey", "key", "password", "passwd", "secret", "auth"}
)
# scheme://userinfo@ inside free text; userinfo stops at the first '/', '@' or blank.
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")


def _split_userinfo(netloc: str) -> tuple[str | None, str | None, str]:
    """``user:pass@host:port`` -> ``("user", "pass", "host:port")``; raw (still %-encoded)."""
    if "@" not in netloc:
        return None, None, netloc
    userinfo, _, hostport = netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    return user, (password if sep else None), hostport


def _mask_userinfo(userinfo: str) -> str:
    user, sep, _ = userinfo.partition(":")
    # a lone user part is often a token (https://TOKEN@host): mask it too
    return f"{user}:{MASK}" if sep else MASK


def redact_url(url: str) -> str:
    """``url`` with its password (or a lone user part) and secret query values as ``***``.

    ``http://user:pass@h/`` -> ``http://user:***@h/``; ``http://tok@h`` -> ``http://***@h``;
    ``http://h/?token=x&q=1`` -> ``http://h/?token=***&q=1``. Anything that is not a URL
    with credentials comes back unchanged.
    """
    if not isinstance(url, str):
        return url
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{_mask_userinfo(userinfo)}@{hostport}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(_is_secret_param(k) for k, _ in pairs):
            query = "&".join(
                f"{urllib.parse.quote(k, safe='')}="
                + (MASK if _is_secret_param(k) else urllib.parse.quote(v, safe=""))
                for k, v in pairs
            )
    if netloc == parts.netloc and query == parts.query:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def _is_secret_param(name: str) -> bool:
    return name.lower().replace("-", "_") in _SECRET_PARAMS


def strip_credentials(url: str) -> str:
    """``url`` without any user part (``http://u:p@h:1/x`` -> ``http://h:1/x``), for places
    that must name the server but never hold a credential (a generated KEDA YAML)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def credentials_of(url: str) -> tuple[str, str] | None:
    """The decoded ``(user, password)`` in ``url``, or None; a lone user part gives
    ``(user, "")``."""
    user, password, _ = _split_userinfo(urllib.parse.urlsplit(url).netloc)
    if user is None:
        return None
    return urllib.parse.unquote(user), urllib.parse.unquote(password or "")


def known_secrets(
    *urls: str | None, env: Mapping[str, str] | None = None, env_vars: Iterable[str] = ()
) -> tuple[str, ...]:
    """Every secret in ``urls`` (passwords, lone user parts, secret query values, raw and
    %-decoded) and in the environment variables ``env_vars`` plus :data:`PROMETHEUS_TOKEN_ENV`
    (of ``env``, default ``os.environ``), longest first, for :func:`scrub`."""
    env = os.environ if env is None else env
    found: set[str] = set()
    for url in urls:
        if not url:
            continue
        parts = urllib.parse.urlsplit(url)
        user, password, _ = _split_userinfo(parts.netloc)
        for raw in (password,) if password is not None else (user,):
            if raw:
                found.update({raw, urllib.parse.unquote(raw)})
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
            if _is_secret_param(k) and v:
                found.update({v, urllib.parse.quote(v, safe="")})
    for name in (PROMETHEUS_TOKEN_ENV, *env_vars):
        value = env.get(name, "")
        if value:
            found.add(value)
    return tuple(sorted(found, key=lambda s: (-len(s), s)))


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL's credentials masked and each of ``secrets`` replaced by
    ``***`` (see :func:`known_secrets`); safe on any text, e.g. a traceback."""
    if not isinstance(text, str):
        return text
    out = _URL_USERINFO.sub(lambda m: m["scheme"] + _mask_userinfo(m["userinfo"]) + "@", text)
    for secret in sorted({s for s in secrets if s and s != MASK}, key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out
