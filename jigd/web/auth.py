"""Who may change things through the web view: a session cookie got by posting the token.

Reading is open to anyone who reaches the view; import and close need a session. Posting the
station's bearer token (`web.token_file`) to the login endpoint opens a session: a random id,
kept only in this process, sent as an HttpOnly, SameSite=Strict cookie. The token itself is
never stored in a cookie, rendered or logged. Every POST must come from the view's own origin
(its `Origin` header), so another site cannot make a logged-in browser post (CSRF).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web

from jigd import control_api as api
from jigd.secrets import Secret

__all__ = ["COOKIE", "LOGIN_HINT", "Sessions", "check_origin"]

COOKIE: Final = "jigd_session"
SESSION_S: Final = 12 * 3600.0  # a shift
MAX_SESSIONS: Final = 64  # the oldest is forgotten beyond this
LOGIN_HINT: Final = (
    "log in first: enter the station's web token (the text of the file named by web.token_file "
    "in the station's jigd.toml) in the Log in form at the top of the page"
)


def _refused(message: str) -> web.HTTPForbidden:
    body = api.ErrorResponse(error=message).model_dump_json(exclude_none=True)
    return web.HTTPForbidden(text=body, content_type="application/json")


def check_origin(request: web.Request) -> None:
    """A POST from a page of this view, or HTTPForbidden: its Origin names this server's host
    and port (the scheme may differ behind a TLS proxy)."""
    origin = urlsplit(request.headers.get("Origin", ""))
    if origin.scheme not in ("http", "https") or origin.netloc != request.host:
        raise _refused("refused: the request does not come from this station's web view")


class Sessions:
    """Open sessions by id, with their expiry."""

    def __init__(self, token: Secret) -> None:
        self._token = token
        self._open: OrderedDict[str, float] = OrderedDict()

    def login(self, given: str) -> str | None:
        """A new session id if `given` is the token, else None."""
        if not hmac.compare_digest(given.strip().encode("utf-8"), self._token.reveal()):
            return None
        session = secrets.token_urlsafe(32)
        self._open[session] = time.monotonic() + SESSION_S
        while len(self._open) > MAX_SESSIONS:
            self._open.popitem(last=False)
        return session

    def logout(self, request: web.Request) -> None:
        self._open.pop(request.cookies.get(COOKIE, ""), None)

    def valid(self, request: web.Request) -> bool:
        session = request.cookies.get(COOKIE)
        if session is None:
            return False
        expiry = self._open.get(session)
        if expiry is None:
            return False
        if expiry < time.monotonic():
            del self._open[session]
            return False
        return True

    def require(self, request: web.Request) -> None:
        """HTTPForbidden saying how to log in, unless the request has a valid session."""
        check_origin(request)
        if not self.valid(request):
            raise _refused(LOGIN_HINT)
