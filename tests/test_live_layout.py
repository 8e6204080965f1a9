"""Live updates: the NumPy check of an update batch's rows against the book's Polars rules,
and the in-place layout (free rows, opens and closes moving rows, slack running out)."""

import collections

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpurisk
from gpurisk.book import Book
from gpurisk.book_updates import LiveBook

from books import tiny_frames

_edge_floats = st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-13, 1e-12, 5e-12, 1e12, 1.5e12, 1e15, 2e15, 1e18, 2e18,
                                0.5, 1e6, 1.5e6, float("nan"), float("inf"), -float("inf"), 3000.0, -2.5])


def _inverse_book():
    """The tiny book with ETHUSDT made an inverse market (its notional limit is in the coin)."""
    import dataclasses

    book = Book.from_frames(**tiny_frames())
    return dataclasses.replace(book, inverse=np.array([0, 1], dtype=np.int8))


_BOOKS = {"linear": lambda: Book.from_frames(**tiny_frames()), "inverse": _inverse_book}
_edge_floats_inverse = st.sampled_from([1e-6, 1e-9, 1e9, 1e13, 2e13, 5e17, 1e18])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_numpy_check_passes_exactly_the_rows_the_book_rules_pass(data):
    live = LiveBook(_BOOKS[data.draw(st.sampled_from(sorted(_BOOKS)))]())
    floats = st.one_of(_edge_floats, _edge_floats_inverse)
    # wallets by pool: (account_id, asset code)
    wallets = {(a, 0): data.draw(floats)
               for a in data.draw(st.lists(st.sampled_from([1, 2, 3, 9]), max_size=2))}
    positions = {}
    for _ in range(data.draw(st.integers(0, 3))):
        key = (data.draw(st.sampled_from([1, 2, 3, 8])), data.draw(st.integers(0, 1)), data.draw(st.integers(0, 1)))
        lev = data.draw(st.one_of(st.none(), floats))
        positions[key] = None if data.draw(st.integers(0, 5)) == 0 else {
            "size": data.draw(floats), "entry_price": data.draw(floats),
            "isolated_margin": data.draw(floats), "leverage": lev}
    opened = {(a, 0) for a in data.draw(st.lists(st.sampled_from([8]), max_size=1))}
    fast = live._rows_pass(positions, wallets, opened)
    problems, bad = live._problems(positions, wallets, opened, fast=False)
    assert fast == (not problems), problems
    # Without Polars (a GPU machine with NumPy and CuPy only) the same rules find the same rows
    # at fault, and name the same columns.
    from gpurisk.update_checks import _problems_numpy

    plain, plain_bad = _problems_numpy(live, positions, wallets, opened)
    assert plain_bad == bad, (plain, problems)
    assert {(q.table, q.column) for q in plain} <= {(q.table, q.column) for q in problems} | \
        {("positions", "entry_price")}, (plain, problems)


# ------------------------------------------------------------------ the in-place layout

from gpurisk.live_layout import Slack, live_rows  # noqa: E402

_POSITION_ARRAYS = ("pos_account", "pos_symbol", "size", "entry", "isolated", "isolated_margin", "leverage")


def _random_updates(rng, book, k, next_account):
    out = []
    for _ in range(k):
        r = rng.random()
        if r < 0.05:
            next_account[0] += 1
            out.append({"type": "account", "account_id": next_account[0], "wallet_balance": 5_000.0})
            continue
        acc = int(rng.choice(book.account_id))
        sym = book.symbols[int(rng.integers(book.n_symbols))]
        if r < 0.35:  # a close (refused where nothing is held)
            out.append({"type": "position", "account_id": acc, "symbol": sym, "size": 0})
        elif r < 0.45:  # isolated, sometimes without margin: refused
            out.append({"type": "position", "account_id": acc, "symbol": sym, "margin_mode": "isolated",
                        "size": float(rng.choice([-1.0, 2.0])), "entry_price": 100.0,
                        "isolated_margin": float(rng.choice([0.0, 50.0]))})
        else:  # a fill: opens, adds, reduces, flips or closes
            out.append({"type": "fill", "account_id": acc, "symbol": sym, "qty": float(rng.choice([-1.0, 0.5, 1.0])),
                        "price": float(book.mark_price[book.symbols.index(sym)] * rng.uniform(0.9, 1.1))})
    return out


def _assert_layout(book):
    """Each account: its live rows in storage order, then free rows; pos_account agrees."""
    counts = np.diff(book.pos_start)
    assert np.array_equal(book.pos_account, np.repeat(np.arange(book.n_accounts), counts))
    for a in range(book.n_accounts):
        rows = np.arange(book.pos_start[a], book.pos_start[a + 1])
        live = book.size[rows] != 0
        assert not np.any(live[1:] & ~live[:-1]), f"account {a}: a free row before a live one"
        keys = list(zip(book.pos_symbol[rows][live], book.isolated[rows][live]))
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        assert np.all(book.entry[rows][~live] == 1.0) and np.all(book.isolated[rows][~live] == 0)


@pytest.mark.parametrize("slack", [Slack(), Slack(every=40, free=1, search_rows=6)])  # roomy; runs out often
def test_opens_and_closes_in_place_give_the_spliced_book(slack):
    book = gpurisk.synthetic_book(400, seed=11)
    spliced, padded = LiveBook(book), LiveBook(book, slack)
    rng = np.random.default_rng(5)
    next_account = [10**9]
    # per resident row, the key of its position: remapped with the rows, it must still name it
    tag = _row_keys(padded.book)
    kinds = collections.Counter()
    for _ in range(60):
        updates = _random_updates(rng, spliced.book, int(rng.integers(1, 8)), next_account)
        want, got = spliced.apply(updates), padded.apply(updates)
        assert [why for _, why in got.rejected] == [why for _, why in want.rejected]
        kinds["moved"] += bool(got.moves)
        kinds["rebuilt"] += got.rebuilt
        compact = padded.compact()
        for k in _POSITION_ARRAYS + ("pos_start", "account_id", "wallet"):
            assert np.array_equal(getattr(compact, k), getattr(spliced.book, k)), k
        _assert_layout(padded.book)
        tag = got.remap_positions(tag, -1)
        live = live_rows(padded.book)
        keys = _row_keys(padded.book)
        known = tag[live] >= 0  # positions opened by this batch carry the fill
        assert np.array_equal(tag[live][known], keys[live][known])
    assert kinds["moved"] > 10 and kinds["rebuilt"] > 0


def _row_keys(book):
    """A number per row naming its position: (account id, symbol, mode); -1 for free rows."""
    key = (book.account_id[book.pos_account] * 64 + book.pos_symbol * 2 + book.isolated).astype(np.int64)
    return np.where(book.size != 0, key, -1)


def test_a_refused_batch_leaves_the_padded_layout_unchanged():
    live = LiveBook(Book.from_frames(**tiny_frames()), Slack(every=2, free=2))
    before = {k: np.copy(getattr(live.book, k)) for k in _POSITION_ARRAYS + ("pos_start", "wallet")}
    applied = live.apply([
        {"type": "position", "account_id": 1, "symbol": "ETHUSDT", "margin_mode": "isolated", "size": 1.0,
         "entry_price": 3000.0, "isolated_margin": 0.0},  # an open, refused: no margin
        {"type": "position", "account_id": 2, "symbol": "ETHUSDT", "size": 0},  # a close of nothing held
        {"type": "fill", "account_id": 1, "symbol": "ETHUSDT", "qty": 1e30, "price": 3000.0},  # notional too large
    ])
    assert applied.applied == 0 and len(applied.rejected) == 3 and not applied.moves and not applied.rebuilt
    for k, v in before.items():
        assert np.array_equal(getattr(live.book, k), v), k


def test_slack_running_out_lays_the_book_out_anew():
    live = LiveBook(Book.from_frames(**tiny_frames()), Slack(every=100, free=1, search_rows=2))
    n_free = int(np.sum(live.book.size == 0))
    assert n_free == 1  # only the last account has a free row
    first = live.apply([{"type": "position", "account_id": 3, "symbol": "ETHUSDT", "size": 1.0, "entry_price": 3000.0}])
    assert first.moves and not first.rebuilt  # the free row was near
    second = live.apply([{"type": "position", "account_id": 2, "symbol": "ETHUSDT", "size": -1.0,
                          "entry_price": 3000.0}])
    assert second.rebuilt  # none left: a new layout, with a free row again at the end
    assert int(np.sum(live.book.size == 0)) == 1
    _assert_layout(live.book)


def test_a_monitor_snapshot_keeps_the_accounts_margin_models():
    import dataclasses

    from gpurisk.engine import Engine
    from gpurisk.monitor import Monitor
    from gpurisk.monitor_run import snapshot_state
    from gpurisk.schema import MARGIN_MODELS

    book = Book.from_frames(**tiny_frames())
    models = np.array([-1, MARGIN_MODELS.index("tiered"), -1], dtype=np.int8)
    mon = Monitor(Engine(dataclasses.replace(book, margin_model=models), backend="cpu"))
    snap, _ = snapshot_state(mon)
    assert snap.margin_model.tolist() == models.tolist()
    assert snap.n_positions == book.n_positions  # free rows left out


def test_the_numpy_check_reads_an_inverse_notional_in_the_coin():
    live = LiveBook(_inverse_book())
    row = {"size": 1e13, "entry_price": 1e-6, "isolated_margin": 0.0, "leverage": None}  # 1e19 coins; linear: 1e7
    for symbol, ok in ((1, False), (0, True)):  # ETHUSDT inverse here, BTCUSDT linear
        positions = {(1, symbol, 0): dict(row)}
        assert live._rows_pass(positions, {}, set()) is ok
        assert (not live._problems(positions, {}, set(), fast=False)[0]) is ok
    big = {(1, 1, 0): {"size": 1e13, "entry_price": 49_000.0, "isolated_margin": 0.0, "leverage": None}}
    assert live._rows_pass(big, {}, set())  # 2.04e8 coins (the linear formula would read 4.9e17)


@pytest.mark.parametrize("slack,kept", [(None, None), (Slack(every=40, free=1, search_rows=6), None), (Slack(), 5)])
def test_account_rows_remembered_between_batches_are_those_a_fresh_search_finds(monkeypatch, slack, kept):
    """LiveBook remembers the rows of the accounts a batch names (found in one search) while
    the accounts arrays stay; a LiveBook built afresh for every batch must refuse and write the
    same. ``kept``: few remembered (forgotten often)."""
    from gpurisk import book_updates
    from gpurisk.book_updates import writable_copy

    if kept is not None:
        monkeypatch.setattr(book_updates, "LOOKUPS_KEPT", kept)
    live = LiveBook(gpurisk.synthetic_book(300, seed=13), slack)
    rng = np.random.default_rng(17)
    next_account = [10**9]
    rebuilt = 0
    for _ in range(50):
        book = live.compact()
        updates = _random_updates(rng, book, int(rng.integers(1, 10)), next_account)
        updates += [{"type": "balance", "account_id": int(rng.choice(book.account_id)), "delta": 1.5},
                    {"type": "balance", "account_id": next_account[0] + 7, "delta": 1.0}]  # no such account
        fresh = LiveBook(writable_copy(book))
        want, got = fresh.apply([dict(u) for u in updates]), live.apply(updates)
        assert [why for _, why in got.rejected] == [why for _, why in want.rejected]
        assert any("is not an account of the book" in why for _, why in got.rejected)
        rebuilt += got.rebuilt
        compact = live.compact()
        for k in _POSITION_ARRAYS + ("pos_start", "account_id", "wallet"):
            assert np.array_equal(getattr(compact, k), getattr(fresh.book, k)), k
    assert rebuilt > 0
