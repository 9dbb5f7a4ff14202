"""The MQTT publisher: the station's events on the logistics system's broker.

A contract (docs/architecture.md, "MQTT"): topics, payloads, QoS and retain flags. Results,
batch summaries and alerts are committed to the store's outbox together with what they report,
and published from there one at a time in the outbox's order (each GUID's and each batch's
events in the order they were committed: jigd.store.contract, `outbox_pending`): the next
message goes out only when the broker has acknowledged the previous one (QoS 1 PUBACK with a
success reason code), and a message is marked published only then. A broker outage or a crash
therefore delays messages and may repeat some (with the same `event_id`), but never loses them
nor reorders a GUID's or a batch's.

Slot progress is not durable: the latest state of each slot is kept in memory and sent at most
4 times per second per slot (QoS 0, retained, expiring), and nothing is queued while the
station is disconnected; on (re)connection every slot's current state is sent.

One connection at a time (jigd.mqtt_client), retried with capped exponential backoff and
jitter. The broker publishes the retained `offline` Last Will if it loses the connection; a
clean stop publishes `offline` itself before disconnecting. The settings are checked by
jigd.mqtt_settings when the publisher is made.

The MQTT password is revealed only to the connection's paho client. Log lines and errors name
the broker and the error class with its MQTT reason code or errno, taken from constant tables,
never the text of an exception, which could quote a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final, Literal

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from jigd import __version__
from jigd.backoff import Backoff
from jigd.config import MqttConfig
from jigd.events import SlotStatus
from jigd.mqtt_client import (
    BrokerClient,
    MqttError,
    PublishRefusedError,
    TlsFiles,
    Will,
    describe_error,
)
from jigd.mqtt_settings import check_mqtt_settings
from jigd.payloads import SLOT_EXPIRY_S, Outgoing, event_route, slot_message, status_message
from jigd.secrets import Secret
from jigd.station import StationObserver
from jigd.store import OutboxMessage, Store, StoreError, StoreUnavailableError

__all__ = [
    "ACK_TIMEOUT_S",
    "CONTENT_TYPE",
    "MqttPublisher",
]

_LOGGER = logging.getLogger(__name__)

CONTENT_TYPE: Final = "application/json"
ACK_TIMEOUT_S: Final = 10.0  # PUBACK (and CONNACK) wait; longer means the connection is bad
STOP_TIMEOUT_S: Final = 2.0  # publishing `offline` on a clean stop
RECONNECT_MIN_S: Final = 0.5  # first retry delay; doubles up to config.reconnect_max_s
OUTBOX_POLL_S: Final = 5.0  # read the outbox at least this often, even without a notification
OUTBOX_CHUNK: Final = 100  # messages read (and marked published) per store round trip
SLOT_MIN_INTERVAL_S: Final = 0.25  # at most 4 messages per second per slot
SLOT_REFRESH_S: Final = 30.0  # repeat each slot's state well within its 60 s message expiry

SlotKey = tuple[int, int]
OfflineReason = Literal["stopped", "connection_lost"]


class MqttPublisher:
    """Publishes the store's outbox and the slots' progress to one broker; `run()` until cancelled.

    `on_connected(bool)` is called with False when `run()` starts and then on every change (the
    metrics module sets `jigd_mqtt_connected` from it). `slot_changed` is the station's slot
    hook (see `observer()`); it never blocks.
    """

    def __init__(
        self,
        config: MqttConfig,
        station: str,
        store: Store,
        *,
        password: Secret | None,
        on_connected: Callable[[bool], None] = lambda connected: None,
        rng: random.Random | None = None,
    ) -> None:
        check_mqtt_settings(config, station, password)
        self._config = config
        self._station = station
        self._store = store
        self._password = password
        self._on_connected = on_connected
        self._backoff = Backoff(RECONNECT_MIN_S, config.reconnect_max_s, rng)
        self._base = f"{config.prefix}/{station}/"
        self._where = f"mqtt {config.host}:{config.port}"
        self._connected = False
        self._stopping = False
        self._last_error: str | None = None
        # Slot progress: the latest state of each slot and when it changed (wall clock), which
        # slots wait to be sent, and when each was last sent (event loop clock).
        self._slots: dict[SlotKey, tuple[SlotStatus, datetime]] = {}
        self._slots_dirty: dict[SlotKey, None] = {}
        self._slots_sent: dict[SlotKey, float] = {}
        self._slots_wakeup = asyncio.Event()
        # Built once: paho only reads them when it packs a PUBLISH.
        self._json_properties = _properties(PacketTypes.PUBLISH)
        self._slot_properties = _properties(PacketTypes.PUBLISH)
        self._slot_properties.MessageExpiryInterval = SLOT_EXPIRY_S

    # --- what the daemon sees -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Connected to the broker and announced `online`."""
        return self._connected

    @property
    def last_error(self) -> str | None:
        """Why the last connection attempt failed or the last connection ended (class and
        reason code), for status displays; None once connected."""
        return self._last_error

    @property
    def client_id(self) -> str:
        return self._config.client_id or f"jigd-{self._station}"

    def topic(self, suffix: str, station: str = "") -> str:
        """The full topic of a suffix such as `alerts`: `<prefix>/<station>/alerts`, under this
        station, or under `station` (an event another station of the site committed, handed to
        this one by `jigctl station release`)."""
        if station and station != self._station:
            return f"{self._config.prefix}/{station}/{suffix}"
        return self._base + suffix

    def observer(self) -> StationObserver:
        """A station observer that feeds slot changes to this publisher."""
        return StationObserver(on_slot=self.slot_changed)

    def slot_changed(self, status: SlotStatus) -> None:
        """Take a slot's new state (latest wins); sent by the slot flusher. Never blocks."""
        key = (status.rig, status.slot)
        self._slots[key] = (status, datetime.now(UTC))
        self._slots_dirty[key] = None
        self._slots_wakeup.set()

    # --- the connection loop ------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, publish and reconnect until cancelled; a clean stop says `offline`."""
        self._on_connected(False)
        failures = 0
        try:
            while True:
                was_connected = await self._session()
                failures = 0 if was_connected else failures + 1
                delay = self._backoff.delay(failures)
                _LOGGER.info("%s: reconnecting in %.1f s", self._where, delay)
                await asyncio.sleep(delay)
        finally:
            self._set_connected(False)

    async def _session(self) -> bool:
        """One connection, until it is lost (returns whether it was made) or run() is cancelled."""
        client = self._new_client()
        was_connected = False
        try:
            async with client:
                was_connected = True
                await self._connected_session(client)
        except MqttError as exc:
            if self._stopping:
                # The disconnect after `offline` failed; stopping all the same.
                raise asyncio.CancelledError from None
            self._last_error = describe_error(exc)
            if was_connected:
                _LOGGER.warning(
                    "%s: connection lost (%s); results wait in the outbox",
                    self._where,
                    self._last_error,
                )
            else:
                _LOGGER.warning(
                    "%s: cannot connect as %r (%s)", self._where, self.client_id, self._last_error
                )
        return was_connected

    def _new_client(self) -> BrokerClient:
        config = self._config
        will = _status("offline", "connection_lost")
        tls = None
        if config.tls:
            tls = TlsFiles(
                ca_file=None if config.ca_file is None else str(config.ca_file),
                cert_file=None if config.client_cert_file is None else str(config.client_cert_file),
                key_file=None if config.client_key_file is None else str(config.client_key_file),
            )
        return BrokerClient(
            config.host,
            config.port,
            client_id=self.client_id,
            keepalive_s=max(1, math.ceil(config.keepalive_s)),
            will=Will(
                self.topic(will.topic),
                will.payload.to_json().encode("utf-8"),
                qos=will.qos,
                retain=will.retain,
                properties=_properties(PacketTypes.WILLMESSAGE),
            ),
            timeout_s=ACK_TIMEOUT_S,
            logger=_LOGGER.getChild("client"),
            username=config.username,
            password=self._password,
            tls=tls,
        )

    async def _connected_session(self, client: BrokerClient) -> None:
        self._last_error = None
        try:
            refused = None
            try:
                await self._publish(client, _status("online", None))
            except PublishRefusedError as exc:
                refused = exc
            if refused is not None:
                _LOGGER.error("%s: %s; check the broker's ACL for this user", self._where, refused)
            self._set_connected(True)
            # The retained slot states may have expired while we were away: send them all.
            self._slots_dirty.update(dict.fromkeys(self._slots))
            try:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._drain_outbox(client), name="mqtt-outbox")
                    tasks.create_task(self._flush_slots(client), name="mqtt-slots")
                    # In the body, not a task: a failing task then cancels the body, which
                    # Python 3.11's TaskGroup un-cancels cleanly (not so while it waits in exit).
                    await client.wait_lost()
            except BaseExceptionGroup as group:
                raise _connection_error(group) from None
        except asyncio.CancelledError:
            self._stopping = True
            await self._say_offline(client)
            raise
        finally:
            self._set_connected(False)

    async def _say_offline(self, client: BrokerClient) -> None:
        """On a clean stop: publish the retained `offline` before disconnecting."""
        try:
            await self._publish(
                client,
                _status("offline", "stopped"),
                timeout_s=STOP_TIMEOUT_S,
            )
        except (MqttError, PublishRefusedError) as exc:
            _LOGGER.warning(
                "%s: could not publish offline before stopping (%s); the broker publishes the "
                "Last Will instead",
                self._where,
                describe_error(exc),
            )
        else:
            _LOGGER.info("%s: offline", self._where)

    def _set_connected(self, connected: bool) -> None:
        if connected == self._connected:
            return
        self._connected = connected
        if connected:
            _LOGGER.info("%s: connected as %r, online", self._where, self.client_id)
        self._on_connected(connected)

    # --- the outbox ---------------------------------------------------------------------------

    async def _drain_outbox(self, client: BrokerClient) -> None:
        changed = self._store.outbox_changed
        while True:
            # Cleared before reading: a commit after the read sets it again, so none is missed.
            changed.clear()
            try:
                pending = await self._store.outbox_pending(OUTBOX_CHUNK)
                if pending:
                    await self._publish_in_order(client, pending)
                    continue
            except StoreUnavailableError as exc:
                # The store is down (the station logs it): look again later. Messages published
                # but not marked are published again, with the same event_id: never lost.
                _LOGGER.debug("%s: outbox not read: %s", self._where, exc)
                await asyncio.sleep(OUTBOX_POLL_S)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(OUTBOX_POLL_S):
                    await changed.wait()

    async def _publish_in_order(self, client: BrokerClient, pending: list[OutboxMessage]) -> None:
        """Publish one by one, each after the previous was acknowledged; then mark them."""
        acked: list[int] = []
        try:
            for message in pending:
                refusals = 0
                while not await self._publish_stored(client, message):
                    # Refused. Skipping it would lose it, and publishing the next one first would
                    # break the commit order: wait (the outbox depth metric grows) and retry.
                    if acked:
                        await self._store.mark_published(acked)
                        acked.clear()
                    refusals += 1
                    await asyncio.sleep(self._backoff.delay(refusals))
                acked.append(message.id)
        except BaseException:
            if acked:
                # Unmarked, they would be published again: duplicates, never losses.
                with contextlib.suppress(StoreError):
                    await self._store.mark_published(acked)
            raise
        await self._store.mark_published(acked)

    async def _publish_stored(self, client: BrokerClient, message: OutboxMessage) -> bool:
        """Publish an outbox event as committed, on its route; False if the broker refused it."""
        route = event_route(message.kind, message.data())
        try:
            await client.publish_confirmed(
                self.topic(route.topic, message.station),
                message.payload.encode("utf-8"),
                qos=route.qos,
                retain=route.retain,
                properties=self._json_properties,
            )
        except PublishRefusedError as exc:
            refused = exc
        else:
            return True
        _LOGGER.error(
            "%s: %s (outbox message %d, event_id %s); it stays in the outbox and is retried: "
            "check the broker's ACL and limits",
            self._where,
            refused,
            message.id,
            message.event_id,
        )
        return False

    # --- slot progress ------------------------------------------------------------------------

    async def _flush_slots(self, client: BrokerClient) -> None:
        """Send dirty slots, each at most once per SLOT_MIN_INTERVAL_S; refresh idle ones."""
        loop = asyncio.get_running_loop()
        while True:
            self._slots_wakeup.clear()
            now = loop.time()
            for key, sent in self._slots_sent.items():
                if now - sent >= SLOT_REFRESH_S:
                    self._slots_dirty[key] = None
            due = [
                key
                for key in self._slots_dirty
                if now - self._slots_sent.get(key, -math.inf) >= SLOT_MIN_INTERVAL_S
            ]
            for key in due:
                del self._slots_dirty[key]
                status, changed_at = self._slots[key]
                self._slots_sent[key] = loop.time()
                await self._publish(client, slot_message(status, now=changed_at), expiring=True)
            await self._wait_for_slots(loop.time())

    async def _wait_for_slots(self, now: float) -> None:
        """Until a slot changes, a dirty slot's interval is over, or a refresh is due."""
        deadlines = [sent + SLOT_REFRESH_S for sent in self._slots_sent.values()]
        for key in self._slots_dirty:
            sent = self._slots_sent.get(key)
            deadlines.append(now if sent is None else sent + SLOT_MIN_INTERVAL_S)
        timeout = max(0.0, min(deadlines) - now) if deadlines else None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._slots_wakeup.wait()

    # --- publishing ---------------------------------------------------------------------------

    async def _publish(
        self,
        client: BrokerClient,
        message: Outgoing,
        *,
        expiring: bool = False,
        timeout_s: float = ACK_TIMEOUT_S,
    ) -> None:
        """Publish a message built here (status, slots); `expiring`: with the slot expiry."""
        properties = self._slot_properties if expiring else self._json_properties
        await client.publish_confirmed(
            self.topic(message.topic),
            message.payload.to_json().encode("utf-8"),
            qos=message.qos,
            retain=message.retain,
            properties=properties,
            timeout_s=timeout_s,
        )


def _status(state: Literal["online", "offline"], reason: OfflineReason | None) -> Outgoing:
    return status_message(state, reason, version=__version__, now=datetime.now(UTC))


def _properties(packet_type: int) -> Properties:
    """MQTT 5 properties of every jigd message: JSON, UTF-8."""
    properties = Properties(packet_type)  # type: ignore[no-untyped-call]  # paho: no annotations
    properties.ContentType = CONTENT_TYPE
    properties.PayloadFormatIndicator = 1
    return properties


def _connection_error(group: BaseExceptionGroup[BaseException]) -> MqttError:
    """The first MqttError of a session's task group; re-raise the group if it holds others."""
    matched, rest = group.split(MqttError)
    if rest is not None or matched is None:
        raise group
    first: BaseException = matched
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    if not isinstance(first, MqttError):  # split() guarantees it; for the type checker
        raise group
    return first
