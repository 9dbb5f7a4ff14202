"""A strict reader of udev rules files (udev(7)) and an evaluator for one device, for tests.

`udevadm verify` only exists from systemd 254 and `udevadm test` needs a real device, so the
tests check systemd/99-jigd.rules with this: every line must parse under udev(7)'s grammar (keys,
operators, quoting, which keys may match and which may assign), and evaluating the rules on a
described device (its subsystem, kernel name, attributes and parents) gives the symlinks, group
and mode udev would give it.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Final

# udev(7): keys that only match, keys that only assign, keys that do both; {attr} keys.
MATCH_ONLY: Final = frozenset(
    {"ACTION", "DEVPATH", "KERNEL", "KERNELS", "SUBSYSTEM", "SUBSYSTEMS", "DRIVER", "DRIVERS",
     "ATTRS", "TAGS", "CONST", "TEST", "PROGRAM", "RESULT"}
)  # fmt: skip
ASSIGN_ONLY: Final = frozenset(
    {"OWNER", "GROUP", "MODE", "SECLABEL", "RUN", "LABEL", "GOTO", "IMPORT", "OPTIONS"}
)
BOTH: Final = frozenset({"NAME", "SYMLINK", "ATTR", "SYSCTL", "ENV", "TAG"})
NEEDS_ATTRIBUTE: Final = frozenset(
    {"ATTR", "ATTRS", "SYSCTL", "ENV", "CONST", "SECLABEL", "IMPORT"}
)
MAY_HAVE_ATTRIBUTE: Final = NEEDS_ATTRIBUTE | {"RUN", "TEST"}
MATCH_OPS: Final = frozenset({"==", "!="})
ASSIGN_OPS: Final = frozenset({"=", "+=", "-=", ":="})

_PAIR: Final = re.compile(
    r'\s*(?P<key>[A-Z_]+)(?:\{(?P<attr>[^{}"]+)\})?\s*(?P<op>==|!=|\+=|-=|:=|=)\s*'
    r'"(?P<value>(?:[^"\\]|\\.)*)"\s*'
)


class RuleSyntaxError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class Pair:
    key: str
    attr: str | None
    op: str
    value: str

    @property
    def is_match(self) -> bool:
        return self.op in MATCH_OPS


@dataclass(frozen=True)
class Rule:
    line: int
    pairs: tuple[Pair, ...]


@dataclass
class Device:
    """A device as udev sees it, with its parents nearest first (for KERNELS, ATTRS, ...)."""

    subsystem: str
    kernel: str
    attrs: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    driver: str = ""
    parents: list[Device] = field(default_factory=list)


@dataclass
class Result:
    symlinks: list[str] = field(default_factory=list)
    group: str | None = None
    mode: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def parse_rules(text: str) -> list[Rule]:
    """Every rule of a rules file; RuleSyntaxError names the first bad line."""
    rules: list[Rule] = []
    lines = text.split("\n")
    number = 0
    while number < len(lines):
        start = number + 1
        line = lines[number]
        number += 1
        while line.endswith("\\"):
            if number >= len(lines):
                raise RuleSyntaxError(start, "continuation at the end of the file")
            line = line[:-1] + lines[number]
            number += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        rules.append(Rule(start, _parse_line(start, line)))
    labels = {p.value for r in rules for p in r.pairs if p.key == "LABEL"}
    for rule in rules:
        for pair in rule.pairs:
            if pair.key == "GOTO" and pair.value not in labels:
                raise RuleSyntaxError(rule.line, f"GOTO {pair.value!r} has no LABEL")
    return rules


def _parse_line(number: int, line: str) -> tuple[Pair, ...]:
    pairs: list[Pair] = []
    pos = 0
    while True:
        m = _PAIR.match(line, pos)
        if m is None:
            raise RuleSyntaxError(number, f"cannot read a key-operator-value at {line[pos:]!r}")
        pair = Pair(m["key"], m["attr"], m["op"], m["value"])
        _check_pair(number, pair)
        pairs.append(pair)
        pos = m.end()
        if pos == len(line):
            return tuple(pairs)
        if line[pos] != ",":
            raise RuleSyntaxError(number, f"expected ',' at {line[pos:]!r}")
        pos += 1
        if not line[pos:].strip():
            raise RuleSyntaxError(number, "trailing comma")


def _check_pair(number: int, pair: Pair) -> None:
    key = pair.key
    if key not in MATCH_ONLY | ASSIGN_ONLY | BOTH:
        raise RuleSyntaxError(number, f"unknown key {key}")
    if pair.attr is None and key in NEEDS_ATTRIBUTE:
        raise RuleSyntaxError(number, f"{key} needs an {{attribute}}")
    if pair.attr is not None and key not in MAY_HAVE_ATTRIBUTE:
        raise RuleSyntaxError(number, f"{key} takes no {{attribute}}")
    if pair.op not in MATCH_OPS | ASSIGN_OPS:
        raise RuleSyntaxError(number, f"unknown operator {pair.op}")
    if key in MATCH_ONLY and pair.op not in MATCH_OPS:
        raise RuleSyntaxError(number, f"{key} can only be matched (== or !=), not {pair.op}")
    if key in ASSIGN_ONLY and pair.op in MATCH_OPS:
        raise RuleSyntaxError(number, f"{key} can only be assigned, not matched with {pair.op}")
    if key == "MODE" and not re.fullmatch(r"0?[0-7]{3,4}", pair.value):
        raise RuleSyntaxError(number, f"MODE {pair.value!r} is not an octal mode")
    if key == "GROUP" and not re.fullmatch(r"[a-z_][a-z0-9_-]*", pair.value):
        raise RuleSyntaxError(number, f"GROUP {pair.value!r} is not a group name")
    if key == "SYMLINK" and pair.op not in MATCH_OPS:
        for link in pair.value.split():
            if link.startswith("/") or ".." in link.split("/"):
                raise RuleSyntaxError(number, f"SYMLINK {link!r} must be relative to /dev")


def _glob(pattern: str, value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, alt) for alt in pattern.split("|"))


def _matches(pair: Pair, actual: str | None) -> bool:
    hit = actual is not None and _glob(pair.value, actual)
    return hit if pair.op == "==" else not hit


def _device_value(pair: Pair, device: Device, action: str) -> str | None:
    if pair.key == "ACTION":
        return action
    if pair.key in {"KERNEL", "KERNELS"}:
        return device.kernel
    if pair.key in {"SUBSYSTEM", "SUBSYSTEMS"}:
        return device.subsystem
    if pair.key in {"DRIVER", "DRIVERS"}:
        return device.driver
    if pair.key in {"ATTR", "ATTRS"}:
        return device.attrs.get(pair.attr or "")
    if pair.key == "ENV":
        return device.env.get(pair.attr or "")
    raise NotImplementedError(f"evaluating {pair.key} is not needed by these tests")


_PARENT_KEYS: Final = frozenset({"KERNELS", "SUBSYSTEMS", "DRIVERS", "ATTRS"})


def evaluate(rules: list[Rule], device: Device, action: str = "add") -> Result:
    """What the rules do to `device`: udev's order, GOTO/LABEL, and parent-key semantics (all
    of a rule's KERNELS/SUBSYSTEMS/DRIVERS/ATTRS must match one and the same device on the
    way up from the device itself)."""
    result = Result(env=dict(device.env))
    skip_to: str | None = None
    for rule in rules:
        labels = [p.value for p in rule.pairs if p.key == "LABEL"]
        if skip_to is not None:
            if skip_to in labels:
                skip_to = None
            continue
        matches = [p for p in rule.pairs if p.is_match]
        own = [p for p in matches if p.key not in _PARENT_KEYS]
        up = [p for p in matches if p.key in _PARENT_KEYS]
        current = Device(device.subsystem, device.kernel, device.attrs, result.env)
        if not all(_matches(p, _device_value(p, current, action)) for p in own):
            continue
        if up and not any(
            all(_matches(p, _device_value(p, d, action)) for p in up)
            for d in [device, *device.parents]
        ):
            continue
        for pair in rule.pairs:
            if pair.is_match:
                continue
            if pair.key == "SYMLINK":
                links = pair.value.split()
                result.symlinks = links if pair.op in {"=", ":="} else result.symlinks + links
            elif pair.key == "GROUP":
                result.group = pair.value
            elif pair.key == "MODE":
                result.mode = pair.value
            elif pair.key == "ENV":
                result.env[pair.attr or ""] = pair.value
            elif pair.key == "GOTO":
                skip_to = pair.value
    return result
