"""MQTT settings: checks of the `[mqtt]` configuration and the demo's `--mqtt` URL.

(docs/architecture.md, "MQTT"). Checked before the daemon starts flashing, so a setting no
connection could work with is a start-up error, not a silent gap in the logistics system's
records. No message quotes a password: a password in a URL is shown as `***`, and one that does
not decode is reported without its bytes.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Final

from jigd.config import MqttConfig
from jigd.secrets import Secret

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_TLS_PORT",
    "MqttConfigError",
    "check_mqtt_settings",
    "parse_mqtt_url",
]

DEFAULT_PORT: Final = 1883
DEFAULT_TLS_PORT: Final = 8883

_TOPIC_LEVEL_RE = re.compile(r"[^/+#\x00]+")


class MqttConfigError(ValueError):
    """An MQTT setting that cannot be used; the message names the setting, never a password."""


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
