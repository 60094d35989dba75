"""One typed parameter layer: the API, the pages and the CLI parse the same names with the
same limits and messages; records come back typed from their JSON; the tree has one
depth-first order that the waterfall and the CLI both walk."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import duckdb
import pytest
from aiohttp.test_utils import TestClient
from eventscope.collector._cli import main
from eventscope.queries import (
    MAX_WHOLE,
    BadParameter,
    FanoutTree,
    HandlerLatency,
    LatencyParams,
    LostEvent,
    RequestPage,
    RequestsParams,
    Topology,
    TreeNode,
    TreeParams,
    VersionMix,
    Window,
    fanout_tree,
    handler_latency,
    lost_events,
    parse_params,
    requests,
    topology,
    version_mix,
)
from known_workload import Workload
from test_api_and_cli import _serve

NOW = 1_800_000_000_000_000_000

# (query string of /requests, the message API, page and CLI all give)
ONE_MESSAGE = [
    ("limit=20000", "limit: must be between 1 and 10000, got 20000"),
    ("limit=ten", "limit: 'ten' is not a whole number"),
    ("min_fanout=-1", "min_fanout: must be at least 0, got -1"),
    ("since=1h&until=2h", "since: must be before until"),
    ("sort=colour", "sort: must be one of"),
    ("attribute=route", "attribute: use key=value, such as http.route=/orders; got 'route'"),
]
_FLAGS = {"limit": "--limit", "min_fanout": "--min-fanout", "since": "--since", "until": "--until"}


def _argv(query: str) -> list[str]:
    argv = []
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        argv += [_FLAGS.get(name, f"--{name}"), value]
    return argv


async def test_the_api_the_pages_and_the_cli_refuse_a_value_with_one_message(
    tmp_path: Path, workload: Workload, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "one.duckdb"

    async def ask(client: TestClient) -> list[tuple[int, str, int, str]]:
        answers = []
        for query, _ in ONE_MESSAGE:
            api = await client.get(f"/api/requests?{query}")
            page = await client.get(f"/requests?{query}")
            answers.append(
                (api.status, (await api.json())["error"], page.status, await page.text())
            )
        return answers

    answers = await _serve(path, workload, ask)
    for (query, message), (api_status, error, page_status, html) in zip(
        ONE_MESSAGE, answers, strict=True
    ):
        assert api_status == page_status == 400, query
        assert error.startswith(message), (query, error)
        assert message.replace("'", "&#39;") in html, (query, html[-1500:])
        with pytest.raises(SystemExit) as exited:
            await asyncio.to_thread(main, ["query", "requests", *_argv(query), "--db", str(path)])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and err.count("\n") == 1 and message in err, (query, err)


async def test_the_requests_page_pages_with_the_apis_limit(
    tmp_path: Path, workload: Workload
) -> None:
    # (the page used to cut `limit` to 500 without a word, and take 20000: see above)
    async def ask(client: TestClient) -> tuple[dict[str, object], str]:
        api = await (await client.get("/api/requests?since=2d&limit=2&offset=2")).json()
        page = await (await client.get("/requests?since=2d&limit=2&page=2")).text()
        return api, page

    api, page = await _serve(tmp_path / "rows.duckdb", workload, ask)
    rows = api["rows"]
    assert isinstance(rows, list) and len(rows) == 2 and isinstance(api["total"], int)
    assert page.count('<tr class="') == 2
    assert all(f"/requests/{row['trace_id']}" in page for row in rows)
    assert f"page 2 of {-(-api['total'] // 2)}" in page


def test_defaults_are_the_reads_own_and_a_caller_may_replace_them() -> None:
    parsed = parse_params(RequestsParams, {}, now=NOW)
    assert (parsed.limit, parsed.offset, parsed.sort, parsed.since_ns) == (50, 0, "-start", None)
    paged = parse_params(RequestsParams, {"since": "15m"}, now=NOW, limit=25, grace_ns=7)
    assert (paged.limit, paged.grace_ns, paged.since_ns) == (25, 7, NOW - 15 * 60 * 10**9)
    window = parse_params(Window, {"colour": "red"}, strict=False, window_ns=3600, now=NOW)
    assert (window.since_ns, window.until_ns) == (NOW - 3600, NOW)


def test_a_default_window_of_whole_minutes_starts_on_a_whole_minute() -> None:
    hour, minute = 3600 * 10**9, 60 * 10**9
    now = NOW + 17 * 10**9 + 5  # 17 s and 5 ns into a minute
    window = parse_params(Window, {}, strict=False, window_ns=hour, now=now)
    assert (window.since_ns, window.until_ns) == (now - hour - 17 * 10**9 - 5, now)
    assert window.since_ns % minute == 0
    # an explicit since is the user's: kept to the nanosecond
    given = parse_params(Window, {"since": str(now - hour)}, strict=False, window_ns=hour, now=now)
    assert given.since_ns == now - hour
    # so is a window shorter than a minute
    short = parse_params(Window, {}, strict=False, window_ns=30 * 10**9, now=now)
    assert short.since_ns == now - 30 * 10**9


def test_a_parameter_a_read_does_not_take_is_refused_where_strict() -> None:
    with pytest.raises(BadParameter, match=r"^colour: is not a parameter here; use root, grace"):
        parse_params(TreeParams, {"root": "x", "colour": "red"})
    with pytest.raises(BadParameter, match=r"^root: is missing: a trace id"):
        parse_params(TreeParams, {})


def test_whole_numbers_have_one_guard_against_overflow() -> None:
    with pytest.raises(BadParameter, match=r"^offset: must be at most 1,000,000,000"):
        parse_params(RequestsParams, {"offset": str(MAX_WHOLE + 1)})


@pytest.mark.parametrize(
    ("kind", "read"),
    [(RequestsParams, requests), (TreeParams, fanout_tree), (LatencyParams, handler_latency)],
)
def test_each_kind_carries_every_option_of_its_read(kind: type, read: object) -> None:
    options = {
        name
        for name, p in inspect.signature(read).parameters.items()  # type: ignore[arg-type]
        if p.kind is p.KEYWORD_ONLY or name == "root"
    }
    fields = set(kind.__dataclass_fields__)
    # the one parameter the API leaves to Python callers: which events (by id) to look at
    assert options - fields <= {"subscriptions", "event_ids"} and fields <= options


def test_records_come_back_typed_from_their_json(db: duckdb.DuckDBPyConnection) -> None:
    tree = fanout_tree(db, "c3")
    assert FanoutTree.from_json(tree.to_json()) == tree
    page = requests(db, limit=3)
    assert RequestPage.from_json(page.to_json()) == page
    latency = handler_latency(db, group_by="consumer_group", bucket_ns=60 * 10**9)
    assert HandlerLatency.from_json(latency.to_json()) == latency
    found = topology(db)
    assert Topology.from_json(found.to_json()) == found
    for record in (*lost_events(db), *version_mix(db)):
        assert type(record).from_json(record.to_json()) == record
    assert {LostEvent, VersionMix} <= {type(r) for r in (*lost_events(db), *version_mix(db))}


def test_one_depth_first_order_places_every_node(db: duckdb.DuckDBPyConnection) -> None:
    tree = fanout_tree(db, "c3")
    placed = tree.depth_first()
    assert len(placed) == tree.size and placed[0].node is tree.root and placed[0].parent == -1

    def walk(node: TreeNode) -> list[TreeNode]:
        return [node, *(n for child in node.children for n in walk(child))]

    assert [p.node for p in placed] == walk(tree.root)
    for p in placed:
        subtree = walk(p.node)
        assert [q.node for q in placed[p.index : p.last + 1]] == subtree
        assert all(placed[c.index].parent == p.index for c in placed if c.node in p.node.children)
        assert p.parent == -1 or placed[p.parent].depth == p.depth - 1
