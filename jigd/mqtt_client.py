"""One MQTT 5 connection to the broker, for the publisher (docs/architecture.md, "MQTT").

It connects (clean start, Last Will, TLS, username and password), publishes and waits for the
broker's PUBACK, raising `PublishRefusedError` when it carries a failure reason code, tells when
the connection is lost, and disconnects.

Built on paho-mqtt's public API. aiomqtt, used before, cannot report a PUBACK's reason code
through its public API (its `publish` returns on any PUBACK, also a refusal such as "not
authorized" when an ACL denies the topic, and such a message was not delivered: it must stay
in the outbox); paho hands the reason code to its `on_publish` callback.

paho runs on the daemon's event loop, not in a thread of its own: its socket is watched with
`add_reader`/`add_writer` (paho's `on_socket_*` callbacks say when) and `loop_read`,
`loop_write` and, once a second, `loop_misc` (keepalive) are called from the loop. Every paho
callback thus runs on the event loop, like the code waiting for it: a PUBACK cannot be handled
before its waiter exists, and nothing needs a lock. Only what blocks (the TCP connect, the TLS
handshake, reading the certificates) runs in an executor thread, in `connect()`; the socket
callbacks paho makes from there reach the loop through `call_soon_threadsafe`.

The password goes only to paho. Errors keep the classes and texts the aiomqtt client had
(`MqttError`, `MqttCodeError`, `MqttConnectError`), so the publisher's log lines read as before;
`describe_error` turns them into a line built from constant tables, never an exception's text,
which could quote a credential.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, NoReturn

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from jigd.secrets import Secret

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike

__all__ = [
    "BrokerClient",
    "MqttCodeError",
    "MqttConnectError",
    "MqttError",
    "PublishRefusedError",
    "TlsFiles",
    "Will",
    "describe_error",
]

MISC_INTERVAL_S: Final = 1.0  # paho's loop_misc: keepalive PINGREQ, and a PINGRESP overdue

# The texts this module raises MqttError with on its own (no user data in them).
TIMED_OUT: Final = "Operation timed out"
LOST: Final = "Disconnected during message iteration"
NOT_SENT: Final = "Could not publish message"
_OWN_TEXTS: Final = frozenset({TIMED_OUT, LOST, NOT_SENT})
_ERRNO_RE = re.compile(r"^\[Errno (\d+)\]")
_SSL_RE = re.compile(r"^\[SSL: ([A-Z0-9_]+)\]")


class MqttError(Exception):
    """The connection failed or was lost, or the broker did not answer in time."""


class MqttCodeError(MqttError):
    """An MqttError with paho's error code or the broker's reason code."""

    def __init__(self, rc: int | ReasonCode, *args: object) -> None:
        super().__init__(*args)
        self.rc = rc


class MqttConnectError(MqttCodeError):
    """The broker refused the connection (CONNACK with a failure reason code)."""

    def __init__(self, rc: ReasonCode) -> None:
        super().__init__(rc, f"the broker refused the connection: reason code {rc.value}")


class PublishRefusedError(Exception):
    """The broker acknowledged a publish with a failure reason code (e.g. an ACL denies it)."""

    def __init__(self, topic: str, reason: ReasonCode) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(
            f"the broker refused the message on {topic}: reason code {reason.value} "
            f"({reason.getName()})"
        )


@dataclass(frozen=True)
class Will:
    """The Last Will the broker publishes if it loses the connection."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties


@dataclass(frozen=True)
class TlsFiles:
    """TLS with these PEM files; None: the system's CAs, no client certificate."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


class BrokerClient:
    """One connection (`async with`): MQTT 5, clean start, QoS 0 or 1 publishes.

    Made inside the event loop it runs on. `timeout_s` bounds the wait for CONNACK, for a
    PUBACK (unless `publish_confirmed` is given another) and for the broker to close on
    disconnect.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        keepalive_s: int,
        will: Will,
        timeout_s: float,
        logger: logging.Logger,
        username: str | None = None,
        password: Secret | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._keepalive_s = keepalive_s
        self._tls = tls
        self._timeout_s = timeout_s
        self._logger = logger
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._connack: asyncio.Future[None] = self._loop.create_future()
        self._connected = False
        # Set when the connection ends: None for a disconnect of ours, else why it was lost.
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._acks: dict[int, asyncio.Future[ReasonCode]] = {}
        self._misc: asyncio.Task[None] | None = None
        self._paho = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
        )
        self._paho.enable_logger(logger)
        if username is not None:
            # Checked to decode when the settings were (jigd.mqtt_settings).
            secret = None if password is None else password.reveal().decode("utf-8")
            self._paho.username_pw_set(username, secret)
        self._paho.will_set(will.topic, will.payload, will.qos, will.retain, will.properties)
        self._paho.on_connect = self._on_connect
        self._paho.on_disconnect = self._on_disconnect
        self._paho.on_publish = self._on_publish
        self._paho.on_socket_open = self._on_socket_open
        self._paho.on_socket_close = self._on_socket_close
        self._paho.on_socket_register_write = self._on_socket_register_write
        self._paho.on_socket_unregister_write = self._on_socket_unregister_write

    # --- what the publisher uses --------------------------------------------------------------

    async def __aenter__(self) -> BrokerClient:
        """Connect and wait for the broker's CONNACK.

        Raises MqttConnectError if the broker refuses, MqttError if it cannot be reached (the
        text names the errno or the TLS error) or does not answer within the timeout.
        """
        try:
            await self._loop.run_in_executor(None, self._connect)
        except OSError as exc:  # DNS, TCP, TLS (ssl.SSLError is an OSError)
            raise MqttError(str(exc)) from None
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._connack  # cancelled on timeout: a late CONNACK is then ignored
        except TimeoutError:
            self._paho.disconnect()
            raise MqttError(TIMED_OUT) from None
        except MqttConnectError:
            self._paho.disconnect()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Disconnect cleanly (no Last Will) unless the connection is already lost."""
        try:
            if self._lost.done():
                return
            rc = self._paho.disconnect()
            if rc == paho.MQTT_ERR_SUCCESS:
                try:
                    await asyncio.wait_for(asyncio.shield(self._lost), self._timeout_s)
                except TimeoutError:
                    raise MqttError(TIMED_OUT) from None
            else:
                self._logger.warning(
                    "Could not gracefully disconnect: %d. Forcing disconnection.", rc
                )
        finally:
            if self._lost.done():
                self._lost.exception()  # retrieved: asyncio would log it at exit otherwise
            else:
                self._lost.set_result(None)
            if self._misc is not None:
                self._misc.cancel()

    async def publish_confirmed(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool,
        properties: Properties,
        timeout_s: float | None = None,
    ) -> None:
        """Publish; return when the broker acknowledged it (QoS 1) or it was sent (QoS 0).

        Raises PublishRefusedError if the PUBACK carries a failure reason code, and MqttError
        if the message cannot be sent or no PUBACK comes within the timeout.
        """
        info = self._paho.publish(topic, payload, qos, retain, properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise MqttCodeError(info.rc, NOT_SENT)
        if info.is_published():
            return
        # paho writes and reads the socket in this event loop's callbacks, so the PUBACK cannot
        # have arrived before this waiter is registered.
        ack: asyncio.Future[ReasonCode] = self._loop.create_future()
        self._acks[info.mid] = ack
        try:
            async with asyncio.timeout(self._timeout_s if timeout_s is None else timeout_s):
                reason = await ack
        except TimeoutError:
            raise MqttError(TIMED_OUT) from None
        finally:
            self._acks.pop(info.mid, None)
        if reason.is_failure:
            raise PublishRefusedError(topic, reason)

    async def wait_lost(self) -> NoReturn:
        """Raise MqttError (caused by why, if known) when the connection is lost: a socket
        error, a missed keepalive, the broker's DISCONNECT."""
        await asyncio.wait([self._lost])  # not cancelled with this call: __aexit__ looks at it
        raise MqttError(LOST) from self._lost.exception()

    # --- paho's callbacks (on the event loop, but for the socket ones during connect) ---------

    def _connect(self) -> None:
        """In an executor thread: it blocks on DNS, TCP, TLS and reading certificate files."""
        if self._tls is not None:
            self._paho.tls_set(
                ca_certs=self._tls.ca_file,
                certfile=self._tls.cert_file,
                keyfile=self._tls.key_file,
            )
        self._paho.connect(self._host, self._port, self._keepalive_s, clean_start=True)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connack.done():
            return
        if reason_code.is_failure:
            self._connack.set_exception(MqttConnectError(reason_code))
        else:
            self._connected = True
            self._connack.set_result(None)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.value == 0:  # our own DISCONNECT (or the broker's "normal disconnection")
            self._end(None)
        else:
            self._end(MqttCodeError(reason_code, "Unexpected disconnection"))

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

    def _end(self, error: BaseException | None) -> None:
        """The connection ended; only one made and not yet ended counts (a failed connect is
        reported by __aenter__)."""
        if not self._connected or self._lost.done():
            return
        if error is None:
            self._lost.set_result(None)
        else:
            self._lost.set_exception(error)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: SocketLike) -> None:
        self._on_loop(self._watch_socket, sock.fileno())

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: SocketLike) -> None:
        fileno = sock.fileno()  # paho closes it right after this callback: not deferred
        if fileno > -1:
            self._loop.remove_reader(fileno)
        if self._misc is not None:
            self._misc.cancel()

    def _on_socket_register_write(
        self, client: paho.Client, userdata: Any, sock: SocketLike
    ) -> None:
        self._on_loop(self._loop.add_writer, sock.fileno(), self._write)

    def _on_socket_unregister_write(
        self, client: paho.Client, userdata: Any, sock: SocketLike
    ) -> None:
        self._on_loop(self._loop.remove_writer, sock.fileno())

    def _on_loop(self, callback: Callable[..., object], *args: object) -> None:
        """Run `callback` now on the event loop's thread, or soon from the connect thread."""
        if threading.get_ident() == self._loop_thread:
            callback(*args)
        else:
            self._loop.call_soon_threadsafe(callback, *args)

    def _watch_socket(self, fileno: int) -> None:
        self._loop.add_reader(fileno, self._read)
        self._misc = self._loop.create_task(self._misc_loop(), name="mqtt-keepalive")

    def _read(self) -> None:
        try:
            while True:
                self._paho.loop_read()
                # loop_read may leave decrypted bytes in an SSL socket, which select() does not
                # see (paho issue #131): read until none are left.
                sock = self._paho.socket()
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending() > 0):
                    break
        except Exception as exc:  # noqa: BLE001 - whatever breaks the socket ends the connection
            self._end(exc)

    def _write(self) -> None:
        try:
            self._paho.loop_write()
        except Exception as exc:  # noqa: BLE001 - whatever breaks the socket ends the connection
            self._end(exc)

    async def _misc_loop(self) -> None:
        while True:
            if self._paho.loop_misc() != paho.MQTT_ERR_SUCCESS:
                return  # the socket is closed (paho reported why, if it was lost)
            await asyncio.sleep(MISC_INTERVAL_S)


# --- describing errors without their text ----------------------------------------------------


def describe_error(exc: BaseException) -> str:
    """The error class and reason code (or errno, or this module's own text) of `exc` and its
    causes.

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
    elif isinstance(exc, MqttCodeError):
        if isinstance(exc.rc, ReasonCode):
            detail = f"reason code {exc.rc.value} ({exc.rc.getName()})"
        else:
            detail = f"code {exc.rc} ({paho.error_string(exc.rc)})"
    elif isinstance(exc, OSError) and exc.errno is not None:
        detail = f"errno {exc.errno} ({os.strerror(exc.errno)})"
    elif isinstance(exc, MqttError):
        detail = _describe_text(str(exc))
    name = type(exc).__name__
    return name if detail is None else f"{name}: {detail}"


def _describe_text(text: str) -> str | None:
    """A connect-time OSError becomes MqttError(str(error)): keep its errno or TLS code."""
    errno_match = _ERRNO_RE.match(text)
    if errno_match:
        number = int(errno_match.group(1))
        return f"errno {number} ({os.strerror(number)})"
    ssl_match = _SSL_RE.match(text)
    if ssl_match:
        return f"TLS {ssl_match.group(1)}"
    return text if text in _OWN_TEXTS else None
