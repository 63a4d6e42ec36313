"""Small-cell suppression for published counts (audience overlap, reports).

A count below ``k`` can single out a handful of members, so it is replaced by
``None`` (primary suppression).  If a total is published too, a single
suppressed cell could be recovered as ``total - sum(visible cells)``, so more
cells are suppressed (complementary suppression) until the suppressed cells
are at least two *and* together hold at least ``k`` - otherwise the
difference would still pin down a group smaller than ``k``.  If that cannot
be reached, the total is withheld as well.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from privacy.errors import SuppressionError

__all__ = ["SuppressedCounts", "suppress_below_k", "suppress_with_total"]

K = TypeVar("K", bound=Hashable)


def _check(counts: Mapping[K, int], k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise SuppressionError("k must be an integer of at least 2")
    if not isinstance(counts, Mapping):
        raise SuppressionError("counts must be a mapping of cell to count")
    for cell, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise SuppressionError(f"count for {cell!r} must be a non-negative integer")


def suppress_below_k(counts: Mapping[K, int], k: int) -> dict[K, int | None]:
    """Copy of ``counts`` with every count below ``k`` (zero included) replaced by ``None``."""
    _check(counts, k)
    return {cell: (count if count >= k else None) for cell, count in counts.items()}


@dataclass(frozen=True, slots=True)
class SuppressedCounts(Generic[K]):
    """Cells and total safe to publish together; ``None`` means suppressed."""

    cells: dict[K, int | None]
    total: int | None


def suppress_with_total(counts: Mapping[K, int], k: int) -> SuppressedCounts[K]:
    """Suppress below ``k``, then add complementary suppressions so the published total reveals no cell.

    Complementary cells are taken smallest first (ties in input order), which
    loses the least information.
    """
    cells = suppress_below_k(counts, k)
    total = sum(counts.values())
    if total < k:
        # A total below k is itself a small cell.
        return SuppressedCounts({cell: None for cell in cells}, None)
    suppressed = [cell for cell, value in cells.items() if value is None]
    if not suppressed:
        return SuppressedCounts(cells, total)
    hidden = sum(counts[cell] for cell in suppressed)
    visible = sorted((cell for cell, value in cells.items() if value is not None), key=lambda c: counts[c])
    for cell in visible:
        if len(suppressed) >= 2 and hidden >= k:
            break
        cells[cell] = None
        suppressed.append(cell)
        hidden += counts[cell]
    if len(suppressed) >= 2 and hidden >= k:
        return SuppressedCounts(cells, total)
    return SuppressedCounts(cells, None)
