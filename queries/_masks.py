"""Consumer groups as the bits of a BIGINT mask: the ledger queries OR them per event, so
that "every expected group handled it" is one bit test."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

__all__ = ["MASK_BITS", "bits_of", "group_chunks"]

#: Groups per mask (one pass of a ledger query per chunk of this many).
MASK_BITS = 62

T = TypeVar("T")


def group_chunks(groups: Sequence[T]) -> list[list[T]]:
    """Groups in chunks of at most 62, the bits of one BIGINT mask (one pass per chunk)."""
    return [list(groups[i : i + MASK_BITS]) for i in range(0, len(groups), MASK_BITS)] or [[]]


def bits_of(mask: int | None, groups: Sequence[T]) -> set[T]:
    """The ``groups`` whose bit (their position) ``mask`` has."""
    mask = mask or 0
    return {group for bit, group in enumerate(groups) if mask >> bit & 1}
