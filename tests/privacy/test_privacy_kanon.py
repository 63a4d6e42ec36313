"""Small-cell suppression."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from privacy.errors import SuppressionError
from privacy.kanon import suppress_below_k, suppress_with_total


def test_suppress_below_k() -> None:
    assert suppress_below_k({"a": 12, "b": 4, "c": 0, "d": 5}, 5) == {"a": 12, "b": None, "c": None, "d": 5}


@pytest.mark.parametrize(
    ("counts", "k"),
    [({"a": 1}, 1), ({"a": 1}, True), ({"a": -1}, 5), ({"a": True}, 5), ({"a": 1.5}, 5), ([1, 2], 5)],
)
def test_bad_input(counts, k) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SuppressionError):
        suppress_below_k(counts, k)


def test_one_suppressed_cell_forces_a_complementary_one() -> None:
    out = suppress_with_total({"a": 40, "b": 3, "c": 25, "d": 30}, 5)
    assert out.total == 98
    assert out.cells == {"a": 40, "b": None, "c": None, "d": 30}


def test_complementary_suppression_continues_until_the_hidden_sum_reaches_k() -> None:
    out = suppress_with_total({"a": 1, "b": 0, "c": 100, "d": 200}, 10)
    assert out.cells == {"a": None, "b": None, "c": None, "d": 200}
    assert out.total == 301


def test_total_is_withheld_when_no_safe_pattern_exists() -> None:
    assert suppress_with_total({"a": 2, "b": 50}, 5).total == 52  # both hidden, sum 52 >= 5
    out = suppress_with_total({"only": 3}, 5)
    assert out.cells == {"only": None} and out.total is None
    out = suppress_with_total({"a": 1, "b": 1}, 5)
    assert out.total is None


def test_nothing_to_suppress() -> None:
    out = suppress_with_total({"a": 10, "b": 20}, 5)
    assert out.cells == {"a": 10, "b": 20} and out.total == 30


@given(st.dictionaries(st.text(max_size=3), st.integers(0, 60), min_size=1, max_size=8), st.integers(2, 20))
def test_published_table_never_reveals_a_small_cell(counts: dict[str, int], k: int) -> None:
    out = suppress_with_total(counts, k)
    assert set(out.cells) == set(counts)
    for cell, value in out.cells.items():
        assert value is None or (value == counts[cell] and value >= k)
    hidden = [c for c, v in out.cells.items() if v is None]
    if out.total is not None:
        assert out.total == sum(counts.values())
        if hidden:
            # Two or more cells hidden, and what the total lets you infer is a group of at least k.
            assert len(hidden) >= 2
            assert out.total - sum(v for v in out.cells.values() if v is not None) >= k
