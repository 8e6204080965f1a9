"""Live updates: the NumPy check of an update batch's rows against the book's Polars rules,
and the in-place layout (free rows, opens and closes moving rows, slack running out)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import gpurisk
from gpurisk.book import Book
from gpurisk.book_updates import LiveBook

from books import tiny_frames

_edge_floats = st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-13, 1e-12, 5e-12, 1e12, 1.5e12, 1e15, 2e15, 1e18, 2e18,
                                0.5, 1e6, 1.5e6, float("nan"), float("inf"), -float("inf"), 3000.0, -2.5])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_numpy_check_passes_exactly_the_rows_the_book_rules_pass(data):
    live = LiveBook(Book.from_frames(**tiny_frames()))
    # wallets by pool: (account_id, asset code)
    wallets = {(a, 0): data.draw(_edge_floats)
               for a in data.draw(st.lists(st.sampled_from([1, 2, 3, 9]), max_size=2))}
    positions = {}
    for _ in range(data.draw(st.integers(0, 3))):
        key = (data.draw(st.sampled_from([1, 2, 3, 8])), data.draw(st.integers(0, 1)), data.draw(st.integers(0, 1)))
        lev = data.draw(st.one_of(st.none(), _edge_floats))
        positions[key] = None if data.draw(st.integers(0, 5)) == 0 else {
            "size": data.draw(_edge_floats), "entry_price": data.draw(_edge_floats),
            "isolated_margin": data.draw(_edge_floats), "leverage": lev}
    opened = {(a, 0) for a in data.draw(st.lists(st.sampled_from([8]), max_size=1))}
    fast = live._rows_pass(positions, wallets, opened)
    problems, _ = live._problems(positions, wallets, opened, fast=False)
    assert fast == (not problems), problems
