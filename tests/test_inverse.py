"""Inverse (coin-margined) contracts and per-asset margin pools (README "Inverse contracts").

- the engine agrees with the Decimal oracle (tests/oracle.py) on random books mixing linear and
  inverse markets, with one wallet per (account, asset), on every venue's conventions;
- the published examples of BitMEX (XBTUSD), Bybit (inverse perpetual) and Binance (COIN-M),
  each test naming its source;
- the inputs: contract_type and settle_asset (derived from the symbol for inverse markets),
  accounts.asset, and a clear error for a position without a wallet in its settle asset.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
import oracle  # noqa: E402
from oracle import engine_book, oracle_of  # noqa: E402

gpurisk = pytest.importorskip("gpurisk")
from gpurisk import Book, BookError, revalue  # noqa: E402
from gpurisk.venue import BYBIT  # noqa: E402

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- engine against the Decimal oracle ------------------------------------------------------

@settings(max_examples=60, **SETTINGS)
@given(oracle.book_strategy(inverse=True),
       st.sampled_from(["binance", "bybit", "bitmex", "okx", "gate", "hyperliquid", "binance_adl_2019"]))
def test_engine_matches_oracle_on_inverse_books(book, venue):
    risk = revalue(engine_book(book), venue=venue, backend="cpu")
    errs = oracle.compare(risk, oracle_of(book, venue), strict=False)
    assert not errs, "\n".join(errs[:10])


@settings(max_examples=30, **SETTINGS)
@given(oracle.book_strategy(inverse=True))
def test_bankruptcy_fee_convention_matches_oracle(book):
    venue = BYBIT.with_(name="bybit_inverse", close_fee_rate=0.00075, bankruptcy_fee=True)
    risk = revalue(engine_book(book), venue=venue, backend="cpu")
    errs = oracle.compare(risk, oracle_of(book, venue), strict=False)
    assert not errs, "\n".join(errs[:10])


# ---- published examples ----------------------------------------------------------------------

def inverse_book(symbol, mark, cs, tiers, accounts, positions, tick=None, settle=None) -> Book:
    """One inverse market; tiers (floor in coin, rate, max leverage[, amount]); accounts
    (account_id, wallet, asset); positions (account_id, size, entry, mode, isolated margin, leverage)."""
    markets = {"symbol": [symbol], "mark_price": [float(mark)], "contract_size": [float(cs)],
               "contract_type": ["inverse"]}
    if tick:
        markets["tick_size"] = [float(tick)]
    if settle:
        markets["settle_asset"] = [settle]
    return Book.from_frames(
        markets=pl.DataFrame(markets),
        tiers=pl.DataFrame([(symbol, float(f), float(r), float(lv)) for f, r, lv in tiers],
                           schema=["symbol", "notional_floor", "maint_margin_rate", "max_leverage"], orient="row"),
        accounts=pl.DataFrame(accounts, schema=["account_id", "wallet_balance", "asset"], orient="row"),
        positions=pl.DataFrame([(a, symbol, float(q), float(e), m, float(im), lv) for a, q, e, m, im, lv in positions],
                               schema={"account_id": pl.Int64, "symbol": pl.String, "size": pl.Float64,
                                       "entry_price": pl.Float64, "margin_mode": pl.String,
                                       "isolated_margin": pl.Float64, "leverage": pl.Float64}, orient="row"))


def only_position(risk):
    assert risk.positions.height == 1
    return risk.positions.row(0, named=True)


BYBIT_INVERSE = BYBIT.with_(name="bybit_inverse", close_fee_rate=0.00075, bankruptcy_fee=True)


def test_bybit_inverse_cross_liquidation_and_bankruptcy_prices():
    """Bybit, "How to calculate Liquidation Price (Inverse Contract)",
    https://help.bybit.com/hc/en-us/articles/360039261334 (read 2026-11-28): balance 0.5 BTC,
    long 10,000 BTCUSD contracts (1 USD each) at 8,000, cross, MM 0.5% of the entry value, taker
    fee 0.075%: bankruptcy price 1.00075·10,000 / (10,000/8,000 + 0.5) = 5,718.57, liquidation
    price 5,739.50.

    The bankruptcy price is reproduced to the cent with Venue.bankruptcy_fee (closing there pays
    the fee too). Bybit's own liquidation equation, with the fee on the value at 5,718.57, solves
    to 5,739.08, and its page shows 5,739.50: that root rounded up to BTCUSD's 0.5 tick.
    gpurisk counts the fee on the value at the mark (5,739.07) and, with a tick, rounds to the
    trigger side, down for a long (5,739.00): the published figure is the tick above."""
    b = inverse_book("BTCUSD", 8_000, 1, [(0, 0.005, 100)], [(1, 0.5, "BTC")],
                     [(1, 10_000, 8_000, "cross", 0.0, None)])
    p = only_position(revalue(b, venue=BYBIT_INVERSE, backend="cpu"))
    assert p["asset"] == "BTC" and p["notional"] == pytest.approx(1.25, rel=1e-15)
    assert p["maint_margin"] == pytest.approx(10_000 / 8_000 * 0.005, rel=1e-15)
    assert round(p["bankruptcy_price"], 2) == 5_718.57
    bybit_own_root = 1 / (1 / 8_000 + (0.5 - 1.25 * 0.005 - 10_000 * 0.00075 / 5_718.57) / 10_000)
    assert round(bybit_own_root, 2) == 5_739.08
    assert abs(p["liq_price"] - bybit_own_root) < 0.02  # fee at the mark, not at the bankruptcy price
    assert np.ceil(p["liq_price"] / 0.5) * 0.5 == 5_739.50  # the published figure: the tick above
    ticked = only_position(revalue(inverse_book("BTCUSD", 8_000, 1, [(0, 0.005, 100)], [(1, 0.5, "BTC")],
                                                [(1, 10_000, 8_000, "cross", 0.0, None)], tick=0.5),
                                   venue=BYBIT_INVERSE, backend="cpu"))
    assert ticked["liq_price"] == 5_739.0
    # Without the fee (the plain bybit preset) the equation solves exactly, in closed form.
    plain = only_position(revalue(b, venue="bybit", backend="cpu"))
    assert plain["bankruptcy_price"] == pytest.approx(10_000 / (10_000 / 8_000 + 0.5), rel=1e-14)
    assert plain["liq_price"] == pytest.approx(10_000 / (10_000 / 8_000 + 0.5 - 1.25 * 0.005), rel=1e-14)


def test_bybit_inverse_isolated_liquidation_price():
    """Bybit, "Liquidation Price Calculation under Isolated Mode (Unified Trading Account)",
    https://www.bybit.com/en/help-center/article/Liquidation-Price-Calculation-under-Isolated-Mode-Unified-Trading-Account
    (2024-09-10 version, read 2026-11-28): 60,000 USD of BTCUSD long at 50,000, 10x, MMR 0.5%:
    position value 1.2 BTC, initial margin 0.12 BTC, LP (long) = quantity / (value + IM − MM)."""
    b = inverse_book("BTCUSD", 50_000, 1, [(0, 0.005, 100)], [(1, 0.0, "BTC")],
                     [(1, 60_000, 50_000, "isolated", 0.12, 10.0)])
    p = only_position(revalue(b, venue="bybit", backend="cpu"))
    assert p["notional"] == pytest.approx(1.2, rel=1e-15)
    assert p["init_margin"] == pytest.approx(0.12, rel=1e-15)
    assert p["maint_margin"] == pytest.approx(0.006, rel=1e-15)
    assert p["liq_price"] == pytest.approx(60_000 / (1.2 + 0.12 - 0.006), rel=1e-13)  # 45,662.10
    assert round(p["liq_price"], 2) == 45_662.10


def test_bitmex_xbtusd_pnl_margin_and_prices():
    """BitMEX, "Inverse Futures Guide" and "Inverse Perpetuals Guide" (bitmex.com/app/inverseFuturesGuide,
    /app/inversePerpetualsGuide, read 2026-11-28): XBTUSD, 1 USD per contract, PnL in XBT =
    contracts × (1/entry − 1/exit); "to buy 100 Bitcoin worth of contracts, you will only require 1
    Bitcoin of Initial Margin" (100x); worked example: long 100,000 contracts at 10,000, sold at
    10,500: profit 100,000 × (1/10,000 − 1/10,500) = 0.47619 XBT.
    BitMEX publishes no numeric XBTUSD liquidation example that excludes its fees and funding; the
    liquidation and bankruptcy prices are checked against the guide's PnL formula: an isolated
    long with 1 XBT of margin is bankrupt where that PnL is −1 XBT, and liquidated where it is
    −(1 − MM) with MM 0.5% of the entry value (BitMEX's base maintenance rate, bitmex preset)."""
    b = inverse_book("XBTUSD", 10_500, 1, [(0, 0.005, 100)], [(1, 0.0, "XBT")],
                     [(1, 100_000, 10_000, "isolated", 1.0, 100.0)])
    p = only_position(revalue(b, venue="bitmex", backend="cpu"))
    assert p["asset"] == "XBT"
    assert round(p["upnl"], 5) == 0.47619
    assert p["upnl"] == pytest.approx(100_000 * (1 / 10_000 - 1 / 10_500), rel=1e-14)
    hundred = inverse_book("XBTUSD", 10_000, 1, [(0, 0.005, 100)], [(1, 0.0, "XBT")],
                           [(1, 1_000_000, 10_000, "isolated", 1.0, 100.0)])  # 100 XBT worth
    p = only_position(revalue(hundred, venue="bitmex", backend="cpu"))
    assert p["notional"] == pytest.approx(100.0, rel=1e-15) and p["init_margin"] == pytest.approx(1.0, rel=1e-15)
    # PnL(BP) = −1 XBT and PnL(LP) = −(1 − 0.5 XBT)
    assert 1_000_000 * (1 / 10_000 - 1 / p["bankruptcy_price"]) == pytest.approx(-1.0, rel=1e-12)
    assert 1_000_000 * (1 / 10_000 - 1 / p["liq_price"]) == pytest.approx(-(1.0 - 0.5), rel=1e-12)
    assert round(p["bankruptcy_price"], 2) == 9_900.99 and round(p["liq_price"], 2) == 9_950.25


# Binance COIN-M BTCUSD: the level-1 rate of the FAQ's example (0.4%) and the rate and amount it
# gives for a 300 BTC position (12.5%, 11.605 BTC). The levels between are not in the FAQ's text;
# one level at the floor where the continuous amount reaches 11.605 stands for them (the
# maintenance margin of positions in that level is the FAQ's).
BINANCE_COINM_BTC_TIERS = [(0, 0.004, 125), (11.605 / (0.125 - 0.004), 0.125, 4)]


def test_binance_coinm_maintenance_margin_example():
    """Binance, "How to Calculate Liquidation Price of COIN-M Futures Contracts",
    https://www.binance.com/en/support/faq/ceccfcfb4e3a45e3b48b0b1bb1a8ae46 (read 2026-11-28):
    100 contracts (100 USD each) at a mark of 25,000: notional 100 × 100 / 25,000 = 0.4 BTC, in
    level 1 (0.4%): maintenance margin 0.4 × 0.4% − 0 = 0.0016 BTC."""
    b = inverse_book("BTCUSD_PERP", 25_000, 100, BINANCE_COINM_BTC_TIERS, [(1, 1.0, "BTC")],
                     [(1, 100, 25_000, "cross", 0.0, None)])
    p = only_position(revalue(b, venue="binance", backend="cpu"))
    assert p["asset"] == "BTC"  # derived from the symbol
    assert p["notional"] == pytest.approx(0.4, rel=1e-15)
    assert p["maint_margin"] == pytest.approx(0.0016, rel=1e-15)


def test_binance_coinm_liquidation_price_example():
    """Binance COIN-M calculator figure quoted on Binance's developer forum, "Coin-margined futures
    liquidation price calculation help" (dev.binance.vision/t/6292, 2021): wallet 101 BTC, long
    100,000 BTCUSD contracts (100 USD each, 10M USD) at 45,000, cross: liquidation price
    33,599.40. With the FAQ's rate and amount for a ~300 BTC position (12.5%, 11.605 BTC, the
    level the liquidation price falls in: 10M USD / 33,599.4 = 297.6 BTC) the FAQ's formula,
    LP = cs·(q + |q|·mmr) / (WB + q·cs/E + cum), gives 33,599.42; the forum poster's 33,578.86
    is the same formula with the older FAQ's amount (11.81 BTC)."""
    b = inverse_book("BTCUSD_PERP", 45_000, 100, BINANCE_COINM_BTC_TIERS, [(1, 101.0, "BTC")],
                     [(1, 100_000, 45_000, "cross", 0.0, None)])
    p = only_position(revalue(b, venue="binance", backend="cpu"))
    lp = p["liq_price"]
    assert lp == pytest.approx(100 * (100_000 + 100_000 * 0.125) / (101 + 100_000 * 100 / 45_000 + 11.605), rel=1e-12)
    assert round(lp, 1) == 33_599.4
    assert 100_000 * 100 / lp == pytest.approx(297.624, rel=1e-5)  # the level the FAQ names


# ---- inputs and outputs ----------------------------------------------------------------------

def mixed_book(accounts=None, markets_extra=None) -> Book:
    """BTCUSD (inverse, BTC derived from the symbol) and BTCUSDT (linear, USDT)."""
    markets = {"symbol": ["BTCUSD", "BTCUSDT"], "mark_price": [50_000.0, 50_000.0], "contract_size": [100.0, 1.0],
               "contract_type": ["inverse", "linear"], **(markets_extra or {})}
    tiers = pl.DataFrame({"symbol": ["BTCUSD", "BTCUSDT"], "notional_floor": [0.0, 0.0],
                          "maint_margin_rate": [0.005, 0.005], "max_leverage": [100.0, 100.0]})
    accounts = accounts if accounts is not None else pl.DataFrame(
        {"account_id": [7, 7, 3, 9], "wallet_balance": [1.0, 10_000.0, 2.0, 500.0],
         "asset": ["BTC", "USDT", "BTC", "ETH"]})
    positions = pl.DataFrame({"account_id": [7, 3, 7], "symbol": ["BTCUSDT", "BTCUSD", "BTCUSD"],
                              "size": [0.5, -100.0, 200.0], "entry_price": [48_000.0, 51_000.0, 49_000.0]})
    return Book.from_frames(markets=pl.DataFrame(markets), tiers=tiers, accounts=accounts, positions=positions)


def test_wallet_per_asset_pools_and_every_account_row_out():
    b = mixed_book()
    assert b.assets == ("BTC", "ETH", "USDT") and b.inverse.tolist() == [1, 0]
    risk = revalue(b, venue="binance", backend="cpu")
    acc = risk.accounts
    # every (account_id, asset) row in is a row out, sorted by account then asset; the idle ETH wallet too
    assert acc.select("account_id", "asset").rows() == [(3, "BTC"), (7, "BTC"), (7, "USDT"), (9, "ETH")]
    assert acc["n_positions"].to_list() == [1, 1, 1, 0]
    pos = risk.positions
    assert pos.select("account_id", "asset", "symbol").rows() == [
        (3, "BTC", "BTCUSD"), (7, "BTC", "BTCUSD"), (7, "USDT", "BTCUSDT")]
    # the BTC pool of account 7 holds the inverse position only, in BTC
    a7 = acc.filter(account_id=7, asset="BTC").row(0, named=True)
    assert a7["upnl"] == pytest.approx(200 * 100 * (1 / 49_000 - 1 / 50_000), rel=1e-14)
    assert a7["maint_margin"] == pytest.approx(200 * 100 / 50_000 * 0.005, rel=1e-14)
    assert a7["equity"] == pytest.approx(1.0 + a7["upnl"], rel=1e-15)
    u7 = acc.filter(account_id=7, asset="USDT").row(0, named=True)
    assert u7["upnl"] == pytest.approx(0.5 * 2_000, rel=1e-15)
    # the shares of each table join on (account_id, asset)
    joined = pos.join(acc, on=["account_id", "asset"], how="left")
    assert joined["wallet_balance"].null_count() == 0


def test_frames_round_trip_and_input_order():
    b = mixed_book()
    f = b.frames()
    assert f["markets"]["contract_type"].to_list() == ["inverse", "linear"]
    assert f["markets"]["settle_asset"].to_list() == ["BTC", "USDT"]
    again = Book.from_frames(**f)
    r1, r2 = revalue(b, backend="cpu"), revalue(again, backend="cpu")
    assert r1.accounts.equals(r2.accounts) and r1.positions.equals(r2.positions)
    shuffled = Book.from_frames(**{k: v.reverse() for k, v in f.items()})
    assert revalue(shuffled, backend="cpu").positions.equals(r1.positions)


@pytest.mark.parametrize("symbol,coin", [("BTCUSD", "BTC"), ("XBTUSD", "XBT"), ("BTCUSD_PERP", "BTC"),
                                         ("ETHUSD_250328", "ETH"), ("BTC-PERPETUAL", "BTC"), ("BTC-USD-SWAP", "BTC")])
def test_settle_asset_derived_from_an_inverse_symbol(symbol, coin):
    b = Book.from_frames(
        markets=pl.DataFrame({"symbol": [symbol], "mark_price": [100.0], "contract_type": ["inverse"]}),
        tiers=pl.DataFrame({"symbol": [symbol], "notional_floor": [0.0], "maint_margin_rate": [0.01],
                            "max_leverage": [50.0]}),
        accounts=pl.DataFrame({"account_id": [1], "wallet_balance": [1.0], "asset": [coin]}),
        positions=pl.DataFrame({"account_id": [1], "symbol": [symbol], "size": [10.0], "entry_price": [100.0]}))
    assert b.assets[b.settle_asset[0]] == coin


def test_bad_inverse_inputs_are_named():
    with pytest.raises(BookError) as e:
        mixed_book(markets_extra={"contract_type": ["inverse", "coin"]})
    assert "markets.contract_type: must be 'linear' or 'inverse'" in str(e.value)
    with pytest.raises(BookError) as e:  # no coin in the symbol, none given
        Book.from_frames(
            markets=pl.DataFrame({"symbol": ["WEIRD"], "mark_price": [1.0], "contract_type": ["inverse"]}),
            tiers=pl.DataFrame({"symbol": ["WEIRD"], "notional_floor": [0.0], "maint_margin_rate": [0.01],
                                "max_leverage": [50.0]}),
            accounts=pl.DataFrame({"account_id": [1], "wallet_balance": [1.0]}),
            positions=pl.DataFrame({"account_id": [1], "symbol": ["WEIRD"], "size": [1.0], "entry_price": [1.0]}))
    assert "markets.settle_asset" in str(e.value) and "'WEIRD'" in str(e.value)
    with pytest.raises(BookError) as e:  # a position without a wallet in its settle asset
        mixed_book(accounts=pl.DataFrame({"account_id": [7, 3], "wallet_balance": [1.0, 2.0],
                                          "asset": ["BTC", "BTC"]}))
    msg = str(e.value)
    assert "positions.account_id: needs an accounts row with asset = its market's settle asset" in msg
    assert "account_id=7, symbol='BTCUSDT'" in msg and "1 row" in msg
    with pytest.raises(BookError) as e:  # two wallets in one asset
        mixed_book(accounts=pl.DataFrame({"account_id": [7, 7, 7, 3], "wallet_balance": [1.0, 2.0, 3.0, 4.0],
                                          "asset": ["BTC", "BTC", "USDT", "BTC"]}))
    assert "accounts.account_id: must be unique (one row per account_id and asset)" in str(e.value)


def test_features_with_one_currency_refuse_inverse_books():
    b = mixed_book()
    with pytest.raises(BookError, match="stress handles linear contracts only.*'BTCUSD'"):
        gpurisk.stress(b, gpurisk.shock_grid(-0.1, 0.1, 3), backend="cpu")
    with pytest.raises(BookError, match="funding handles linear contracts only"):
        gpurisk.apply_funding(b, {"BTCUSD": 0.0001}, backend="cpu")
    engine = gpurisk.Engine(b, backend="cpu")
    with pytest.raises(BookError, match="what-if orders"):
        engine.what_if([(7, "BTCUSD", 1.0, 50_000.0)])
    from gpurisk.monitor import Monitor
    with pytest.raises(BookError, match="the monitor"):
        Monitor(engine)


def test_linear_book_in_another_asset_keeps_its_asset():
    """Linear markets settled in USDC with USDC wallets: one pool per account, labelled USDC."""
    b = Book.from_frames(
        markets=pl.DataFrame({"symbol": ["ETHUSDC"], "mark_price": [3_000.0], "settle_asset": ["USDC"]}),
        tiers=pl.DataFrame({"symbol": ["ETHUSDC"], "notional_floor": [0.0], "maint_margin_rate": [0.01],
                            "max_leverage": [50.0]}),
        accounts=pl.DataFrame({"account_id": [1], "wallet_balance": [100.0], "asset": ["USDC"]}),
        positions=pl.DataFrame({"account_id": [1], "symbol": ["ETHUSDC"], "size": [1.0], "entry_price": [2_900.0]}))
    risk = revalue(b, backend="cpu")
    assert risk.accounts["asset"].to_list() == ["USDC"] and risk.positions["asset"].to_list() == ["USDC"]
    assert b.single_pool
