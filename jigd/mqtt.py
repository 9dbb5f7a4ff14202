"""The MQTT publisher: the station's events on the logistics system's broker (DESIGN.md, "MQTT").

Results, batch summaries and alerts are committed to the store's outbox together with what they
report, and published from there strictly in commit order: the next message goes out only when
the broker has acknowledged the previous one (QoS 1 PUBACK with a success reason code), and a
message is marked published only then. A broker outage or a crash therefore delays messages and
may repeat some (with the same `event_id`), but never loses or reorders them.

Slot progress is not durable: the latest state of each slot is kept in memory and sent at most
4 times per second per slot (QoS 0, retained, expiring), and nothing is queued while the
station is disconnected; on (re)connection every slot's current state is sent.

One connection at a time, retried with capped exponential backoff and jitter. The broker
publishes the retained `offline` Last Will if it loses the connection; a clean stop publishes
`offline` itself before disconnecting.

The MQTT password is revealed only in the call that builds the client. Log lines and errors
name the broker and the error class with its MQTT reason code or errno, taken from constant
tables, never the text of an exception, which could quote a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import re
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Literal

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from jigd import __version__
from jigd.config import MqttConfig
from jigd.payloads import SLOT_EXPIRY_S, Outgoing, slot_message, status_message
from jigd.secrets import Secret
from jigd.slot import SlotStatus
from jigd.station import StationObserver
from jigd.store import OutboxMessage, Store, StoreError

__all__ = [
    "ACK_TIMEOUT_S",
    "CONTENT_TYPE",
    "MqttConfigError",
    "MqttPublisher",
    "PublishRefusedError",
    "check_mqtt_settings",
    "parse_mqtt_url",
]

_LOGGER = logging.getLogger(__name__)

CONTENT_TYPE: Final = "application/json"
DEFAULT_PORT: Final = 1883
DEFAULT_TLS_PORT: Final = 8883
ACK_TIMEOUT_S: Final = 10.0  # PUBACK (and CONNACK) wait; longer means the connection is bad
STOP_TIMEOUT_S: Final = 2.0  # publishing `offline` on a clean stop
RECONNECT_MIN_S: Final = 0.5  # first retry delay; doubles up to config.reconnect_max_s
OUTBOX_POLL_S: Final = 5.0  # read the outbox at least this often, even without a notification
OUTBOX_CHUNK: Final = 100  # messages read (and marked published) per store round trip
SLOT_MIN_INTERVAL_S: Final = 0.25  # at most 4 messages per second per slot
SLOT_REFRESH_S: Final = 30.0  # repeat each slot's state well within its 60 s message expiry

_TOPIC_LEVEL_RE = re.compile(r"[^/+#\x00]+")
_ERRNO_RE = re.compile(r"^\[Errno (\d+)\]")
_SSL_RE = re.compile(r"^\[SSL: ([A-Z0-9_]+)\]")
# Texts aiomqtt raises with on its own (no user data in them): safe to log as they are.
_AIOMQTT_TEXTS: Final = frozenset(
    {"Operation timed out", "Disconnected during message iteration", "Could not publish message"}
)

SlotKey = tuple[int, int]
OfflineReason = Literal["stopped", "connection_lost"]


class MqttConfigError(ValueError):
    """An MQTT setting that cannot be used; the message names the setting, never a password."""


class PublishRefusedError(Exception):
    """The broker acknowledged a publish with a failure reason code (e.g. an ACL denies it)."""

    def __init__(self, topic: str, reason: ReasonCode) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(
            f"the broker refused the message on {topic}: reason code {reason.value} "
            f"({reason.getName()})"
        )


class _BrokerClient(aiomqtt.Client):
    """aiomqtt's client plus a publish that waits for the broker's PUBACK and checks its reason.

    aiomqtt's own `publish` returns on any PUBACK, including a refusal ("not authorized" when an
    ACL denies the topic, "quota exceeded"), and such a message was not delivered: it must stay
    in the outbox. paho hands the reason code only to its `on_publish` callback, which aiomqtt
    installs as `_on_publish`; this subclass extends that callback (aiomqtt is pinned < 3).
    """

    def __init__(self, hostname: str, port: int, **kwargs: Any) -> None:
        super().__init__(hostname, port, **kwargs)
        self._acks: dict[int, asyncio.Future[ReasonCode]] = {}

    async def publish_confirmed(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool,
        properties: Properties,
        timeout_s: float = ACK_TIMEOUT_S,
    ) -> None:
        """Publish; return when the broker acknowledged it (QoS 1) or it was sent (QoS 0).

        Raises PublishRefusedError if the PUBACK carries a failure reason code, and
        aiomqtt.MqttError if the message cannot be sent or no PUBACK comes within `timeout_s`.
        """
        info = self._client.publish(topic, payload, qos, retain, properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        if info.is_published():
            return
        # paho writes and reads the socket in this event loop's callbacks, so the PUBACK cannot
        # have arrived before this waiter is registered.
        ack: asyncio.Future[ReasonCode] = asyncio.get_running_loop().create_future()
        self._acks[info.mid] = ack
        try:
            async with asyncio.timeout(timeout_s):
                reason = await ack
        except TimeoutError:
            raise aiomqtt.MqttError("Operation timed out") from None
        finally:
            self._acks.pop(info.mid, None)
        if reason.is_failure:
            raise PublishRefusedError(topic, reason)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await super().__aexit__(exc_type, exc, tb)
        finally:
            # When the connection was already lost (a stop during an outage), aiomqtt returns
            # without looking at why; mark the reason retrieved, or asyncio logs it at exit.
            lost = self._disconnected
            if lost.done() and not lost.cancelled():
                lost.exception()

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        ack = self._acks.get(mid)
        if ack is not None and not ack.done():
            ack.set_result(reason_code)
        super()._on_publish(client, userdata, mid, reason_code, properties)


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
        # Jitter only spreads reconnections of many stations; it needs no secure randomness.
        self._rng = rng if rng is not None else random.Random()  # noqa: S311
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

    def topic(self, suffix: str) -> str:
        """The full topic of a suffix such as `alerts`: `<prefix>/<station>/alerts`."""
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
                delay = self._backoff(failures)
                _LOGGER.info("%s: reconnecting in %.1f s", self._where, delay)
                await asyncio.sleep(delay)
        finally:
            self._set_connected(False)

    def _backoff(self, failures: int) -> float:
        """Capped exponential backoff with jitter: half to all of min(cap, min * 2^failures)."""
        cap = self._config.reconnect_max_s
        ceiling = min(cap, RECONNECT_MIN_S * 2.0 ** min(failures, 30))
        return ceiling * (0.5 + self._rng.random() / 2)

    async def _session(self) -> bool:
        """One connection, until it is lost (returns whether it was made) or run() is cancelled."""
        client = self._new_client()
        was_connected = False
        try:
            async with client:
                was_connected = True
                await self._connected_session(client)
        except aiomqtt.MqttError as exc:
            if self._stopping:
                # The disconnect after `offline` failed; stopping all the same.
                raise asyncio.CancelledError from None
            self._last_error = _describe(exc)
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

    def _new_client(self) -> _BrokerClient:
        config = self._config
        will = _status("offline", "connection_lost")
        tls = None
        if config.tls:
            tls = aiomqtt.TLSParameters(
                ca_certs=None if config.ca_file is None else str(config.ca_file),
                certfile=None if config.client_cert_file is None else str(config.client_cert_file),
                keyfile=None if config.client_key_file is None else str(config.client_key_file),
            )
        return _BrokerClient(
            config.host,
            config.port,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=True,
            keepalive=max(1, math.ceil(config.keepalive_s)),
            timeout=ACK_TIMEOUT_S,
            username=config.username,
            password=None if self._password is None else _reveal(self._password),
            will=aiomqtt.Will(
                self.topic(will.topic),
                will.payload.to_json().encode("utf-8"),
                qos=will.qos,
                retain=will.retain,
                properties=_properties(PacketTypes.WILLMESSAGE),
            ),
            tls_params=tls,
            logger=_LOGGER.getChild("client"),
        )

    async def _connected_session(self, client: _BrokerClient) -> None:
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
                    await _watch(client)
            except BaseExceptionGroup as group:
                raise _connection_error(group) from None
        except asyncio.CancelledError:
            self._stopping = True
            await self._say_offline(client)
            raise
        finally:
            self._set_connected(False)

    async def _say_offline(self, client: _BrokerClient) -> None:
        """On a clean stop: publish the retained `offline` before disconnecting."""
        try:
            await self._publish(
                client,
                _status("offline", "stopped"),
                timeout_s=STOP_TIMEOUT_S,
            )
        except (aiomqtt.MqttError, PublishRefusedError) as exc:
            _LOGGER.warning(
                "%s: could not publish offline before stopping (%s); the broker publishes the "
                "Last Will instead",
                self._where,
                _describe(exc),
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

    async def _drain_outbox(self, client: _BrokerClient) -> None:
        changed = self._store.outbox_changed
        while True:
            # Cleared before reading: a commit after the read sets it again, so none is missed.
            changed.clear()
            pending = await self._store.outbox_pending(OUTBOX_CHUNK)
            if pending:
                await self._publish_in_order(client, pending)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(OUTBOX_POLL_S):
                    await changed.wait()

    async def _publish_in_order(self, client: _BrokerClient, pending: list[OutboxMessage]) -> None:
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
                    await asyncio.sleep(self._backoff(refusals))
                acked.append(message.id)
        except BaseException:
            if acked:
                # Unmarked, they would be published again: duplicates, never losses.
                with contextlib.suppress(StoreError):
                    await self._store.mark_published(acked)
            raise
        await self._store.mark_published(acked)

    async def _publish_stored(self, client: _BrokerClient, message: OutboxMessage) -> bool:
        """Publish an outbox message as committed; False if the broker refused it."""
        try:
            await client.publish_confirmed(
                self.topic(message.topic),
                message.payload.encode("utf-8"),
                qos=message.qos,
                retain=message.retain,
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

    async def _flush_slots(self, client: _BrokerClient) -> None:
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
        client: _BrokerClient,
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


def check_mqtt_settings(config: MqttConfig, station: str, password: Secret | None) -> None:
    """Raise MqttConfigError for settings no connection could work with (the daemon checks
    them before it starts flashing, so a bad setting is a start-up error, not a silent gap)."""
    _check_topic_levels("mqtt.prefix", config.prefix)
    _check_topic_levels("station", station)
    if "/" in station:
        raise MqttConfigError(f"station {station!r}: a station name is one topic level")
    if password is not None:
        if config.username is None:
            raise MqttConfigError(
                "mqtt: a password is given but mqtt.username is not set; set both"
            )
        _check_password(password)
    if config.tls:
        for key in ("ca_file", "client_cert_file", "client_key_file"):
            path = getattr(config, key)
            if path is not None and not path.is_file():
                raise MqttConfigError(f"mqtt.{key}: {path} is not a readable file")
        if config.client_key_file is not None and config.client_cert_file is None:
            raise MqttConfigError("mqtt.client_key_file is set without mqtt.client_cert_file")


def _status(state: Literal["online", "offline"], reason: OfflineReason | None) -> Outgoing:
    return status_message(state, reason, version=__version__, now=datetime.now(UTC))


def _properties(packet_type: int) -> Properties:
    """MQTT 5 properties of every jigd message: JSON, UTF-8."""
    properties = Properties(packet_type)  # type: ignore[no-untyped-call]  # paho: no annotations
    properties.ContentType = CONTENT_TYPE
    properties.PayloadFormatIndicator = 1
    return properties


async def _watch(client: aiomqtt.Client) -> None:
    """Raise aiomqtt.MqttError when the connection is lost.

    Nothing is subscribed, so the message iterator yields nothing; it raises when aiomqtt sees
    the connection go (socket error, missed keepalive, broker DISCONNECT).
    """
    async for _ in client.messages:
        pass
    raise aiomqtt.MqttError("Disconnected during message iteration")


def _connection_error(group: BaseExceptionGroup[BaseException]) -> aiomqtt.MqttError:
    """The first MqttError of a session's task group; re-raise the group if it holds others."""
    matched, rest = group.split(aiomqtt.MqttError)
    if rest is not None or matched is None:
        raise group
    first: BaseException = matched
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    if not isinstance(first, aiomqtt.MqttError):  # split() guarantees it; for the type checker
        raise group
    return first


def _describe(exc: BaseException) -> str:
    """The error class and reason code (or errno, or aiomqtt's own text) of `exc` and its causes.

    Built only from constant tables, never from an exception's own text: a message from a
    library could quote the credentials it was given.
    """
    parts = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(_describe_one(current))
        current = current.__cause__
    return " <- ".join(parts)


def _describe_one(exc: BaseException) -> str:
    detail: str | None = None
    if isinstance(exc, PublishRefusedError):
        detail = f"reason code {exc.reason.value} ({exc.reason.getName()})"
    elif isinstance(exc, aiomqtt.MqttCodeError):
        if isinstance(exc.rc, ReasonCode):
            detail = f"reason code {exc.rc.value} ({exc.rc.getName()})"
        elif isinstance(exc.rc, int):
            detail = f"code {exc.rc} ({paho.error_string(exc.rc)})"
    elif isinstance(exc, OSError) and exc.errno is not None:
        detail = f"errno {exc.errno} ({os.strerror(exc.errno)})"
    elif isinstance(exc, aiomqtt.MqttError):
        detail = _describe_aiomqtt_text(str(exc))
    name = type(exc).__name__
    return name if detail is None else f"{name}: {detail}"


def _describe_aiomqtt_text(text: str) -> str | None:
    """aiomqtt turns connect-time OSErrors into MqttError(str(error)): keep errno or TLS code."""
    errno_match = _ERRNO_RE.match(text)
    if errno_match:
        number = int(errno_match.group(1))
        return f"errno {number} ({os.strerror(number)})"
    ssl_match = _SSL_RE.match(text)
    if ssl_match:
        return f"TLS {ssl_match.group(1)}"
    return text if text in _AIOMQTT_TEXTS else None


def _reveal(password: Secret) -> str:
    # Checked to decode by _check_password when the publisher was made.
    return password.reveal().decode("utf-8")


def _check_password(password: Secret) -> None:
    try:
        password.reveal().decode("utf-8")
    except UnicodeDecodeError:
        # The codec's message quotes the offending byte: say only what is wrong.
        raise MqttConfigError("mqtt.password_file: the password is not UTF-8 text") from None


def _check_topic_levels(key: str, value: str) -> None:
    levels = value.split("/")
    if not value or not all(_TOPIC_LEVEL_RE.fullmatch(level) for level in levels):
        raise MqttConfigError(
            f"{key} {value!r} is not a topic prefix: use levels separated by single slashes, "
            "with no leading or trailing slash and no + or #, e.g. jigd/v1"
        )


# --- the demo's --mqtt URL --------------------------------------------------------------------


def parse_mqtt_url(url: str) -> MqttConfig:
    """`mqtt://[user@]host[:port][/prefix]` (or `mqtts://` for TLS) as an enabled MqttConfig.

    A password is not accepted in the URL (it would show in `ps` and shell history): give it in
    a file readable only by jigd (`mqtt.password_file`).
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise MqttConfigError(
            f"MQTT URL {_redact(url)!r} is not a URL; write mqtt://[user@]host[:port][/prefix]"
        ) from None
    shown = _redact(url)
    if parts.password is not None:
        raise MqttConfigError(
            f"MQTT URL {shown!r} carries a password: remove it from the URL, put it in a file "
            "readable only by jigd (chmod 600) and give that file as mqtt.password_file"
        )
    if parts.scheme not in ("mqtt", "mqtts"):
        raise MqttConfigError(
            f"MQTT URL {shown!r}: the scheme must be mqtt:// or mqtts:// (TLS), "
            f"not {parts.scheme or 'missing'}"
        )
    if not parts.hostname:
        raise MqttConfigError(f"MQTT URL {shown!r} names no broker host")
    if parts.query or parts.fragment:
        raise MqttConfigError(f"MQTT URL {shown!r}: query and fragment are not understood")
    tls = parts.scheme == "mqtts"
    prefix = urllib.parse.unquote(parts.path[1:]) if parts.path not in ("", "/") else "jigd/v1"
    _check_topic_levels(f"MQTT URL {shown!r}: prefix", prefix)
    username = urllib.parse.unquote(parts.username) if parts.username else None
    return MqttConfig(
        enabled=True,
        host=parts.hostname,
        port=port if port is not None else (DEFAULT_TLS_PORT if tls else DEFAULT_PORT),
        prefix=prefix,
        username=username,
        tls=tls,
    )


def _redact(url: str) -> str:
    """The URL with any password replaced by ***."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if "@" not in url else "***"
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = userinfo.split(":", 1)[0] + ":***@" + host
    return f"{scheme}://{netloc}{slash}{path}"
