"""`jigd run`: the station daemon in the foreground, until SIGTERM or SIGINT.

SIGHUP re-reads the firmware catalog. The control API, the metrics endpoint and the MQTT
publisher start once the store is recovered, the catalog loaded and the rigs' tasks started;
they all live in one TaskGroup with the station, so one failing takes the process down cleanly
rather than leaving it half alive.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack

from drivers.registry import HubDriver
from firmware_catalog import CatalogError
from jigd.alerts import AlertRecorder
from jigd.config import StationConfig
from jigd.control import serve_control
from jigd.metrics import StationMetrics, serve_metrics
from jigd.mqtt import MqttPublisher, check_mqtt_settings
from jigd.secrets import MasterKeys, Secret, load_password
from jigd.station import Station, StationObserver

__all__ = ["run_daemon"]

_LOGGER = logging.getLogger(__name__)

METRICS_REFRESH_S = 5.0


async def run_daemon(
    config: StationConfig,
    *,
    driver: HubDriver | None = None,
    master_keys: MasterKeys | None = None,
    observers: list[StationObserver] | None = None,
    on_ready: Callable[[Station], None] | None = None,
    handle_signals: bool = True,
) -> None:
    """Run a station, its control API, metrics and MQTT until cancelled or signalled to stop."""
    metrics = StationMetrics(mqtt_enabled=config.mqtt.enabled)
    password = await _mqtt_password(config)
    station = Station(
        config,
        driver=driver,
        master_keys=master_keys,
        observers=[metrics.observer(), *(observers or [])],
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    if handle_signals:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: _reload(station))
    try:
        async with asyncio.TaskGroup() as tasks, AsyncExitStack() as services:
            running = tasks.create_task(station.run(), name="station")
            ready = tasks.create_task(station.ready.wait())
            await asyncio.wait({running, ready}, return_when=asyncio.FIRST_COMPLETED)
            if running.done():
                return  # it failed: the TaskGroup raises its error
            await services.enter_async_context(serve_control(station, config.control_socket))
            for status in station.slots():  # every slot appears in the metrics from the start
                metrics.observer().on_slot(status)
            refresh = tasks.create_task(
                metrics.refresh_every(station.store, lambda: station.catalog, METRICS_REFRESH_S),
                name="metrics-refresh",
            )
            alerts = AlertRecorder(station.store)
            station.add_observer(alerts.observer())
            services_tasks = [refresh, tasks.create_task(alerts.run(), name="alerts")]
            if config.mqtt.enabled:
                publisher = _publisher(station, password, metrics)
                services_tasks.append(tasks.create_task(publisher.run(), name="mqtt"))
            if config.metrics_port is not None:
                server = await services.enter_async_context(
                    serve_metrics(metrics, config.metrics_host, config.metrics_port)
                )
                _LOGGER.info("metrics on %s", server.url)
            if on_ready is not None:
                on_ready(station)
            stopping = tasks.create_task(stop.wait())
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            _LOGGER.info("station %s: stopping", config.station)
            for task in (running, stopping, *services_tasks):
                task.cancel()
    finally:
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)


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


def _reload(station: Station) -> None:
    try:
        count = station.reload_catalog()
    except CatalogError as exc:
        _LOGGER.error("catalog reload refused, keeping the old one: %s", exc)  # noqa: TRY400
        return
    _LOGGER.info("catalog reloaded: %d entries", count)
