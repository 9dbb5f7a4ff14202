"""The web station view served by the daemon (docs/web.md): pages, JSON, live feed, log in."""

from jigd.web.server import serve_web

__all__ = ["serve_web"]
