"""The in-process daemon of the jigd tests, for findings that reach the control API."""

from tests.jigd.conftest import daemon

__all__ = ["daemon"]
