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
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from firmware_catalog import CatalogError
from jigd import control_api as api
from jigd.events import BatchStatus, SlotStatus
from jigd.manifest import ManifestError, parse_manifest
from jigd.model import SlotState
from jigd.reports import render_reports
from jigd.station import Station
from jigd.store import (
    BatchBusyError,
    BatchClosedError,
    BatchInfo,
    StoreError,
    UnknownBatchError,
)

__all__ = ["batch_view", "serve_control", "slot_view"]

_LOGGER = logging.getLogger(__name__)

SOCKET_MODE: Final = 0o660
MAX_MANIFEST_BYTES: Final = 16 * 1024 * 1024


def slot_view(status: SlotStatus) -> api.SlotView:
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
        seconds_in_state=round(time.monotonic() - status.since, 1),
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
        source = body.source
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
            count = await asyncio.to_thread(self.station.reload_catalog)
        except CatalogError as exc:
            raise api.ApiError(400, str(exc)) from None
        return api.CatalogReloaded(entries=count)

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


@asynccontextmanager
async def serve_control(station: Station, path: Path) -> AsyncIterator[None]:
    """Serve the control API on the Unix socket `path` (0660) while the context is open."""
    await asyncio.to_thread(_clear_socket_path, path)
    runner = web.AppRunner(make_app(station), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.UnixSite(runner, str(path))
        await site.start()
        await asyncio.to_thread(path.chmod, SOCKET_MODE)
        _LOGGER.info("control API on %s", path)
        yield
    finally:
        await runner.cleanup()
        await asyncio.to_thread(path.unlink, missing_ok=True)


def _clear_socket_path(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
