"""Hub-link tests run over every transport: a test that takes `transport` runs once over a
serial pty and once over the simulated USB bus; one that also takes `framing` runs over serial
raw, serial console and USB (whose frames are raw SMP in bulk transfers)."""

from __future__ import annotations

import pytest

TRANSPORTS = ("serial", "usb")
LINKS = (("serial", "raw"), ("serial", "console"), ("usb", "raw"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "transport" not in metafunc.fixturenames:
        return
    if "framing" in metafunc.fixturenames:
        metafunc.parametrize(("transport", "framing"), LINKS, ids=[f"{t}-{f}" for t, f in LINKS])
    else:
        metafunc.parametrize("transport", TRANSPORTS)
