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
from gpurisk.impact import Impact  # noqa: E402
from gpurisk.stress import conservation_check  # noqa: E402
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
    res = gpurisk.stress(b, gpurisk.shock_grid(-0.1, 0.1, 3), backend="cpu")  # per asset (test_stress_assets.py)
    assert res.summary["asset"].cast(pl.String).to_list() == ["BTC", "USDT"] * 3  # ETH: a wallet, no market
    engine = gpurisk.Engine(b, backend="cpu")  # (what-if orders serve it: tests/test_whatif_inverse.py)
    from gpurisk.monitor import Monitor
    assert Monitor(engine).start()[-1]["deficit_by_asset"] == {"BTC": 0.0, "ETH": 0.0, "USDT": 0.0}  # per asset


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


def test_synthetic_book_with_inverse_markets():
    b = gpurisk.synthetic_book(800, seed=3, inverse_markets=2)
    assert [b.symbols[i] for i in np.nonzero(b.inverse)[0]] == ["BTCUSD", "ETHUSD"]
    assert b.assets == ("BTC", "ETH", "USDT")
    for s in range(b.n_symbols):  # balanced: Σ size = 0 per symbol
        assert abs(b.size[b.pos_symbol == s].sum()) <= 1e-9 * np.abs(b.size[b.pos_symbol == s]).sum()
    risk = revalue(b, backend="cpu")
    assert risk.accounts.height == b.n_accounts and risk.positions.height == b.n_positions
    summary = risk.summary()
    assert summary.columns[:2] == ["asset", "status"]  # never sums BTC with USDT
    assert set(summary["asset"].to_list()) == {"BTC", "ETH", "USDT"}
    assert gpurisk.synthetic_book(800, seed=3, inverse_markets=2).frames()["accounts"].equals(b.frames()["accounts"])


# ---- same bits on every backend, chunk size and thread count ---------------------------------

@pytest.fixture(params=["gpu", "stand-in", "stand-in-strict"], scope="module")
def candidate(request):
    from gpurisk.backend import get_backend, gpu_available
    from gpurisk.parity import StandInBackend, StrictStandInBackend

    if request.param == "gpu":
        if not gpu_available():
            pytest.skip("needs a CUDA GPU (CuPy reports none); the stand-in twin runs instead")
        return get_backend("gpu")
    return StrictStandInBackend() if request.param == "stand-in-strict" else StandInBackend()


@pytest.mark.parametrize("venue", ["binance", "bybit", "bitmex", "okx"])
def test_inverse_book_same_bits_on_every_backend_and_chunking(candidate, venue):
    from gpurisk.backend import CpuBackend
    from gpurisk.parity import compare, risk_arrays

    book = gpurisk.synthetic_book(1_500, seed=9, isolated_share=0.3, stressed_share=0.2, inverse_markets=3)
    marks = book.mark_price * np.where(book.inverse == 1, 0.8, 1.1)
    ref = risk_arrays(gpurisk.Engine(book, venue=venue, backend=CpuBackend(threads=os.cpu_count() or 1)).revalue(marks))
    for options in ({}, {"chunk_positions": 777}):
        got = risk_arrays(gpurisk.Engine(book, venue=venue, backend=candidate, **options).revalue(marks))
        mismatches = compare(ref, got)
        assert not mismatches, "\n".join(map(str, mismatches[:10]))


def test_shards_keep_an_accounts_wallets_together_and_match_one_machine(tmp_path):
    from gpurisk.distributed import read_sharded_book, shard_bounds, split_book, write_sharded

    book = gpurisk.synthetic_book(600, seed=2, inverse_markets=2)
    for n in (2, 3, 7):
        bounds = shard_bounds(book, n)
        for cut in bounds[1:-1]:  # never between two wallets of one account
            assert book.account_id[cut - 1] != book.account_id[cut]
        parts = split_book(book, n)
        assert sum(p.n_accounts for p in parts) == book.n_accounts
        whole = revalue(book, venue="bitmex", backend="cpu")
        pieces = [revalue(p, venue="bitmex", backend="cpu").accounts for p in parts]
        assert pl.concat(pieces).equals(whole.accounts)
    back = read_sharded_book(write_sharded(book, tmp_path / "sharded", 5))
    r1, r2 = revalue(back, backend="cpu"), revalue(book, backend="cpu")
    assert r1.accounts.equals(r2.accounts) and r1.positions.equals(r2.positions)


# ---- a hand-built book, strictly against the oracle -----------------------------------------------

def _coin_book():
    """Two BTC-settled markets (a perpetual and a quarterly) in one pool, an ETH market, a linear
    market beside them; coin tiers whose tier at the liquidation price differs from the tier at
    the mark (long and short), isolated and cross positions, an idle wallet."""
    btc_tiers = [(0.0, 0.004, 125.0), (5.0, 0.005, 100.0), (10.0, 0.01, 50.0), (20.0, 0.025, 20.0), (50.0, 0.05, 10.0)]
    eth_tiers = [(0.0, 0.005, 100.0), (100.0, 0.01, 50.0), (1000.0, 0.025, 20.0)]
    tiers = ([dict(symbol=s, notional_floor=f, maint_margin_rate=r, max_leverage=lv)
              for s in ("BTCUSD_PERP", "BTCUSD_250328") for f, r, lv in btc_tiers]
             + [dict(symbol="ETHUSD_PERP", notional_floor=f, maint_margin_rate=r, max_leverage=lv) for f, r, lv in eth_tiers]
             + [dict(symbol="BTCUSDT", notional_floor=0.0, maint_margin_rate=0.004, max_leverage=125.0)])
    markets = [dict(symbol="BTCUSD_PERP", mark_price=50_000.0, contract_size=100.0, contract_type="inverse"),
               dict(symbol="BTCUSD_250328", mark_price=51_000.0, contract_size=100.0, contract_type="inverse"),
               dict(symbol="ETHUSD_PERP", mark_price=2_500.0, contract_size=10.0, contract_type="inverse"),
               dict(symbol="BTCUSDT", mark_price=50_000.0, contract_size=1.0, contract_type="linear")]
    accounts = [dict(account_id=1, wallet_balance=2.0, asset="BTC"),     # long: the coin notional rises at LP
                dict(account_id=2, wallet_balance=1.5, asset="BTC"),     # short: it falls at LP
                dict(account_id=3, wallet_balance=0.9, asset="BTC"),     # perp + quarterly in one pool
                dict(account_id=3, wallet_balance=500.0, asset="USDT"),
                dict(account_id=3, wallet_balance=4.0, asset="ETH"),
                dict(account_id=4, wallet_balance=0.0, asset="BTC"),     # isolated only
                dict(account_id=5, wallet_balance=10.0, asset="ETH")]    # idle
    positions = [dict(account_id=1, symbol="BTCUSD_PERP", size=4_500.0, entry_price=52_000.0),
                 dict(account_id=2, symbol="BTCUSD_PERP", size=-5_500.0, entry_price=49_000.0),
                 dict(account_id=3, symbol="BTCUSD_PERP", size=1_500.0, entry_price=51_000.0),
                 dict(account_id=3, symbol="BTCUSD_250328", size=-700.0, entry_price=50_500.0),
                 dict(account_id=3, symbol="ETHUSD_PERP", size=-30_000.0, entry_price=2_400.0),
                 dict(account_id=3, symbol="BTCUSDT", size=0.2, entry_price=49_000.0),
                 dict(account_id=4, symbol="BTCUSD_PERP", size=-1_000.0, entry_price=50_000.0,
                      margin_mode="isolated", isolated_margin=0.1)]
    for p in positions:
        p.setdefault("margin_mode", "cross")
        p.setdefault("isolated_margin", 0.0)
    return dict(markets=markets, tiers=tiers, accounts=accounts, positions=positions)


@pytest.mark.parametrize("venue", ["binance", "bybit", "bitmex", "gate", "hyperliquid"])
def test_hand_built_coin_book_strictly_matches_the_oracle(venue):
    book = _coin_book()
    risk = revalue(engine_book(book), venue=venue, backend="cpu")
    errs = oracle.compare(risk, oracle_of(book, venue), strict=True)
    assert not errs, "\n".join(errs[:10])
    pos = {r["account_id"]: r for r in risk.positions.filter(symbol="BTCUSD_PERP").to_dicts()}
    if venue == "binance":  # the tier at the liquidation price is not the tier at the mark
        tier_at = lambda n: sum(f <= n for f in (5.0, 10.0, 20.0, 50.0))  # noqa: E731
        assert tier_at(4_500 * 100 / 50_000) != tier_at(4_500 * 100 / pos[1]["liq_price"])
        assert tier_at(5_500 * 100 / 50_000) != tier_at(5_500 * 100 / pos[2]["liq_price"])


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_inverse_book_directory_round_trip(tmp_path, fmt):
    book = gpurisk.synthetic_book(150, seed=6, inverse_markets=1)
    back = gpurisk.read_book(book.write(tmp_path / "b", format=fmt))
    assert back.assets == book.assets and back.inverse.tolist() == book.inverse.tolist()
    assert np.array_equal(back.account_asset, book.account_asset)
    r1, r2 = revalue(back, backend="cpu"), revalue(book, backend="cpu")
    assert r1.accounts.equals(r2.accounts) and r1.positions.equals(r2.positions)


# ---- funding on coin-margined positions --------------------------------------------------------

def test_inverse_funding_is_paid_in_the_coin_on_the_position_value():
    """Funding = position value × funding rate, the value of an inverse position in its coin
    (BitMEX's "Funding Amount = Mark Value × Funding Rate", test_bitmex_perpetual_guide_long_xbtusd_example).
    Account 7 holds 200 BTCUSD contracts of 100 USD at a mark of 50,000: value 0.4 BTC, and
    0.5 BTCUSDT (linear): value 25,000 USDT; each pool pays in its own asset."""
    b = mixed_book()
    r = gpurisk.apply_funding(b, {"BTCUSD": 0.0001, "BTCUSDT": 0.0001}, backend="cpu")
    acc = {(a["account_id"], a["asset"]): a for a in r.accounts.to_dicts()}
    assert acc[(7, "BTC")]["funding_paid"] == pytest.approx(200 * 100 / 50_000 * 0.0001, rel=1e-15)
    assert acc[(7, "USDT")]["funding_paid"] == pytest.approx(0.5 * 50_000 * 0.0001, rel=1e-15)
    assert acc[(3, "BTC")]["funding_paid"] == pytest.approx(-100 * 100 / 50_000 * 0.0001, rel=1e-15)  # a short receives
    assert acc[(9, "ETH")]["funding_paid"] == 0.0
    assert r.by_symbol.select("symbol", "asset").rows() == [("BTCUSD", "BTC"), ("BTCUSDT", "USDT")]
    assert r.book.wallet[b.account_asset == b.assets.index("BTC")].tolist() == pytest.approx(
        [2.0 + 100 * 100 / 50_000 * 0.0001, 1.0 - 200 * 100 / 50_000 * 0.0001], rel=1e-15)
    assert set(r.rounding_by_asset) == {"BTC", "ETH", "USDT"}


@settings(max_examples=40, **SETTINGS)
@given(oracle.book_strategy(inverse=True), st.data())
def test_inverse_funding_conserves_money_per_asset_exactly(rows, data):
    from decimal import Decimal, localcontext

    book = engine_book(rows)
    rates = {s: data.draw(st.sampled_from([0.0, 1e-4, -3.7e-4, 0.01])) for s in book.symbols}
    r = gpurisk.apply_funding(book, rates, backend="cpu")
    inv = book.inverse[book.pos_symbol] == 1
    p, cs = book.mark_price[book.pos_symbol], book.contract_size[book.pos_symbol]
    n = np.where(inv, np.abs(book.size) * cs / p, np.abs(book.size) * p * cs)
    rate = np.array([rates[s] for s in book.symbols])[book.pos_symbol]
    assert np.array_equal(r.payments, np.sign(book.size) * (rate * n))
    pos_asset = book.settle_asset[book.pos_symbol]
    with localcontext() as ctx:
        ctx.prec = 400
        D = lambda xs: sum((Decimal(float(x)) for x in xs), Decimal(0))  # noqa: E731
        for k in range(len(book.assets)):  # each asset's money is conserved on its own
            a, q = book.account_asset == k, pos_asset == k
            gap = (D(book.wallet[a]) + D(book.isolated_margin[q]) - D(r.book.wallet[a]) - D(r.book.isolated_margin[q])
                   - D(r.payments[q]) - D(r.rounding[a]))
            scale = D(np.abs(book.wallet[a])) + D(book.isolated_margin[q]) + D(np.abs(r.payments[q])) + 1
            assert abs(gap) <= scale * Decimal(2) ** -100, (book.assets[k], gap)


# ---- stress: insurance and ADL in the coin -----------------------------------------------------

def _coin_pair(wallet_long=0.05, policy_book=None):
    """BTCUSD (1 USD a contract): account 1 long 10,000 at 10,000 with 0.05 BTC; account 2 short
    10,000 at 10,000 with 10 BTC. One asset (BTC): stress runs."""
    return Book.from_frames(
        markets=pl.DataFrame({"symbol": ["BTCUSD"], "mark_price": [10_000.0], "contract_type": ["inverse"]}),
        tiers=pl.DataFrame({"symbol": ["BTCUSD"], "notional_floor": [0.0], "maint_margin_rate": [0.005],
                            "max_leverage": [100.0]}),
        accounts=pl.DataFrame({"account_id": [1, 2], "wallet_balance": [wallet_long, 10.0], "asset": ["BTC", "BTC"]}),
        positions=pl.DataFrame({"account_id": [1, 2], "symbol": ["BTCUSD", "BTCUSD"], "size": [10_000.0, -10_000.0],
                                "entry_price": [10_000.0, 10_000.0]}))


def test_inverse_takeover_insurance_and_adl_in_the_coin():
    """A −10% move (9,000) bankrupts the long: equity 0.05 + 10,000·(1/10,000 − 1/9,000) < 0.
    Its bankruptcy price 1/(1/10,000 + 0.05/10,000) = 9,523.81; taken over there and sold at
    9,000 the loss is 10,000·(1/9,000 − 1/9,523.81) BTC, paid by the fund (1 BTC) or, without
    one, socialized on the short, whose fill at the bankruptcy price gives up that much."""
    book = _coin_pair()
    scen = pl.DataFrame({"scenario": [1], "symbol": ["BTCUSD"], "shock": [-0.1]})
    bp = 1 / (1 / 10_000 + 0.05 / 10_000)
    loss = 10_000 * (1 / 9_000 - 1 / bp)
    funded = gpurisk.stress(book, scen, venue="binance", backend="cpu", insurance_fund=1.0).summary.row(0, named=True)
    assert funded["deficit"] == pytest.approx(loss, rel=1e-12)
    assert funded["insurance_used"] == pytest.approx(loss, rel=1e-12)
    assert funded["insurance_left"] == pytest.approx(1.0 - loss, rel=1e-12)
    assert funded["notional_liquidated"] == pytest.approx(10_000 / 9_000, rel=1e-12)  # in BTC
    assert abs(funded["conservation_error"]) <= 1e-15
    res = gpurisk.stress(book, scen, venue="binance", backend="cpu", insurance_fund=0.0, policy="queue")
    s = res.summary.row(0, named=True)
    assert s["socialized_loss"] == pytest.approx(loss, rel=1e-12) and s["insurance_used"] == 0.0
    fill = res.adl_fills.row(0, named=True)
    assert (fill["bankrupt_account_id"], fill["counterparty_account_id"]) == (1, 2)
    assert fill["qty"] == 10_000.0 and fill["price"] == pytest.approx(bp, rel=1e-12)  # the price itself
    assert s["adl_notional"] == pytest.approx(10_000 / 9_000, rel=1e-12)
    assert abs(s["conservation_error"]) <= 1e-15


@settings(max_examples=25, **SETTINGS)
@given(st.integers(0, 10_000), st.sampled_from(["queue", "pro_rata", "capped_pro_rata", "rap"]),
       st.sampled_from(["binance", "bybit", "bitmex", "okx"]))
def test_inverse_stress_conserves_money_in_the_coin(seed, policy, venue):
    """A coin's pools (book.for_asset) with perpetual-like inverse markets: every scenario and
    cascade step conserves Σ(wallet + margin + upnl) + fund + external account, in BTC, and
    deficit = insurance used + socialized loss."""
    book = gpurisk.synthetic_book(400, seed=seed, stressed_share=0.3, inverse_markets=2).for_asset("BTC")
    assert book.inverse.all() and book.assets == ("BTC",)
    res = gpurisk.stress(book, gpurisk.shock_grid(-0.5, 0.5, 9), venue=venue, backend="cpu", insurance_fund=0.2,
                         policy=policy, steps=4, impact=Impact("sqrt", coefficient=0.2))
    failed, worst = conservation_check(res.summary)
    assert failed == 0, worst
    s = res.summary
    gap = (s["deficit"] - s["insurance_used"] - s["socialized_loss"]).abs()
    assert (gap <= 1e-9 * (s["deficit"].abs() + 1)).all()


def test_stress_runs_per_asset_and_each_assets_book_keeps_its_figures():
    book = gpurisk.synthetic_book(500, seed=4, inverse_markets=2)
    res = gpurisk.stress(book, gpurisk.shock_grid(-0.1, 0.1, 3), backend="cpu")  # per asset
    assert res.assets == book.assets and res.summary.height == 3 * len(book.assets)
    whole = revalue(book, venue="bybit", backend="cpu")
    for asset in book.assets:  # each asset's pools: the same figures as in the whole book
        part = book.for_asset(asset)
        assert part.assets == (asset,)
        got = revalue(part, venue="bybit", backend="cpu")
        want = whole.accounts.filter(pl.col("asset") == asset)
        assert got.accounts.drop("asset").equals(want.drop("asset"))
        cols = ["account_id", "size", "notional", "upnl", "maint_margin", "liq_price", "bankruptcy_price", "adl_score"]
        assert got.positions.select(cols).equals(whole.positions.filter(pl.col("asset") == asset).select(cols))
        gpurisk.stress(part, gpurisk.shock_grid(-0.2, 0.2, 3), backend="cpu")  # one asset: runs


def test_inverse_stress_same_bits_on_every_backend_and_thread_count(candidate):
    from gpurisk.backend import CpuBackend

    book = gpurisk.synthetic_book(600, seed=5, stressed_share=0.3, inverse_markets=1).for_asset("BTC")
    run = lambda backend, threads: gpurisk.stress(  # noqa: E731
        book, gpurisk.shock_grid(-0.4, 0.4, 7), venue="bitmex", backend=backend, insurance_fund=0.3, steps=3,
        impact=Impact("linear", coefficient=0.05), threads=threads)
    ref = run(CpuBackend(threads=os.cpu_count() or 1), 1)
    for backend, threads in ((candidate, 1), (CpuBackend(threads=1), 3)):
        got = run(backend, threads)
        for name in ("summary", "liquidations", "adl_fills", "prices"):
            assert getattr(got, name).equals(getattr(ref, name)), name


def test_inverse_restoring_reduction_hits_the_target_ratio_in_decimal():
    """Oracle (plain Decimal): the ladder's proportional reduction of a coin pool (a perpetual and
    a quarterly, both BTC-settled, 100 USD a contract) brings MM/equity to the target, with MM on
    the coin notionals |q|·cs/P and the perpetual's tier falling during the reduction."""
    from decimal import Decimal, localcontext

    from gpurisk.ladder import Ladder

    tiers = [(0.0, 0.004, 125.0), (5.0, 0.005, 100.0), (25.0, 0.01, 50.0), (100.0, 0.025, 20.0)]
    syms = ["BTCUSD_PERP", "BTCUSD_0328"]
    book = Book.from_frames(
        markets=pl.DataFrame({"symbol": syms, "mark_price": [50_000.0, 50_000.0], "contract_size": [100.0, 100.0],
                              "contract_type": ["inverse", "inverse"]}),
        tiers=pl.DataFrame([(s, *t) for s in syms for t in tiers],
                           schema=["symbol", "notional_floor", "maint_margin_rate", "max_leverage"], orient="row"),
        accounts=pl.DataFrame({"account_id": [1, 2], "wallet_balance": [1.2, 1_000.0], "asset": ["BTC", "BTC"]}),
        positions=pl.DataFrame({"account_id": [1, 1, 2, 2], "symbol": syms * 2,
                                "size": [20_000.0, 10_000.0, -20_000.0, -10_000.0], "entry_price": [50_000.0] * 4}))
    lad = Ladder(partial="target", target_ratio=0.5, max_partial_steps=1)
    res = gpurisk.stress(book, pl.DataFrame({"scenario": [0], "symbol": ["*"], "shock": [-0.015]}), backend="cpu",
                         ladder=lad)
    red = res.liquidations.filter(pl.col("action") == "reduce")
    assert red.height == 2
    with localcontext() as ctx:
        ctx.prec = 60
        p = Decimal(50_000) * Decimal("0.985")
        cs, e = Decimal(100), Decimal(50_000)
        size = {"BTCUSD_PERP": Decimal(20_000), "BTCUSD_0328": Decimal(10_000)}
        equity = Decimal("1.2") + sum(q * cs * (1 / e - 1 / p) for q in size.values())

        def mm(n):
            cum, prev, out = Decimal(0), Decimal(0), None
            for floor, rate, _ in tiers:
                f, r = Decimal(str(floor)), Decimal(str(rate))
                cum += f * (r - prev)
                prev = r
                if n >= f:
                    out = n * r - cum
            return out

        kept = {r["symbol"]: size[r["symbol"]] - Decimal(repr(r["qty"])) for r in red.iter_rows(named=True)}
        assert mm(size["BTCUSD_PERP"] * cs / p) > mm(Decimal(25)) > mm(kept["BTCUSD_PERP"] * cs / p)  # tier fell
        after = sum(mm(kept[s] * cs / p) for s in kept)
        assert abs(after / equity - Decimal("0.5")) < Decimal("1e-9")
        assert abs(kept["BTCUSD_PERP"] / size["BTCUSD_PERP"] - kept["BTCUSD_0328"] / size["BTCUSD_0328"]) < Decimal("1e-12")


# ---- live updates and the monitor on a coin's pools ---------------------------------------------

def test_inverse_fills_average_the_entry_harmonically_and_realise_pnl_in_the_coin():
    """Adding contracts keeps the coin value: entry = Σ contracts / Σ(contracts/price); reducing
    realises q·cs·(1/E − 1/P) BTC (Decimal oracle)."""
    from decimal import Decimal

    from gpurisk.book_updates import LiveBook

    live = LiveBook(_coin_pair(wallet_long=1.0))
    fills = [(5_000.0, 12_000.0), (-8_000.0, 11_000.0), (-9_000.0, 9_500.0), (1_500.0, 9_000.0), (-700.0, 8_800.0)]
    size, entry, wallet = Decimal(10_000), Decimal(10_000), Decimal(1)
    for qty, price in fills:
        live.apply([{"type": "fill", "account_id": 1, "symbol": "BTCUSD", "qty": qty, "price": price, "fee": 0.0001}])
        q, p = Decimal(str(qty)), Decimal(str(price))
        if size != 0 and (size > 0) != (q > 0):
            closed = min(abs(q), abs(size)) * (1 if size > 0 else -1)
            wallet += closed * (1 / entry - 1 / p)
            entry = p if abs(q) > abs(size) else entry
        else:
            entry = (size + q) / (size / entry + q / p)
        size += q
        wallet -= Decimal("0.0001")
        b = live.book
        i = int(np.flatnonzero(b.pos_account == 0)[0])
        assert b.size[i] == pytest.approx(float(size), rel=1e-12)
        assert b.entry[i] == pytest.approx(float(entry), rel=1e-12)
        assert b.wallet[0] == pytest.approx(float(wallet), rel=1e-12)


def test_monitor_on_a_coins_pools_matches_a_full_revaluation_at_every_step():
    from test_monitor import _random_update, assert_same_as_full

    from gpurisk.monitor import Monitor

    book = gpurisk.synthetic_book(900, seed=3, inverse_markets=2).for_asset("BTC")
    mon = Monitor(gpurisk.Engine(book, venue="bitmex", backend="cpu"), adl_top=4, subset_share=1.0)
    rng = np.random.default_rng(11)
    next_account = [10**9]
    for step in range(40):
        s = int(rng.integers(book.n_symbols))
        mon.inbox.put_mark(book.symbols[s], float(mon.marks[s] * np.exp(rng.normal(0, 0.03))))
        if step % 3 == 0:
            for _ in range(int(rng.integers(1, 5))):
                mon.inbox.put_update(_random_update(rng, mon.book, next_account))
        events = mon.step()
        assert events[-1]["type"] == "revaluation"
        assert_same_as_full(mon)
    assert mon.updates_applied > 5  # a book of several assets: tests/test_monitor_assets.py


def test_cli_stress_runs_one_asset_and_names_the_option(tmp_path, capsys):
    from gpurisk.cli import main

    book_dir = tmp_path / "book"
    assert main(["synth", str(book_dir), "--accounts", "300", "--inverse-markets", "2", "--seed", "5"]) == 0
    common = ["--grid", "-0.3", "0.3", "3", "--backend", "cpu", "--quiet", "--summary-only"]
    assert main(["stress", str(book_dir), *common, "--insurance-fund", "1"]) == 2  # one number, three assets
    assert "--insurance-fund BTC=AMOUNT" in capsys.readouterr().err
    assert main(["stress", str(book_dir), *common, "--insurance-fund", "BTC=0.5", "--out", str(tmp_path / "all")]) == 0
    every = pl.read_parquet(tmp_path / "all" / "summary.parquet")  # per (scenario, asset): test_stress_assets.py
    assert sorted(every["asset"].cast(pl.String).unique().to_list()) == ["BTC", "ETH", "USDT"]
    assert main(["stress", str(book_dir), *common, "--asset", "BTC", "--insurance-fund", "0.5",
                 "--out", str(tmp_path / "out")]) == 0
    summary = pl.read_parquet(tmp_path / "out" / "summary.parquet")
    assert summary.height == 3 and (summary["conservation_error"].abs() <= 1e-9).all()
    assert main(["stress", str(book_dir), *common, "--asset", "DOGE"]) == 2
    assert "no wallet or market in it" in capsys.readouterr().err


def test_bitmex_perpetual_guide_long_xbtusd_example():
    """BitMEX, "Perpetual Contracts Guide Examples" (bitmex.com/app/perpetualContractsGuideExamples,
    read 2026-11-28): long 15,000 XBTUSD (1 USD each) at 750: entry value 20 XBT; funding at
    0.25% with the mark at 750: 20 XBT × 0.25% = 0.05 XBT paid by the long, received by the short;
    closed at 800: PnL 15,000 × (1/750 − 1/800) = 1.25 XBT; total profit 1.2 XBT."""
    from gpurisk.book_updates import LiveBook

    book = Book.from_frames(
        markets=pl.DataFrame({"symbol": ["XBTUSD"], "mark_price": [750.0], "contract_type": ["inverse"]}),
        tiers=pl.DataFrame({"symbol": ["XBTUSD"], "notional_floor": [0.0], "maint_margin_rate": [0.005],
                            "max_leverage": [100.0]}),
        accounts=pl.DataFrame({"account_id": [1, 2], "wallet_balance": [5.0, 5.0], "asset": ["XBT", "XBT"]}),
        positions=pl.DataFrame({"account_id": [1, 2], "symbol": ["XBTUSD", "XBTUSD"], "size": [15_000.0, -15_000.0],
                                "entry_price": [750.0, 750.0]}))
    risk = revalue(book, venue="bitmex", backend="cpu")
    assert risk.positions["notional"].to_list() == pytest.approx([20.0, 20.0], rel=1e-15)  # XBT entry value
    funded = gpurisk.apply_funding(book, {"XBTUSD": 0.0025}, backend="cpu")
    assert funded.payments.tolist() == pytest.approx([0.05, -0.05], rel=1e-13)
    assert revalue(funded.book, venue="bitmex", backend="cpu", marks={"XBTUSD": 800.0}).positions["upnl"][0] == \
        pytest.approx(1.25, rel=1e-13)
    live = LiveBook(funded.book)
    live.apply([{"type": "fill", "account_id": 1, "symbol": "XBTUSD", "qty": -15_000.0, "price": 800.0}])
    assert live.book.wallet[0] - 5.0 == pytest.approx(1.2, rel=1e-12)  # 1.25 XBT − 0.05 XBT


def test_entry_notional_limit_is_in_the_coin_for_inverse_positions():
    """The per-position limit (schema.NOTIONAL_MAX) reads an inverse position's entry notional in
    the coin, |size|·contract_size/entry: 1e13 BTCUSD contracts at 49,000 are 2.04e10 BTC (the
    linear formula would read 4.9e19 and refuse them); at an entry of 1e-6 they are 1e21 BTC."""
    f = mixed_book().frames()
    inv = pl.col("symbol") == "BTCUSD"
    f["positions"] = f["positions"].with_columns(pl.when(inv).then(pl.lit(1e13)).otherwise(pl.col("size")).alias("size"))
    book = Book.from_frames(**f)
    assert book.size.max() == 1e13
    from gpurisk.book_updates import LiveBook

    live = LiveBook(book.for_asset("BTC"))  # a fill is checked by the same rule
    done = live.apply([{"type": "fill", "account_id": 7, "symbol": "BTCUSD", "qty": 1e13, "price": 50_000.0}])
    assert not done.rejected and live.book.size.max() == 2e13
    f["positions"] = f["positions"].with_columns(
        pl.when(inv).then(pl.lit(1e-6)).otherwise(pl.col("entry_price")).alias("entry_price"))
    with pytest.raises(BookError, match=r"positions.size: entry notional .*inverse: \|size\|·contract_size/entry_price.*"
                                        r"2 rows: row 0 \(account_id=3, symbol='BTCUSD'"):
        Book.from_frames(**f)
