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
state conflict (closing a closed or busy batch).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from firmware_catalog import CatalogError
from jigd.manifest import ManifestError, parse_manifest
from jigd.model import SlotState
from jigd.reports import render_reports
from jigd.slot import SlotStatus
from jigd.station import Station
from jigd.store import (
    BatchBusyError,
    BatchClosedError,
    BatchInfo,
    BatchStatus,
    StoreError,
    UnknownBatchError,
)

__all__ = ["batch_json", "serve_control", "slot_json"]

_LOGGER = logging.getLogger(__name__)

SOCKET_MODE: Final = 0o660
MAX_MANIFEST_BYTES: Final = 16 * 1024 * 1024


def slot_json(status: SlotStatus) -> dict[str, Any]:
    return {
        "rig": status.rig,
        "slot": status.slot,
        "state": str(status.state),
        "guid": None if status.guid is None else str(status.guid),
        "batch": status.batch_id,
        "stage": None if status.stage is None else str(status.stage),
        "progress": round(status.progress, 1),
        "attempts": status.attempts,
        "outcome": None if status.outcome is None else str(status.outcome),
        "detail": status.detail,
        "seconds_in_state": round(time.monotonic() - status.since, 1),
    }


def batch_json(info: BatchInfo) -> dict[str, Any]:
    return {
        "batch": info.batch_id,
        "booking": info.booking,
        "party": info.party,
        "source": info.source,
        "status": str(info.status),
        "created_at": info.created_at.isoformat(),
        "closed_at": None if info.closed_at is None else info.closed_at.isoformat(),
        "expected": info.expected,
        "received": info.received,
        "pending": info.pending,
        "counts": {str(k): v for k, v in info.counts.items()},
    }


def _error(status: int, message: str, problems: list[str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if problems:
        body["problems"] = problems
    return web.json_response(body, status=status)


class _Api:
    def __init__(self, station: Station) -> None:
        self.station = station

    async def status(self, request: web.Request) -> web.Response:
        station = self.station
        rate = station.throughput.per_second()
        batches = []
        for info in await station.store.list_batches(BatchStatus.OPEN):
            item = batch_json(info)
            busy = sum(
                1
                for s in station.slots()
                if s.batch_id == info.batch_id and s.state is SlotState.BUSY
            )
            item["eta_s"] = round(info.pending / rate, 0) if rate and info.pending else None
            item["busy_slots"] = busy
            batches.append(item)
        rigs = [
            {
                "rig": rig.rig,
                "up": rig.up,
                "slots": [slot_json(w.status) for w in rig.workers.values()],
            }
            for rig in station.rigs
        ]
        return web.json_response(
            {
                "station": station.config.station,
                "uptime_s": round(time.monotonic() - station.started, 1),
                "hubs_per_hour": None if rate is None else round(rate * 3600, 1),
                "loop_lag_ms": station.loop_lag.summary().as_json(),
                "outbox_depth": await station.store.outbox_depth(),
                "rigs": rigs,
                "batches": batches,
            }
        )

    async def list_batches(self, request: web.Request) -> web.Response:
        infos = await self.station.store.list_batches()
        return web.json_response({"batches": [batch_json(i) for i in infos]})

    async def import_batch(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the request body is not JSON")
        fields = {k: body.get(k) for k in ("manifest", "source", "booking", "party")}
        missing = [k for k, v in fields.items() if not isinstance(v, str) or not v.strip()]
        if missing:
            return _error(400, f"missing or empty: {', '.join(missing)}")
        manifest = str(fields["manifest"]).encode("utf-8")
        if len(manifest) > MAX_MANIFEST_BYTES:
            return _error(400, f"the manifest is larger than {MAX_MANIFEST_BYTES} bytes")
        source = str(fields["source"])
        try:
            rows = await asyncio.to_thread(parse_manifest, manifest, source)
            batch_id = await self.station.store.import_batch(
                rows, str(fields["booking"]).strip(), str(fields["party"]).strip(), source
            )
        except ManifestError as exc:
            return _error(400, f"{source}: the manifest was not imported", exc.problems)
        return web.json_response({"batch": batch_id, "guids": len(rows)}, status=201)

    async def show_batch(self, request: web.Request) -> web.Response:
        info = await self.station.store.get_batch(request.match_info["batch"])
        return web.json_response(batch_json(info))

    async def close_batch(self, request: web.Request) -> web.Response:
        info = await self.station.store.close_batch(request.match_info["batch"])
        return web.json_response(batch_json(info))

    async def report(self, request: web.Request) -> web.Response:
        files = await render_reports(self.station.store, request.match_info["batch"])
        return web.json_response({"files": files})

    async def rejected(self, request: web.Request) -> web.Response:
        hubs = await self.station.store.list_rejected()
        return web.json_response(
            {
                "rejected": [
                    {
                        "guid": str(h.guid),
                        "rig": h.rig,
                        "slot": h.slot,
                        "reason": h.reason,
                        "ts": h.ts.isoformat(),
                    }
                    for h in hubs
                ]
            }
        )

    async def reload_catalog(self, request: web.Request) -> web.Response:
        try:
            count = await asyncio.to_thread(self.station.reload_catalog)
        except CatalogError as exc:
            return _error(400, str(exc))
        return web.json_response({"entries": count})


@web.middleware
async def _errors(
    request: web.Request, handler: Any
) -> web.StreamResponse:  # aiohttp's handler type is untyped
    try:
        response: web.StreamResponse = await handler(request)
    except UnknownBatchError as exc:
        return _error(404, str(exc))
    except (BatchClosedError, BatchBusyError) as exc:
        return _error(409, str(exc))
    except StoreError as exc:
        return _error(400, str(exc))
    return response


def make_app(station: Station) -> web.Application:
    api = _Api(station)
    app = web.Application(middlewares=[_errors], client_max_size=MAX_MANIFEST_BYTES * 2)
    app.add_routes(
        [
            web.get("/v1/status", api.status),
            web.get("/v1/batches", api.list_batches),
            web.post("/v1/batches", api.import_batch),
            web.get("/v1/batches/{batch}", api.show_batch),
            web.post("/v1/batches/{batch}/close", api.close_batch),
            web.get("/v1/batches/{batch}/report", api.report),
            web.get("/v1/rejected", api.rejected),
            web.post("/v1/catalog/reload", api.reload_catalog),
        ]
    )
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
