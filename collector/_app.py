"""The collector application: OTLP receiver, operations endpoints, the JSON API and the UI.

``create_app`` composes the aiohttp application; ``serve`` runs it until SIGTERM/SIGINT and
drains the write queue before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import hmac
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TextIO

from aiohttp import web
from eventscope import ui
from eventscope.queries import EventscopeError

from . import _api
from ._admission import Admission
from ._boundary import HostCheck, check_browser_boundary
from ._database import Database
from ._decode_pool import DecodePool
from ._errors import (
    DatabaseFailed,
    ListenError,
    MethodNotAllowed,
    Overloaded,
    RequestTimeout,
    Unauthorized,
)
from ._grpc import GrpcReceiver
from ._heap import heap_release
from ._intake import Intake
from ._journal import Journal, JournalEntry, journal_folder, open_journal
from ._ledger_metrics import LEDGER, LedgerSeries, ledger_series
from ._reads import caught_up, run_read
from ._receiver import error_body, receive_logs, receive_metrics, receive_traces
from ._retention import Retention, retention_line
from ._settings import Settings
from ._signals import SIGNALS
from ._state import STATE, CollectorState
from ._version import __version__
from ._writer import SpanWriter

__all__ = [
    "RUNNER_OPTIONS",
    "ListenError",
    "create_app",
    "listen",
    "running",
    "serve",
    "until_signalled",
]

log = logging.getLogger("eventscope.collector")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_OPEN_PATHS = ("/healthz",)
_MACHINE_PATHS = ("/v1/", "/api/", "/metrics")
#: With ``--ui-port``: the UI's own application, served on that port by ``running``.
_UI_APP = web.AppKey("eventscope_ui_app", web.Application)
#: The Host names the API and UI answer.
_HOSTS = web.AppKey("eventscope_hosts", HostCheck)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map typed errors to responses (OTLP Status on /v1, JSON elsewhere) and count them."""
    state = request.app[STATE]
    route = request.match_info.route.resource
    path = route.canonical if route is not None else "(unmatched)"
    try:
        response = await handler(request)
    except EventscopeError as exc:
        response = _error_response(request, exc.status, str(exc))
        if isinstance(exc, Overloaded):
            response.headers["Retry-After"] = str(exc.retry_after)
        if isinstance(exc, Unauthorized):
            response.headers["WWW-Authenticate"] = 'Bearer realm="eventscope"'
        if isinstance(exc, MethodNotAllowed):
            response.headers["Allow"] = "POST"
        if isinstance(exc, RequestTimeout) or _stopping(state):
            response.force_close()  # a half-read body, or intake has stopped
    except web.HTTPException as exc:
        state.metrics.requests[(path, exc.status)] += 1
        raise
    except ConnectionError:  # the client went away mid-request: nobody to answer, no error
        log.debug("client closed the connection during %s %s", request.method, request.path)
        response = web.Response(status=_CLIENT_CLOSED, reason="Client Closed Request")
        response.force_close()
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        response = _error_response(request, 500, "internal error; see the collector's log")
    state.metrics.requests[(path, response.status)] += 1
    return response


#: Counted (as nginx does) for a request whose client closed the connection before the answer.
_CLIENT_CLOSED = 499


def _stopping(state: CollectorState) -> bool:
    return state._admission is not None and state._admission.stopping


def _error_response(request: web.Request, status: int, message: str) -> web.Response:
    if request.path.startswith("/v1/"):
        return error_body(request, status, message)
    return web.json_response({"error": message, "status": status}, status=status)


@web.middleware
async def _boundary(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse what a page of another site could make a browser send (``_boundary``)."""
    check_browser_boundary(request, request.app[_HOSTS])
    return await handler(request)


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With a token configured, everything but /healthz, the UI's /login and its static
    files needs the token (``Authorization: Bearer`` or the UI's cookie). A browser asking
    for a UI page without it is sent to /login."""
    token = request.app[STATE].settings.token
    if token is None or request.path in _OPEN_PATHS or ui.is_public(request.path):
        return await handler(request)
    given = _presented_token(request)
    if given is None or not hmac.compare_digest(given.encode(), token.encode()):
        if request.method == "GET" and not request.path.startswith(_MACHINE_PATHS):
            raise web.HTTPSeeOther(ui.login_location(request.path_qs))
        raise Unauthorized(
            "missing or wrong bearer token: send 'Authorization: Bearer <token>'"
            if given is None or request.path.startswith(_MACHINE_PATHS)
            else "wrong token"
        )
    return await handler(request)


def _presented_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get("eventscope_token")


#: Longest /healthz and /metrics wait for acknowledged rows to be committed first.
_REPORT_CATCH_UP = 1.0


async def _healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    await caught_up(state.database, _REPORT_CATCH_UP)  # figures include what was answered
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "queue_rows": state.writer.queued_rows,
            "grpc_port": state.grpc_port,
        }
    )


async def _metrics(request: web.Request) -> web.Response:
    await caught_up(request.app[STATE].database, _REPORT_CATCH_UP)
    text = request.app[STATE].metrics.render() + request.app[LEDGER].render()
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    settings = state.settings
    database = await asyncio.to_thread(Database.open, settings)
    stop = _STOP.get(None)
    writer = SpanWriter(
        database,
        max_queue_rows=settings.max_queue_rows,
        max_commit_rows=settings.max_commit_rows,
        metrics=state.metrics,
        retry_after=settings.retry_after,
        maintenance_interval=settings.ducklake_maintenance,
        on_failure=None if stop is None else lambda reason: stop.set(),
    )
    await writer.start()
    journal = await _open_journal(settings, database, writer)
    retention = Retention(
        database,
        writer.on_writer,
        state.metrics,
        retention_ns=settings.retention,
        max_bytes=settings.max_db_size,
        interval=settings.retention_interval,
        snapshot_age=2 * settings.query_timeout,
    )
    retention.start()
    decoders = DecodePool(settings.decode_workers)
    await decoders.start()
    if journal is not None:
        await _replay(journal[1], decoders, writer)
    state.metrics.db_memory_limit_bytes = database.memory_limit_bytes
    # Bodies being received or decoded, at most: as many as the decoders' slots at the
    # largest size (what could be held before bodies were read outside the slots).
    admission = Admission(4 * settings.max_body_bytes, settings.retry_after)
    intake = Intake(
        decoders=decoders,
        writer=writer,
        metrics=state.metrics,
        journal=None if journal is None else journal[0],
        journal_max_rows=settings.journal_max_rows,
    )
    state.start(database, writer, intake, admission)
    try:
        yield
    finally:
        await decoders.close()
        await retention.close()
        await writer.close()  # drains: everything acknowledged or queued is committed
        if journal is not None:  # after a failed commit, kept for the next start to replay
            await journal[0].close(everything_committed=writer.failure is None)
        # After a failed commit, no checkpoint: it would write what DuckDB holds in memory.
        await asyncio.to_thread(database.close, checkpoint=writer.failure is None)
        state.stop()
        if writer.failure is not None:
            raise DatabaseFailed(
                f"stopped because the database failed to commit ({writer.failure}); start it "
                "again: what was acknowledged is in the WAL"
            )


async def _open_journal(
    settings: Settings, database: Database, writer: SpanWriter
) -> tuple[Journal, list[JournalEntry]] | None:
    """The journal of a database file (collector/_journal.py), with the entries to apply
    again; None on DuckLake (several collectors commit there), in memory, or when off."""
    if database.lake or settings.db == ":memory:" or not settings.journal_max_rows:
        return None
    folder = journal_folder(settings.db)
    journal, entries = await writer.on_writer(lambda cursor: open_journal(folder, cursor))
    writer.on_committed = journal.committed
    database.before_read = writer.caught_up
    return journal, entries


async def _replay(entries: list[JournalEntry], decoders: DecodePool, writer: SpanWriter) -> None:
    """Commit again what the journal acknowledged and the database had not committed when
    the collector stopped (a crash), before anything new is taken."""
    if not entries:
        return

    async def decode(entry: JournalEntry) -> Any:
        try:
            return await decoders.decode(SIGNALS[entry.signal], entry.content_type, entry.body)
        except (EventscopeError, KeyError) as exc:  # it decoded when it was acknowledged
            log.error("journal entry %d cannot be decoded again: %s", entry.number, exc)
            return None

    batches = await asyncio.gather(*(decode(entry) for entry in entries))
    committed = [
        writer.enqueue(SIGNALS[entry.signal], batch, entry.number)
        for entry, batch in zip(entries, batches, strict=True)
        if batch is not None and batch.rows
    ]
    await asyncio.gather(*committed, return_exceptions=True)
    rows = sum(batch.rows for batch in batches if batch is not None)
    log.warning(
        "committed %d requests (%d rows) that were acknowledged from the journal before the "
        "collector stopped",
        len(committed),
        rows,
    )


#: How the application must be run (``web.AppRunner(app, **RUNNER_OPTIONS)``): the receiver
#: inflates gzip itself, with a size limit, and per-request access logs cost ingest time.
RUNNER_OPTIONS: dict[str, Any] = {"auto_decompress": False, "access_log": None}
#: Seconds that requests in flight get to finish once the collector is told to stop (a
#: body still arriving then is refused with 503); the writer then commits what was taken.
_DRAIN_SECONDS = 5.0


#: Every application's middlewares: errors answered, then the browser boundary, then auth.
_MIDDLEWARES = (_errors, _boundary, _auth)


def create_app(settings: Settings) -> web.Application:
    """Compose the collector's aiohttp application for ``settings``.

    Run it with ``web.AppRunner(app, **RUNNER_OPTIONS)`` (``serve`` does).
    """
    app = web.Application(
        middlewares=_MIDDLEWARES,
        # Bodies are read by the receiver with its own limit (checked after decompression).
        client_max_size=settings.max_body_bytes,
    )
    app[STATE] = CollectorState(settings=settings)
    app[_HOSTS] = HostCheck(settings.host, settings.allowed_hosts)
    app[LEDGER] = LedgerSeries(settings)
    app.cleanup_ctx.append(_lifecycle)
    app.cleanup_ctx.append(ledger_series)  # after _lifecycle: stopped before the database
    app.cleanup_ctx.append(heap_release)  # freed memory back to the system (glibc keeps it)
    app.router.add_post("/v1/traces", receive_traces)
    app.router.add_post("/v1/logs", receive_logs)
    app.router.add_post("/v1/metrics", receive_metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    _api.setup(app)
    _mount_ui(app)
    return app


def _mount_ui(app: web.Application) -> None:
    """Mount the UI on ``app``, or, with ``--ui-port``, on an application of its own that
    shares the collector's state (database, token, metrics) and is served on that port."""
    state = app[STATE]

    def reader(share: int) -> ui.Read:
        """Runs a read with ``share`` reads side by side (collector/_reads.py)."""

        async def read(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            assert state.database is not None, "the collector is not started"
            timeout = state.settings.query_timeout
            return await run_read(state.database, timeout, fn, *args, share=share, **kwargs)

        return read

    target = app
    if state.settings.ui_port is not None:
        target = app[_UI_APP] = web.Application(middlewares=_MIDDLEWARES)
        target[STATE] = state
        target[_HOSTS] = app[_HOSTS]
    ui.setup(
        target,
        read=reader(1),
        read_beside=reader(ui.READ_LANES),
        token=state.settings.token,
        row_limit=state.settings.query_row_limit,
        max_result_bytes=state.settings.max_result_bytes,
        grace_ns=state.settings.grace,
    )


@contextlib.asynccontextmanager
async def running(settings: Settings, *, out: TextIO = sys.stdout) -> AsyncIterator[str]:
    """Run the collector inside the ``async with`` block; yield its base URL.

    On exit: stop listening, refuse new requests, let those in flight finish (a few
    seconds at most), drain the write queue, close.
    """
    _STOP.set(asyncio.Event())
    # The ports first: one in use is refused before the database is opened (or created).
    sockets = listen(settings.host, settings.port)
    app = create_app(settings)
    state = app[STATE]
    grpc_receiver = GrpcReceiver(state)
    try:
        ui_sockets = [] if settings.ui_port is None else listen(settings.host, settings.ui_port)
        if settings.grpc_port is not None:
            state.grpc_port = grpc_receiver.bind(settings.host, settings.grpc_port)
    except OSError:
        _close(sockets)
        raise
    runner = web.AppRunner(
        app,
        **RUNNER_OPTIONS,
        handle_signals=False,
        shutdown_timeout=1,
        keepalive_timeout=settings.idle_timeout,
    )
    try:
        await runner.setup()  # opens the database: fails here, before we serve, on a bad --db
    except BaseException:
        _close(sockets + ui_sockets)
        await grpc_receiver.stop(grace=None)
        raise
    ui_runners: list[web.AppRunner] = []
    try:
        for sock in sockets:
            await web.SockSite(runner, sock).start()
        host, port = runner.addresses[0][:2]
        base = ui_base = f"http://{host}:{port}"
        grpc_line = ""
        if state.grpc_port is not None:
            await grpc_receiver.start()
            grpc_line = f"  OTLP/gRPC  {host}:{state.grpc_port}\n"
        if _UI_APP in app:
            ui_base = await _start_ui(app[_UI_APP], ui_sockets, base, ui_runners)
        assert state.database is not None
        out.write(
            f"eventscope {__version__}\n"
            f"  OTLP/HTTP  {base}/v1/traces  {base}/v1/logs\n"
            f"{grpc_line}"
            f"  UI         {ui_base}/\n"
            f"  retention  {retention_line(settings)}\n"
            f"  data       {state.database.description}\n"
        )
        out.flush()
        # Long-lived objects from start-up need not be scanned by every collection.
        gc.freeze()
        # The writer thread (DuckDB) takes the GIL back briefly and often; with the default
        # 5 ms switch interval it would wait behind the event loop each time.
        sys.setswitchinterval(0.001)
        yield base
    finally:
        await _stop_intake(app, [runner, *ui_runners], grpc_receiver)
        for ui_runner in ui_runners:
            await ui_runner.cleanup()
        await runner.cleanup()


def listen(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address ``host`` names (as ``loop.create_server`` makes).

    Raises:
        ListenError: one cannot be bound (the port is in use, the address is not ours …).
    """
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
    except OSError as exc:
        _close(sockets)
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sockets


def _close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


async def _stop_intake(
    app: web.Application, runners: list[web.AppRunner], grpc_receiver: GrpcReceiver
) -> None:
    """Stop listening and taking requests; give those in flight a few seconds to finish.

    aiohttp's own shutdown closes every connection first, and a connection being closed
    drops what its client still sends: a request whose body was on its way would wait for
    it until the shutdown timeout (30 s), and then fail. So the listeners are stopped here,
    new requests on open connections are refused (503, connection closed), and the requests
    in flight finish before aiohttp closes the connections.
    """
    for runner in runners:
        for site in list(runner.sites):
            await site.stop()
    # gRPC: no new calls; those in flight finish (before the writer closes) or are cancelled.
    stopped = asyncio.ensure_future(grpc_receiver.stop(grace=_DRAIN_SECONDS))
    state = app[STATE]
    if state._admission is not None:  # started
        state.admission.stopping = True
        try:
            async with asyncio.timeout(_DRAIN_SECONDS):
                await state.admission.wait_idle()
        except TimeoutError:
            log.info(
                "stopping: %d requests were still receiving their body; their connections "
                "are closed unanswered (clients retry)",
                state.admission.requests,
            )
    await stopped


async def _start_ui(
    ui_app: web.Application,
    sockets: list[socket.socket],
    otlp_base: str,
    runners: list[web.AppRunner],
) -> str:
    """Serve the UI's own application on ``--ui-port``; return its base URL."""
    ui_runner = web.AppRunner(ui_app, access_log=None, handle_signals=False, shutdown_timeout=5)
    await ui_runner.setup()
    runners.append(ui_runner)
    for sock in sockets:
        await web.SockSite(ui_runner, sock).start()
    ui_app[ui.UI].otlp_endpoint = otlp_base
    host, port = ui_runner.addresses[0][:2]
    return f"http://{host}:{port}"


# Set while `running` runs in this task: what `until_signalled` also waits for (the writer
# sets it when the database fails and the collector must stop on its own).
_STOP: contextvars.ContextVar[asyncio.Event] = contextvars.ContextVar("eventscope_stop")


async def until_signalled(signalled: asyncio.Event | None = None) -> None:
    """Return when the process gets SIGTERM or SIGINT, or the database has failed.
    ``signalled``: set by handlers installed while starting (then return at once)."""
    stop = _STOP.get(None) or asyncio.Event()
    if signalled is not None and signalled.is_set():
        stop.set()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("stopping: no new requests; committing what was accepted")


async def serve(settings: Settings, *, out: TextIO = sys.stdout) -> None:
    """Run the collector until SIGTERM or SIGINT, then drain and close."""
    # From the start: a signal while starting (replaying the journal, say) is not fatal;
    # the collector finishes starting, then stops as it would later.
    signalled = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, signalled.set)
    async with running(settings, out=out):
        await until_signalled(signalled)
