"""What-if orders on inverse (coin-margined) markets and per-asset margin pools (README
"What-if orders", "Inverse contracts").

References:
- hand-worked coin arithmetic: the harmonic entry (the coin value kept), PnL realised in the
  coin, isolated margin in the coin, the liquidation price's closed form;
- the engine's own revaluation of the book with the order applied: the same bits, account row
  (the order's pool) and position row, under every per-asset venue;
- the independent Decimal oracle (tests/oracle.py, inverse formulas) revaluing the modified
  book: margin ratio, available balance, liquidation price and the initial-margin check, in
  hypothesis property tests over small random books with linear and inverse markets;
- the LiveBook fill (gpurisk/book_updates.py): the same entry after an add, bit for bit;
- refusals: an order with no wallet in its market's asset, portfolio accounts on inverse
  markets, array rows of the wrong pool (pooled collateral: tests/test_collateral.py).
"""

from __future__ import annotations

import os
import sys
from decimal import Decimal, localcontext

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
from oracle import book_strategy, engine_book, oracle_revalue  # noqa: E402
from test_inverse import mixed_book  # noqa: E402
from test_whatif import (  # noqa: E402
    ALL_VENUES,
    assert_is_the_revaluation_of_the_modified_book,
    assert_rows_are_revaluations,
    draw_order,
    modified_frames,
    ticked_book,
)

import gpurisk  # noqa: E402
from gpurisk import Book, BookError, Engine  # noqa: E402
from gpurisk.venue import PRESETS  # noqa: E402
from gpurisk.whatif import WHAT_IF_OUTPUT, what_if_arrays  # noqa: E402


def orders(*rows):
    cols = ("account_id", "symbol", "size", "price", "margin_mode", "isolated_margin")
    data = {c: [r[i] if i < len(r) else None for r in rows] for i, c in enumerate(cols)}
    return pl.DataFrame(data, schema={"account_id": pl.Int64, "symbol": pl.String, "size": pl.Float64,
                                      "price": pl.Float64, "margin_mode": pl.String, "isolated_margin": pl.Float64})


# ------------------------------------------------------------------ hand-worked examples


def test_worked_inverse_orders_in_the_coin_pool():
    # mixed_book: BTCUSD inverse (100 USD a contract, settled in BTC), BTCUSDT linear; marks
    # 50,000; one tier each, MM 0.5%, 100x. Account 7: BTC wallet 1.0 with BTCUSD +200 @ 49,000
    # (cross), USDT wallet 10,000 with BTCUSDT +0.5 @ 48,000. Account 3: BTC wallet 2.0 with
    # BTCUSD -100 @ 51,000.
    eng = Engine(mixed_book(), venue="binance", backend="cpu")
    out = eng.what_if(orders(
        (7, "BTCUSD", 100.0, 50_500.0),               # add: harmonic entry
        (7, "BTCUSD", -50.0, 51_000.0),               # reduce: PnL in BTC
        (7, "BTCUSD", -300.0, 50_000.0),              # flip: all of +200 closed, short 100 @ 50,000
        (3, "BTCUSD", 100.0, 50_000.0, "isolated"),   # new isolated long, default margin
        (7, "BTCUSDT", 0.5, 50_000.0),                # the USDT pool: linear, its own wallet
    )).to_dicts()
    add, red, flip, iso, lin = out
    assert [r["asset"] for r in out] == ["BTC", "BTC", "BTC", "BTC", "USDT"]
    # The entry keeps the coin value: 300·100/E1 = 200·100/49,000 + 100·100/50,500.
    e1 = 300 / (200 / 49_000 + 100 / 50_500)
    assert add["size"] == 300.0 and add["entry_price"] == pytest.approx(e1, rel=1e-15)
    assert add["realised_pnl"] == 0.0 and add["wallet_balance"] == 1.0
    assert add["notional"] == pytest.approx(300 * 100 / 50_000, rel=1e-15)       # 0.6 BTC
    assert add["upnl"] == pytest.approx(300 * 100 * (1 / e1 - 1 / 50_000), rel=1e-12)
    assert add["maint_margin"] == pytest.approx(0.005 * 0.6, rel=1e-14)
    assert add["init_margin"] == pytest.approx(0.6 / 100, rel=1e-14)
    assert add["equity"] == pytest.approx(1.0 + add["upnl"], rel=1e-15)
    assert add["margin_ratio"] == pytest.approx(0.003 / add["equity"], rel=1e-14)
    assert add["available_balance"] == pytest.approx(add["equity"] - 0.006, rel=1e-14)
    # Alone in its pool: 1 + 30,000·(1/E1 − 1/P) = 0.005·30,000/P, so P = 30,150 / (1 + 30,000/E1),
    # reported on the trigger side (at or just below the root, for a long).
    lp = 30_150 / (1 + 30_000 / e1)
    assert add["liq_price"] == pytest.approx(lp, rel=1e-12) and add["liq_price"] <= lp * (1 + 1e-15)
    assert red["size"] == 150.0 and red["entry_price"] == 49_000.0
    assert red["realised_pnl"] == pytest.approx(50 * 100 * (1 / 49_000 - 1 / 51_000), rel=1e-14)
    assert red["wallet_balance"] == pytest.approx(1.0 + red["realised_pnl"], rel=1e-15)
    assert flip["size"] == -100.0 and flip["entry_price"] == 50_000.0
    assert flip["realised_pnl"] == pytest.approx(200 * 100 * (1 / 49_000 - 1 / 50_000), rel=1e-14)
    # Isolated: the IM of 100 contracts at 50,000 and 100x, 0.002 BTC, moves from the BTC wallet.
    assert iso["isolated_margin"] == pytest.approx(0.002, rel=1e-15)
    assert iso["wallet_balance"] == pytest.approx(2.0 - 0.002, rel=1e-15)
    assert iso["im_check"]
    # The linear order sees the USDT wallet only (not the BTC one): equity 10,000 + 1·2,000·... .
    assert lin["wallet_balance"] == 10_000.0 and lin["entry_price"] == 49_000.0
    assert lin["equity"] == pytest.approx(10_000.0 + 1.0 * (50_000 - 49_000), rel=1e-15)
    assert all(r["im_check"] for r in out)
    assert list(eng.what_if(orders((7, "BTCUSD", 1.0, 50_000.0))).columns) == list(WHAT_IF_OUTPUT)


def test_initial_margin_check_in_the_coin():
    # Account 3's BTC pool: 2 BTC, short 100 BTCUSD. A buy of 10,100 contracts (long 10,000:
    # 20 BTC of notional at 100x, 0.2 BTC of IM) passes; 200,100 (400 BTC, 4 BTC of IM) fails.
    eng = Engine(mixed_book(), venue="binance", backend="cpu")
    ok, too_big = eng.what_if(orders((3, "BTCUSD", 10_100.0, 50_000.0), (3, "BTCUSD", 200_100.0, 50_000.0))).to_dicts()
    assert ok["im_check"] and ok["available_balance"] > 0
    assert ok["account_init_margin"] == pytest.approx(0.2, rel=1e-14)
    assert not too_big["im_check"] and too_big["available_balance"] < 0
    assert too_big["account_init_margin"] == pytest.approx(4.0, rel=1e-14)


def test_entry_after_an_add_equals_the_live_book_fill():
    """One formula: the what-if's entry after an add is the entry a LiveBook fill leaves."""
    from gpurisk.book_updates import LiveBook

    book = mixed_book()
    rng = np.random.default_rng(3)
    for _ in range(20):
        qty = float(rng.integers(1, 10_000))
        price = float(np.round(50_000 * (1 + rng.normal() * 0.05), 1))
        want = Engine(book, backend="cpu").what_if(orders((7, "BTCUSD", qty, price))).row(0, named=True)
        live = LiveBook(book.for_asset("BTC"))
        live.apply([{"type": "fill", "account_id": 7, "symbol": "BTCUSD", "qty": qty, "price": price}])
        b = live.book
        i = int(np.flatnonzero((b.account_id[b.pos_account] == 7) & (b.pos_symbol == 0))[0])
        assert b.entry[i] == want["entry_price"] and b.size[i] == want["size"]


# ------------------------------------------------------------------ against full revaluation


def pool_orders(book: Book, n: int, seed: int) -> pl.DataFrame:
    """Random orders (adds, reduces, closes, flips, new positions; cross and isolated), each on
    a margin pool the book holds: (account_id, a market settled in that pool's asset)."""
    rng = np.random.default_rng(seed)
    rows = []
    while len(rows) < n:
        if rng.random() < 0.7 and book.n_positions:
            i = int(rng.integers(book.n_positions))
            a, s, iso, q0 = int(book.pos_account[i]), int(book.pos_symbol[i]), int(book.isolated[i]), book.size[i]
        else:
            a = int(rng.integers(book.n_accounts))
            same = np.flatnonzero(book.settle_asset == book.account_asset[a])
            if not same.size:
                continue
            s, iso, q0 = int(rng.choice(same)), int(rng.random() < 0.25), 0.0
            held = [j for j in range(book.pos_start[a], book.pos_start[a + 1])
                    if book.pos_symbol[j] == s and book.isolated[j] == iso]
            q0 = book.size[held[0]] if held else 0.0
        base = abs(q0) if q0 else float(rng.integers(1, 50))
        sgn = np.sign(q0) if q0 else rng.choice([-1.0, 1.0])
        dq = float({0: sgn * base * 0.5, 1: -sgn * base * 0.3, 2: -q0, 3: -sgn * base * 1.7}[int(rng.integers(4))])
        dq = dq or float(sgn * base)
        if not book.inverse[s]:
            dq /= 100  # linear lots are fractions of a coin
        rows.append(dict(account_id=int(book.account_id[a]), symbol=book.symbols[s], size=dq,
                         price=float(book.mark_price[s] * (1 + rng.normal() * 0.02)),
                         margin_mode=("cross", "isolated")[iso]))
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def inverse_book() -> Book:
    return ticked_book(gpurisk.synthetic_book(150, seed=11, n_symbols=4, inverse_markets=2))


@pytest.mark.parametrize("venue", ALL_VENUES)
def test_against_full_revaluation_of_the_modified_book(inverse_book, venue):
    """Every per-asset venue: each what-if row is the revaluation of the book with the order
    applied, bit for bit: the order's pool (account row) and the resulting position."""
    book = inverse_book
    assert book.inverse.any() and len(book.assets) > 1
    res = Engine(book, venue=venue, backend="cpu").what_if(pool_orders(book, 80, seed=3))
    assert set(res["asset"].cast(pl.String)) == set(book.assets)
    kinds = set()
    for row in res.iter_rows(named=True):
        if row["margin_mode"] == "isolated" and row["size"] != 0.0 and not row["isolated_margin"] > 0.0:
            continue  # no valid book row to revalue (see test_whatif's property test)
        assert_is_the_revaluation_of_the_modified_book(book, venue, row)
        kinds.add((str(row["asset"]) != "USDT", row["liq_price"] is not None))
    assert (True, True) in kinds and (False, True) in kinds, kinds


def test_same_bits_on_thread_counts_and_chunked_engines(inverse_book):
    from gpurisk.backend import CpuBackend

    book = inverse_book
    frame = pool_orders(book, 400, seed=8)
    runs = [Engine(book, backend=CpuBackend(threads=t), chunk_positions=c).what_if(frame)
            for t, c in ((1, None), (2, None), (2, 100))]
    assert runs[0].equals(runs[1]) and runs[0].equals(runs[2])


# ------------------------------------------------------------------ against the Decimal oracle


@st.composite
def inverse_book_and_orders(draw):
    book = draw(book_strategy(max_accounts=4, max_symbols=3, max_tiers=4, inverse=True))
    settle = {m["symbol"]: m.get("settle_asset", "USDT") for m in book["markets"]}
    pools = [(a["account_id"], a.get("asset", "USDT")) for a in book["accounts"]]
    rows = []
    for _ in range(draw(st.integers(1, 4))):
        aid, asset = draw(st.sampled_from(pools))
        markets = [m for m in book["markets"] if settle[m["symbol"]] == asset]
        if not markets:
            continue
        m = draw(st.sampled_from(markets))
        mode = draw(st.sampled_from(["cross", "cross", "isolated"]))
        held = [p for p in book["positions"] if (p["account_id"], p["symbol"], p["margin_mode"])
                == (aid, m["symbol"], mode)]
        dq, px = draw_order(draw, held[0]["size"] if held else 0.0, m["mark_price"])
        rows.append(dict(account_id=aid, symbol=m["symbol"], size=dq, price=px, margin_mode=mode))
    if not rows:  # the first position's pool always exists
        p = book["positions"][0]
        m = next(m for m in book["markets"] if m["symbol"] == p["symbol"])
        rows.append(dict(account_id=p["account_id"], symbol=p["symbol"], size=-p["size"] / 2,
                         price=m["mark_price"], margin_mode=p["margin_mode"]))
    venue = draw(st.sampled_from(sorted(v for v in PRESETS if v in ALL_VENUES)))
    return book, rows, venue


def _decimal_trade(q0, e0, dq, px, cs, inverse: bool):
    """New size, entry and realised PnL of README "What-if orders", in Decimal: the harmonic
    entry and PnL in the coin for an inverse market."""
    q0, e0, dq, px, cs = (Decimal(x) for x in (q0, e0, dq, px, cs))
    q1 = q0 + dq
    adds = q0 == 0 or (q0 > 0) == (dq > 0)
    flips = not adds and abs(dq) > abs(q0)
    closed = Decimal(0) if adds else (q0 if flips else -dq)
    realised = closed * cs * (1 / e0 - 1 / px) if inverse else closed * (px - e0) * cs
    if adds and q0 != 0:
        entry = q1 / (q0 / e0 + dq / px) if inverse else (q0 * e0 + dq * px) / q1
    else:
        entry = px if (adds or flips) else e0
    increases = q1 != 0 and (q0 == 0 or flips or abs(q1) > abs(q0))
    return q1, entry, realised, increases


def _near(got, want: Decimal, tol: Decimal) -> bool:
    return abs(Decimal(got) - want) <= tol


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inverse_book_and_orders())
def test_against_the_decimal_oracle(case):
    """The trade in Decimal (harmonic entry, coin PnL); then the modified book (the engine's
    floats) revalued exactly by the oracle: the pool's equity, margins, margin ratio and
    available balance, the position's liquidation price, and the initial-margin check."""
    book_rows, order_rows, venue = case
    book = engine_book(book_rows)
    res = Engine(book, venue=venue, backend="cpu").what_if(pl.DataFrame(order_rows)).to_dicts()
    market = {m["symbol"]: m for m in book_rows["markets"]}
    for o, r in zip(order_rows, res):
        m = market[o["symbol"]]
        inverse = m.get("contract_type") == "inverse"
        assert str(r["asset"]) == m.get("settle_asset", "USDT")
        held = [p for p in book_rows["positions"] if (p["account_id"], p["symbol"], p["margin_mode"])
                == (o["account_id"], o["symbol"], o["margin_mode"])]
        q0, e0 = (held[0]["size"], held[0]["entry_price"]) if held else (0.0, o["price"])
        cs = m.get("contract_size", 1.0)
        with localcontext() as ctx:
            ctx.prec = 300
            q1, entry, realised, increases = _decimal_trade(q0, e0, o["size"], o["price"], cs, inverse)
            assert abs(Decimal(r["size"]) - q1) <= Decimal(2.0 ** -52) * (abs(Decimal(q0)) + abs(Decimal(o["size"])))
            if r["size"] != 0.0:
                assert _near(r["entry_price"], entry, Decimal(1e-12) * entry), (r["entry_price"], entry)
            value = (1 / Decimal(o["price"]) + 1 / Decimal(e0)) if inverse else (Decimal(o["price"]) + Decimal(e0))
            assert _near(r["realised_pnl"], realised, Decimal(1e-12) * abs(Decimal(q0)) * value * Decimal(cs))
        mod = modified_frames(book, r)
        orc = oracle_revalue(*(mod[t] for t in ("markets", "tiers", "accounts", "positions")), venue=venue)
        a = orc.account_by_pool[(o["account_id"], str(r["asset"]))]
        scale = a["_tol"]["equity"] * 1000 + Decimal(1e-9) * (abs(a["equity"]) + a["maint_margin"] + a["init_margin"]
                                                              + abs(a["wallet_balance"]) + Decimal(1e-6))
        for mine, theirs in (("equity", "equity"), ("account_maint_margin", "maint_margin"),
                             ("account_close_fee", "close_fee"), ("account_init_margin", "init_margin"),
                             ("available_balance", "available_balance")):
            assert _near(r[mine], a[theirs], scale), (mine, r[mine], a[theirs])
        if a["equity"] > 1000 * a["_tol"]["equity"] + scale:  # the ratio is well defined
            ratio_tol = 1000 * a["_tol"]["margin_ratio"] + Decimal(1e-9) * (abs(a["margin_ratio"]) + Decimal(1e-12))
            assert _near(r["margin_ratio"], a["margin_ratio"], ratio_tol), (r["margin_ratio"], a["margin_ratio"])
        assert r["status"] in a["_status_ok"] or a["_tol"]["equity"] * 1000 >= abs(a["equity"])
        # The initial-margin check from the oracle's figures, away from its boundaries.
        iso_ok = True
        if r["size"] != 0.0:
            p = orc.position_by_key[(o["account_id"], o["symbol"], o["margin_mode"])]
            for c in ("notional", "upnl", "maint_margin", "close_fee", "init_margin"):
                assert _near(r[c], p[c], 1000 * p["_tol"][c] + Decimal(1e-12) * (abs(p[c]) + Decimal(1e-9))), c
            want, got, tol = p["_raw"]["liq_price"], r["liq_price"], p["_tol"]["liq_price"]
            if want is not None and want > 0 and tol != Decimal("Infinity") and got is not None:
                assert _near(got, want, 1000 * tol + Decimal(1e-9) * want), (got, want, tol)
            elif want is not None and want > 0 and tol != Decimal("Infinity") and want > 1000 * tol:
                assert got is not None, (o, want)
            if o["margin_mode"] == "isolated":
                room = p["_eq"].v - p["init_margin"]
                if abs(room) <= 1000 * (p["_eq"].e + p["_tol"]["init_margin"]) + Decimal(1e-12) * abs(p["_eq"].v):
                    continue  # on the boundary: float64 may fall either side
                iso_ok = room >= 0
        avail = a["available_balance"]
        if abs(avail) <= scale:
            continue
        assert r["im_check"] == (not increases or (avail >= 0 and iso_ok)), (o, r, avail)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inverse_book_and_orders(), st.sampled_from(ALL_VENUES))
def test_property_what_if_is_the_revaluation_of_the_modified_book(case, venue):
    """Small random books with linear and inverse markets and wallets in several assets,
    under any per-asset venue: every what-if row is the revaluation of the modified book."""
    book_rows, order_rows, _ = case
    book = engine_book(book_rows)
    assert_rows_are_revaluations(book, venue, Engine(book, venue=venue, backend="cpu").what_if(pl.DataFrame(order_rows)))


# ------------------------------------------------------------------ refusals and bad input


def test_order_without_a_wallet_in_its_asset_is_refused_by_row():
    eng = Engine(mixed_book(), backend="cpu")  # account 3: BTC wallet only; 9: ETH only
    with pytest.raises(BookError) as exc:
        eng.what_if(orders((7, "BTCUSD", 1.0, 50_000.0), (3, "BTCUSDT", 0.1, 50_000.0), (9, "BTCUSD", 1.0, 50_000.0),
                           (99, "BTCUSD", 1.0, 50_000.0)))
    text = str(exc.value)
    assert "orders.account_id: needs a wallet in its market's settle asset" in text
    assert "2 rows: row 1 (account_id=3, symbol='BTCUSDT'); row 2 (account_id=9, symbol='BTCUSD')" in text
    assert "orders.account_id: must be an account of the book — 1 row: row 3 (account_id=99" in text


def test_array_rows_must_be_the_pool_of_the_symbols_asset():
    book = mixed_book()  # rows: (3, BTC), (7, BTC), (7, USDT), (9, ETH); symbols BTCUSD, BTCUSDT
    eng = Engine(book, backend="cpu")
    r = what_if_arrays(eng, [1, 2], [0, 1], [100.0, 0.1], [50_000.0, 50_000.0])
    frame = eng.what_if(orders((7, "BTCUSD", 100.0, 50_000.0), (7, "BTCUSDT", 0.1, 50_000.0)))
    assert np.array_equal(r.available, frame["available_balance"].to_numpy())
    with pytest.raises(BookError, match=r"orders.account_index: must be a row \(margin pool\) in the symbol's settle "
                                        r"asset.* 1 row: row 1"):
        what_if_arrays(eng, [1, 1], [0, 1], [100.0, 0.1], [50_000.0, 50_000.0])


def test_inverse_order_notional_is_limited_in_the_coin():
    eng = Engine(mixed_book(), backend="cpu")
    # 1e13 contracts of 100 USD at 50,000: 2e10 BTC, within the 1e15 limit (the linear formula
    # would read 5e19); at 0.001 USD a contract... a price of 1e-6 makes it 1e21 BTC: refused.
    ok = eng.what_if(orders((7, "BTCUSD", 1e13, 50_000.0)))
    assert ok["notional"][0] == pytest.approx(2e10)
    with pytest.raises(BookError, match=r"orders.size: order notional .*inverse: \|size\|·contract_size/price.* row 0"):
        eng.what_if(orders((7, "BTCUSD", 1e13, 1e-6)))


def test_portfolio_accounts_may_not_trade_inverse_markets():
    from gpurisk.venue import get_venue
    from test_portfolio import model_of

    f = mixed_book().frames()  # account 9 in portfolio mode, with an idle BTC wallet beside its ETH one
    f["accounts"] = pl.concat([f["accounts"], pl.DataFrame({"account_id": [9], "wallet_balance": [1.0],
                                                            "asset": ["BTC"]})]).with_columns(
        pl.when(pl.col("account_id") == 9).then(pl.lit("portfolio")).otherwise(pl.lit(None)).alias("margin_model"))
    model = model_of([dict(symbol="BTCUSDT", risk_group="BTC", price_range=0.1, shocks=5, offset_rate=0.0,
                           liquidity_threshold=1e9, liquidity_rate=0.0)])
    eng = Engine(Book.from_frames(**f), venue=get_venue("binance").with_(portfolio=model), backend="cpu")
    with pytest.raises(BookError, match=r"orders.symbol: accounts in portfolio mode trade linear markets only.* "
                                        r"row 1 \(account_id=9, symbol='BTCUSD'\)"):
        eng.what_if(orders((7, "BTCUSD", 1.0, 50_000.0), (9, "BTCUSD", 1.0, 50_000.0)))
    with pytest.raises(BookError, match=r"orders.symbol_index: accounts in portfolio mode trade linear markets only"):
        what_if_arrays(eng, [1, 3], [0, 0], [1.0, 1.0], [50_000.0, 50_000.0])
