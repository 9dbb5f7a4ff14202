"""Secrets of a station: unlock master keys per manufacturer, the MQTT password, the web token.

Values are wrapped in `Secret`, whose `str` and `repr` never show the value, so a secret that
reaches a log line, an exception or a report by mistake shows as `Secret(***)`. Files holding
secrets must not be readable by other users; a file that is gets refused with a message that
names the file and the fix, never the content.
"""

from __future__ import annotations

import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "MasterKeys",
    "Secret",
    "SecretsError",
    "load_master_keys",
    "load_password",
    "load_token",
]

MASTER_KEY_BYTES = 32


class SecretsError(Exception):
    """A secrets file that cannot be used. The message names the file, never a secret."""


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret value that does not print itself."""

    _value: bytes = field(repr=False)

    def reveal(self) -> bytes:
        """The value, for the one call that needs it (HMAC, MQTT login)."""
        return self._value

    def __str__(self) -> str:
        return "Secret(***)"

    def __repr__(self) -> str:
        return "Secret(***)"


@dataclass(frozen=True, slots=True)
class MasterKeys:
    """Unlock master keys by manufacturer code."""

    keys: dict[int, Secret]
    source: Path

    def for_manufacturer(self, manufacturer: int) -> Secret | None:
        return self.keys.get(manufacturer)

    def __repr__(self) -> str:
        names = ", ".join(f"{m:04X}" for m in sorted(self.keys))
        return f"MasterKeys({self.source}: {names})"


def _read_private(path: Path, *, strict_mode: bool) -> bytes:
    try:
        info = path.stat()
    except OSError as exc:
        raise SecretsError(f"{path}: cannot read the secrets file: {exc.strerror}") from None
    if strict_mode and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretsError(
            f"{path}: secrets file is readable by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SecretsError(f"{path}: cannot read the secrets file: {exc.strerror}") from None


def load_master_keys(path: Path, *, strict_mode: bool = True) -> MasterKeys:
    """Read `"1086" = "<64 hex>"` lines (TOML): one unlock master key per manufacturer."""
    raw = _read_private(path, strict_mode=strict_mode)
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        # The parser's message may quote file content, which is secret: give only the file.
        raise SecretsError(f'{path}: not a TOML table of manufacturer = "hex key" lines') from None
    keys: dict[int, Secret] = {}
    problems: list[str] = []
    for name, value in table.items():
        if len(name) != 4 or not all(c in "0123456789abcdefABCDEF" for c in name):
            problems.append(f"key {name!r} is not a manufacturer code (4 hex characters)")
            continue
        try:
            key = bytes.fromhex(value) if isinstance(value, str) else b""
        except ValueError:
            key = b""
        if len(key) != MASTER_KEY_BYTES:
            problems.append(f"{name}: the master key must be {MASTER_KEY_BYTES * 2} hex characters")
            continue
        keys[int(name, 16)] = Secret(key)
    if problems:
        raise SecretsError(f"{path}: " + "; ".join(problems))
    return MasterKeys(keys, path)


def load_password(path: Path, *, strict_mode: bool = True) -> Secret:
    """A password file: its first line, without the line ending."""
    raw = _read_private(path, strict_mode=strict_mode)
    line = raw.splitlines()[0] if raw else b""
    if not line:
        raise SecretsError(f"{path}: the password file is empty")
    return Secret(line)


def load_token(path: Path) -> Secret:
    """The web view's bearer token file (0600 or stricter): its text without surrounding white
    space; refused when empty."""
    raw = _read_private(path, strict_mode=True).strip()
    if not raw:
        raise SecretsError(f"{path}: the web token file is empty; write a long random token in it")
    return Secret(raw)
