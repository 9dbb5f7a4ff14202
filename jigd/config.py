"""Station configuration: a pydantic model loaded from TOML and validated at start.

Every validation error names the file and the key path (`rigs[1].slots[3].port`, indexes count
from 0 as in the TOML arrays), so a technician can go straight to the line to fix.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from drivers.registry import available_drivers
from jigd.model import DeviceModelField
from jigd.store import StoreUrlError, resolve_store_url
from jigd.store.sqlite import sqlite_url

__all__ = [
    "ConfigError",
    "HubModelConfig",
    "HubReceiverConfig",
    "MqttConfig",
    "RetryConfig",
    "RigConfig",
    "SecretsConfig",
    "SelftestConfig",
    "SlotConfig",
    "SlotYieldConfig",
    "StationConfig",
    "StoreConfig",
    "TimeoutConfig",
    "WebConfig",
    "check_paths",
    "format_loc",
    "load_config",
]


class ConfigError(Exception):
    """A configuration file that cannot be used; `problems` lists each one as `path: message`."""

    def __init__(self, path: Path, problems: list[str], *, unreadable: bool = False) -> None:
        self.path = path
        self.problems = problems
        self.unreadable = unreadable  # the file itself could not be read
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s) in the configuration:\n{lines}")


SYSTEMD_CREDENTIALS: Final = Path("/run/credentials")

# A Unix socket's path fits in sun_path (108 bytes on Linux) with its terminating NUL.
MAX_SOCKET_PATH_BYTES: Final = 107


class _Strict(BaseModel):
    """Unknown keys are refused and values keep their TOML type: `true` is no port, `"3"` no
    count (strict: no coercion between types; paths are TOML strings, read as paths)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
TcpPort = Annotated[int, Field(ge=1, le=65535)]
ConfigPath = Annotated[Path, Strict(False)]


_Loc = tuple[int | str, ...]
_Problem = tuple[_Loc, str, object]  # key path, message, the value found there


def _problems(title: str, found: list[_Problem]) -> None:
    """Raise the problems a model validator found, each at its own key path, as pydantic
    reports a field's own errors; nothing when the list is empty."""
    if found:
        raise ValidationError.from_exception_data(
            title,
            [
                InitErrorDetails(
                    type=PydanticCustomError("value_error", "{message}", {"message": message}),
                    loc=loc,
                    input=value,
                )
                for loc, message, value in found
            ],
        )


def _repeats(values: list[Any], where: Callable[[int], _Loc], what: str) -> list[_Problem]:
    """A problem at each value that an earlier one repeats: `what: [sorted values]`."""
    listed = sorted(values)
    return [(where(i), f"{what}: {listed}", v) for i, v in enumerate(values) if v in values[:i]]


class HubReceiverConfig(_Strict):
    """What a hub's SMP receiver takes, where `mcumgr_params` does not say (unset: defaults).

    Set per slot (the adapter and cable) or per Device Model (`[[hub_models]]`, the firmware);
    a Device Model's setting wins over the slot's. The defaults are safe for Zephyr's UART
    transport (docs/hub-requirements.md).
    """

    buf_size: Annotated[int, Field(ge=64, le=65535)] | None = Field(
        default=None,
        description="SMP buffer size of a hub that has no mcumgr_params (default 384, Zephyr's)",
    )
    buf_count: Annotated[int, Field(ge=1, le=64)] | None = Field(
        default=None,
        description="SMP buffer count of a hub that has no mcumgr_params (default 4, Zephyr's)",
    )
    line_buffers: Annotated[int, Field(ge=1, le=64)] | None = Field(
        default=None,
        description="console framing: lines the hub's UART receiver holds at once "
        "(CONFIG_UART_MCUMGR_RX_BUF_COUNT, default 2); a frame uses at most this many lines",
    )
    mtu: Annotated[int, Field(ge=64, le=65535)] | None = Field(
        default=None,
        description="largest SMP request frame the hub's transport takes, if less than "
        "buf_size allows (default: no limit besides buf_size)",
    )
    reset_delay_s: Annotated[float, Field(ge=0, le=60)] | None = Field(
        default=None,
        description="how long the hub keeps answering after it acknowledges a reset "
        "(CONFIG_MCUMGR_GRP_OS_RESET_MS, default 0.25)",
    )


class HubModelConfig(HubReceiverConfig):
    """Receiver settings and expected boot times of one Device Model's hubs (`[[hub_models]]`)."""

    device_model: DeviceModelField = Field(description="manufacturer/model, e.g. 1086/57310102")
    boot_s: PositiveSeconds | None = Field(
        default=None,
        description="expected boot time of this model's hubs: power-on or reset to answering "
        "echo (default: [timeouts] boot_s)",
    )
    swap_s: PositiveSeconds | None = Field(
        default=None,
        description="expected time of this model's bootloader swapping in a new image "
        "(default: [timeouts] swap_s)",
    )


class SlotConfig(HubReceiverConfig):
    """One slot of a rig: where its hub's maintenance interface is reached."""

    slot: Annotated[int, Field(ge=1, le=8, description="slot number on the rig, 1-8")]
    transport: Literal["serial", "usb"] = "serial"
    port: Annotated[
        str,
        Field(
            min_length=1,
            description="serial: device path or pyserial URL (socket://, rfc2217://); "
            "usb: USB port path such as 1-1.3",
        ),
    ]
    framing: Literal["console", "raw"] = Field(
        default="raw", description="serial SMP framing: Zephyr console (base64+CRC16) or raw"
    )
    baudrate: Annotated[int, Field(gt=0)] = 115200
    usb_vendor_id: Annotated[int, Field(ge=0, le=0xFFFF)] | None = None
    usb_product_id: Annotated[int, Field(ge=0, le=0xFFFF)] | None = None
    usb_backend: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9+.-]*://.+$",
        description="usb: the pyusb backend; unset for libusb-1.0, or a URL whose scheme names "
        "a `jigd.usb_backends` entry point (`sim+unix:///path/usb.sock`: jigsim's USB bus)",
    )
    driver: str = Field(
        default="smp",
        description="hub driver: a name installed in the jigd.drivers entry-point group "
        "(an unknown name is refused with the list of installed ones)",
    )

    @model_validator(mode="after")
    def _usb_needs_ids(self) -> SlotConfig:
        if self.transport == "usb" and (self.usb_vendor_id is None or self.usb_product_id is None):
            raise ValueError("a usb slot needs usb_vendor_id and usb_product_id")
        if self.transport != "usb" and self.usb_backend is not None:
            raise ValueError("usb_backend is only for a usb slot")
        return self


class RigConfig(_Strict):
    """A multi-jig rig: its controller board's serial port and up to 8 slots."""

    rig: Annotated[int, Field(ge=1, description="rig number, unique on the station")]
    controller: Annotated[str, Field(min_length=1, description="controller serial port or URL")]
    controller_baudrate: Annotated[int, Field(gt=0)] = 115200
    slots: Annotated[list[SlotConfig], Field(min_length=1, max_length=8)]

    @model_validator(mode="after")
    def _unique_slots(self) -> RigConfig:
        numbers = [s.slot for s in self.slots]
        _problems(
            "RigConfig", _repeats(numbers, lambda i: ("slots", i, "slot"), "slot numbers repeat")
        )
        return self


class MqttConfig(_Strict):
    """The broker the logistics system listens on."""

    enabled: bool = False
    host: str = "localhost"
    port: TcpPort = 1883
    prefix: str = "jigd/v1"
    client_id: str | None = None
    username: str | None = None
    password_file: ConfigPath | None = None
    tls: bool = False
    ca_file: ConfigPath | None = None
    client_cert_file: ConfigPath | None = None
    client_key_file: ConfigPath | None = None
    keepalive_s: Annotated[float, Field(gt=0, le=65535, allow_inf_nan=False)] = Field(
        default=30.0, description="MQTT keepalive (at most 65535 s, the protocol's limit)"
    )
    reconnect_max_s: PositiveSeconds = 30.0


class SecretsConfig(_Strict):
    """Where secrets live. Files, readable only by the service user; never the values here."""

    master_keys_file: ConfigPath = Field(
        default=Path("/etc/jigd/master-keys.toml"),
        description='TOML: one `"1086" = "<64 hex>"` unlock master key per manufacturer',
    )


class RetryConfig(_Strict):
    """How often work is tried again."""

    stage_attempts: Annotated[int, Field(ge=1, le=20)] = Field(
        default=3, description="attempts at a hub's flash procedure, a power cycle between each"
    )
    resume_attempts: Annotated[int, Field(ge=0, le=20)] = Field(
        default=1,
        description="attempts a hub may have beyond stage_attempts, in all, to make up for work "
        "cut short (a restart, a rig outage, the hub pulled); once its GUID has had "
        "stage_attempts + resume_attempts attempts, counted across restarts and slots, the hub "
        "fails with the cause of its attempts instead of starting another",
    )
    request_retries: Annotated[int, Field(ge=0, le=20)] = Field(
        default=3, description="resends of one SMP request after a link error"
    )
    rig_reconnect_max_s: PositiveSeconds = Field(
        default=30.0, description="longest wait between reconnections to a rig controller"
    )


class TimeoutConfig(_Strict):
    """How long each wait may take, in seconds."""

    request_s: PositiveSeconds = Field(default=2.0, description="one SMP request's answer")
    boot_s: PositiveSeconds = Field(
        default=5.0,
        description="expected boot time: power-on or reset to the hub answering echo (per "
        "Device Model: [[hub_models]] boot_s)",
    )
    stage_s: PositiveSeconds = Field(default=120.0, description="any stage but upload and boot")
    upload_s: PositiveSeconds = Field(default=900.0, description="a whole image upload")
    swap_s: PositiveSeconds = Field(
        default=15.0,
        description="expected time of the bootloader's swap of a new image, added to boot_s "
        "after a reset (per Device Model: [[hub_models]] swap_s)",
    )
    boot_margin_s: PositiveSeconds = Field(
        default=10.0,
        description="how much longer than expected a boot may take: a hub still silent then is "
        "power cycled once, and if silent again it is failed (docs/install.md, 'Retries')",
    )
    shutdown_s: PositiveSeconds = Field(
        default=45.0,
        description="on SIGTERM, how long hubs in the activation sequence (mark test to lock) "
        "may take to finish; keep it below the unit's TimeoutStopSec (90 s)",
    )


class SlotYieldConfig(_Strict):
    """The slot yield watch (docs/install.md, "Slot yield watch"): a slot failing hubs
    significantly more often than the rest of its rig raises a `slot_suspect` alert."""

    window_hubs: Annotated[int, Field(ge=5, le=10000)] = Field(
        default=50, description="the last results per slot the watch counts"
    )
    confidence: Annotated[float, Field(gt=0.5, lt=1.0)] = Field(
        default=0.99,
        description="how sure the one-sided exact binomial test must be that a slot fails more "
        "often than the rest of its rig: a healthy rig raises a false alarm with probability "
        "about 1 - confidence at most while each of its slots finishes window_hubs hubs",
    )
    min_hubs: Annotated[int, Field(ge=1, le=10000)] = Field(
        default=5, description="hubs a slot must have finished in its window before it is judged"
    )


class StoreConfig(_Strict):
    """Where the store (batches, results, journal, outbox) lives."""

    url: str | None = Field(
        default=None,
        description=(
            "the store's URL: `sqlite:///absolute/path.sqlite3` or `sqlite:relative/path.sqlite3` "
            "(relative to this file), or `postgresql://user@host[:port]/database` "
            '(docs/install.md, "A PostgreSQL store"); the default is store_path\'s file'
        ),
    )


class RetentionConfig(_Strict):
    """How long the store keeps what it no longer needs (docs/install.md, "Retention"); a
    batch's books (its GUIDs, results and attempts) are never purged."""

    outbox_published_days: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        default=7.0, description="days a delivered MQTT message stays in the outbox"
    )
    journal_days: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        default=400.0,
        description="days a batch's journal is kept after the batch is closed (and events "
        "outside every batch after they happened); export it first with `jigctl export`",
    )
    purge_every_h: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        default=24.0,
        description="hours between the daemon's purges (the first an hour after it starts); "
        "0: none, only `jigd store purge`",
    )


class WebConfig(_Strict):
    """The web station view (docs/web.md): off unless `listen` is set."""

    listen: str | None = Field(
        default=None,
        description='`host:port` the view listens on, e.g. `"127.0.0.1:8080"`; no view if unset',
    )
    token_file: ConfigPath | None = Field(
        default=None,
        description="file holding the bearer token that import and close need (mode 0600 or "
        "stricter, not empty); required with `listen`",
    )
    allow_remote: bool = Field(
        default=False,
        description="let `listen` be an address other than loopback (the view is then served "
        "to the network: put it behind TLS)",
    )

    @property
    def address(self) -> tuple[str, int]:
        """`listen` as host and port (validated)."""
        assert self.listen is not None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    @model_validator(mode="after")
    def _checked(self) -> WebConfig:
        if self.listen is None:
            return self
        problems: list[_Problem] = []
        host, sep, port = self.listen.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            problems.append((("listen",), 'write host:port, e.g. "127.0.0.1:8080"', self.listen))
        elif not self.allow_remote and not _loopback(host):
            problems.append(
                (
                    ("listen",),
                    f"{host} is not a loopback address; set web.allow_remote = true to serve "
                    "the view to the network",
                    self.listen,
                )
            )
        if self.token_file is None:
            problems.append((("token_file",), "required when web.listen is set", None))
        _problems("WebConfig", problems)
        return self


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SelftestConfig(_Strict):
    """The rig self-test (jigd.selftest; `jigctl selftest RIG` runs it at any time)."""

    at_start: bool = Field(
        default=False,
        description="self-test each rig when jigd starts, once its controller answers; a slot "
        "that fails a check is taken out of service with the reason",
    )


class StationConfig(_Strict):
    """The whole configuration of one station."""

    station: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", description="station name")]
    catalog_dir: ConfigPath = Field(
        default=Path("/var/lib/jigd/catalog"), description="the firmware catalog directory"
    )
    store_path: ConfigPath = Field(
        default=Path("/var/lib/jigd/jigd.sqlite3"), description="the SQLite store (results)"
    )
    control_socket: ConfigPath = Field(
        default=Path("/run/jigd/control.sock"),
        description=f"the control API's Unix socket; its absolute path is at most "
        f"{MAX_SOCKET_PATH_BYTES} bytes long (a Unix socket address)",
    )
    metrics_port: TcpPort | None = Field(
        default=None, description="TCP port of the Prometheus /metrics endpoint; none if unset"
    )
    metrics_host: str = Field(
        default="0.0.0.0",  # noqa: S104 - scraped from the operations network by design
        description="address the metrics endpoint listens on",
    )
    pilot_models: list[DeviceModelField] = Field(
        default_factory=list, description="Device Models for which pilot firmware may be selected"
    )
    rigs: list[RigConfig] = Field(default_factory=list)
    hub_models: list[HubModelConfig] = Field(
        default_factory=list, description="receiver settings per Device Model"
    )
    store: StoreConfig = StoreConfig()
    mqtt: MqttConfig = MqttConfig()
    secrets: SecretsConfig = SecretsConfig()
    retries: RetryConfig = RetryConfig()
    timeouts: TimeoutConfig = TimeoutConfig()
    retention: RetentionConfig = RetentionConfig()
    web: WebConfig = WebConfig()
    selftest: SelftestConfig = SelftestConfig()
    slot_yield: SlotYieldConfig = SlotYieldConfig()

    def to_toml(self, comment: str = "") -> str:
        """The settings this config was given (defaults left out) as TOML text that
        `load_config` reads back as the same config; `comment` goes first, as `# ` lines."""
        import tomli_w

        data: dict[str, Any] = self.model_dump(mode="json", exclude_unset=True, exclude_none=True)
        head = "".join(f"# {line}\n" for line in comment.splitlines())
        return head + tomli_w.dumps(data)

    @property
    def store_url(self) -> str:
        """The store's URL: `store.url`, or the `sqlite:` URL of store_path."""
        if self.store.url is not None:
            return self.store.url
        return sqlite_url(self.store_path)

    @model_validator(mode="after")
    def _one_store_location(self) -> StationConfig:
        if self.store.url is not None and "store_path" in self.model_fields_set:
            raise ValueError(
                "store_path and store.url both say where the store is; give only one "
                "(store.url, e.g. sqlite:///var/lib/jigd/jigd.sqlite3)"
            )
        return self

    @model_validator(mode="after")
    def _unique_rigs_and_ports(self) -> StationConfig:
        """Rig numbers and Device Models once each; every port used once, however it is
        spelled (`/dev/x/../x`, a symlink to another slot's device); drivers that exist."""
        rigs = [r.rig for r in self.rigs]
        models = [str(m.device_model) for m in self.hub_models]
        _problems(
            "StationConfig",
            _repeats(rigs, lambda i: ("rigs", i, "rig"), "rig numbers repeat")
            + _repeats(
                models,
                lambda i: ("hub_models", i, "device_model"),
                "hub_models repeat a Device Model",
            )
            + self._ports_used_twice()
            + self._unknown_drivers(),
        )
        return self

    def _ports_used_twice(self) -> list[_Problem]:
        found: list[_Problem] = []
        seen: dict[tuple[str, ...], tuple[str, str]] = {}
        for i, rig in enumerate(self.rigs):
            ports: list[tuple[_Loc, str, str, SlotConfig | None]] = [
                (("rigs", i, "controller"), f"rig {rig.rig} controller", rig.controller, None)
            ]
            ports += [
                (("rigs", i, "slots", j, "port"), f"rig {rig.rig} slot {s.slot}", s.port, s)
                for j, s in enumerate(rig.slots)
            ]
            for loc, where, port, slot in ports:
                key = _device_key(port, slot)
                if key not in seen:
                    seen[key] = (where, port)
                    continue
                first, spelled = seen[key]
                same = "" if spelled == port else f" (both are {key[-1]})"
                found.append(
                    (loc, f"port {port!r} is used by both {first} and {where}{same}", port)
                )
        return found

    def _unknown_drivers(self) -> list[_Problem]:
        installed = available_drivers() if self.rigs else []
        return [
            (
                ("rigs", i, "slots", j, "driver"),
                f"unknown driver {s.driver!r}; installed: {', '.join(installed) or 'none'}",
                s.driver,
            )
            for i, rig in enumerate(self.rigs)
            for j, s in enumerate(rig.slots)
            if s.driver not in installed
        ]


def _device_key(port: str, slot: SlotConfig | None) -> tuple[str, ...]:
    """What a port opens, for finding two that are the same device: a serial device's path
    normalised, its symlinks resolved where they exist; a USB port on its bus; a URL as is."""
    if slot is not None and slot.transport == "usb":
        return ("usb", slot.usb_backend or "libusb", port)
    if port.startswith("/"):
        return ("serial", os.path.realpath(port))
    return ("serial", port)


def format_loc(loc: tuple[int | str, ...]) -> str:
    """Turn pydantic's location tuple into a key path: ('rigs', 1, 'port') -> rigs[1].port."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def load_config(path: Path) -> StationConfig:
    """Read and validate a TOML configuration; raise ConfigError naming every problem."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(path, [f"cannot read the file: {exc.strerror}"], unreadable=True) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [f"not UTF-8 text at byte {exc.start}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"not valid TOML: {exc}"]) from exc
    except ValueError:  # Python's limit on the digits of an integer
        raise ConfigError(path, [f"not valid TOML: {_long_number(text)}"]) from None
    except RecursionError:
        raise ConfigError(path, ["not valid TOML: arrays or tables nested too deeply"]) from None
    try:
        config = StationConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [_problem_text(e["loc"], e["type"], e["msg"]) for e in exc.errors()]
        raise ConfigError(path, problems) from None
    config = _resolve_paths(config, path.parent)
    socket_bytes = len(os.fsencode(config.control_socket))
    if socket_bytes > MAX_SOCKET_PATH_BYTES:
        raise ConfigError(
            path,
            [
                f"control_socket: {config.control_socket} is {socket_bytes} bytes long; a Unix "
                f"socket's path is at most {MAX_SOCKET_PATH_BYTES} bytes"
            ],
        )
    if config.store.url is not None:
        try:
            url = resolve_store_url(config.store.url, path.parent)
        except StoreUrlError as exc:
            raise ConfigError(path, [f"store.url: {exc}"]) from None
        config = config.model_copy(update={"store": StoreConfig(url=url)})
    return config


def _problem_text(loc: _Loc, kind: str, message: str) -> str:
    """`key.path: message`; an unknown key with the key of its section it is closest to."""
    if kind != "extra_forbidden":
        return f"{format_loc(loc)}: {message}"
    key = str(loc[-1])
    names = [str(part) for part in loc[:-1] if isinstance(part, str)]
    section = (
        f"[[{'.'.join(names)}]]" if any(isinstance(p, int) for p in loc) else f"[{'.'.join(names)}]"
    )
    where = f"in {section}" if names else "at the top level"
    model = _model_at(loc[:-1])
    known = list(model.model_fields) if model is not None else []
    close = difflib.get_close_matches(key, known, n=1)
    hint = f'did you mean "{close[0]}"?' if close else f"the keys are {', '.join(known)}"
    return f'unknown key "{format_loc(loc)}" {where}; {hint}'


def _model_at(loc: _Loc) -> type[BaseModel] | None:
    """The config model at a key path (`('rigs', 0, 'slots')` -> SlotConfig)."""
    model: type[BaseModel] | None = StationConfig
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = None if field is None else _model_in(field.annotation)
    return model


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The model class a field's type holds (itself, in a list, optional or annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def check_paths(config: StationConfig) -> list[str]:
    """The files and directories the config names that jigd cannot read, each as
    `key: path: why` (empty if all are there): checked before jigd creates anything, so a
    missing master key file or catalog is found by `jigd config check`, not by a daemon that
    has already made its store."""
    files: list[tuple[str, Path | None]] = [
        ("secrets.master_keys_file", config.secrets.master_keys_file)
    ]
    if config.mqtt.enabled:
        mqtt = config.mqtt
        files += [
            ("mqtt.password_file", mqtt.password_file),
            ("mqtt.ca_file", mqtt.ca_file),
            ("mqtt.client_cert_file", mqtt.client_cert_file),
            ("mqtt.client_key_file", mqtt.client_key_file),
        ]
    if config.web.listen is not None:
        files.append(("web.token_file", config.web.token_file))
    # systemd's credentials exist only inside the service (docs/install.md): not checked outside.
    outside = "CREDENTIALS_DIRECTORY" not in os.environ
    problems = [
        f"{key}: {path}: {why}"
        for key, path in files
        if path is not None
        and not (outside and path.is_relative_to(SYSTEMD_CREDENTIALS))
        and (why := _unreadable(path, directory=False))
    ]
    if why := _unreadable(config.catalog_dir, directory=True):
        problems.append(f"catalog_dir: {config.catalog_dir}: {why}")
    return problems


def _unreadable(path: Path, *, directory: bool) -> str | None:
    """Why jigd cannot read the file (or list the directory) at `path`; None if it can."""
    try:
        if directory:
            with os.scandir(path):
                pass
        else:
            with path.open("rb"):
                pass
    except FileNotFoundError:
        return "does not exist; create it or correct the path"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _long_number(text: str) -> str:
    """Where the number too long for Python's int() is (the TOML parser does not say)."""
    found = re.search(rf"[0-9_]{{{sys.get_int_max_str_digits() + 1},}}", text)
    line = f" at line {text.count(chr(10), 0, found.start()) + 1}" if found else ""
    return f"an integer{line} has more than {sys.get_int_max_str_digits()} digits"


_M = TypeVar("_M", bound=BaseModel)


def _resolve_paths(model: _M, base: Path) -> _M:
    """Paths in a config file are relative to the file, not to the working directory: every
    `Path` field, at any depth (sections, lists of tables), so a new one cannot be missed."""
    updates: dict[str, object] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, Path):
            if not value.is_absolute():
                updates[name] = base / value
        elif isinstance(value, BaseModel):
            updates[name] = _resolve_paths(value, base)
        elif isinstance(value, list) and any(isinstance(item, BaseModel) for item in value):
            updates[name] = [
                _resolve_paths(item, base) if isinstance(item, BaseModel) else item
                for item in value
            ]
    return model.model_copy(update=updates) if updates else model
