"""Ingest that goes on while a test attacks the collector, and what it was answered.

``with IngestProbe(collector) as probe: <attack>`` posts a small batch of spans in a loop
from a thread; afterwards ``probe.assert_unharmed()`` checks that every request was
answered 200 in time, and ``probe.acknowledged`` holds the span ids to look for.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from types import TracebackType

from collector_process import Collector
from otlp_requests import PROTOBUF, span, traces


class IngestProbe:
    """Posts ``spans`` spans at a time, ``interval`` seconds apart, until the block ends.

    Args:
        collector: the running collector to post to.
        spans: spans per request.
        interval: seconds between the end of one request and the start of the next.
        timeout: a request not answered within this many seconds counts as stalled.
    """

    def __init__(
        self, collector: Collector, *, spans: int = 20, interval: float = 0.05, timeout: float = 30
    ) -> None:
        self._url = urllib.parse.urlsplit(collector.url)
        self._spans = spans
        self._interval = interval
        self._timeout = timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-probe", daemon=True)
        self._first = threading.Event()
        #: (status or the error's text, seconds) of every request, in order.
        self.answers: list[tuple[int | str, float]] = []
        #: Span ids (hex) of every request answered 200.
        self.acknowledged: set[str] = set()

    def __enter__(self) -> IngestProbe:
        self._thread.start()
        assert self._first.wait(self._timeout), "the probe's first request was not answered"
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(self._timeout + 5)

    def _run(self) -> None:
        host, port = self._url.hostname or "127.0.0.1", self._url.port or 80
        tag = 0
        while not self._stop.is_set():
            batch = [span(f"probe-{tag}-{i}") for i in range(self._spans)]
            tag += 1
            started = time.monotonic()
            connection = http.client.HTTPConnection(host, port, timeout=self._timeout)
            try:
                connection.request("POST", "/v1/traces", traces(*batch), PROTOBUF)
                response = connection.getresponse()
                response.read()
                status: int | str = response.status
            except OSError as exc:
                status = f"{type(exc).__name__}: {exc}"
            finally:
                connection.close()
            self.answers.append((status, time.monotonic() - started))
            if status == 200:
                self.acknowledged.update(s.span_id.hex() for s in batch)
            self._first.set()
            self._stop.wait(self._interval)

    def assert_unharmed(self, *, slowest: float = 5.0, at_least: int = 3) -> None:
        """Every request was answered 200, none took longer than ``slowest`` seconds, and
        at least ``at_least`` were sent."""
        assert len(self.answers) >= at_least, f"only {len(self.answers)} requests were sent"
        refused = [answer for answer in self.answers if answer[0] != 200]
        assert not refused, f"ingest was not answered 200 during the attack: {refused[:5]}"
        worst = max(seconds for _, seconds in self.answers)
        assert worst < slowest, f"ingest stalled during the attack: {worst:.1f} s for one request"
