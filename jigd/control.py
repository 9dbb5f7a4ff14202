"""The control API: HTTP with JSON on a Unix socket (mode 0660), used by `jigctl`.

| method | path | what |
|---|---|---|
| GET | /v1/status | station, rigs and slots, open batches with progress and ETA, event-loop lag |
| GET | /v1/batches | every batch with its counts |
| POST | /v1/batches | import a manifest: `{manifest, source, booking, party, again?}` |
| GET | /v1/batches/{id} | one batch |
| POST | /v1/batches/{id}/close | close it: unseen GUIDs become not_received |
| GET | /v1/batches/{id}/guids | every GUID with its outcome (or where it is), for the web view |
| GET | /v1/batches/{id}/report | the four report files, `{files: {name: text}}` |
| GET | /v1/rejected | hubs rejected by this station |
| POST | /v1/catalog/reload | re-read the firmware catalog |
| GET | /v1/stage-times | measured times per Device Model, rigs, hubs per rig-hour (`jigctl plan`) |
| POST | /v1/slots/disable | take a slot out of service: `{rig, slot, reason, by}` |
| POST | /v1/slots/enable | put it back: `{rig, slot, reason, by}` |
| POST | /v1/selftest | self-test a rig now: `{rig}`; failing slots are disabled |

Errors are `{error, problems?}` with 400 for bad input, 404 for an unknown batch, rig or
slot, 409 for a state conflict (closing a closed or busy batch, self-testing a rig that is
down). The request and response models, shared with `jigctl`, are in jigd.control_api;
docs/openapi.yaml is generated from them. The web station view (jigd.web) serves the same
handlers under `/api`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from drivers.untrusted import FIELD_LIMIT, printable
from firmware_catalog import CatalogError
from jigd import control_api as api
from jigd.events import BatchStatus, format_utc
from jigd.heartbeat import site_views
from jigd.manifest import ManifestError, ManifestRow, parse_manifest
from jigd.model import SlotState
from jigd.plan_source import stage_times
from jigd.reports import render_reports
from jigd.slot_service import UnknownSlotError
from jigd.startup import StartupError, os_reason
from jigd.station import Station
from jigd.store import (
    BatchBusyError,
    BatchClosedError,
    BatchInfo,
    GuidInOpenBatchError,
    GuidState,
    SetAsideHub,
    StoreError,
    UnknownBatchError,
)
from jigd.views import selftest_view, service_view, slot_view

__all__ = [
    "Handlers",
    "batch_view",
    "check_socket_path",
    "error_middleware",
    "import_manifest",
    "open_batches",
    "route",
    "serve_control",
    "slot_view",
]

_LOGGER = logging.getLogger(__name__)

SOCKET_MODE: Final = 0o660
MAX_MANIFEST_BYTES: Final = 16 * 1024 * 1024
PROBE_TIMEOUT_S: Final = 2.0  # whether a process still serves on an existing socket
_FileId = tuple[int, int, int]  # st_dev, st_ino, st_ctime_ns


def _batch_fields(info: BatchInfo, set_aside: Sequence[SetAsideHub] = ()) -> dict[str, Any]:
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
        "set_aside": [
            api.SetAsideView(guid=h.guid, rig=h.rig, slot=h.slot, seen_at=h.seen_at)
            for h in set_aside
        ],
    }


def batch_view(info: BatchInfo, set_aside: Sequence[SetAsideHub] = ()) -> api.BatchView:
    """The batch as the control API shows it, with its hubs to re-insert (`Store.set_aside`)."""
    return api.BatchView(**_batch_fields(info, set_aside))


def guid_view(state: GuidState) -> api.GuidView:
    return api.GuidView(
        guid=state.guid,
        line=state.line,
        status=state.status,
        outcome=state.outcome,
        model=state.model or state.declared_model,
        from_version=state.from_version or state.declared_firmware_version,
        to_version=state.to_version,
        attempts=state.attempts,
        rig=state.rig,
        slot=state.slot,
        finished=state.finished,
        failure_stage=state.failure_stage,
        failure_code=state.failure_code,
        failure_detail=state.failure_detail,
    )


async def open_batches(station: Station) -> list[api.OpenBatchView]:
    """The open batches with their progress, ETA and busy slots."""
    rate = station.throughput.per_second()
    batches = []
    for info in await station.store.list_batches(BatchStatus.OPEN):
        busy = sum(
            1 for s in station.slots() if s.batch_id == info.batch_id and s.state is SlotState.BUSY
        )
        eta = round(info.pending / rate, 0) if rate and info.pending else None
        aside = await station.store.set_aside(info.batch_id)
        batches.append(api.OpenBatchView(**_batch_fields(info, aside), eta_s=eta, busy_slots=busy))
    return batches


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


async def import_manifest(
    station: Station, body: api.BatchImportRequest, manifest: bytes | None = None
) -> api.BatchImported:
    """Import a request's manifest as a new batch (ApiError 400 naming what is wrong): what the
    control API's POST /v1/batches does, for any front end that imports manifests. `manifest`:
    the file's bytes as sent, when they are at hand (the parser then says where they are not
    UTF-8); otherwise the request's text."""
    if manifest is None:
        manifest = body.manifest.encode("utf-8")
    if len(manifest) > MAX_MANIFEST_BYTES:
        raise api.ApiError(400, f"the manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    source = printable(body.source, FIELD_LIMIT)  # a client's file name, quoted in messages
    booking = body.booking.strip()
    try:
        rows = await asyncio.to_thread(parse_manifest, manifest, source)
        if not body.again:
            await _refuse_closed_booking(station, rows, booking, source)
        batch_id = await station.store.import_batch(rows, booking, body.party.strip(), source)
    except GuidInOpenBatchError as exc:
        raise api.ApiError(400, _in_open_batches(source, len(rows), exc)) from None
    except ManifestError as exc:
        raise api.ApiError(400, f"{source}: the manifest was not imported", exc.problems) from None
    return api.BatchImported(batch=batch_id, guids=len(rows))


async def _refuse_closed_booking(
    station: Station, rows: list[ManifestRow], booking: str, source: str
) -> None:
    """A closed batch with the same booking: that work order is done; importing it again is
    refused unless asked for (`again`), so a pallet is not flashed and billed twice."""
    store = station.store
    for info in await store.list_batches(BatchStatus.CLOSED):
        if info.booking != booking:
            continue
        listed = {s.guid for s in await store.batch_results(info.batch_id)}
        common = len(listed & {r.guid for r in rows})
        if common == len(rows) == len(listed):
            same = "the same GUIDs"
        else:
            same = f"{common} of these {len(rows)} GUIDs"
        closed = "-" if info.closed_at is None else format_utc(info.closed_at)
        raise api.ApiError(
            400,
            f"{source}: booking {printable(booking, FIELD_LIMIT)} was already imported as batch "
            f"{info.batch_id} from {printable(info.source, FIELD_LIMIT)} ({same}), closed "
            f"{closed}; nothing was imported (to flash this work order again, import with "
            "--again)",
        )


NAMED_GUIDS: Final = 3  # GUIDs named in a one-line summary


def _in_open_batches(source: str, total: int, exc: GuidInOpenBatchError) -> str:
    """`m.csv: all 48 GUIDs are already in open batch B000001`: one line for a manifest
    imported twice, rather than one per GUID."""
    batches = sorted(set(exc.conflicts.values()))
    where = f"open batch{'es' if len(batches) > 1 else ''} {', '.join(batches)}"
    count = len(exc.conflicts)
    if count == total:
        return f"{source}: all {total} GUIDs are already in {where}; nothing was imported"
    named = ", ".join(str(g) for g in sorted(exc.conflicts)[:NAMED_GUIDS])
    more = ", ..." if count > NAMED_GUIDS else ""
    return (
        f"{source}: {count} of {total} GUIDs are already in {where} ({named}{more}); nothing "
        f"was imported: remove them from the file, or close {where.removeprefix('open ')} first"
    )


def _json(model: api.ApiModel, status: int = 200) -> web.Response:
    return web.json_response(model.to_json(), status=status)


_Handler = Callable[[web.Request], Awaitable[api.ApiModel]]


class Handlers:
    """The control API's handlers; the web view (jigd.web) serves them too."""

    def __init__(self, station: Station) -> None:
        self.station = station

    async def status(self, request: web.Request) -> api.StatusResponse:
        station = self.station
        rate = station.throughput.per_second()
        batches = await open_batches(station)
        selftests = {run.rig: run for run in await station.store.last_selftests()}
        rigs = [
            api.RigView(
                rig=rig.rig,
                up=rig.up,
                slots=[
                    slot_view(
                        w.status,
                        station.disabled(rig.rig, s),
                        station.slot_yield.suspect(rig.rig, s),
                    )
                    for s, w in rig.workers.items()
                ],
                selftest=selftest_view(selftests[rig.rig]) if rig.rig in selftests else None,
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
            site=await site_views(station.store, station.config.station, datetime.now(UTC)),
        )

    async def list_batches(self, request: web.Request) -> api.BatchList:
        store = self.station.store
        infos = await store.list_batches()
        return api.BatchList(
            batches=[batch_view(i, await store.set_aside(i.batch_id)) for i in infos]
        )

    async def import_batch(self, request: web.Request) -> api.BatchImported:
        try:
            data = await request.read()
        except web.RequestPayloadError:  # one aiohttp cannot decode (a bad gzip stream)
            raise api.ApiError(
                400, "the request body cannot be read: its Content-Encoding does not decode"
            ) from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise api.ApiError(
                400,
                f"the request body is not UTF-8: byte 0x{exc.object[exc.start]:02X} at "
                f"offset {exc.start}",
            ) from None
        return await import_manifest(self.station, api.BatchImportRequest.parse(text))

    async def show_batch(self, request: web.Request) -> api.BatchView:
        store = self.station.store
        info = await store.get_batch(request.match_info["batch"])
        return batch_view(info, await store.set_aside(info.batch_id))

    async def close_batch(self, request: web.Request) -> api.BatchView:
        store = self.station.store
        info = await store.close_batch(request.match_info["batch"])
        return batch_view(info, await store.set_aside(info.batch_id))

    async def guids(self, request: web.Request) -> api.BatchGuids:
        batch = request.match_info["batch"]
        states = await self.station.store.batch_results(batch)
        return api.BatchGuids(batch=batch, guids=[guid_view(s) for s in states])

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

    async def stage_times(self, request: web.Request) -> api.StageTimes:
        station = self.station
        return await stage_times(station.store, station.config, station.catalog)

    async def journal(self, request: web.Request) -> api.BatchJournal:
        batch = request.match_info["batch"]
        await self.station.store.get_batch(batch)  # UnknownBatchError: 404
        events = await self.station.store.journal(batch_id=batch)
        return api.BatchJournal(
            batch=batch,
            events=[
                api.JournalEntryView(
                    id=e.id,
                    ts=e.ts,
                    kind=e.kind,
                    batch=e.batch_id,
                    guid=e.guid,
                    rig=e.rig,
                    slot=e.slot,
                    data=dict(e.data),
                )
                for e in events
            ],
        )

    async def backup(self, request: web.Request) -> api.BackupDone:
        body = api.BackupRequest.parse(await request.text())
        target = Path(body.path)
        if not target.is_absolute():
            raise api.ApiError(400, f"backup path {body.path!r} is not absolute")
        done = await self.station.store.backup(target)
        return api.BackupDone(path=str(done.path), size=done.size, blocked_s=done.blocked_s)

    async def disable_slot(self, request: web.Request) -> api.ServiceView:
        body = api.parse_body(api.SlotServiceRequest, await request.text())
        services = self.station.services
        service = await services.disable(body.rig, body.slot, reason=body.reason, by=body.by)
        finishing = services.worker(body.rig, body.slot).handling
        return service_view(service).model_copy(update={"finishing": finishing})

    async def enable_slot(self, request: web.Request) -> api.ServiceView:
        body = api.parse_body(api.SlotServiceRequest, await request.text())
        service = await self.station.services.enable(
            body.rig, body.slot, reason=body.reason, by=body.by
        )
        return service_view(service)

    async def selftest(self, request: web.Request) -> api.SelftestView:
        body = api.parse_body(api.SelftestRequest, await request.text())
        rig = self.station.rig(body.rig)
        if rig is None:
            raise UnknownSlotError(f"rig {body.rig} is not in the station's config")
        if not rig.up:
            raise api.ApiError(409, f"rig {body.rig} is down: its controller does not answer")
        outcome = await self.station.selftest(rig)
        return selftest_view(outcome.run, outcome)

    def handlers(self) -> dict[str, _Handler]:
        """Each endpoint's handler by operation id."""
        return {
            api.STATUS.operation_id: self.status,
            api.BATCHES.operation_id: self.list_batches,
            api.IMPORT_BATCH.operation_id: self.import_batch,
            api.BATCH.operation_id: self.show_batch,
            api.CLOSE_BATCH.operation_id: self.close_batch,
            api.BATCH_GUIDS.operation_id: self.guids,
            api.REPORT.operation_id: self.report,
            api.REJECTED.operation_id: self.rejected,
            api.RELOAD_CATALOG.operation_id: self.reload_catalog,
            api.STAGE_TIMES.operation_id: self.stage_times,
            api.JOURNAL.operation_id: self.journal,
            api.BACKUP.operation_id: self.backup,
            api.DISABLE_SLOT.operation_id: self.disable_slot,
            api.ENABLE_SLOT.operation_id: self.enable_slot,
            api.SELFTEST.operation_id: self.selftest,
        }


def route(endpoint: api.Endpoint[Any], handler: _Handler, prefix: str = "") -> web.RouteDef:
    """The endpoint's route (under `prefix`): its handler's model as JSON."""

    async def respond(request: web.Request) -> web.Response:
        model = await handler(request)
        return _json(model, endpoint.status)

    return web.route(endpoint.method, prefix + endpoint.path, respond)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Any
) -> web.StreamResponse:  # aiohttp's handler type is untyped
    try:
        response: web.StreamResponse = await handler(request)
    except api.ApiError as exc:
        return _json(exc.body, exc.status)
    except (UnknownBatchError, UnknownSlotError) as exc:
        return _json(api.ErrorResponse(error=str(exc)), 404)
    except (BatchClosedError, BatchBusyError) as exc:
        return _json(api.ErrorResponse(error=str(exc)), 409)
    except StoreError as exc:
        return _json(api.ErrorResponse(error=str(exc)), 400)
    return response


def make_app(station: Station) -> web.Application:
    handlers = Handlers(station).handlers()
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_MANIFEST_BYTES * 2)
    app.add_routes([route(e, handlers[e.operation_id]) for e in api.ENDPOINTS])
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
