"""jigd: the controller of Communications Hub re-flash stations."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("jigd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
