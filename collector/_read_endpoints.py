"""JSON API endpoints of the read side (``/api/requests``, ``/api/tree/{root}`` …).

Each maps a path under ``/api`` to ``(cursor, params, settings) -> JSON value``; see
``_api.py`` for how they are served and ``_read_commands.py`` for the CLI that calls them.
"""

from __future__ import annotations

from typing import Any

READ_ENDPOINTS: dict[str, Any] = {}
