"""``eventscope query <name>`` subcommands of the read side, one per JSON API endpoint."""

from __future__ import annotations

from ._query_command import QueryCommand

READ_COMMANDS: dict[str, QueryCommand] = {}
