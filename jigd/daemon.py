"""`jigd run`: the station daemon in the foreground, until SIGTERM or SIGINT.

One daemon per station: it holds the station's lock (jigd.startup) for its whole life, and a
start-up failure (lock held, port in use, socket path unusable) is a StartupError, which
`jigd run` turns into one line and exit 2. SIGHUP re-reads the firmware catalog. The metrics
endpoint listens before the station starts; the control API, the web view (`[web]`, its token
file read before anything starts) and the MQTT publisher start once
the store is recovered, the catalog loaded and the rigs' tasks started;
they all live in one TaskGroup with the station, so one failing takes the process down cleanly
rather than leaving it half alive.

Under systemd (`Type=notify`, jigd.sdnotify) it sends READY=1 once all that runs, a STATUS= line
(jigd.service), WATCHDOG=1 from the event loop and STOPPING=1. SIGTERM drains the station first
(`timeouts.shutdown_s`; a second SIGTERM cuts it short), then stops MQTT (`offline`) and the
station, and `jigd run` exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

from drivers.registry import HubDriver
from firmware_catalog import CatalogError
from jigd.alerts import AlertRecorder
from jigd.config import StationConfig
from jigd.control import check_socket_path, serve_control
from jigd.metrics import StationMetrics, serve_metrics
from jigd.mqtt import MqttPublisher
from jigd.mqtt_settings import check_mqtt_settings
from jigd.retention import purge_every
from jigd.sdnotify import Notifier, watchdog_interval_s
from jigd.secrets import MasterKeys, Secret, load_password, load_token
from jigd.service import StatusReporter, install_test_loop_blocker
from jigd.startup import StartupError, lock_path, os_reason, station_lock
from jigd.station import Station, StationObserver
from jigd.store import StoreError

__all__ = ["run_daemon"]

_LOGGER = logging.getLogger(__name__)

METRICS_REFRESH_S = 5.0
OUTBOX_FLUSH_S = 3.0  # at stop, how long a connected publisher may go on sending


async def run_daemon(
    config: StationConfig,
    *,
    driver: HubDriver | None = None,
    master_keys: MasterKeys | None = None,
    observers: list[StationObserver] | None = None,
    on_ready: Callable[[Station], None] | None = None,
    handle_signals: bool = True,
) -> None:
    """Run a station, its control API, metrics and MQTT until cancelled or signalled to stop.

    The station's lock comes first, before anything touches the store, the control socket or a
    port (StationLockedError: another daemon runs on this store), then the resources a person
    may have to fix (the socket's path, the metrics port), before any rig is opened.
    """
    with station_lock(lock_path(config.store_url, config.control_socket)):
        await _run_locked(
            config,
            driver=driver,
            master_keys=master_keys,
            observers=observers,
            on_ready=on_ready,
            handle_signals=handle_signals,
        )


async def _run_locked(
    config: StationConfig,
    *,
    driver: HubDriver | None,
    master_keys: MasterKeys | None,
    observers: list[StationObserver] | None,
    on_ready: Callable[[Station], None] | None,
    handle_signals: bool,
) -> None:
    metrics = StationMetrics(mqtt_enabled=config.mqtt.enabled)
    password = await _mqtt_password(config)
    web_token = await _web_token(config)
    await check_socket_path(config.control_socket)
    station = Station(
        config,
        driver=driver,
        master_keys=master_keys,
        observers=[metrics.observer(), *(observers or [])],
    )
    notifier = Notifier.from_environment()
    reporter = StatusReporter(station, notifier)
    station.add_observer(reporter.observer())
    stop = asyncio.Event()
    uninstall = _install_signals(station, stop) if handle_signals else None
    try:
        async with asyncio.TaskGroup() as tasks, AsyncExitStack() as services:
            watchdog = tasks.create_task(
                notifier.watchdog_loop(watchdog_interval_s()), name="watchdog"
            )
            if config.metrics_port is not None:
                await _serve_metrics(services, metrics, config)
            running = tasks.create_task(station.run(), name="station")
            ready = tasks.create_task(station.ready.wait())
            await asyncio.wait({running, ready}, return_when=asyncio.FIRST_COMPLETED)
            if running.done():
                return  # it failed: the TaskGroup raises its error
            await services.enter_async_context(serve_control(station, config.control_socket))
            if web_token is not None:
                await _serve_web(services, station, web_token)
            for status in station.slots():  # every slot appears in the metrics from the start
                metrics.observer().on_slot(status)
            services_tasks = _housekeeping(tasks, station, metrics, config)
            publisher = None
            if config.mqtt.enabled:
                publisher = _publisher(station, password, metrics)
                services_tasks.append(tasks.create_task(publisher.run(), name="mqtt"))
            if on_ready is not None:
                on_ready(station)
            notifier.ready(await reporter.text())
            services_tasks.append(tasks.create_task(reporter.run(), name="sd-status"))
            stopping = tasks.create_task(stop.wait())
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            _LOGGER.info("station %s: stopping", config.station)
            notifier.stopping("stopping")
            if not running.done():
                await _drain(station, stop, reporter)
            if publisher is not None:
                await _flush_outbox(station, publisher)
            await _stop_in_order(running, [stopping, *services_tasks])
            watchdog.cancel()
    finally:
        notifier.close()
        if uninstall is not None:
            uninstall()


def _housekeeping(
    tasks: asyncio.TaskGroup, station: Station, metrics: StationMetrics, config: StationConfig
) -> list[asyncio.Task[Any]]:
    """The station's background services in `tasks`: metrics refresh, alert recording and the
    retention purge."""
    refresh = tasks.create_task(
        metrics.refresh_every(station.store, lambda: station.catalog, METRICS_REFRESH_S),
        name="metrics-refresh",
    )
    alerts = AlertRecorder(station.store)
    station.add_observer(alerts.observer())
    services = [refresh, tasks.create_task(alerts.run(), name="alerts")]
    if config.retention.purge_every_h > 0:
        services.append(
            tasks.create_task(purge_every(station.store, config.retention), name="retention")
        )
    return services


async def _web_token(config: StationConfig) -> Secret | None:
    """The web view's token, read before the station starts (SecretsError naming the file)."""
    if config.web.listen is None or config.web.token_file is None:
        return None
    return await asyncio.to_thread(load_token, config.web.token_file)


async def _serve_web(services: AsyncExitStack, station: Station, token: Secret) -> None:
    from jigd.web import serve_web  # aiohttp's TCP server only when the view is configured

    await services.enter_async_context(serve_web(station, station.config.web, token))


async def _serve_metrics(
    services: AsyncExitStack, metrics: StationMetrics, config: StationConfig
) -> None:
    """The /metrics endpoint; StartupError naming the keys if it cannot listen."""
    host, port = config.metrics_host, config.metrics_port
    assert port is not None
    try:
        await services.enter_async_context(serve_metrics(metrics, host, port))
    except OSError as exc:
        raise StartupError(
            f"metrics_host/metrics_port: cannot listen on {host}:{port}: {os_reason(exc)}"
        ) from None


def _install_signals(station: Station, stop: asyncio.Event) -> Callable[[], None]:
    """SIGTERM and SIGINT stop (a second one cuts the drain short), SIGHUP reloads the catalog."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload(station))
    unblock = install_test_loop_blocker(loop)

    def uninstall() -> None:
        if unblock is not None:
            unblock()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    return uninstall


async def _flush_outbox(station: Station, publisher: MqttPublisher) -> None:
    """Give a connected publisher up to OUTBOX_FLUSH_S to send what the drain recorded; what is
    left waits in the outbox for the next start (never lost, only later), as it does when the
    store cannot be read."""
    deadline = asyncio.get_running_loop().time() + OUTBOX_FLUSH_S
    with contextlib.suppress(StoreError):
        while publisher.connected and await station.store.outbox_depth() > 0:
            if asyncio.get_running_loop().time() > deadline:
                _LOGGER.info(
                    "stopping with %d message(s) in the outbox", await station.store.outbox_depth()
                )
                return
            await asyncio.sleep(0.05)


async def _stop_in_order(station: asyncio.Task[None], services: list[asyncio.Task[Any]]) -> None:
    """The services first (MQTT says `offline`, which needs the store), then the station.

    Called after the drain, so the station has let go of its hubs and recorded what it could.
    """
    for task in services:
        task.cancel()
    await asyncio.wait(services)
    station.cancel()
    await asyncio.wait({station})


async def _drain(station: Station, stop: asyncio.Event, reporter: StatusReporter) -> None:
    """Let the station drain within `timeouts.shutdown_s`; a second SIGTERM or SIGINT cuts it."""
    stop.clear()
    reporter.poke()
    bound_s = station.config.timeouts.shutdown_s
    drained = asyncio.ensure_future(station.drain(bound_s))
    again = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({drained, again}, return_when=asyncio.FIRST_COMPLETED)
        if again.done():
            _LOGGER.warning(
                "station %s: stopped again; not waiting for hubs", station.config.station
            )
    finally:
        for task in (drained, again):
            task.cancel()
        await asyncio.gather(drained, again, return_exceptions=True)


async def _mqtt_password(config: StationConfig) -> Secret | None:
    """The MQTT password, read and the MQTT settings checked before the station starts."""
    if not config.mqtt.enabled:
        return None
    password = None
    if config.mqtt.password_file is not None:
        password = await asyncio.to_thread(load_password, config.mqtt.password_file)
    check_mqtt_settings(config.mqtt, config.station, password)
    return password


def _publisher(station: Station, password: Secret | None, metrics: StationMetrics) -> MqttPublisher:
    """An MQTT publisher fed by the station's slots from their current state on."""
    publisher = MqttPublisher(
        station.config.mqtt,
        station.config.station,
        station.store,
        password=password,
        on_connected=metrics.set_mqtt_connected,
    )
    station.add_observer(publisher.observer())
    for status in station.slots():
        publisher.slot_changed(status)
    return publisher


_RELOADS: set[asyncio.Task[None]] = set()  # SIGHUP reloads under way (held until done)


def _reload(station: Station) -> None:
    """SIGHUP: reload the catalog in a task (its images are verified in a thread)."""
    task = asyncio.get_running_loop().create_task(_reload_catalog(station), name="catalog-reload")
    _RELOADS.add(task)
    task.add_done_callback(_RELOADS.discard)


async def _reload_catalog(station: Station) -> None:
    if not station.ready.is_set():
        _LOGGER.warning("catalog reload ignored: the station is starting (it reads the catalog)")
        return
    try:
        count = await station.reload_catalog()
    except CatalogError as exc:
        _LOGGER.error("catalog reload refused, keeping the old one: %s", exc)  # noqa: TRY400
        return
    _LOGGER.info("catalog reloaded: %d entries", count)
