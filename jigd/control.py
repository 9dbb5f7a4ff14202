"""The control API: HTTP with JSON on a Unix socket (mode 0660), used by `jigctl`.

| method | path | what |
|---|---|---|
| GET | /v1/status | station, rigs and slots, open batches with progress and ETA, event-loop lag |
| GET | /v1/batches | every batch with its counts |
| POST | /v1/batches | import a manifest: `{manifest, source, booking, party}` |
| GET | /v1/batches/{id} | one batch |
| POST | /v1/batches/{id}/close | close it: unseen GUIDs become not_received |
| GET | /v1/batches/{id}/report | the four report files, `{files: {name: text}}` |
| GET | /v1/rejected | hubs rejected by this station |
| POST | /v1/catalog/reload | re-read the firmware catalog |

Errors are `{error, problems?}` with 400 for bad input, 404 for an unknown batch, 409 for a
state conflict (closing a closed or busy batch). The request and response models, shared with
`jigctl`, are in jigd.control_api; docs/openapi.yaml is generated from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from drivers.untrusted import FIELD_LIMIT, printable
from firmware_catalog import CatalogError
from jigd import control_api as api
from jigd.events import BatchStatus, SlotStatus
from jigd.manifest import ManifestError, parse_manifest
from jigd.model import SlotState
from jigd.reports import render_reports
from jigd.startup import StartupError, os_reason
from jigd.station import Station
from jigd.store import (
    BatchBusyError,
    BatchClosedError,
    BatchInfo,
    StoreError,
    UnknownBatchError,
)

__all__ = ["batch_view", "check_socket_path", "serve_control", "slot_view"]

_LOGGER = logging.getLogger(__name__)

SOCKET_MODE: Final = 0o660
MAX_MANIFEST_BYTES: Final = 16 * 1024 * 1024
PROBE_TIMEOUT_S: Final = 2.0  # whether a process still serves on an existing socket
_FileId = tuple[int, int, int]  # st_dev, st_ino, st_ctime_ns


def slot_view(status: SlotStatus) -> api.SlotView:
    now = time.monotonic()
    return api.SlotView(
        rig=status.rig,
        slot=status.slot,
        state=status.state,
        guid=status.guid,
        batch=status.batch_id,
        stage=status.stage,
        progress=round(status.progress, 1),
        attempts=status.attempts,
        outcome=status.outcome,
        detail=status.detail,
        seconds_in_state=round(now - status.since, 1),
        model=status.model,
        elapsed_s=None if status.hub_since is None else round(now - status.hub_since, 1),
        expected_s=None if status.expected_s is None else round(status.expected_s, 1),
        wait=None
        if status.wait is None
        else api.WaitView(
            what=status.wait.what,
            waited_s=round(now - status.wait.since, 1),
            limit_s=status.wait.limit_s,
        ),
    )


def _batch_fields(info: BatchInfo) -> dict[str, Any]:
    return {
        "batch": info.batch_id,
        "booking": info.booking,
        "party": info.party,
        "source": info.source,
        "status": info.status,
        "created_at": info.created_at,
        "closed_at": info.closed_at,
        "expected": info.expected,
        "received": info.received,
        "pending": info.pending,
        "counts": dict(info.counts),
    }


def batch_view(info: BatchInfo) -> api.BatchView:
    return api.BatchView(**_batch_fields(info))


def _rejected_entries(station: Station) -> list[api.RejectedEntryView]:
    """The catalog entries the station does not flash, and why."""
    return [
        api.RejectedEntryView(
            model=u.entry.device_model,
            firmware_version=u.entry.firmware_version,
            sha256=u.entry.sha256,
            code=u.code,
            reason=u.reason,
        )
        for u in station.catalog.untrusted()
    ]


def _json(model: api.ApiModel, status: int = 200) -> web.Response:
    return web.json_response(model.to_json(), status=status)


_Handler = Callable[[web.Request], Awaitable[api.ApiModel]]


class _Api:
    def __init__(self, station: Station) -> None:
        self.station = station

    async def status(self, request: web.Request) -> api.StatusResponse:
        station = self.station
        rate = station.throughput.per_second()
        batches = []
        for info in await station.store.list_batches(BatchStatus.OPEN):
            busy = sum(
                1
                for s in station.slots()
                if s.batch_id == info.batch_id and s.state is SlotState.BUSY
            )
            eta = round(info.pending / rate, 0) if rate and info.pending else None
            batches.append(api.OpenBatchView(**_batch_fields(info), eta_s=eta, busy_slots=busy))
        rigs = [
            api.RigView(
                rig=rig.rig, up=rig.up, slots=[slot_view(w.status) for w in rig.workers.values()]
            )
            for rig in station.rigs
        ]
        lag = station.loop_lag.summary().as_json()
        return api.StatusResponse(
            station=station.config.station,
            uptime_s=round(time.monotonic() - station.started, 1),
            hubs_per_hour=None if rate is None else round(rate * 3600, 1),
            loop_lag_ms=api.LoopLag(**lag),
            outbox_depth=await station.store.outbox_depth(),
            rigs=rigs,
            batches=batches,
            catalog_rejected=_rejected_entries(station),
        )

    async def list_batches(self, request: web.Request) -> api.BatchList:
        infos = await self.station.store.list_batches()
        return api.BatchList(batches=[batch_view(i) for i in infos])

    async def import_batch(self, request: web.Request) -> api.BatchImported:
        try:
            text = await request.text()
        except ValueError:  # not UTF-8
            text = ""
        body = api.BatchImportRequest.parse(text)
        manifest = body.manifest.encode("utf-8")
        if len(manifest) > MAX_MANIFEST_BYTES:
            raise api.ApiError(400, f"the manifest is larger than {MAX_MANIFEST_BYTES} bytes")
        source = printable(body.source, FIELD_LIMIT)  # a client's file name, quoted in messages
        try:
            rows = await asyncio.to_thread(parse_manifest, manifest, source)
            batch_id = await self.station.store.import_batch(
                rows, body.booking.strip(), body.party.strip(), source
            )
        except ManifestError as exc:
            raise api.ApiError(
                400, f"{source}: the manifest was not imported", exc.problems
            ) from None
        return api.BatchImported(batch=batch_id, guids=len(rows))

    async def show_batch(self, request: web.Request) -> api.BatchView:
        return batch_view(await self.station.store.get_batch(request.match_info["batch"]))

    async def close_batch(self, request: web.Request) -> api.BatchView:
        return batch_view(await self.station.store.close_batch(request.match_info["batch"]))

    async def report(self, request: web.Request) -> api.ReportFiles:
        files = await render_reports(self.station.store, request.match_info["batch"])
        return api.ReportFiles(files=files)

    async def rejected(self, request: web.Request) -> api.RejectedList:
        hubs = await self.station.store.list_rejected()
        return api.RejectedList(
            rejected=[
                api.RejectedHubView(guid=h.guid, rig=h.rig, slot=h.slot, reason=h.reason, ts=h.ts)
                for h in hubs
            ]
        )

    async def reload_catalog(self, request: web.Request) -> api.CatalogReloaded:
        try:
            count = await self.station.reload_catalog()
        except CatalogError as exc:
            raise api.ApiError(400, str(exc)) from None
        return api.CatalogReloaded(entries=count, rejected=_rejected_entries(self.station))

    def handlers(self) -> dict[str, _Handler]:
        """Each endpoint's handler by operation id."""
        return {
            api.STATUS.operation_id: self.status,
            api.BATCHES.operation_id: self.list_batches,
            api.IMPORT_BATCH.operation_id: self.import_batch,
            api.BATCH.operation_id: self.show_batch,
            api.CLOSE_BATCH.operation_id: self.close_batch,
            api.REPORT.operation_id: self.report,
            api.REJECTED.operation_id: self.rejected,
            api.RELOAD_CATALOG.operation_id: self.reload_catalog,
        }


def _route(endpoint: api.Endpoint[Any], handler: _Handler) -> web.RouteDef:
    async def respond(request: web.Request) -> web.Response:
        model = await handler(request)
        return _json(model, endpoint.status)

    return web.route(endpoint.method, endpoint.path, respond)


@web.middleware
async def _errors(
    request: web.Request, handler: Any
) -> web.StreamResponse:  # aiohttp's handler type is untyped
    try:
        response: web.StreamResponse = await handler(request)
    except api.ApiError as exc:
        return _json(exc.body, exc.status)
    except UnknownBatchError as exc:
        return _json(api.ErrorResponse(error=str(exc)), 404)
    except (BatchClosedError, BatchBusyError) as exc:
        return _json(api.ErrorResponse(error=str(exc)), 409)
    except StoreError as exc:
        return _json(api.ErrorResponse(error=str(exc)), 400)
    return response


def make_app(station: Station) -> web.Application:
    handlers = _Api(station).handlers()
    app = web.Application(middlewares=[_errors], client_max_size=MAX_MANIFEST_BYTES * 2)
    app.add_routes([_route(e, handlers[e.operation_id]) for e in api.ENDPOINTS])
    return app


class _ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server log for the control API. A client that sends malformed HTTP or goes away
    mid-request (a killed jigctl, a half-open probe) is the client's affair: one debug line, no
    traceback. Anything else aiohttp reports (a handler that failed: HTTP 500) stays an ERROR
    with its traceback."""

    def log(
        self, level: int, msg: object, *args: object, exc_info: Any = None, **kwargs: Any
    ) -> None:
        if isinstance(exc_info, (HttpProcessingError, ConnectionResetError)):
            self.logger.debug(
                "control API: a client's request ended early or was not HTTP: %r", exc_info
            )
            return
        super().log(level, msg, *args, exc_info=exc_info, **kwargs)


@asynccontextmanager
async def serve_control(station: Station, path: Path) -> AsyncIterator[None]:
    """Serve the control API on the Unix socket `path` (0660) while the context is open.

    A socket some other process still serves on is never taken over (StartupError); a stale one
    (nobody answers) is replaced. At the end the socket is removed only if this process is still
    the one serving on it, so a daemon never deletes another's socket.
    """
    await asyncio.to_thread(_clear_socket_path, path)
    runner = web.AppRunner(
        make_app(station),
        access_log=None,
        handle_signals=False,
        logger=_ServerLog(_LOGGER, {}),
    )
    await runner.setup()
    created: _FileId | None = None
    try:
        site = web.UnixSite(runner, str(path))
        try:
            await site.start()
            created = await asyncio.to_thread(_own_socket, path)
        except OSError as exc:
            raise StartupError(
                f"control_socket {path}: cannot listen on it: {os_reason(exc)}"
            ) from None
        _LOGGER.info("control API on %s", path)
        yield
    finally:
        await runner.cleanup()
        if created is not None:
            await asyncio.to_thread(_remove_if_ours, path, created)


async def check_socket_path(path: Path) -> None:
    """Before the station starts: StartupError if the control socket cannot be had (another
    process serves on it, or something else is at its path); a stale socket is removed."""
    await asyncio.to_thread(_clear_socket_path, path)


def _clear_socket_path(path: Path) -> None:
    """Make way for the socket: its directory exists, and no live socket or other file is there."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        info = path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StartupError(f"control_socket {path}: {os_reason(exc)}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise StartupError(f"control_socket {path}: exists and is not a socket; not replacing it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(PROBE_TIMEOUT_S)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):  # left by a process that has gone
            path.unlink(missing_ok=True)
            return
        except TimeoutError:
            pass  # a process that listens but is too busy to accept: still its socket
        except OSError as exc:
            raise StartupError(f"control_socket {path}: {os_reason(exc)}") from None
    raise StartupError(f"control_socket {path}: another process is serving on it")


def _file_id(path: Path) -> _FileId:
    info = path.lstat()
    return info.st_dev, info.st_ino, info.st_ctime_ns


def _own_socket(path: Path) -> _FileId:
    """Set the socket's mode; what identifies the file, to know it again at the end (the inode
    with its change time: a file made later in its place may reuse the inode number)."""
    path.chmod(SOCKET_MODE)
    return _file_id(path)


def _remove_if_ours(path: Path, created: _FileId) -> None:
    with contextlib.suppress(FileNotFoundError):
        if _file_id(path) == created:
            path.unlink()
