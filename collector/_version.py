"""The installed distribution's version."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("eventscope")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
