"""The web station view: an aiohttp app on TCP serving the pages, the control API's JSON under
`/api`, report downloads, the live feed, and log in (docs/web.md).

| method | path | what |
|---|---|---|
| GET | / | the station page |
| GET | /batches/{batch} | a batch's page |
| GET | /static/{file} | the pages' script and style sheet |
| GET | /api/v1/status, /api/v1/batches, /api/v1/batches/{batch}[/guids, /report] | as /v1/... |
| GET | /api/v1/batches/{batch}/report/{file} | one report file, as an attachment |
| GET | /api/v1/events | the live feed (Server-Sent Events, jigd.web.feed) |
| GET | /api/v1/session | `{logged_in}` |
| POST | /api/v1/login, /api/v1/logout | open (the token, as form field `token`) or end a session |
| POST | /api/v1/batches | import a manifest: multipart `manifest` (file), `booking`, `party` |
| POST | /api/v1/batches/{batch}/close | close a batch |

The pages and data are open to read; the two POSTs that change batches need a session
(jigd.web.auth). Every response carries a Content-Security-Policy without inline script or
style, and headers that forbid sniffing, framing and referrers. Nothing is logged per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Final

from aiohttp import web

from jigd import control_api as api
from jigd.config import WebConfig
from jigd.control import MAX_MANIFEST_BYTES, Handlers, error_middleware, import_manifest, route
from jigd.reports import render_reports
from jigd.secrets import Secret
from jigd.startup import StartupError, os_reason
from jigd.station import Station
from jigd.web.auth import COOKIE, SESSION_S, Sessions, check_origin
from jigd.web.feed import Feed, sse

__all__ = ["make_app", "serve_web"]

_LOGGER = logging.getLogger(__name__)

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
        "object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATIC_TYPES: Final = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
REPORT_TYPES: Final = {".json": "application/json", ".csv": "text/csv"}
WRITE_TIMEOUT_S: Final = 10.0  # a browser that takes longer to take a chunk is dropped
READ_OPS: Final = (api.STATUS, api.BATCHES, api.BATCH, api.BATCH_GUIDS, api.REPORT)


def _static() -> dict[str, bytes]:
    folder = resources.files("jigd.web") / "static"
    return {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()}


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


class _View:
    def __init__(self, station: Station, feed: Feed, sessions: Sessions) -> None:
        self.station = station
        self.feed = feed
        self.sessions = sessions
        self.handlers = Handlers(station)
        self.files = _static()

    def _file(self, name: str) -> web.Response:
        body = self.files.get(name)
        suffix = name[name.rfind(".") :]
        if body is None or suffix not in STATIC_TYPES:
            raise web.HTTPNotFound(text="no such file")
        return web.Response(body=body, content_type=STATIC_TYPES[suffix], charset="utf-8")

    async def station_page(self, request: web.Request) -> web.Response:
        return self._file("station.html")

    async def batch_page(self, request: web.Request) -> web.Response:
        return self._file("batch.html")

    async def static(self, request: web.Request) -> web.Response:
        return self._file(request.match_info["name"])

    async def report_file(self, request: web.Request) -> web.Response:
        batch = request.match_info["batch"]
        name = request.match_info["name"]
        files = await render_reports(self.station.store, batch)
        if name not in files:
            raise api.ApiError(404, f"batch {batch} has no report file {name!r}")
        suffix = name[name.rfind(".") :]
        response = web.Response(
            text=files[name], content_type=REPORT_TYPES.get(suffix, "text/plain"), charset="utf-8"
        )
        response.headers["Content-Disposition"] = f'attachment; filename="{batch}-{name}"'
        return response

    async def session(self, request: web.Request) -> web.Response:
        return web.json_response({"logged_in": self.sessions.valid(request)})

    async def login(self, request: web.Request) -> web.Response:
        check_origin(request)
        form = await request.post()
        token = form.get("token")
        session = self.sessions.login(token) if isinstance(token, str) else None
        if session is None:
            await asyncio.sleep(0.5)  # guessing is slow
            raise api.ApiError(403, "wrong token: the token is the text of web.token_file")
        response = web.json_response({"logged_in": True})
        response.set_cookie(
            COOKIE,
            session,
            max_age=int(SESSION_S),
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        return response

    async def logout(self, request: web.Request) -> web.Response:
        check_origin(request)
        self.sessions.logout(request)
        response = web.json_response({"logged_in": False})
        response.del_cookie(COOKIE, path="/")
        return response

    async def import_batch(self, request: web.Request) -> web.Response:
        self.sessions.require(request)
        form = await request.post()
        upload = form.get("manifest")
        if not isinstance(upload, web.FileField):
            raise api.ApiError(400, "choose a manifest file to import")
        data = await asyncio.to_thread(upload.file.read, MAX_MANIFEST_BYTES + 1)
        values = {
            # Checked here for presence only; the bytes themselves go to the manifest parser,
            # which says where a file is not UTF-8.
            "manifest": data.decode("utf-8", "replace"),
            "source": upload.filename or "manifest",
            "booking": form.get("booking"),
            "party": form.get("party"),
            "again": form.get("again") == "on",
        }
        body = api.BatchImportRequest.parse(json.dumps(values))
        imported = await import_manifest(self.handlers.station, body, data)
        self.feed.batches_changed()
        return web.json_response(imported.to_json(), status=api.IMPORT_BATCH.status)

    async def close_batch(self, request: web.Request) -> web.Response:
        self.sessions.require(request)
        closed = await self.handlers.close_batch(request)
        self.feed.batches_changed()
        return web.json_response(closed.to_json())

    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        client = self.feed.connect()
        try:
            status = await self.handlers.status(request)
            snapshot = {"status": status.to_json(), "alerts": list(self.feed.alerts)}
            await response.write(b"retry: 2000\n" + sse("snapshot", snapshot))
            while True:
                await client.wake.wait()
                if client.dropped:
                    break
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    await response.write(client.take())
        except (ConnectionError, TimeoutError):
            pass  # the browser went away or fell behind; it reconnects
        finally:
            self.feed.disconnect(client)
        return response

    def routes(self) -> list[web.RouteDef]:
        ops = self.handlers.handlers()
        return [
            web.get("/", self.station_page),
            web.get("/batches/{batch}", self.batch_page),
            web.get("/static/{name}", self.static),
            *[route(e, ops[e.operation_id], "/api") for e in READ_OPS],
            web.get("/api/v1/batches/{batch}/report/{name}", self.report_file),
            web.get("/api/v1/events", self.events),
            web.get("/api/v1/session", self.session),
            web.post("/api/v1/login", self.login),
            web.post("/api/v1/logout", self.logout),
            web.post("/api/v1/batches", self.import_batch),
            web.post("/api/v1/batches/{batch}/close", self.close_batch),
        ]


def make_app(station: Station, feed: Feed, token: Secret) -> web.Application:
    view = _View(station, feed, Sessions(token))
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_MANIFEST_BYTES * 2)
    app.add_routes(view.routes())
    app.on_response_prepare.append(_headers)
    return app


@asynccontextmanager
async def serve_web(station: Station, config: WebConfig, token: Secret) -> AsyncIterator[Feed]:
    """Serve the view on `config.listen` while the context is open; yields its live feed
    (already a station observer). StartupError naming `web.listen` if it cannot listen."""
    feed = Feed(station)
    station.add_observer(feed.observer())
    runner = web.AppRunner(
        make_app(station, feed, token), access_log=None, handle_signals=False, shutdown_timeout=2
    )
    await runner.setup()
    task = asyncio.get_running_loop().create_task(feed.run(), name="web-feed")
    try:
        host, port = config.address
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise StartupError(
                f"web.listen: cannot listen on {config.listen}: {os_reason(exc)}"
            ) from None
        _LOGGER.info("web station view on http://%s/", config.listen)
        yield feed
    finally:
        feed.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()
