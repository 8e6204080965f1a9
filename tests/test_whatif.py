"""What-if orders (gpurisk/whatif.py, kernels/whatif.cu).

Three references:
- the trade itself (new size, entry, realised PnL, wallet and isolated margin) against plain
  Decimal arithmetic of README "What-if orders";
- the account and position after the order against the independent Decimal oracle
  (tests/oracle.py) revaluing the modified book exactly, under every venue preset;
- against the engine's own full revaluation of the modified book, under every venue preset
  and named variant: the same bits, account row and position row (the what-if sums the
  account again in storage order with the traded position in its place, as the revaluation
  does, and solves the liquidation price with the same root and trigger-side search).
"""

from __future__ import annotations

import math
import os
import sys
from decimal import Decimal, localcontext

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
from books import tiny_frames  # noqa: E402
from oracle import book_strategy, engine_book, oracle_revalue  # noqa: E402

import gpurisk  # noqa: E402
from gpurisk import Book, BookError, Engine  # noqa: E402
from gpurisk.backend import CpuBackend  # noqa: E402
from gpurisk.venue import PRESETS, VARIANTS, get_venue  # noqa: E402
from gpurisk.whatif import WHAT_IF_OUTPUT, what_if_arrays  # noqa: E402

F64_EPS = 2.0 ** -52
# Pooled-collateral presets: tests/test_collateral.py (their books carry a collateral table).
ALL_VENUES = tuple(v for v in (*PRESETS, *VARIANTS) if get_venue(v).collateral != "pooled")


def tiny_engine(venue="binance", **kw):
    return Engine(Book.from_frames(**tiny_frames()), venue=venue, backend="cpu", **kw)


def orders(*rows):
    cols = ("account_id", "symbol", "size", "price", "margin_mode", "isolated_margin", "leverage")
    data = {c: [r[i] if i < len(r) else None for r in rows] for i, c in enumerate(cols)}
    return pl.DataFrame(data, schema={"account_id": pl.Int64, "symbol": pl.String, "size": pl.Float64,
                                      "price": pl.Float64, "margin_mode": pl.String,
                                      "isolated_margin": pl.Float64, "leverage": pl.Float64})


# ------------------------------------------------------------------ hand-worked examples


def test_worked_example_increase_reduce_flip_close_and_isolated():
    # tiny book: account 1 holds BTC +0.5 @ 58,000 (cross) and ETH -3 @ 3,100 (cross), wallet
    # 10,000; account 3 holds ETH +2 @ 2,900 isolated with 300 margin. Marks 60,000 / 3,000.
    out = tiny_engine().what_if(orders(
        (1, "BTCUSDT", 0.1, 60_000.0),       # increase: entry (0.5·58,000 + 0.1·60,000)/0.6
        (1, "BTCUSDT", -0.2, 59_000.0),      # reduce: realise 0.2·(59,000 − 58,000) = 200
        (1, "BTCUSDT", -0.8, 61_000.0),      # flip: realise 0.5·3,000 = 1,500, short 0.3 @ 61,000
        (1, "ETHUSDT", 3.0, 3_000.0),        # close: realise −3·(3,000 − 3,100) = 300
        (3, "ETHUSDT", 1.0, 3_000.0, "isolated"),  # add to isolated: margin + IM of 1 ETH (30)
        (3, "ETHUSDT", -2.0, 3_050.0, "isolated"),  # close isolated: 300 + 300 back to the wallet
    )).to_dicts()
    inc, red, flip, close, iso_add, iso_close = out
    assert inc["size"] == pytest.approx(0.6) and inc["entry_price"] == pytest.approx(35_000 / 0.6)
    assert inc["realised_pnl"] == 0.0 and inc["wallet_balance"] == 10_000.0
    assert red["size"] == pytest.approx(0.3) and red["entry_price"] == 58_000.0
    assert red["realised_pnl"] == pytest.approx(200.0) and red["wallet_balance"] == pytest.approx(10_200.0)
    assert flip["size"] == pytest.approx(-0.3) and flip["entry_price"] == 61_000.0
    assert flip["realised_pnl"] == pytest.approx(1_500.0)
    assert close["size"] == 0.0 and close["entry_price"] is None and close["liq_price"] is None
    assert close["realised_pnl"] == pytest.approx(300.0) and close["position_status"] is None
    # after closing ETH, account 1 holds BTC alone: MM = 0.5·60,000·0.004 = 120
    assert close["account_maint_margin"] == pytest.approx(120.0)
    assert close["margin_ratio"] == pytest.approx(120.0 / (10_300.0 + 1_000.0))
    assert iso_add["isolated_margin"] == pytest.approx(330.0) and iso_add["wallet_balance"] == pytest.approx(470.0)
    assert iso_add["entry_price"] == pytest.approx(8_800.0 / 3)
    assert iso_close["wallet_balance"] == pytest.approx(1_100.0) and iso_close["isolated_margin"] == 0.0
    assert all(r["im_check"] for r in out)
    assert list(tiny_engine().what_if(orders((2, "ETHUSDT", 1.0, 3_000.0))).columns) == list(WHAT_IF_OUTPUT)


def test_initial_margin_check():
    eng = tiny_engine()
    # account 2: wallet 2,000, short BTC 0.1 @ 61,000 (upnl +100, IM 48): available 2,052.
    # A buy of 5 ETH at 100x needs 150 of IM: passes; 70 ETH (210,000 notional, tier 50x) needs 4,200: fails.
    res = eng.what_if(orders((2, "ETHUSDT", 5.0, 3_000.0), (2, "ETHUSDT", 70.0, 3_000.0),
                             (2, "BTCUSDT", 0.1, 60_000.0))).to_dicts()
    assert res[0]["im_check"] and res[0]["available_balance"] > 0
    assert not res[1]["im_check"] and res[1]["available_balance"] < 0
    assert res[2]["im_check"] and res[2]["size"] == 0.0  # closing always passes
    # A reduce-only order passes even when the account is short of margin afterwards.
    starved = Book.from_frames(**{**tiny_frames(), "accounts": pl.DataFrame(
        {"account_id": [1, 2, 3], "wallet_balance": [10_000.0, -90.0, 500.0]})})
    r = Engine(starved, backend="cpu").what_if(orders((2, "BTCUSDT", 0.05, 60_500.0))).row(0, named=True)
    assert r["available_balance"] < 0 and r["im_check"]
    grow = Engine(starved, backend="cpu").what_if(orders((2, "BTCUSDT", -0.05, 60_500.0))).row(0, named=True)
    assert grow["available_balance"] < 0 and not grow["im_check"]
    # Isolated: the given margin must cover the position's initial margin at the mark.
    thin = eng.what_if(orders((1, "ETHUSDT", 1.0, 3_000.0, "isolated", 10.0),
                              (1, "ETHUSDT", 1.0, 3_000.0, "isolated", 30.0))).to_dicts()
    assert not thin[0]["im_check"] and thin[1]["im_check"]
    assert thin[0]["isolated_margin"] == 10.0 and thin[0]["wallet_balance"] == 9_990.0


def test_book_is_not_changed_and_orders_are_independent():
    eng = tiny_engine()
    before = eng.revalue()
    acc_before, pos_before = before.accounts.clone(), before.positions.clone()
    batch = orders((1, "BTCUSDT", 0.1, 60_000.0), (1, "BTCUSDT", 0.2, 60_000.0), (1, "ETHUSDT", 1.0, 3_000.0),
                   (2, "ETHUSDT", -1.0, 2_990.0))
    together = eng.what_if(batch)
    after = eng.revalue()
    assert after.accounts.equals(acc_before) and after.positions.equals(pos_before)
    for i in range(batch.height):  # each order alone gives the same bits as in the batch
        alone = eng.what_if(batch.slice(i, 1))
        assert alone.drop("order").equals(together.slice(i, 1).drop("order"))


def test_same_bits_on_thread_counts_and_chunked_engines():
    book = gpurisk.synthetic_book(3_000, seed=5)
    rng = np.random.default_rng(1)
    n = 5_000
    acc = rng.integers(0, book.n_accounts, n).astype(np.int32)
    sym = rng.integers(0, book.n_symbols, n).astype(np.int32)
    q = rng.normal(size=n) * 3
    px = book.mark_price[sym] * (1 + rng.normal(size=n) * 0.01)
    iso = (rng.random(n) < 0.2).astype(np.int8)
    runs = []
    for threads, chunk in ((1, None), (2, None), (2, 1_000)):
        eng = Engine(book, backend=CpuBackend(threads=threads), chunk_positions=chunk)
        runs.append(what_if_arrays(eng, acc, sym, q, px, iso))
    for other in runs[1:]:
        for k, v in vars(runs[0]).items():
            assert np.array_equal(v, getattr(other, k), equal_nan=True), k


# ------------------------------------------------------------------ against full revaluation


def modified_frames(book: Book, row: dict) -> dict:
    """The book's tables with one what-if order's outcome applied (the engine's own floats)."""
    f = book.frames()
    pos = f["positions"]
    key = (pl.col("account_id") == row["account_id"]) & (pl.col("symbol") == row["symbol"]) & \
          (pl.col("margin_mode") == str(row["margin_mode"]))
    rest = pos.filter(~key)
    held = pos.filter(key)
    if row["size"] != 0.0:
        lev = row.get("leverage") or (held["leverage"][0] if held.height else None)
        new = pl.DataFrame({"account_id": [row["account_id"]], "symbol": [row["symbol"]], "size": [row["size"]],
                            "entry_price": [row["entry_price"]], "margin_mode": [str(row["margin_mode"])],
                            "isolated_margin": [row["isolated_margin"]], "leverage": [lev]},
                           schema=pos.schema)
        rest = pl.concat([rest, new])
    pool = pl.col("account_id") == row["account_id"]
    if "asset" in f["accounts"].columns:  # the order's margin pool: (account_id, its market's settle asset)
        pool &= pl.col("asset") == str(row["asset"])
    acc = f["accounts"].with_columns(
        pl.when(pool).then(pl.lit(row["wallet_balance"])).otherwise(pl.col("wallet_balance")).alias("wallet_balance"))
    return {**f, "positions": rest, "accounts": acc}


def _random_orders(book: Book, n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    held = rng.random(n) < 0.7
    pick = rng.integers(0, book.n_positions, n)
    acc = np.where(held, book.account_id[book.pos_account[pick]], book.account_id[rng.integers(0, book.n_accounts, n)])
    sym = np.where(held, book.pos_symbol[pick], rng.integers(0, book.n_symbols, n))
    iso = np.where(held, book.isolated[pick], (rng.random(n) < 0.2).astype(np.int8))
    kind = rng.integers(0, 4, n)  # 0 add, 1 reduce, 2 close exactly, 3 flip
    q0 = np.where(held, book.size[pick], 0.0)
    base = np.where(q0 != 0, np.abs(q0), 1.0)
    sgn = np.where(q0 != 0, np.sign(q0), rng.choice([-1.0, 1.0], n))
    dq = np.select([kind == 0, kind == 1, kind == 2], [sgn * base * 0.5, -sgn * base * 0.3, -q0],
                   -sgn * base * 1.7)
    dq = np.where(dq == 0, sgn * base, dq)
    px = book.mark_price[sym] * (1 + rng.normal(size=n) * 0.02)
    return pl.DataFrame({"account_id": acc, "symbol": [book.symbols[s] for s in sym], "size": dq, "price": px,
                         "margin_mode": np.array(["cross", "isolated"])[iso]})


def ticked_book(book: Book) -> Book:
    """``book`` with a tick on every other symbol (liquidation prices rounded there)."""
    f = book.frames()
    m = f["markets"]
    tick = [float(10.0 ** (round(math.log10(p)) - 4)) if i % 2 == 0 else None for i, p in enumerate(m["mark_price"])]
    return Book.from_frames(**{**f, "markets": m.with_columns(pl.Series("tick_size", tick, dtype=pl.Float64))})


def same_bits(x, y) -> bool:
    if x is None or y is None:
        return x is None and y is None
    return x == y or (math.isnan(x) and math.isnan(y))


def order_kind(book_frames: dict, row: dict) -> str:
    held = book_frames["positions"].filter(
        (pl.col("account_id") == row["account_id"]) & (pl.col("symbol") == row["symbol"])
        & (pl.col("margin_mode") == str(row["margin_mode"])))
    if not held.height:
        return "new"
    q0, q1 = held["size"][0], row["size"]
    if q1 == 0.0:
        return "close"
    if (q0 > 0) != (q1 > 0):
        return "flip"
    return "reduce" if abs(q1) < abs(q0) else "increase"


ACCOUNT_PAIRS = (("wallet_balance", "wallet_balance"), ("equity", "equity"),
                 ("account_maint_margin", "maint_margin"), ("account_close_fee", "close_fee"),
                 ("account_init_margin", "init_margin"), ("available_balance", "available_balance"),
                 ("margin_ratio", "margin_ratio"), ("status", "status"))
POSITION_PAIRS = (("size", "size"), ("entry_price", "entry_price"), ("notional", "notional"), ("upnl", "upnl"),
                  ("maint_margin", "maint_margin"), ("close_fee", "close_fee"), ("init_margin", "init_margin"),
                  ("position_margin_ratio", "margin_ratio"), ("position_status", "status"),
                  ("liq_price", "liq_price"))


def assert_is_the_revaluation_of_the_modified_book(book: Book, venue: str, row: dict) -> None:
    """The what-if row equals, bit for bit, the account row and the resulting position's row
    of a revaluation of ``book`` with the order applied."""
    mod = Book.from_frames(**modified_frames(book, row))
    risk = Engine(mod, venue=venue, backend="cpu").revalue()
    a = risk.accounts.filter((pl.col("account_id") == row["account_id"])
                             & (pl.col("asset") == str(row["asset"]))).row(0, named=True)
    for mine, theirs in ACCOUNT_PAIRS:
        assert same_bits(row[mine], a[theirs]), (venue, row, mine, a[theirs])
    if row["size"] != 0.0:
        p = risk.positions.filter((pl.col("account_id") == row["account_id"]) & (pl.col("symbol") == row["symbol"])
                                  & (pl.col("margin_mode") == row["margin_mode"])).row(0, named=True)
        for mine, theirs in POSITION_PAIRS:
            assert same_bits(row[mine], p[theirs]), (venue, row, mine, p[theirs])


@pytest.mark.parametrize("venue", ALL_VENUES)
def test_against_full_revaluation_of_the_modified_book(venue):
    """Every venue's conventions: the what-if row is the revaluation of the book with the
    order applied, bit for bit (account row and the resulting position's row): increase,
    reduce, close, flip and new positions, cross and isolated, symbols with and without a tick."""
    book = ticked_book(gpurisk.synthetic_book(120, seed=11, n_symbols=4))
    frames = book.frames()
    eng = Engine(book, venue=venue, backend="cpu")
    res = eng.what_if(_random_orders(book, 120, seed=3))
    seen = set()
    for row in res.iter_rows(named=True):
        assert_is_the_revaluation_of_the_modified_book(book, venue, row)
        seen.add((order_kind(frames, row), str(row["margin_mode"])))
    kinds = ("increase", "reduce", "close", "flip", "new")
    assert {(k, "cross") for k in kinds} <= seen and {(k, "isolated") for k in kinds} <= seen, seen


# ------------------------------------------------------------------ against the Decimal oracle


def _decimal_trade(q0, e0, dq, px, cs):
    """New size, entry and realised PnL of README "What-if orders", in Decimal."""
    q0, e0, dq, px, cs = (Decimal(x) for x in (q0, e0, dq, px, cs))
    q1 = q0 + dq
    adds = q0 == 0 or (q0 > 0) == (dq > 0)
    flips = not adds and abs(dq) > abs(q0)
    closed = Decimal(0) if adds else (q0 if flips else -dq)
    realised = closed * (px - e0) * cs
    entry = (px if q0 == 0 else (q0 * e0 + dq * px) / q1) if adds else (px if flips else e0)
    return q1, entry, realised


def draw_order(draw, q0: float, mark: float) -> tuple[float, float]:
    """An order's signed size and price against a held size q0 (0: none): an add, a reduce, a
    close, a flip or a new position, priced near the mark."""
    kind = draw(st.sampled_from(["add", "reduce", "close", "flip", "new"]))
    k = draw(st.integers(1, 10_000)) / 1000
    dq = {"add": k if q0 >= 0 else -k, "reduce": -q0 / 2, "close": -q0, "flip": -2.5 * q0,
          "new": k * draw(st.sampled_from([1, -1]))}[kind] or k
    return dq, mark * draw(st.sampled_from([0.9, 0.99, 1.0, 1.01, 1.1]))


@st.composite
def book_and_orders(draw):
    book = draw(book_strategy(max_accounts=4, max_symbols=2, max_tiers=4))
    rows = []
    for _ in range(draw(st.integers(1, 4))):
        acc = draw(st.sampled_from(book["accounts"]))["account_id"]
        m = draw(st.sampled_from(book["markets"]))
        mode = draw(st.sampled_from(["cross", "cross", "isolated"]))
        held = [p for p in book["positions"] if p["account_id"] == acc and p["symbol"] == m["symbol"]
                and p["margin_mode"] == mode]
        dq, px = draw_order(draw, held[0]["size"] if held else 0.0, m["mark_price"])
        rows.append(dict(account_id=acc, symbol=m["symbol"], size=dq, price=px, margin_mode=mode))
    venue = draw(st.sampled_from(sorted(v for v in PRESETS if v in ALL_VENUES)))
    return book, rows, venue


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(book_and_orders())
def test_against_the_decimal_oracle(case):
    book_rows, order_rows, venue = case
    book = engine_book(book_rows)
    res = Engine(book, venue=venue, backend="cpu").what_if(pl.DataFrame(order_rows)).to_dicts()
    cs_of = {m["symbol"]: m.get("contract_size", 1.0) for m in book_rows["markets"]}
    for o, r in zip(order_rows, res):
        held = [p for p in book_rows["positions"] if (p["account_id"], p["symbol"], p["margin_mode"])
                == (o["account_id"], o["symbol"], o["margin_mode"])]
        q0, e0 = (held[0]["size"], held[0]["entry_price"]) if held else (0.0, o["price"])
        with localcontext() as ctx:
            ctx.prec = 300
            q1, entry, realised = _decimal_trade(q0, e0, o["size"], o["price"], cs_of[o["symbol"]])
            assert abs(Decimal(r["size"]) - q1) <= Decimal(F64_EPS) * (abs(Decimal(q0)) + abs(Decimal(o["size"])))
            if r["size"] != 0.0:
                assert abs(Decimal(r["entry_price"]) - entry) <= Decimal(1e-12) * entry
            scale = abs(Decimal(q0)) * (Decimal(o["price"]) + Decimal(e0)) * Decimal(cs_of[o["symbol"]])
            assert abs(Decimal(r["realised_pnl"]) - realised) <= Decimal(1e-12) * scale
        # The modified book (the engine's floats) revalued exactly by the oracle.
        mod = modified_frames(book, r)
        orc = oracle_revalue(*(mod[t] for t in ("markets", "tiers", "accounts", "positions")), venue=venue)
        a = orc.account_by_id[o["account_id"]]
        scale = a["_tol"]["equity"] * 1000 + Decimal(1e-9) * (abs(a["equity"]) + a["maint_margin"] + a["init_margin"]
                                                              + abs(a["wallet_balance"]) + 1)
        for mine, theirs in (("equity", "equity"), ("account_maint_margin", "maint_margin"),
                             ("account_close_fee", "close_fee"), ("account_init_margin", "init_margin"),
                             ("available_balance", "available_balance")):
            assert abs(Decimal(r[mine]) - a[theirs]) <= scale, (mine, r[mine], a[theirs])
        assert r["status"] in a["_status_ok"] or a["_tol"]["equity"] * 1000 >= abs(a["equity"])
        if r["size"] != 0.0:
            p = orc.position_by_key[(o["account_id"], o["symbol"], o["margin_mode"])]
            for c in ("notional", "upnl", "maint_margin", "close_fee", "init_margin"):
                tol = 1000 * p["_tol"][c] + Decimal(1e-12) * (abs(p[c]) + 1)
                assert abs(Decimal(r[c]) - p[c]) <= tol, (c, r[c], p[c])
            want = p["_raw"]["liq_price"]
            got = r["liq_price"]
            tol = p["_tol"]["liq_price"]
            if want is not None and want > 0 and tol != Decimal("Infinity") and got is not None:
                assert abs(Decimal(got) - want) <= 1000 * tol + Decimal(1e-9) * want, (got, want, tol)
            elif want is not None and want > 0 and tol != Decimal("Infinity") and want > 1000 * tol:
                assert got is not None, (o, want)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(book_and_orders(), st.sampled_from(ALL_VENUES))
def test_property_what_if_is_the_revaluation_of_the_modified_book(case, venue):
    """On small random books (tiers near their floors, contract sizes, isolated and cross),
    under any venue: every what-if row is the revaluation of the book with that order applied."""
    book_rows, order_rows, _ = case
    book = engine_book(book_rows)
    assert_rows_are_revaluations(book, venue, Engine(book, venue=venue, backend="cpu").what_if(pl.DataFrame(order_rows)))


def assert_rows_are_revaluations(book, venue, res) -> None:
    """Every what-if row of ``res`` is the revaluation of ``book`` with that order applied."""
    for row in res.iter_rows(named=True):
        # A reduction at a loss can spend an isolated position's whole margin: the position
        # after the order is then no valid book row (isolated_margin must be > 0), so there is
        # no revaluation to compare with; the row's status must still follow its own equity.
        if row["margin_mode"] == "isolated" and row["size"] != 0.0 and not row["isolated_margin"] > 0.0:
            assert (row["position_status"] == "bankrupt") == (row["isolated_margin"] + row["upnl"] <= 0.0), row
            continue
        assert_is_the_revaluation_of_the_modified_book(book, venue, row)


# ------------------------------------------------------------------ bad input


def test_bad_orders_are_refused_naming_the_rows():
    eng = tiny_engine()
    bad = orders((1, "BTCUSDT", 0.1, 60_000.0), (99, "BTCUSDT", 0.1, 60_000.0), (1, "NOPE", 0.1, 1.0),
                 (1, "ETHUSDT", float("nan"), 3_000.0), (2, "ETHUSDT", 0.0, 3_000.0),
                 (2, "ETHUSDT", 1.0, float("inf")), (3, "ETHUSDT", 1.0, 3_000.0, "hedge"),
                 (3, "ETHUSDT", 1.0, 3_000.0, "cross", 5.0), (3, "ETHUSDT", 1.0, 3_000.0, "isolated", -1.0),
                 (3, "ETHUSDT", 1.0, 3_000.0, "cross", None, 0.5))
    with pytest.raises(BookError) as exc:
        eng.what_if(bad)
    text = str(exc.value)
    for expected in ("orders.account_id: must be an account of the book — 1 row: row 1 (account_id=99",
                     "orders.symbol: must be a symbol of the book — 1 row: row 2",
                     "orders.size: must be finite and non-zero — 2 rows: row 3", "row 4 (account_id=2",
                     "orders.price: must be finite and > 0 — 1 row: row 5",
                     "orders.margin_mode: must be 'cross' or 'isolated' — 1 row: row 6",
                     "orders.isolated_margin: cross orders carry no isolated_margin",
                     "orders.isolated_margin: must be finite and in [0", "row 8",
                     "orders.leverage: must be finite and in [1", "row 9"):
        assert expected in text, expected
    with pytest.raises(BookError, match="orders.price: required column is missing"):
        eng.what_if(pl.DataFrame({"account_id": [1], "symbol": ["BTCUSDT"], "size": [1.0]}))
    with pytest.raises(BookError, match="orders: table is empty"):
        eng.what_if(orders().clear())
    with pytest.raises(BookError, match="orders.size: must be a number"):
        eng.what_if(pl.DataFrame({"account_id": [1], "symbol": ["BTCUSDT"], "size": ["x"], "price": [1.0]}))
    with pytest.raises(BookError, match=r"orders.size: order notional .* must be <= 1e\+15 .* row 1 \(account_id=2"):
        eng.what_if(orders((1, "BTCUSDT", 0.1, 60_000.0), (2, "BTCUSDT", 1e11, 60_000.0)))
    with pytest.raises(BookError, match=r"orders.account_index: must be in \[0, 3\)"):
        what_if_arrays(eng, [5], [0], [1.0], [1.0])


def test_marks_override_and_pandas_input():
    eng = tiny_engine()
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"account_id": [2], "symbol": ["BTCUSDT"], "size": [-0.1], "price": [61_000.0]})
    at_book = eng.what_if(frame).row(0, named=True)
    moved = eng.what_if(frame, marks={"BTCUSDT": 66_000.0}).row(0, named=True)
    assert at_book["upnl"] == pytest.approx(-0.2 * (60_000 - 61_000))
    assert moved["upnl"] == pytest.approx(-0.2 * (66_000 - 61_000))
    assert moved["notional"] == pytest.approx(0.2 * 66_000)


def test_worked_examples_under_okx_and_bybit_conventions():
    # tiny book, account 1: BTC +0.5 @ 58,000 and ETH -3 @ 3,100 cross, wallet 10,000; marks
    # 60,000 / 3,000; BTC tiers: floor 0 at 0.4% (max leverage 125), floor 50,000 at 0.5% (100).
    # Buy 0.5 BTC at 60,000: size 1, entry 59,000, notional 60,000, upnl 1,000 (ETH: 300).
    order = orders((1, "BTCUSDT", 0.5, 60_000.0))
    okx = tiny_engine("okx").what_if(order).row(0, named=True)
    # OKX: the tier of 1 contract (< 50,000 contracts) is the first, its rate on the whole
    # position: MM 0.4% · 60,000 = 240 (a notional tier would give 0.5% · 60,000 − 50 = 250);
    # close fee 0.05% · 60,000 = 30. ETH: MM 0.5% · 9,000 = 45, fee 4.5.
    assert okx["maint_margin"] == pytest.approx(240.0) and okx["close_fee"] == pytest.approx(30.0)
    assert okx["account_maint_margin"] == pytest.approx(285.0) and okx["account_close_fee"] == pytest.approx(34.5)
    assert okx["equity"] == pytest.approx(11_300.0)
    assert okx["margin_ratio"] == pytest.approx((285.0 + 34.5) / 11_300.0)  # the requirement MM + fee
    # IM at the max leverage of the contract tier (125), not of the notional's second tier (100).
    assert okx["available_balance"] == pytest.approx(11_300.0 - 60_000 / 125 - 9_000 / 100)
    bybit = tiny_engine("bybit").what_if(order).row(0, named=True)
    # Bybit classic: MM on the entry notional 59,000 (second tier: 0.5% · 59,000 − 50 = 245),
    # IM on the entry notional at the mark tier's leverage (59,000 / 100), ETH 9,300 / 100;
    # unrealised profit (1,300) not available: 10,000 − 590 − 93.
    assert bybit["maint_margin"] == pytest.approx(245.0) and bybit["close_fee"] == 0.0
    assert bybit["init_margin"] == pytest.approx(590.0) and bybit["account_init_margin"] == pytest.approx(683.0)
    assert bybit["available_balance"] == pytest.approx(10_000.0 - 683.0)
    # Binance: notional tiers with deduction, the second tier's leverage (100) for the IM.
    binance = tiny_engine("binance").what_if(order).row(0, named=True)
    assert binance["maint_margin"] == pytest.approx(250.0) and binance["account_close_fee"] == 0.0
    assert binance["available_balance"] == pytest.approx(11_300.0 - 600.0 - 90.0)


def test_liquidation_price_is_on_the_trigger_side_and_the_tick():
    """A long's liquidation price is rounded down to the tick, a short's up, to the tick
    nearest the root at which a revaluation says liquidatable; one tick back it does not."""
    f = tiny_frames()
    f["markets"] = f["markets"].with_columns(pl.Series("tick_size", [0.5, 0.01]))
    book = Book.from_frames(**f)
    eng = Engine(book, venue="okx", backend="cpu")
    res = eng.what_if(orders((2, "BTCUSDT", 0.3, 60_100.0),             # flip to long 0.2 (cross, alone)
                             (1, "ETHUSDT", -1.0, 3_050.0),             # increase the short (cross, with BTC)
                             (3, "ETHUSDT", 1.0, 3_000.0, "isolated"),  # isolated long
                             (2, "ETHUSDT", -2.0, 2_990.0)))            # new short beside BTC
    for row in res.iter_rows(named=True):
        tick = {"BTCUSDT": 0.5, "ETHUSDT": 0.01}[row["symbol"]]
        lp = row["liq_price"]
        assert lp is not None and lp / tick == round(lp / tick), row
        mod = Book.from_frames(**modified_frames(book, row))
        away = lp + tick if row["size"] > 0 else lp - tick  # one tick on the safe side

        def status_at(price):
            pos = Engine(mod, venue="okx", backend="cpu").revalue(marks={row["symbol"]: price}).positions
            return pos.filter((pl.col("account_id") == row["account_id"]) & (pl.col("symbol") == row["symbol"])
                              & (pl.col("margin_mode") == row["margin_mode"]))["status"][0]

        assert status_at(lp) in ("liquidatable", "bankrupt"), row
        assert status_at(away) not in ("liquidatable", "bankrupt"), row

