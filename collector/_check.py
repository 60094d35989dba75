"""``eventscope check``: lost events and events processed twice, per consumer group, held
against limits — for CI pipelines and cron jobs.

It asks what ``eventscope query lost`` and ``query duplicates`` answer (``--db`` or
``--url``, the same endpoints), counts per consumer group, and prints one line per group
over a limit. Exit codes: 0 no group is over a limit; 1 some group is; 2 bad arguments;
3 the check could not be made (the collector could not be reached or failed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._query_client import SourceUnavailable, query_source

__all__ = ["GroupCheck", "add_check_command", "check_groups"]

EXIT_CLEAN, EXIT_FAILING, EXIT_UNCHECKED = 0, 1, 3


@dataclass(slots=True)
class GroupCheck:
    """What one consumer group did in the window, and whether that is over a limit."""

    consumer_group: str
    lost: int = 0
    lost_by_reason: Counter[str] = field(default_factory=Counter)
    processed_twice: int = 0
    lost_examples: list[str] = field(default_factory=list)
    twice_examples: list[str] = field(default_factory=list)
    failing: bool = False

    def summary(self, max_lost: int, max_twice: int) -> str:
        """One line: the group, its counts with an example each, the limits it broke."""
        parts = []
        if self.lost:
            reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.lost_by_reason.items()))
            parts.append(f"{self.lost} lost ({reasons}; e.g. {self.lost_examples[0]})")
        if self.processed_twice:
            parts.append(f"{self.processed_twice} processed twice (e.g. {self.twice_examples[0]})")
        limits = f"limits: lost {max_lost}, processed twice {max_twice}"
        return f"FAIL {self.consumer_group}: {', '.join(parts) or 'clean'} [{limits}]"

    def to_json(self) -> dict[str, Any]:
        """The group as ``--format json`` prints it."""
        return {
            "consumer_group": self.consumer_group,
            "lost": self.lost,
            "lost_by_reason": dict(sorted(self.lost_by_reason.items())),
            "processed_twice": self.processed_twice,
            "failing": self.failing,
            "lost_examples": self.lost_examples,
            "processed_twice_examples": self.twice_examples,
        }


def check_groups(
    lost: list[Mapping[str, Any]],
    duplicates: list[Mapping[str, Any]],
    *,
    max_lost: int,
    max_processed_twice: int,
    groups: list[str] | None = None,
) -> list[GroupCheck]:
    """Per consumer group (only ``groups`` when given), from the rows of the lost and
    duplicates endpoints; sorted by name, each marked ``failing`` when over a limit."""
    checks: dict[str, GroupCheck] = {g: GroupCheck(g) for g in groups or ()}

    def get(name: str) -> GroupCheck | None:
        if groups is not None and name not in checks:
            return None
        if name not in checks:
            checks[name] = GroupCheck(name)
        return checks[name]

    for row in lost:
        check = get(row["consumer_group"])
        if check is not None:
            check.lost += 1
            check.lost_by_reason[row["reason"]] += 1
            if len(check.lost_examples) < 5:
                check.lost_examples.append(row["detail"])
    for row in duplicates:
        if row["kind"] != "processed_twice" or row["consumer_group"] is None:
            continue
        check = get(row["consumer_group"])
        if check is not None:
            check.processed_twice += 1
            if len(check.twice_examples) < 5:
                check.twice_examples.append(row["detail"].split("; ")[0].split(" (")[0])
    for check in checks.values():
        check.failing = check.lost > max_lost or check.processed_twice > max_processed_twice
    return [checks[name] for name in sorted(checks)]


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def add_check_command(commands: Any) -> None:
    """Add ``eventscope check`` to the subcommands."""
    check = commands.add_parser(
        "check",
        help="fail (exit 1) when a consumer group lost events or processed some twice",
        description="Count lost events and events processed twice per consumer group over "
        "a recent window, and fail when a group is over a limit: one line per such group, "
        "exit code 1. Exit 0: every group within the limits; 2: bad arguments; 3: the "
        "check could not be made.",
    )
    check.add_argument("--since", default="15m", help="from this time: 15m, 2h, ISO 8601 (15m)")
    check.add_argument("--until", help="up to this time (default now)")
    check.add_argument("--max-lost", type=_count, default=0, help="lost events a group may have")
    check.add_argument(
        "--max-processed-twice",
        type=_count,
        default=0,
        help="events a group may have processed twice",
    )
    check.add_argument(
        "--group", action="append", help="check only this consumer group (repeatable)"
    )
    check.add_argument("--grace", help="events younger than this are not lost yet (collector's)")
    check.add_argument("--subscriptions", help="SUBJECT:GROUP[,GROUP];… that must handle")
    where = check.add_mutually_exclusive_group()
    where.add_argument("--db", help="read this DuckDB file (or ducklake:postgres:<dsn>) directly")
    where.add_argument("--url", help="ask a running collector, e.g. http://127.0.0.1:4318")
    check.add_argument("--token", help="bearer token for --url (or EVENTSCOPE_TOKEN)")
    check.add_argument("--ducklake-schema", help="DuckLake: PostgreSQL schema of the catalog")
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.set_defaults(run=_run)


def _run(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    window = {k: v for k, v in (("since", args.since), ("until", args.until)) if v}
    lost_params = dict(window)
    for name in ("grace", "subscriptions"):
        if getattr(args, name):
            lost_params[name] = getattr(args, name)
    try:
        with query_source(args, environ) as source:
            lost = source.call("events/lost", lost_params)["rows"]
            duplicates = source.call("events/duplicates", window)["rows"]
    except SourceUnavailable as exc:
        sys.stderr.write(f"eventscope: error: cannot check: {exc}\n")
        raise SystemExit(EXIT_UNCHECKED) from None
    checks = check_groups(
        lost,
        duplicates,
        max_lost=args.max_lost,
        max_processed_twice=args.max_processed_twice,
        groups=args.group,
    )
    failing = [c for c in checks if c.failing]
    if args.format == "json":
        print(
            json.dumps(
                {
                    "ok": not failing,
                    "since": args.since,
                    "until": args.until,
                    "limits": {"lost": args.max_lost, "processed_twice": args.max_processed_twice},
                    "failing": [c.consumer_group for c in failing],
                    "groups": [c.to_json() for c in checks],
                },
                ensure_ascii=False,
            )
        )
    elif failing:
        for check in failing:
            print(check.summary(args.max_lost, args.max_processed_twice))
    else:
        lost_total = sum(c.lost for c in checks)
        twice_total = sum(c.processed_twice for c in checks)
        print(
            f"ok: no consumer group over the limits (lost {args.max_lost}, processed twice "
            f"{args.max_processed_twice}) since {args.since}: {lost_total} lost, "
            f"{twice_total} processed twice in all"
        )
    raise SystemExit(EXIT_FAILING if failing else EXIT_CLEAN)
