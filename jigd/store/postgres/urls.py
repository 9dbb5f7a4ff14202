"""PostgreSQL store URLs: `postgresql://user[:password]@host[:port]/database[?options]` (libpq's
URI form; `postgres://` too). A URL names a server (a host, or a socket directory as
`?host=/run/postgresql`) and a database; it has no relative form, so resolving one only checks
it. A password in a URL never reaches a message or a log: `masked_url` and `scrub`."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Final

from jigd.store.errors import StoreUrlError

__all__ = ["ALIASES", "SCHEME", "masked_url", "resolve_url", "scrub", "server_of"]

SCHEME: Final = "postgresql"
ALIASES: Final = ("postgres",)  # libpq takes both
_MASK: Final = "***"


def _passwords(url: str) -> list[str]:
    """The passwords a URL holds: after the user name, and as a `password=` option."""
    try:
        parts = urllib.parse.urlsplit(url)
        found = [parts.password] if parts.password else []
    except ValueError:
        return []
    options = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    return found + [value for key, value in options if key == "password" and value]


def masked_url(url: str) -> str:
    """The URL with each password in it, if any, replaced by `***`."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return "(a store URL that does not parse)"
    if password is not None:  # a netloc, so urlunsplit keeps the `//`
        user, _, host = parts.netloc.rpartition("@")
        name = user.split(":", 1)[0]
        url = urllib.parse.urlunsplit(parts._replace(netloc=f"{name}:{_MASK}@{host}"))
    options = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "password" for key, _ in options):
        masked = [(k, _MASK if k == "password" else v) for k, v in options]
        head, _, rest = url.partition("?")
        _, hash_sign, fragment = rest.partition("#")
        url = f"{head}?{urllib.parse.urlencode(masked, safe='/*')}{hash_sign}{fragment}"
    return url


def scrub(text: str, url: str) -> str:
    """`text` (a server's or libpq's message) without the URL's passwords, raw or quoted."""
    for password in _passwords(url):
        plain = urllib.parse.unquote(password)
        for form in {password, plain, urllib.parse.quote(plain, safe="")}:
            text = text.replace(form, _MASK)
    return text


def server_of(url: str) -> tuple[str, str]:
    """The server (host or socket directory) and database a PostgreSQL URL names;
    StoreUrlError naming the (masked) URL if it lacks either."""
    shown = masked_url(url)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise StoreUrlError(f"store URL {shown!r} is not a URL: {exc}") from None
    if parts.scheme not in (SCHEME, *ALIASES):
        raise StoreUrlError(f"store URL {shown!r} is not a {SCHEME}: URL")
    query = urllib.parse.parse_qs(parts.query)
    host = host or next(iter(query.get("host", [])), None)
    database = urllib.parse.unquote(parts.path.lstrip("/")) or next(
        iter(query.get("dbname", [])), None
    )
    problem = (
        "names no server (a host, or ?host=/socket/directory)"
        if not host
        else "names no database"
        if not database
        else "has a fragment"
        if parts.fragment
        else None
    )
    if problem is not None or not host or not database:
        raise StoreUrlError(
            f"store URL {shown!r} {problem}; write postgresql://user@host[:port]/database"
        )
    return (host if port is None else f"{host}:{port}"), database


def resolve_url(url: str, base: Path) -> str:
    """The URL, checked; a PostgreSQL URL has no relative form, so `base` is not used."""
    del base
    server_of(url)
    return url
