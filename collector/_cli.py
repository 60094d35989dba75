"""The ``eventscope`` command: ``serve``, ``query …``, ``check``, ``demo`` and ``--version``.

Bad input ends with exit code 2 and one line on stderr naming what is wrong; a collector
that cannot be reached ends with exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from eventscope.queries import EventscopeError

from ._check import add_check_command
from ._demo import add_demo_command
from ._errors import ConfigError, DatabaseFailed, fail
from ._missing_modules import remember_missing
from ._output import FORMATS, render
from ._query_client import SourceUnavailable, query_source
from ._query_command import QueryCommand
from ._read_commands import READ_COMMANDS
from ._settings import Settings, parse_grace, parse_grpc_port, parse_size
from ._version import __version__

__all__ = ["QUERY_COMMANDS", "QueryCommand", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _sql_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("statement", help="one SELECT over the public schema")
    parser.add_argument("--limit", default=None, help="most rows (default 10000)")


def _sql_params(args: argparse.Namespace) -> dict[str, str]:
    params = {"q": args.statement}
    if args.limit is not None:
        params["limit"] = str(args.limit)
    return params


def _sql_table(value: Any, raw: bool) -> tuple[list[str], list[list[Any]]]:
    columns = [c["name"] for c in value["columns"]]
    return columns, [[row.get(c) for c in columns] for row in value["rows"]]


#: name -> subcommand of ``eventscope query``.
QUERY_COMMANDS: dict[str, QueryCommand] = {
    "sql": QueryCommand(
        endpoint="sql",
        help="run one read-only SELECT over the public schema",
        arguments=_sql_arguments,
        params=_sql_params,
        table=_sql_table,
        json=lambda value: value["rows"],  # an array of objects keyed by column name
    ),
    **READ_COMMANDS,
}


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the collector: OTLP/HTTP receiver, API and UI",
        description="Receive OTLP over HTTP and store it in DuckDB. Every option can also "
        "be set with an EVENTSCOPE_<OPTION> environment variable; flags win.",
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port for OTLP/HTTP, API and UI (default 4318)")
    serve.add_argument(
        "--grpc-port", help="port for OTLP/gRPC (default 4317; 0: off; auto: any free port)"
    )
    serve.add_argument(
        "--db", help="DuckDB file (default ./eventscope.duckdb), or ducklake:postgres:<dsn>"
    )
    serve.add_argument("--data-path", help="DuckLake: folder for the Parquet data files")
    serve.add_argument("--ducklake-schema", help="DuckLake: PostgreSQL schema of the catalog")
    serve.add_argument("--ui-port", type=int, help="serve the UI on this port instead")
    serve.add_argument("--token", help="require 'Authorization: Bearer <token>'")
    serve.add_argument("--max-body-bytes", help="largest request body, e.g. 32MiB")
    serve.add_argument("--max-queue-rows", type=int, help="rows waiting for commit before 503")
    serve.add_argument(
        "--journal-max-rows",
        type=int,
        help="requests of at most this many rows are answered once journaled (fsynced), "
        "before their DuckDB commit (default 8192; 0: every request after its commit)",
    )
    serve.add_argument(
        "--max-result-bytes", help="largest SQL result, e.g. 32MiB (larger ones are refused)"
    )
    serve.add_argument(
        "--allowed-hosts",
        help="host names the API and UI answer besides this machine's and IP addresses "
        "(comma-separated; .example.com for subdomains too)",
    )
    serve.add_argument("--query-timeout", type=float, help="seconds before a read is stopped")
    serve.add_argument(
        "--read-timeout", type=float, help="seconds a request body may take to arrive (10)"
    )
    serve.add_argument(
        "--idle-timeout", type=float, help="seconds before an idle connection is closed (75)"
    )
    serve.add_argument("--db-threads", type=int, help="DuckDB threads for reads (default: cores)")
    serve.add_argument("--db-write-threads", type=int, help="DuckDB threads for ingest alone (1)")
    serve.add_argument(
        "--db-memory-limit", help="most memory DuckDB may use, e.g. 2GiB (default: 448MiB)"
    )
    serve.add_argument(
        "--decode-workers", type=int, help="decoder processes (default: cores, up to 8; 0: inline)"
    )
    serve.add_argument(
        "--grace",
        help="how long an event may be on its way before it counts as lost (default 5m)",
    )
    serve.add_argument(
        "--retention",
        help="remove spans that started longer ago than this, e.g. 7d (default: keep everything)",
    )
    serve.add_argument(
        "--max-db-size",
        help="remove the oldest data while the file is larger than this, e.g. 50GiB",
    )
    serve.add_argument(
        "--metrics-interval",
        help="how often the lost/duplicated/latency series of /metrics are evaluated "
        "(default 30s; 0: off)",
    )
    serve.add_argument(
        "--metrics-lookback", help="how far back they learn which groups handle what (1h)"
    )
    serve.add_argument(
        "--metrics-max-label-sets",
        type=int,
        help="most (event type, destination, group) label sets; more become 'other' (500)",
    )
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))


def _add_query(commands: Any) -> None:
    query = commands.add_parser("query", help="ask the stored data a question")
    kinds = query.add_subparsers(dest="query", required=True, metavar="QUERY", parser_class=_Parser)
    for name, command in QUERY_COMMANDS.items():
        sub = kinds.add_parser(name, help=command.help, description=command.help)
        command.arguments(sub)
        where = sub.add_mutually_exclusive_group()
        where.add_argument(
            "--db", help="read this DuckDB file (or ducklake:postgres:<dsn>) directly"
        )
        where.add_argument("--url", help="ask a running collector, e.g. http://127.0.0.1:4318")
        sub.add_argument("--token", help="bearer token for --url (or EVENTSCOPE_TOKEN)")
        sub.add_argument("--ducklake-schema", help="DuckLake: PostgreSQL schema of the catalog")
        sub.add_argument("--format", choices=FORMATS, default="table", help="output format")


def build_parser() -> argparse.ArgumentParser:
    """The whole ``eventscope`` command line."""
    parser = _Parser(
        prog="eventscope",
        description="Trace event-driven systems: fan-out trees, handler latency, "
        "lost and duplicated events.",
    )
    parser.add_argument("--version", action="version", version=f"eventscope {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    _add_serve(commands)
    _add_query(commands)
    add_check_command(commands)
    add_demo_command(commands)
    return parser


def _size(text: str | None, flag: str) -> int | None:
    """A size flag's bytes, or None when the flag was not given."""
    return None if text is None else parse_size(text, flag)


def _serve(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    from ._app import ListenError, serve

    settings = Settings.from_env(
        environ,
        host=args.host,
        port=args.port,
        db=args.db,
        data_path=args.data_path,
        ducklake_schema=args.ducklake_schema,
        ui_port=args.ui_port,
        token=args.token,
        max_body_bytes=_size(args.max_body_bytes, "--max-body-bytes"),
        max_queue_rows=args.max_queue_rows,
        journal_max_rows=args.journal_max_rows,
        max_result_bytes=_size(args.max_result_bytes, "--max-result-bytes"),
        allowed_hosts=args.allowed_hosts,
        query_timeout=args.query_timeout,
        read_timeout=args.read_timeout,
        idle_timeout=args.idle_timeout,
        db_threads=args.db_threads,
        db_write_threads=args.db_write_threads,
        db_memory_limit=_size(args.db_memory_limit, "--db-memory-limit"),
        decode_workers=args.decode_workers,
        grace=None if args.grace is None else parse_grace(args.grace, "--grace"),
        retention=None if args.retention is None else parse_grace(args.retention, "--retention"),
        max_db_size=_size(args.max_db_size, "--max-db-size"),
        metrics_interval=None
        if args.metrics_interval is None
        else parse_grace(args.metrics_interval, "--metrics-interval") / 1e9,
        metrics_lookback=None
        if args.metrics_lookback is None
        else parse_grace(args.metrics_lookback, "--metrics-lookback"),
        metrics_max_label_sets=args.metrics_max_label_sets,
    )
    if args.grpc_port is not None:  # a flag's None (0: off) must win over the environment
        grpc_port = parse_grpc_port(args.grpc_port, "--grpc-port")
        settings = dataclasses.replace(settings, grpc_port=grpc_port)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(serve(settings))
    except ListenError as exc:  # the port is taken, the address is not ours …
        fail(str(exc), 1)
    except OSError as exc:
        fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", 1)


def _query(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    command = QUERY_COMMANDS[args.query]
    params = command.params(args)
    with query_source(args, environ) as source:
        value = source.call(command.endpoint, params)
    columns, rows = command.table(value, args.format == "csv")
    print(render(columns, rows, args.format, json_value=command.json(value)))


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> None:
    """Entry point of the ``eventscope`` console script."""
    environ = os.environ if environ is None else environ
    remember_missing()  # (DuckDB looks for pandas on every statement with parameters)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            _serve(args, environ)
        elif args.command == "query":
            _query(args, environ)
        else:
            args.run(args, environ)
    except (SourceUnavailable, DatabaseFailed) as exc:
        fail(str(exc), 1)
    except (EventscopeError, ConfigError) as exc:
        fail(str(exc), 2)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:  # `eventscope query … | head`
        sys.stderr.close()
        raise SystemExit(0) from None
