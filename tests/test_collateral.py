"""Multi-asset collateral: pooled venues (README "Multi-asset collateral").

- the venues' published figures: Bybit's tiered collateral value ratios (BTC bands by quantity)
  and Binance Multi-Assets mode's haircuts, each test naming its source;
- the engine against the Decimal oracle (tests/oracle_collateral.py) on random books;
- properties: ratio 1 and price 1 everywhere give the per-asset figures; at the liquidation
  (bankruptcy) price the pool sits at the threshold (zero equity); every backend chunking
  gives the same bits;
- the collateral table's validation, loading from a book directory, and the refusals of the
  features that do not pool yet (stress, monitor);
- what-if orders against the pool: each row is the revaluation of the book with the order applied.
"""

from __future__ import annotations

import os
import sys
from decimal import Decimal

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
import oracle  # noqa: E402
from oracle import frames  # noqa: E402
from oracle_collateral import collateral_value, pooled_oracle  # noqa: E402
from test_whatif_inverse import pool_orders  # noqa: E402  (imported here: it builds strategies at import)

gpurisk = pytest.importorskip("gpurisk")
from gpurisk import Book, BookError, Engine, revalue  # noqa: E402
from gpurisk.book import read_book  # noqa: E402
from gpurisk.venue import BINANCE, BYBIT_UTA, get_venue  # noqa: E402

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bybit, "Understanding Collateral Value Ratios in Unified Trading Account" (help center, updated
# 2025-09-18), example table: BTC by quantity 0-10: 0.98, >10-20: 0.95, >20-30: 0.9, >30-40: 0.85,
# >40-50: 0.8, >50: 0; USDT 1. Bybit's API ("Get Tiered Collateral Ratio", /v5/spot-margin-trade/
# collateral) gives the bands in coin quantity (minQty, maxQty), as amount_floor reads them.
BYBIT_BTC_BANDS = [(0.0, 0.98), (10.0, 0.95), (20.0, 0.9), (30.0, 0.85), (40.0, 0.8), (50.0, 0.0)]


def bybit_collateral(btc_price: float) -> pl.DataFrame:
    return pl.DataFrame({"asset": ["BTC"] * 6 + ["USDT"],
                         "index_price": [btc_price] * 6 + [1.0],
                         "amount_floor": [f for f, _ in BYBIT_BTC_BANDS] + [0.0],
                         "collateral_ratio": [r for _, r in BYBIT_BTC_BANDS] + [1.0]})


def small_book(accounts, positions=(), collateral=None, markets=None, tiers=None) -> Book:
    markets = markets or {"symbol": ["BTCUSDT"], "mark_price": [50_000.0]}
    tiers = tiers or {"symbol": ["BTCUSDT"], "notional_floor": [0.0], "maint_margin_rate": [0.005],
                      "max_leverage": [100.0]}
    acc = pl.DataFrame(accounts, schema={"account_id": pl.Int64, "asset": pl.String, "wallet_balance": pl.Float64},
                       orient="row")
    pos = pl.DataFrame(list(positions), schema={"account_id": pl.Int64, "symbol": pl.String, "size": pl.Float64,
                                                "entry_price": pl.Float64}, orient="row")
    return Book.from_frames(markets, tiers, acc, pos, collateral=collateral)


# ---- published figures ----------------------------------------------------------------------

@pytest.mark.parametrize("btc, bands_value", [
    (5.0, 5 * 0.98),                                         # inside the first band
    (10.0, 10 * 0.98),                                       # at the first band's top
    (25.0, 10 * 0.98 + 10 * 0.95 + 5 * 0.9),                 # progressive, like a tax
    (45.0, 10 * 0.98 + 10 * 0.95 + 10 * 0.9 + 10 * 0.85 + 5 * 0.8),
    (60.0, 10 * 0.98 + 10 * 0.95 + 10 * 0.9 + 10 * 0.85 + 10 * 0.8),  # above 50 BTC counts 0
])
def test_bybit_tiered_collateral_value_ratios(btc, bands_value):
    """Bybit's published BTC tiers (source above), applied band by band to a BTC wallet; the
    holdings are ours (the stored copy of Bybit's page stops before its Trader A figures)."""
    price = 30_000.0
    book = small_book([(1, "BTC", btc), (1, "USDT", 1_000.0)], collateral=bybit_collateral(price))
    acc = revalue(book, venue="bybit_uta", backend="cpu").accounts
    btc_row = acc.filter(pl.col("asset") == "BTC").row(0, named=True)
    assert btc_row["collateral_value"] == pytest.approx(bands_value * price, rel=1e-12)
    assert btc_row["pool_equity"] == pytest.approx(bands_value * price + 1_000.0, rel=1e-12)
    assert btc_row["status"] == "healthy" and btc_row["margin_ratio"] == 0.0


def test_bybit_negative_balance_counts_at_full_value():
    """Bybit (source above): "The Collateral Value Ratio only applies to assets with a positive
    balance. For assets with a negative balance default to a 100% collateral value ratio."
    A USDT debt of 5,000 beside 1 BTC at 30,000: 0.98 × 30,000 − 5,000."""
    book = small_book([(1, "BTC", 1.0), (1, "USDT", -5_000.0)], collateral=bybit_collateral(30_000.0))
    acc = revalue(book, venue="bybit_uta", backend="cpu").accounts.sort("asset")
    assert acc["collateral_value"].to_list() == pytest.approx([29_400.0, -5_000.0], rel=1e-12)
    assert acc["pool_equity"].to_list() == pytest.approx([24_400.0] * 2, rel=1e-12)


def test_binance_multi_assets_haircuts():
    """Binance, "What Is Multi-Assets Mode and What Assets Does It Support" (FAQ, 2021-04-19):
    "BNB with a market value of $1,000 will be valued at $950 and ADA with a market value of
    $1,000 will be valued at $900" (BNB 95%, ADA 90%, BUSD 100%)."""
    coll = pl.DataFrame({"asset": ["BNB", "ADA", "BUSD"], "index_price": [250.0, 0.5, 1.0],
                         "collateral_ratio": [0.95, 0.90, 1.0]})
    book = small_book([(7, "BNB", 4.0), (7, "ADA", 2_000.0), (7, "BUSD", 0.0), (7, "USDT", 0.0)],
                      collateral=coll.vstack(pl.DataFrame({"asset": ["USDT"], "index_price": [1.0],
                                                           "collateral_ratio": [1.0]})))
    acc = revalue(book, venue="binance_multi_assets", backend="cpu").accounts
    value = dict(zip(acc["asset"].cast(pl.String).to_list(), acc["collateral_value"].to_list()))
    assert value["BNB"] == pytest.approx(950.0, rel=1e-12)
    assert value["ADA"] == pytest.approx(900.0, rel=1e-12)
    assert acc["pool_equity"][0] == pytest.approx(1_850.0, rel=1e-12)


def test_pool_margin_ratio_liquidation_and_bankruptcy_prices_by_hand():
    """A BTCUSDT long carried by BTC collateral: ratio, LP and BP solved by hand (one band)."""
    coll = pl.DataFrame({"asset": ["BTC", "USDT"], "index_price": [50_000.0, 1.0],
                         "collateral_ratio": [0.95, 1.0]})
    # USDT wallet -1,000 (a debt, full value); 1 BTC at 0.95 -> pool equity 46,500
    book = small_book([(1, "BTC", 1.0), (1, "USDT", -1_000.0)], [(1, "BTCUSDT", 2.0, 50_000.0)], collateral=coll)
    risk = revalue(book, venue="bybit_uta", backend="cpu")
    row = risk.accounts.row(0, named=True)
    assert row["pool_equity"] == pytest.approx(46_500.0, rel=1e-12)
    assert row["pool_maint_margin"] == pytest.approx(500.0, rel=1e-12)
    assert row["margin_ratio"] == pytest.approx(500.0 / 46_500.0, rel=1e-12)
    assert row["available_balance"] == pytest.approx(46_500.0 - 1_000.0, rel=1e-12)
    pos = risk.positions.row(0, named=True)
    # pool equity at P: 46,500 + 2·(P − 50,000) (the USDT row stays negative: full value);
    # MM 0.01·P. LP: 46,500 + 2P − 100,000 = 0.01 P; BP: equity 0.
    assert pos["liq_price"] == pytest.approx(53_500.0 / 1.99, rel=1e-12)
    assert pos["bankruptcy_price"] == pytest.approx(26_750.0, rel=1e-12)
    assert pos["status"] == "healthy" and pos["margin_ratio"] == row["margin_ratio"]


# ---- engine against the Decimal oracle ------------------------------------------------------

def collateral_strategy(assets):
    """A collateral table for ``assets``: index prices, 1..3 bands with ratios in [0, 1]."""
    @st.composite
    def tables(draw):
        rows = []
        for a in sorted(assets):
            price = draw(st.sampled_from([1.0, 1.0, 0.9998, 2.5, 30_000.0, 1_234.5]))
            n = draw(st.integers(1, 3))
            floors = [0.0] + sorted(draw(st.sets(st.sampled_from([0.5, 1.0, 5.0, 100.0, 10_000.0]),
                                                 min_size=n - 1, max_size=n - 1)))
            for f in floors:
                rows.append(dict(asset=a, index_price=price, amount_floor=f,
                                 collateral_ratio=draw(st.sampled_from([1.0, 0.98, 0.95, 0.9, 0.5, 0.0]))))
        return rows
    return tables


def _assets(book):
    return {r.get("asset") or "USDT" for r in book["accounts"]}


@settings(max_examples=40, **SETTINGS)
@given(st.data(), st.sampled_from(["bybit_uta", "binance_multi_assets"]))
def test_engine_matches_pooled_oracle(data, venue_name):
    book = data.draw(oracle.book_strategy(inverse=True))
    coll = data.draw(collateral_strategy(_assets(book))())
    venue = get_venue(venue_name)
    risk = revalue(Book.from_frames(**frames(book), collateral=pl.DataFrame(coll)), venue=venue, backend="cpu")
    want = pooled_oracle(book, coll, venue)
    rel = Decimal("1e-9")
    for r in risk.accounts.to_dicts():
        row = want["accounts"][(r["account_id"], r["asset"])]
        pool = want["pools"][r["account_id"]]
        scale = max(abs(pool["pool_equity"]), abs(row["collateral_value"]),
                    abs(row["equity"]) * max(Decimal(str(c["index_price"])) for c in coll), Decimal(1))
        assert abs(Decimal(r["collateral_value"]) - row["collateral_value"]) <= rel * scale
        for name in ("pool_equity", "pool_maint_margin", "pool_close_fee", "pool_init_margin"):
            big = max(abs(pool[name]), scale)
            assert abs(Decimal(r[name]) - pool[name]) <= rel * big, (name, r[name], pool[name])
        # a discrete output may fall either way only where the exact ratio sits at a threshold
        if r["status"] != pool["status"]:
            assert pool["margin_ratio"].is_finite() and pool["pool_equity"] > 0
            near = [abs(pool["margin_ratio"] - Decimal(repr(t))) for t in (venue.margin_call_ratio,
                                                                               venue.liquidation_ratio)]
            assert min(near) <= Decimal("1e-6") * max(pool["margin_ratio"], Decimal(1)), (r, pool)


def _check_price_at_threshold(want, key, price, side_long, bankrupt, venue):
    """The pool (Decimal oracle) hits at ``price`` and not a hair on the safe side."""
    at = want["at"]
    lq = Decimal(repr(float(venue.liquidation_ratio)))

    # Slack in money, on the pool's scale: near the price the pool's equity is a small difference
    # of large terms, so its float64 rounding is relative to the terms, not to the difference.
    scale = max(abs(want["pools"][key[0]]["pool_equity"]), Decimal(1))

    def hits(p, slack):
        eq, req = at(key, p)
        if bankrupt:
            return eq <= slack * scale
        return eq <= 0 or req - lq * eq >= -slack * scale

    tol = Decimal("1e-9")
    assert hits(price, tol), (key, price, at(key, price))
    safe = price * (1 + 1e-7) if side_long else price * (1 - 1e-7)
    assert not hits(safe, -tol), (key, price, at(key, safe))


@settings(max_examples=40, **SETTINGS)
@given(st.data(), st.sampled_from(["bybit_uta", "binance_multi_assets"]))
def test_pooled_prices_put_the_pool_at_the_threshold(data, venue_name):
    """LP: the pool's ratio reaches the liquidation ratio there (and not a hair on the safe
    side); BP: the pool's equity reaches zero. Checked in Decimal (tests/oracle_collateral.py)."""
    book = data.draw(oracle.book_strategy(inverse=True))
    coll = data.draw(collateral_strategy(_assets(book))())
    venue = get_venue(venue_name)
    risk = revalue(Book.from_frames(**frames(book), collateral=pl.DataFrame(coll)), venue=venue, backend="cpu")
    want = pooled_oracle(book, coll, venue)
    for r in risk.positions.filter(pl.col("margin_mode") == "cross").to_dicts():
        key = (r["account_id"], r["symbol"], "cross")
        for name, bankrupt in (("liq_price", False), ("bankruptcy_price", True)):
            p = r[name]
            if p is None or p == r["mark_price"]:
                continue  # no crossing within the search, or hit at the mark itself
            if not (1e-9 < p < 1e12):
                continue  # beyond the input limits: float64 arithmetic there is not the oracle's
            _check_price_at_threshold(want, key, p, r["side"] == "long", bankrupt, venue)


# ---- properties -----------------------------------------------------------------------------

@settings(max_examples=40, **SETTINGS)
@given(oracle.book_strategy(inverse=False, max_accounts=5))
def test_ratio_one_price_one_gives_the_per_asset_figures(book):
    """One asset (USDT), index price 1, ratio 1: the pool is the per-asset account, so the pooled
    venue reports the same equity, margins, ratio, status and available balance, and the same
    liquidation and bankruptcy prices up to the search's last bits."""
    coll = pl.DataFrame({"asset": ["USDT"], "index_price": [1.0], "collateral_ratio": [1.0]})
    b = Book.from_frames(**frames(book), collateral=coll)
    per_asset = revalue(b, venue=BINANCE, backend="cpu")
    pooled = revalue(b, venue="binance_multi_assets", backend="cpu")
    pa, po = per_asset.accounts, pooled.accounts
    assert po["collateral_value"].to_list() == pa["equity"].to_list()
    assert po["pool_equity"].to_list() == pa["equity"].to_list()
    assert po["pool_maint_margin"].to_list() == pa["maint_margin"].to_list()
    for c in ("margin_ratio", "available_balance", "status"):
        assert po[c].to_list() == pa[c].to_list(), c
    qa, qo = per_asset.positions, pooled.positions
    assert qo["status"].to_list() == qa["status"].to_list()
    # The per-asset bankruptcy price shares the account's equity among its cross positions by
    # MM; the pool's moves one position with the rest held: the same for a position alone.
    cross = qa.filter(pl.col("margin_mode") == "cross").group_by("account_id").len()
    alone = set(cross.filter(pl.col("len") == 1)["account_id"].to_list())
    for c in ("liq_price", "bankruptcy_price"):
        for x, y, mode, aid in zip(qa[c].to_list(), qo[c].to_list(), qa["margin_mode"].to_list(),
                                   qa["account_id"].to_list()):
            if mode == "isolated":
                assert x == y
            elif x is not None and y is not None and (c == "liq_price" or aid in alone):
                assert y == pytest.approx(x, rel=1e-9, abs=1e-9), c


@settings(max_examples=15, **SETTINGS)
@given(st.data())
def test_chunks_give_the_same_bits(data):
    book = data.draw(oracle.book_strategy(inverse=True))
    coll = data.draw(collateral_strategy(_assets(book))())
    b = Book.from_frames(**frames(book), collateral=pl.DataFrame(coll))
    one = revalue(b, venue="bybit_uta", backend="cpu")
    chunked = revalue(b, venue="bybit_uta", backend="cpu", chunk_positions=1)
    assert one.accounts.equals(chunked.accounts)
    assert one.positions.equals(chunked.positions)


def test_chunks_keep_an_accounts_wallets_together():
    markets = {"symbol": ["BTCUSD", "BTCUSDT"], "mark_price": [50_000.0] * 2, "contract_type": ["inverse", "linear"]}
    tiers = {"symbol": ["BTCUSD", "BTCUSDT"], "notional_floor": [0.0] * 2, "maint_margin_rate": [0.005] * 2,
             "max_leverage": [100.0] * 2}
    book = small_book([(1, "BTC", 1.0), (1, "USDT", 10.0), (2, "USDT", 5.0)],
                      [(1, "BTCUSD", 100.0, 50_000.0), (1, "BTCUSDT", 0.1, 50_000.0), (2, "BTCUSDT", 0.1, 50_000.0)],
                      collateral=bybit_collateral(50_000.0), markets=markets, tiers=tiers)
    assert book.account_chunks(1) == [(0, 2), (2, 3)]  # rows 0 and 1 are account 1's BTC and USDT wallets


# ---- inputs -----------------------------------------------------------------------------------

def test_collateral_table_errors_name_rows_and_columns():
    bad = pl.DataFrame({"asset": ["BTC", "BTC", "USDT", "ETH"], "index_price": [50_000.0, 49_000.0, 1.0, -1.0],
                        "collateral_ratio": [0.9, 1.2, 1.0, 0.5], "amount_floor": [0.0, 10.0, 5.0, 0.0]})
    with pytest.raises(BookError) as err:
        small_book([(1, "BTC", 1.0), (1, "USDT", 1.0), (1, "SOL", 1.0)], collateral=bad)
    text = str(err.value)
    assert "collateral.index_price: must be the same on every row of an asset" in text
    assert "collateral.index_price: must be finite and > 0 — 1 row: row 3 (asset='ETH', amount_floor=0.0)" in text
    assert "collateral.collateral_ratio: must be in [0, 1] — 1 row: row 1 (asset='BTC', amount_floor=10.0)" in text
    assert "collateral.amount_floor: an asset's first band must start at 0 — 1 row: row 2 (asset='USDT'" in text
    assert "accounts.asset: needs collateral rows (the collateral table names no such asset) — 1 row: row 2 (account_id=1)" in text


def test_pooled_venue_needs_a_collateral_table():
    book = small_book([(1, "USDT", 1.0)])
    with pytest.raises(BookError, match="collateral: table is missing"):
        Engine(book, venue="bybit_uta", backend="cpu")
    with pytest.raises(ValueError, match="available_upnl='equity'"):
        BYBIT_UTA.with_(available_upnl="losses")


def test_collateral_table_read_from_the_book_directory(tmp_path):
    book = small_book([(1, "BTC", 2.0), (1, "USDT", 0.0)], [(1, "BTCUSDT", 0.5, 48_000.0)],
                      collateral=bybit_collateral(50_000.0))
    for fmt in ("parquet", "csv"):
        book.write(tmp_path / fmt, format=fmt)
        assert (tmp_path / fmt / f"collateral.{fmt}").is_file()
        again = read_book(tmp_path / fmt)
        assert again.collateral.equals(book.collateral)
        a = revalue(again, venue="bybit_uta", backend="cpu").accounts
        assert a.equals(revalue(book, venue="bybit_uta", backend="cpu").accounts)
    without = small_book([(1, "BTC", 2.0), (1, "USDT", 0.0)], [(1, "BTCUSDT", 0.5, 48_000.0)])
    assert gpurisk.output.book_hash(without) != gpurisk.output.book_hash(book)


# ---- refusals -------------------------------------------------------------------------------

def _pooled_book():
    return small_book([(1, "USDT", 1_000.0)], [(1, "BTCUSDT", 0.01, 50_000.0)],
                      collateral=pl.DataFrame({"asset": ["USDT"], "index_price": [1.0], "collateral_ratio": [1.0]}))


def test_stress_refuses_pooled_collateral():
    book = _pooled_book()
    with pytest.raises(BookError, match="stress values each wallet in its own asset"):
        gpurisk.stress(book, gpurisk.shock_grid(-0.1, 0.1, 3), venue="binance", backend="cpu")
    plain = small_book([(1, "USDT", 1_000.0)], [(1, "BTCUSDT", 0.01, 50_000.0)])
    with pytest.raises(BookError, match="venue 'bybit_uta' pools collateral"):
        gpurisk.stress(plain, gpurisk.shock_grid(-0.1, 0.1, 3), venue="bybit_uta", backend="cpu")


def test_monitor_and_what_if_serve_pooled_collateral():
    """Neither refuses a pooled venue (tests/test_monitor_pooled.py and the what-if tests below
    check their figures): the monitor's account events are the pool's, in the margin currency."""
    engine = Engine(_pooled_book(), venue="bybit_uta", backend="cpu")
    out = engine.what_if({"account_id": [1], "symbol": ["BTCUSDT"], "size": [0.01], "price": [50_000.0]})  # pools (test_what_if_* below)
    assert out["pool_equity"][0] == out["collateral_value"][0] == 1_000.0
    from gpurisk.monitor import Monitor

    mon = Monitor(engine)
    mon.inbox.put_mark("BTCUSDT", 1_000.0)  # 0.01 BTC long: 490 lost, still healthy
    mon.inbox.put_update({"type": "balance", "account_id": 1, "delta": -600.0})  # then it is not
    events = mon.step()
    status = [e for e in events if e["type"] == "account_status"]
    assert len(status) == 1 and status[0]["margin_currency"] == "USD" and status[0]["equity"] == pytest.approx(-90.0)
    assert events[-1]["deficit"] == pytest.approx(90.0) and events[-1]["margin_currency"] == "USD"


@pytest.mark.parametrize("chunk_positions", [None, 997])
def test_funding_under_pooled_collateral_pays_each_wallet_in_its_asset(chunk_positions, tmp_path):
    """A pooled engine pays funding into its wallets (each in its own asset, as the free
    function does) and then values the funded wallets through the collateral table: the same
    bits as a fresh engine over the funded book."""
    from gpurisk.funding import apply_funding
    from gpurisk.parity import compare, risk_arrays

    book = pooled_synthetic_book(2_000)
    rates = dict(zip(book.symbols, np.linspace(-0.003, 0.004, book.n_symbols).tolist()))
    marks = book.mark_price * 0.97
    options = {} if chunk_positions is None else {"chunk_positions": chunk_positions}
    engine = Engine(book, venue="bybit_uta", backend="cpu", **options)
    paid = engine.apply_funding(rates, marks=marks)
    free = apply_funding(book, rates, marks=marks, backend="cpu")
    np.testing.assert_array_equal(paid.book.wallet, free.book.wallet)
    assert not np.array_equal(paid.book.wallet, book.wallet)
    assert paid.book.collateral.equals(book.collateral)
    got = risk_arrays(engine.revalue(marks))
    want = risk_arrays(Engine(free.book, venue="bybit_uta", backend="cpu").revalue(marks))
    mismatches = compare(want, got)
    assert not mismatches, "\n".join(map(str, mismatches[:10]))
    # the pool's equity moved by the payments, valued at each asset's index price and ratio
    before = revalue(book, venue="bybit_uta", backend="cpu", marks=marks).accounts
    after = revalue(free.book, venue="bybit_uta", backend="cpu", marks=marks).accounts
    assert (after["pool_equity"] != before["pool_equity"]).any()
    # the funded book written out is still a pooled book: its collateral table goes with it
    again = read_book(free.write(tmp_path / "funded"))
    assert again.collateral.equals(book.collateral)
    np.testing.assert_array_equal(again.wallet, free.book.wallet)


def test_collateral_value_oracle_by_hand():
    """The oracle's own band arithmetic on Bybit's table (45 BTC: 40.8 BTC counted)."""
    bands = [(Decimal(str(f)), Decimal(str(r))) for f, r in BYBIT_BTC_BANDS]
    assert collateral_value(Decimal(45), Decimal(1), bands) == Decimal("40.80")
    assert collateral_value(Decimal(-3), Decimal(2), bands) == Decimal(-6)
    assert collateral_value(Decimal(70), Decimal(1), bands) == Decimal("44.80")  # nothing above 50



# ---- same bits on every backend ---------------------------------------------------------------

def pooled_synthetic_book(n_accounts: int) -> Book:
    """A synthetic book with a BTC wallet beside the USDT one for every third account (some of
    them debts in USDT), and a tiered collateral table."""
    from gpurisk import synthetic_tables

    t = synthetic_tables(n_accounts, seed=3)
    acc = t["accounts"]
    extra = acc.filter(pl.col("account_id") % 3 == 0).select(
        "account_id", (pl.col("account_id") % 7 * 0.37 + 0.01).alias("wallet_balance"), pl.lit("BTC").alias("asset"))
    usdt = acc.with_columns(pl.lit("USDT").alias("asset"),
                            pl.when(pl.col("account_id") % 6 == 0).then(-pl.col("wallet_balance") * 0.5)
                            .otherwise(pl.col("wallet_balance")).alias("wallet_balance"))
    accounts = pl.concat([usdt.select("account_id", "wallet_balance", "asset"), extra])
    coll = pl.DataFrame({"asset": ["BTC"] * 3 + ["USDT"], "index_price": [60_000.0] * 3 + [0.9998],
                         "amount_floor": [0.0, 1.0, 2.0, 0.0], "collateral_ratio": [0.98, 0.9, 0.5, 1.0]})
    return Book.from_frames(t["markets"], t["tiers"], accounts, t["positions"], collateral=coll)


@pytest.mark.parametrize("target", ["gpu", "stand-in", "stand-in-strict", "one-thread", "chunked"])
def test_pooled_results_are_the_same_bits_everywhere(target):
    from gpurisk.backend import CpuBackend, get_backend, gpu_available
    from gpurisk.parity import StandInBackend, StrictStandInBackend, compare, risk_arrays

    if target == "gpu" and not gpu_available():
        pytest.skip("needs a CUDA GPU (CuPy reports none); the stand-in twin runs instead")
    book = pooled_synthetic_book(3_000 if target != "gpu" else 200_000)
    reference = risk_arrays(Engine(book, venue="bybit_uta", backend=CpuBackend(threads=os.cpu_count() or 1))
                            .revalue(book.mark_price * 0.9))
    assert "pool_margin.pool_equity" in reference
    options = {}
    backend = {"gpu": lambda: get_backend("gpu"), "stand-in": StandInBackend, "stand-in-strict": StrictStandInBackend,
               "one-thread": lambda: CpuBackend(threads=1), "chunked": lambda: CpuBackend(threads=2)}[target]()
    if target == "chunked":
        options["chunk_positions"] = 997
    got = risk_arrays(Engine(book, venue="bybit_uta", backend=backend, **options).revalue(book.mark_price * 0.9))
    mismatches = compare(reference, got)
    assert not mismatches, "\n".join(map(str, mismatches[:10]))


def test_database_write_refuses_to_drop_the_collateral_table():
    from gpurisk.database import write_book

    with pytest.raises(BookError, match="collateral: a database book holds the four tables only"):
        write_book("postgresql://nowhere/none", _pooled_book())


def test_pooled_columns_are_the_documented_ones():
    from gpurisk.schema import ACCOUNT_OUTPUT, POOLED_ACCOUNT_OUTPUT

    acc = revalue(_pooled_book(), venue="bybit_uta", backend="cpu").accounts
    assert acc.columns == list(ACCOUNT_OUTPUT) + [c for c in POOLED_ACCOUNT_OUTPUT if c not in ACCOUNT_OUTPUT]
    assert revalue(_pooled_book(), venue="binance", backend="cpu").accounts.columns == list(ACCOUNT_OUTPUT)


def test_binance_multi_assets_margin_ratio_example():
    """Binance, "How to Calculate Margin in Multi-Assets Mode" (FAQ, 2022-07-06; the same
    example with USDC in place of BUSD in the later revision). USDTUSD index 0.99 with bid
    buffer 0.01 and ask buffer 0.005: bid rate 0.9801, ask rate 0.99495; USDCUSD 1. Assets count
    at min(equity·bid, equity·ask) and margins at the ask rate, which is index_price = ask rate
    and collateral_ratio = bid / ask (a debt then counts at the ask rate, as min() says).
    Wallets 200 USDT and 220 USDC: account equity 200·0.9801 + 220 = 416.02. Then 0.5 BTCUSDT at
    20,000 (100x, MMR 0.8%) and 20 ETHUSDC at 600 (50x, MMR 1%), marks at entry: available
    416.02 − (0.5·20,000·0.01·0.99495 + 20·600·0.02) = 76.525, margin ratio 199.596 / 416.02
    = 47.98%."""
    ask, bid = 0.99495, 0.9801
    coll = pl.DataFrame({"asset": ["USDT", "USDC"], "index_price": [ask, 1.0], "collateral_ratio": [bid / ask, 1.0]})
    markets = {"symbol": ["BTCUSDT", "ETHUSDC"], "mark_price": [20_000.0, 600.0], "settle_asset": ["USDT", "USDC"]}
    tiers = {"symbol": ["BTCUSDT", "ETHUSDC"], "notional_floor": [0.0, 0.0], "maint_margin_rate": [0.008, 0.01],
             "max_leverage": [100.0, 50.0]}
    idle = small_book([(1, "USDT", 200.0), (1, "USDC", 220.0)], collateral=coll, markets=markets, tiers=tiers)
    acc = revalue(idle, venue="binance_multi_assets", backend="cpu").accounts
    assert acc["pool_equity"][0] == pytest.approx(416.02, rel=1e-12)
    assert acc["available_balance"][0] == pytest.approx(416.02, rel=1e-12)
    assert acc["margin_ratio"][0] == 0.0

    book = small_book([(1, "USDT", 200.0), (1, "USDC", 220.0)],
                      [(1, "BTCUSDT", 0.5, 20_000.0), (1, "ETHUSDC", 20.0, 600.0)],
                      collateral=coll, markets=markets, tiers=tiers)
    acc = revalue(book, venue="binance_multi_assets", backend="cpu").accounts
    row = acc.row(0, named=True)
    assert row["pool_equity"] == pytest.approx(416.02, rel=1e-12)
    assert row["pool_maint_margin"] == pytest.approx(199.596, rel=1e-12)
    assert row["available_balance"] == pytest.approx(76.525, rel=1e-12)
    assert row["margin_ratio"] == pytest.approx(199.596 / 416.02, rel=1e-12)
    assert round(100 * row["margin_ratio"], 2) == 47.98 and row["status"] == "healthy"  # Binance: 47.98%
    assert acc["margin_ratio"].to_list() == [row["margin_ratio"]] * 2  # every row carries the pool's


def test_cli_revalues_a_pooled_book_directory(tmp_path):
    from gpurisk.cli import main

    small_book([(1, "BTC", 2.0), (1, "USDT", -500.0)], [(1, "BTCUSDT", 0.5, 48_000.0)],
               collateral=bybit_collateral(50_000.0)).write(tmp_path / "book")
    assert main(["revalue", str(tmp_path / "book"), "--venue", "bybit_uta", "--backend", "cpu",
                 "--out", str(tmp_path / "out")]) == 0
    acc = pl.read_parquet(tmp_path / "out" / "accounts.parquet")
    assert acc["pool_equity"].to_list() == pytest.approx([2 * 0.98 * 50_000.0 - 500.0 + 1_000.0] * 2, rel=1e-12)


def test_portfolio_margin_over_pooled_collateral_is_refused():
    """Both models at once are not modelled: the engine says so before any compute."""
    from gpurisk import PortfolioModel

    book = small_book([(1, "BTC", 2.0), (1, "USDT", 0.0)], [(1, "BTCUSDT", 0.5, 48_000.0)],
                      collateral=bybit_collateral(50_000.0))
    model = PortfolioModel.from_frame(pl.DataFrame({"symbol": ["BTCUSDT"], "risk_group": ["BTC"],
                                                    "price_range": [0.1], "shocks": [11]}))
    venue = BYBIT_UTA.with_(margin_model="portfolio", portfolio=model)
    with pytest.raises(ValueError, match="portfolio margin over pooled multi-asset collateral"):
        Engine(book, venue=venue, backend="cpu")


# ---- what-if orders against the pool -----------------------------------------------------------

POOL_PAIRS = (("collateral_value", "collateral_value"), ("pool_equity", "pool_equity"),
              ("pool_maint_margin", "pool_maint_margin"), ("pool_close_fee", "pool_close_fee"),
              ("pool_init_margin", "pool_init_margin"))


@pytest.fixture(scope="module")
def pooled_ticked_book() -> Book:
    from test_whatif import ticked_book

    book = pooled_synthetic_book(240)
    return Book.from_frames(**ticked_book(book).frames(), collateral=book.collateral)  # frames() has no collateral


def _assert_row_is_the_revaluation(risk, row, venue):
    """The what-if ``row`` against ``risk`` (the revaluation of the book with its order applied):
    its account row and pool, and its position where one remains, bit for bit. Returns the
    account row and the position row (None when the order closes the position)."""
    from test_whatif import ACCOUNT_PAIRS, POSITION_PAIRS, same_bits

    a = risk.accounts.filter((pl.col("account_id") == row["account_id"])
                             & (pl.col("asset") == str(row["asset"]))).row(0, named=True)
    for mine, theirs in ACCOUNT_PAIRS + POOL_PAIRS:
        assert same_bits(row[mine], a[theirs]), (venue, row, mine, a[theirs])
    if row["size"] == 0.0:
        return a, None
    p = risk.positions.filter((pl.col("account_id") == row["account_id"])
                              & (pl.col("symbol") == row["symbol"])
                              & (pl.col("margin_mode") == row["margin_mode"])).row(0, named=True)
    for mine, theirs in POSITION_PAIRS:
        assert same_bits(row[mine], p[theirs]), (venue, row, mine, p[theirs])
    return a, p


@pytest.mark.parametrize("venue", ["bybit_uta", "binance_multi_assets"])
def test_what_if_is_the_pooled_revaluation_of_the_modified_book(pooled_ticked_book, venue):
    """Each what-if row of a pooled venue is the revaluation of the book with the order
    applied, bit for bit (the same sums in the same order): the order's row and its pool
    (collateral value, pool equity, MM, close fee, IM, and the pool's margin ratio, available
    balance and status), the resulting position with its liquidation price against the pool,
    and the initial-margin check read off the modified book's pool."""
    from test_whatif import _random_orders, modified_frames, order_kind

    book = pooled_ticked_book
    frames_ = book.frames()
    res = Engine(book, venue=venue, backend="cpu").what_if(_random_orders(book, 90, seed=5))
    seen, checks = set(), set()
    for row in res.iter_rows(named=True):
        iso = row["margin_mode"] == "isolated"
        if iso and row["size"] != 0.0 and not row["isolated_margin"] > 0.0:
            continue  # no valid book row to revalue (see test_whatif's property test)
        mod = Book.from_frames(**modified_frames(book, row), collateral=book.collateral)
        a, p = _assert_row_is_the_revaluation(Engine(mod, venue=venue, backend="cpu").revalue(), row, venue)
        kind = order_kind(frames_, row)
        ok = a["available_balance"] >= 0.0
        if p is not None:
            if iso:
                ok = ok and row["isolated_margin"] + p["upnl"] >= p["init_margin"]  # the modified book's margin
        assert row["im_check"] == (kind in ("reduce", "close") or ok), (venue, row, kind)
        seen.add((kind, row["margin_mode"]))
        checks.add((row["im_check"], row["liq_price"] is not None and not iso))
    assert {("new", "cross"), ("increase", "cross"), ("reduce", "cross"), ("close", "cross"),
            ("flip", "cross")} <= seen, seen
    assert {(True, True), (False, True)} <= checks, checks  # passes and fails, pooled liquidation prices


def _assert_what_if_rows_are_pooled_revaluations(book: Book, venue: str, res: pl.DataFrame) -> set:
    from test_whatif import modified_frames

    seen = set()
    for row in res.iter_rows(named=True):
        if row["margin_mode"] == "isolated" and row["size"] != 0.0 and not row["isolated_margin"] > 0.0:
            continue  # no valid book row to revalue (see test_whatif's property test)
        try:
            after = Book.from_frames(**modified_frames(book, row), collateral=book.collateral)
        except BookError as exc:
            # the order's realised PnL may leave a wallet of dust (|w| < 1e-12) that a book's input
            # limits refuse: there is no valid book to revalue, nothing to compare
            if all(p.table == "accounts" and p.column == "wallet_balance" and "input limits" in p.rule
                   for p in exc.problems):
                continue
            raise
        _assert_row_is_the_revaluation(Engine(after, venue=venue, backend="cpu").revalue(), row, venue)
        seen.add(str(row["asset"]))
    return seen


@settings(max_examples=25, **SETTINGS)
@given(st.data(), st.sampled_from(["bybit_uta", "binance_multi_assets"]), st.integers(0, 2**31))
def test_property_pooled_what_if_on_inverse_markets_and_random_collateral(data, venue, seed):
    """Random small books with inverse (coin-settled) markets and random collateral tables:
    each what-if row is the pooled revaluation of the book with the order applied, bit for bit
    (the engine's pooled revaluation is checked against the Decimal oracle above)."""
    raw = data.draw(oracle.book_strategy(inverse=True))
    coll = data.draw(collateral_strategy(_assets(raw))())
    book = Book.from_frames(**frames(raw), collateral=pl.DataFrame(coll))
    res = Engine(book, venue=venue, backend="cpu").what_if(pool_orders(book, 6, seed=seed))
    _assert_what_if_rows_are_pooled_revaluations(book, venue, res)


def test_pooled_what_if_sees_a_debt_in_another_asset():
    """The pool, not the order's wallet: a USDT wallet that covers the order alone fails the
    initial-margin check when the account's BTC wallet is in debt, and passes without it."""
    coll = pl.DataFrame({"asset": ["BTC", "USDT"], "index_price": [50_000.0, 1.0], "collateral_ratio": [0.9, 1.0]})
    order = {"account_id": [1], "symbol": ["BTCUSDT"], "size": [0.1], "price": [50_000.0]}  # IM 50 at 100x
    alone = Engine(small_book([(1, "BTC", 0.0), (1, "USDT", 100.0)], collateral=coll), venue="bybit_uta",
                   backend="cpu").what_if(order).row(0, named=True)
    assert alone["im_check"] and alone["available_balance"] == 100.0 - alone["pool_init_margin"]
    debt = Engine(small_book([(1, "BTC", -0.01), (1, "USDT", 100.0)], collateral=coll), venue="bybit_uta",
                  backend="cpu").what_if(order).row(0, named=True)
    assert debt["pool_equity"] == 100.0 - 0.01 * 50_000.0 and not debt["im_check"]
    assert debt["equity"] == 100.0  # the order's own wallet (USDT) alone would pass


def test_pooled_what_if_same_bits_on_thread_counts_chunks_and_after_funding():
    from gpurisk.backend import CpuBackend

    book = pooled_synthetic_book(600)
    frame = pool_orders(book, 300, seed=8)
    runs = [Engine(book, venue="bybit_uta", backend=CpuBackend(threads=t), chunk_positions=c).what_if(frame)
            for t, c in ((1, None), (2, None), (2, 97))]
    assert runs[0].equals(runs[1]) and runs[0].equals(runs[2])
    # funding moves the wallets: the pool's other rows are summed afresh
    rates = dict(zip(book.symbols, np.linspace(-0.003, 0.004, book.n_symbols).tolist()))
    engine = Engine(book, venue="bybit_uta", backend="cpu")
    engine.what_if(frame)
    paid = engine.apply_funding(rates)
    after = engine.what_if(frame)
    assert after.equals(Engine(paid.book, venue="bybit_uta", backend="cpu").what_if(frame))
    assert not after["pool_equity"].equals(runs[0]["pool_equity"])
