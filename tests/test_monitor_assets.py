"""The monitor and live updates on books with several settle assets (inverse contracts;
README "Inverse contracts"): a wallet per (account, asset), updates that name theirs, events
that say the asset of their money, the uncovered deficit per asset."""

import numpy as np
import polars as pl
import pytest

import gpurisk
from gpurisk import Book, Engine
from gpurisk.book import BookError
from gpurisk.book_updates import LiveBook
from gpurisk.monitor import Monitor
from test_inverse import mixed_book
from test_monitor import assert_same_as_full


def _wallet(book: Book, account_id: int, asset: str) -> float:
    rows = np.flatnonzero((book.account_id == account_id) & (book.account_asset == book.assets.index(asset)))
    assert rows.size == 1, (account_id, asset)
    return float(book.wallet[rows[0]])


def _assert_layout(book: Book):
    """Rows sorted by (account_id, asset), each position in the wallet of its market's asset,
    and the same book as the loader builds from its own tables."""
    key = list(zip(book.account_id.tolist(), book.account_asset.tolist()))
    assert key == sorted(key) and len(set(key)) == len(key)
    assert np.array_equal(book.settle_asset[book.pos_symbol], book.account_asset[book.pos_account])
    again = Book.from_frames(**book.frames())
    for k in ("account_id", "account_asset", "wallet", "pos_start", "pos_account", "pos_symbol", "size", "entry",
              "isolated", "isolated_margin"):
        assert np.array_equal(getattr(again, k), getattr(book, k)), k


def _random_update(rng, book: Book, next_account: list) -> dict:
    """Updates of every kind, in every asset: balances and new wallets name theirs."""
    kind = rng.choice(["fill", "fill", "balance", "position", "close", "account", "wallet"])
    asset = str(rng.choice(book.assets))
    if kind == "account":
        next_account[0] += 1
        return {"type": "account", "account_id": next_account[0], "asset": asset,
                "wallet_balance": float(rng.uniform(1, 50) if asset != "USDT" else rng.uniform(100, 1e5))}
    rows = np.flatnonzero(book.account_asset == book.assets.index(asset))
    row = int(rng.choice(rows))
    if kind == "wallet":  # a wallet in another asset for an account that has some: a row inside the account's
        return {"type": "account", "account_id": int(book.account_id[int(rng.integers(book.n_accounts))]),
                "asset": asset, "wallet_balance": float(rng.uniform(1, 20))}
    if kind == "balance":
        scale = 500.0 if asset == "USDT" else 0.05
        return {"type": "balance", "account_id": int(book.account_id[row]), "asset": asset,
                "delta": float(rng.normal(0, scale))}
    if kind == "close" and book.n_positions:
        i = int(rng.integers(book.n_positions))
        return {"type": "position", "account_id": int(book.account_id[book.pos_account[i]]),
                "symbol": book.symbols[book.pos_symbol[i]], "margin_mode": ("cross", "isolated")[book.isolated[i]],
                "size": 0}
    syms = np.flatnonzero(book.settle_asset == book.assets.index(asset))
    s = int(rng.choice(syms))
    price = float(book.mark_price[s] * rng.uniform(0.95, 1.05))
    qty = float(rng.normal(0, 2)) if not book.inverse[s] else float(rng.normal(0, 2_000))
    if kind == "position":
        return {"type": "position", "account_id": int(book.account_id[row]), "symbol": book.symbols[s],
                "size": qty or 1.0, "entry_price": price}
    return {"type": "fill", "account_id": int(book.account_id[row]), "symbol": book.symbols[s],
            "qty": float(np.round(qty, 3)) or 0.5, "price": price}


@pytest.mark.parametrize("venue", ["binance", "bitmex"])
def test_every_step_on_a_multi_asset_book_matches_a_full_revaluation(venue):
    book = gpurisk.synthetic_book(900, seed=3, inverse_markets=2)
    assert book.assets == ("BTC", "ETH", "USDT")
    mon = Monitor(Engine(book, venue=venue, backend="cpu"), adl_top=4, subset_share=0.5)
    rng = np.random.default_rng(5)
    next_account = [10**9]
    modes, rejected, n_rows = set(), 0, book.n_accounts
    for step in range(60):
        s = int(rng.integers(book.n_symbols))
        mon.inbox.put_mark(book.symbols[s], float(mon.marks[s] * np.exp(rng.normal(0, 0.03))))
        if step % 2 == 0:
            for _ in range(int(rng.integers(1, 6))):
                mon.inbox.put_update(_random_update(rng, mon.book, next_account))
        events = mon.step()
        rejected += sum(e["type"] == "rejected" for e in events)
        modes.add(events[-1]["mode"])
        assert events[-1]["deficit"] is None and set(events[-1]["deficit_by_asset"]) == set(book.assets)
        assert_same_as_full(mon)
    _assert_layout(mon.book)
    assert mon.updates_applied > 40 and mon.book.n_accounts > n_rows  # wallets were opened
    assert {"accounts", "full"} <= modes


def test_updates_move_the_wallet_they_name():
    live = LiveBook(mixed_book())  # rows (3, BTC), (7, BTC), (7, USDT), (9, ETH)
    b = live.book
    out = live.apply([{"type": "balance", "account_id": 7, "asset": "BTC", "delta": 0.25},
                      {"type": "balance", "account_id": 7, "delta": -100.0}])  # no asset: the USDT wallet
    assert not out.rejected and not out.rebuilt
    assert _wallet(b, 7, "BTC") == 1.25 and _wallet(b, 7, "USDT") == 9_900.0
    # a fill on the inverse market realises its PnL in BTC: 200 contracts of 100 USD, half closed
    out = live.apply([{"type": "fill", "account_id": 7, "symbol": "BTCUSD", "qty": -100.0, "price": 50_000.0}])
    assert not out.rejected
    assert _wallet(b, 7, "BTC") == pytest.approx(1.25 + 100 * 100 * (1 / 49_000 - 1 / 50_000), rel=1e-13)
    assert _wallet(b, 7, "USDT") == 9_900.0
    bad = live.apply([
        {"type": "fill", "account_id": 7, "symbol": "BTCUSD", "asset": "USDT", "qty": 1.0, "price": 50_000.0},
        {"type": "balance", "account_id": 3, "asset": "USDT", "delta": 5.0},
        {"type": "balance", "account_id": 3, "asset": "DOGE", "delta": 5.0},
        {"type": "fill", "account_id": 3, "symbol": "BTCUSDT", "qty": 0.1, "price": 50_000.0},
        {"type": "balance", "account_id": 4, "asset": "BTC", "delta": 5.0}])
    reasons = [why for _, why in bad.rejected]
    assert len(reasons) == 5 and bad.applied == 0
    assert "asset must be 'BTC', the settle asset of BTCUSD" in reasons[0]
    assert "account_id 3 has no USDT wallet (open it first with an account update with asset USDT)" in reasons[1]
    assert "asset must be one of the book's assets (BTC, ETH, USDT), got 'DOGE'" in reasons[2]
    assert "account_id 3 has no USDT wallet" in reasons[3]
    assert "account_id 4 is not an account of the book" in reasons[4]
    # a USDT wallet for account 3 goes between its BTC wallet and account 7's; then it trades
    out = live.apply([{"type": "account", "account_id": 3, "asset": "USDT", "wallet_balance": 1_000.0},
                      {"type": "fill", "account_id": 3, "symbol": "BTCUSDT", "qty": 0.1, "price": 50_000.0, "fee": 2.0}])
    assert not out.rejected and out.rebuilt
    b = live.book
    assert list(zip(b.account_id.tolist(), [b.assets[c] for c in b.account_asset])) == [
        (3, "BTC"), (3, "USDT"), (7, "BTC"), (7, "USDT"), (9, "ETH")]
    assert _wallet(b, 3, "USDT") == 998.0 and _wallet(b, 3, "BTC") == 2.0
    assert out.accounts.tolist() == [1]  # the new wallet's row
    _assert_layout(b)
    assert out.remap_accounts(np.array([10, 20, 30, 40]), -1).tolist() == [10, -1, 20, 30, 40]


def test_an_update_without_asset_needs_one_when_the_book_has_no_usdt():
    book = mixed_book(accounts=pl.DataFrame({"account_id": [3, 7, 7], "wallet_balance": [2.0, 1.0, 10_000.0],
                                             "asset": ["BTC", "BTC", "USDC"]}),
                      markets_extra={"settle_asset": ["BTC", "USDC"]})
    live = LiveBook(book)
    out = live.apply([{"type": "balance", "account_id": 7, "delta": 1.0},
                      {"type": "balance", "account_id": 7, "asset": "USDC", "delta": 1.0}])
    assert "asset is missing: the book's wallets are in BTC, USDC" in out.rejected[0][1]
    assert out.applied == 1 and _wallet(live.book, 7, "USDC") == 10_001.0
    coin = LiveBook(mixed_book().for_asset("BTC"))  # one asset: an update needs no asset
    assert not coin.apply([{"type": "balance", "account_id": 3, "delta": 0.5}]).rejected
    assert _wallet(coin.book, 3, "BTC") == 2.5


def test_events_and_deficits_per_asset_equal_each_assets_own_monitor():
    """Wallets of different assets never share money: the whole book's events of an asset and
    its deficit are those of a monitor on that asset's book alone."""
    book = gpurisk.synthetic_book(800, seed=8, stressed_share=0.2, inverse_markets=2)
    whole = Monitor(Engine(book, venue="binance", backend="cpu"))
    alone = {a: Monitor(Engine(book.for_asset(a), venue="binance", backend="cpu")) for a in book.assets}
    rng = np.random.default_rng(3)

    def keyed(events, asset):
        out = set()
        for e in events:
            if e["type"] == "account_status" and e.get("asset", "USDT") == asset:
                out.add(("status", e["account_id"], e["from"], e["to"], e["equity"]))
            elif e["type"] == "liquidation" and e.get("asset", "USDT") == asset:
                out.add(("liq", e["account_id"], e["symbol"], e["status"], e["liq_price"]))
        return out

    batches = [[]] + [[(int(s), float(rng.uniform(0.85, 1.15))) for s in rng.choice(book.n_symbols, 4)]
                      for _ in range(12)]
    n_events = 0
    for k, moves in enumerate(batches):
        for s, f in moves:
            whole.inbox.put_mark(book.symbols[s], float(book.mark_price[s] * f))
            sub = alone[book.assets[book.settle_asset[s]]]
            sub.inbox.put_mark(book.symbols[s], float(book.mark_price[s] * f))
        got = whole.start() if k == 0 else whole.step()
        by_asset = got[-1]["deficit_by_asset"]
        for a, mon in alone.items():
            want = mon.start() if k == 0 else mon.step() or [{"type": "revaluation"}]
            assert keyed(got, a) == keyed(want, a)
            n_events += len(keyed(got, a))
            assert by_asset[a] == pytest.approx(mon.deficit(), rel=1e-12, abs=0)
        assert all(e.get("asset") in book.assets for e in got if e["type"] in ("account_status", "liquidation"))
    assert n_events > 20 and whole.deficit_by_asset()["BTC"] > 0
    with pytest.raises(ValueError, match="use deficit_by_asset"):
        whole.deficit()
    fresh = {a: Monitor(Engine(book.for_asset(a), venue="binance", backend="cpu")).start() for a in ("BTC", "USDT")}
    assert next(e for e in fresh["BTC"] if e["type"] == "account_status")["asset"] == "BTC"  # BTC money, labelled
    assert "asset" not in next(e for e in fresh["USDT"] if e["type"] == "account_status")  # USDT only: as before
    assert "deficit_by_asset" not in fresh["USDT"][-1] and fresh["BTC"][-1]["deficit_by_asset"] == \
        {"BTC": fresh["BTC"][-1]["deficit"]}
