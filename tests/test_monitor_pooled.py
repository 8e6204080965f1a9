"""The monitor on pooled-collateral venues (README "Multi-asset collateral", "Monitoring"):
every step equals a full pooled revaluation bit for bit, account events are the pool's (one
per account, in the margin currency), liquidation events carry the pooled prices, and the
uncovered deficit is the bankrupt pools' in the margin currency."""

import numpy as np
import polars as pl
import pytest

from gpurisk import Book, Engine
from gpurisk.book_updates import LiveBook
from gpurisk.live_layout import Slack
from gpurisk.monitor import Monitor
from gpurisk.schema import STATUSES
from test_collateral import pooled_synthetic_book
from test_monitor import _bits, assert_same_as_full


def _random_update(rng, book: Book, next_account: list) -> dict:
    """Updates in both assets: BTC and USDT balances, new BTC wallets in existing pools, new
    accounts, fills and positions (USDT markets)."""
    kind = rng.choice(["fill", "fill", "balance_usdt", "balance_btc", "position", "close", "account", "wallet"])
    ids = book.account_id
    if kind == "account":
        next_account[0] += 1
        return {"type": "account", "account_id": next_account[0], "asset": "USDT",
                "wallet_balance": float(rng.uniform(100, 1e5))}
    if kind == "wallet":  # a BTC wallet beside the USDT one (or its new balance): the pool grows
        return {"type": "account", "account_id": int(rng.choice(ids)), "asset": "BTC",
                "wallet_balance": float(rng.uniform(0.01, 3.0))}
    if kind == "balance_btc":
        btc = np.flatnonzero(book.account_asset == book.assets.index("BTC"))
        return {"type": "balance", "account_id": int(ids[rng.choice(btc)]), "asset": "BTC",
                "delta": float(rng.normal(0, 0.2))}
    if kind == "balance_usdt":
        usdt = np.flatnonzero(book.account_asset == book.assets.index("USDT"))
        return {"type": "balance", "account_id": int(ids[rng.choice(usdt)]), "asset": "USDT",
                "delta": float(rng.normal(0, 2_000))}
    if kind == "close" and book.n_positions:
        i = int(rng.integers(book.n_positions))
        return {"type": "position", "account_id": int(ids[book.pos_account[i]]),
                "symbol": book.symbols[book.pos_symbol[i]], "margin_mode": ("cross", "isolated")[book.isolated[i]],
                "size": 0}
    usdt = np.flatnonzero(book.account_asset == book.assets.index("USDT"))
    account = int(ids[rng.choice(usdt)])
    s = int(rng.integers(book.n_symbols))
    price = float(book.mark_price[s] * rng.uniform(0.95, 1.05))
    if kind == "position":
        return {"type": "position", "account_id": account, "symbol": book.symbols[s],
                "size": float(rng.normal(0, 5)) or 1.0, "entry_price": price}
    return {"type": "fill", "account_id": account, "symbol": book.symbols[s],
            "qty": float(np.round(rng.normal(0, 2), 3)) or 0.5, "price": price}


def _pool_first_rows(book: Book) -> np.ndarray:
    ids = book.account_id
    return np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])


def _check_events(mon: Monitor, events: list, before: dict, full) -> None:
    """The step's events against the full revaluations before and after it: an account_status
    event for exactly the accounts whose pool status moved, with the pool's figures; a
    liquidation event with the full revaluation's pooled prices; the deficit of the bankrupt
    pools in the margin currency."""
    book = mon.book
    first = _pool_first_rows(book)
    status = full.account_margin.status[first]
    pool = full.pool_margin
    now = dict(zip(book.account_id[first].tolist(), status.tolist()))
    moved = {a for a, s in now.items() if s != before.get(a, 0)}
    told = {e["account_id"]: e for e in events if e["type"] == "account_status"}
    assert set(told) == moved
    row_of = dict(zip(book.account_id[first].tolist(), first.tolist()))
    for a, e in told.items():
        r = row_of[a]
        assert e["to"] == STATUSES[status[first.tolist().index(r)]]
        assert e["from"] == (STATUSES[before[a]] if a in before else None)  # None: not told before
        assert e["equity"] == pool.pool_equity[r] and e["maint_margin"] == pool.pool_maint[r]
        assert e["close_fee"] == pool.pool_close_fee[r]
        assert e["margin_currency"] == mon.venue.margin_currency and e["pooled"] is True
    for e in events:
        if e["type"] != "liquidation":
            continue
        rows = np.flatnonzero((book.account_id[book.pos_account] == e["account_id"])
                              & (np.array(book.symbols)[book.pos_symbol] == e["symbol"])
                              & (book.isolated == ("cross", "isolated").index(e["margin_mode"])))
        assert rows.size == 1
        i = rows[0]
        assert e["liq_price"] == (full.position_risk.liq_price[i] if np.isfinite(full.position_risk.liq_price[i])
                                  else None)
        bkr = full.position_risk.bankruptcy_price[i]
        assert e["bankruptcy_price"] == (bkr if bkr > 0 else None) and e["pooled"] is True
    summary = events[-1]
    cross = np.add.reduceat(full.account_margin.n_cross.astype(np.int64), first) > 0
    equity = pool.pool_equity[first]
    want = -sum(float(x) for x in equity[cross & (equity < 0)])  # account order, as the monitor sums
    assert summary["deficit"] == pytest.approx(want, rel=1e-12, abs=0)
    assert summary["margin_currency"] == mon.venue.margin_currency
    counts = np.bincount(status, minlength=len(STATUSES))
    assert [summary[f"accounts_{s}"] for s in STATUSES] == counts.tolist()


# touched accounts revalued as whole pools (and full passes where they hold too much), with free
# rows; full passes only, without free rows
@pytest.mark.parametrize("venue,slack,share", [("bybit_uta", Slack(), 0.6), ("binance_multi_assets", None, 0.0)])
def test_every_step_of_a_pooled_book_matches_a_full_revaluation(venue, slack, share):
    book = pooled_synthetic_book(900)
    mon = Monitor(Engine(book, venue=venue, backend="cpu"), adl_top=4, slack=slack, subset_share=share)
    rng = np.random.default_rng(11)
    next_account = [10**9]
    full = mon.risk(rank=True)
    first = _pool_first_rows(mon.book)
    before: dict = {}  # nothing told yet (the first step says all; a healthy account is not news)
    n_status = n_liq = 0
    modes = set()
    rows = mon.book.n_accounts
    for step in range(50):
        for _ in range(int(rng.integers(1, 4))):
            s = int(rng.integers(book.n_symbols))
            mon.inbox.put_mark(book.symbols[s], float(mon.marks[s] * np.exp(rng.normal(0, 0.04))))
        if step % 2 == 0:
            for _ in range(int(rng.integers(1, 6))):
                mon.inbox.put_update(_random_update(rng, mon.book, next_account))
        events = mon.step()
        assert events[-1]["type"] == "revaluation"
        modes.add(events[-1]["mode"])
        assert not [e for e in events if e["type"] == "rejected"], events
        assert_same_as_full(mon)
        full = mon.risk(rank=True)
        for k in vars(full.pool_margin):  # the pool's own figures too
            assert np.array_equal(_bits(getattr(full.pool_margin, k)), _bits(getattr(mon.results.pool_margin, k))), k
        _check_events(mon, events, before, full)
        first = _pool_first_rows(mon.book)
        before = dict(zip(mon.book.account_id[first].tolist(), full.account_margin.status[first].tolist()))
        n_status += sum(e["type"] == "account_status" for e in events)
        n_liq += sum(e["type"] == "liquidation" for e in events)
    assert n_status > 10 and n_liq > 10  # the events were exercised
    assert modes == ({"accounts", "full"} if share else {"full"})  # both paths were exercised
    assert mon.updates_applied > 40 and mon.book.n_accounts > rows  # wallets and accounts were opened
    assert mon.pooled_deficit()["deficit"] > 0
    with pytest.raises(ValueError, match="use pooled_deficit"):
        mon.deficit()


def test_pooled_liquidation_prices_are_the_pools_not_the_wallets():
    """A cross position's liquidation price in a liquidation event is where its pool turns
    liquidatable (the BTC wallet beside it counts), not where its USDT wallet alone would."""
    from test_collateral import bybit_collateral, small_book

    book = small_book([(1, "BTC", 0.05), (1, "USDT", 300.0)], [(1, "BTCUSDT", 0.5, 50_000.0)],
                      collateral=bybit_collateral(50_000.0))
    mon = Monitor(Engine(book, venue="bybit_uta", backend="cpu"))
    assert not [e for e in mon.start() if e["type"] in ("account_status", "liquidation")]  # healthy at 50,000
    mon.inbox.put_mark("BTCUSDT", 40_000.0)
    events = mon.step()
    liq = [e for e in events if e["type"] == "liquidation"]
    status = [e for e in events if e["type"] == "account_status"]
    full = Engine(mon.book, venue="bybit_uta", backend="cpu").revalue(mon.marks)
    per_asset = Engine(Book.from_frames(**{**mon.book.frames(), "collateral": None}), venue="bybit",
                       backend="cpu").revalue(mon.marks)
    assert len(liq) == 1 and len(status) == 1  # one event for the account, not one per wallet
    assert liq[0]["liq_price"] == full.position_risk.liq_price[0] != per_asset.position_risk.liq_price[0]
    assert status[0]["equity"] == full.pool_margin.pool_equity[0] == full.pool_margin.pool_equity[1]
    assert status[0]["margin_currency"] == "USD"


def test_a_new_wallet_needs_its_asset_in_the_collateral_table():
    """BTC is an asset of the book (its inverse market settles in it) but no wallet holds it and
    the collateral table has no BTC rows: opening a BTC wallet is refused, naming why."""
    from test_collateral import small_book

    markets = {"symbol": ["BTCUSD", "BTCUSDT"], "mark_price": [50_000.0, 50_000.0],
               "contract_type": ["inverse", "linear"], "settle_asset": ["BTC", "USDT"], "contract_size": [100.0, 1.0]}
    tiers = {"symbol": ["BTCUSD", "BTCUSDT"], "notional_floor": [0.0, 0.0], "maint_margin_rate": [0.005, 0.005],
             "max_leverage": [100.0, 100.0]}
    coll = pl.DataFrame({"asset": ["USDT"], "index_price": [1.0], "collateral_ratio": [1.0]})
    book = small_book([(1, "USDT", 1_000.0)], [(1, "BTCUSDT", 0.01, 50_000.0)], collateral=coll, markets=markets,
                      tiers=tiers)
    assert book.assets == ("BTC", "USDT")
    live = LiveBook(book)
    out = live.apply([{"type": "account", "account_id": 1, "asset": "BTC", "wallet_balance": 1.0},
                      {"type": "balance", "account_id": 1, "asset": "USDT", "delta": 5.0}])
    assert out.applied == 1 and "account_id 1 cannot open a BTC wallet: the collateral table has no rows for BTC" \
        in out.rejected[0][1]
    assert live.book.collateral.equals(book.collateral) and live.book.wallet.tolist() == [1_005.0]


def test_a_snapshot_of_a_pooled_monitor_keeps_the_collateral_table(tmp_path):
    """A resumed monitor values the wallets through the same table (gpurisk monitor --snapshot)."""
    from gpurisk.book import read_book
    from gpurisk.monitor_run import snapshot_state, write_snapshot

    book = pooled_synthetic_book(120)
    mon = Monitor(Engine(book, venue="bybit_uta", backend="cpu"))
    mon.inbox.put_mark(book.symbols[0], float(book.mark_price[0] * 0.8))
    mon.inbox.put_update({"type": "balance", "account_id": 3, "asset": "BTC", "delta": -0.1})
    summary = mon.step()[-1]
    assert all(v >= 0 and str(v) != "-0.0" for v in summary["deficit_isolated_by_asset"].values())
    write_snapshot(tmp_path / "snap", *snapshot_state(mon))
    again = read_book(tmp_path / "snap")
    assert again.collateral.equals(book.collateral)
    resumed = Monitor(Engine(again, venue="bybit_uta", backend="cpu"))
    assert resumed.pooled_deficit() == mon.pooled_deficit()


def test_pooled_steps_reach_a_device_with_its_own_memory():
    """Device arrays apart from the host book (as on a GPU): whole-pool subsets and pooled
    liquidation prices equal an independent full revaluation on the plain cpu backend."""
    from test_monitor import _SeparateMemoryBackend

    book = pooled_synthetic_book(500)
    mon = Monitor(Engine(book, venue="bybit_uta", backend=_SeparateMemoryBackend()), adl_top=3, subset_share=1.0)
    rng = np.random.default_rng(2)
    next_account = [10**9]
    for step in range(30):
        s = int(rng.integers(book.n_symbols))
        mon.inbox.put_mark(book.symbols[s], float(mon.marks[s] * np.exp(rng.normal(0, 0.04))))
        for _ in range(3):
            mon.inbox.put_update(_random_update(rng, mon.book, next_account))
        mon.step()
        want = Engine(mon.book, venue="bybit_uta", backend="cpu").revalue(mon.marks, rank=False)
        got = mon.results
        for whole, part in ((want.account_margin, got.account_margin), (want.position_risk, got.position_risk),
                            (want.pool_margin, got.pool_margin)):
            for k in vars(whole):
                assert np.array_equal(_bits(getattr(whole, k)), _bits(getattr(part, k))), (step, k)
