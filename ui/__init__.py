"""eventscope.ui — the browser UI: server-rendered pages and Plotly figures.

The collector mounts it with :func:`setup`, giving it a :class:`Read` callable that runs
functions of ``eventscope.queries`` on its database; the UI never opens the database and
never writes SQL itself. Pages: ``/`` overview, ``/requests``, ``/requests/{root}``,
``/handlers``, ``/events``, ``/topology``, ``/sql``; plus ``/login`` and ``/static/…``.
"""

from ._config import READ_LANES, UI, Read, UIConfig
from ._mount import is_public, login_location, setup
from ._render import CONTENT_SECURITY_POLICY

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "READ_LANES",
    "UI",
    "Read",
    "UIConfig",
    "is_public",
    "login_location",
    "setup",
]
