"""Funding (gpurisk/funding.py, kernels/funding.cu): payments, signs, conservation with the
rounding residual booked explicitly (checked exactly in Decimal), the resident engine, the
written book, bad rates, and funding as a step of a stress path."""

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
from books import tiny_frames  # noqa: E402
from oracle import book_strategy, engine_book  # noqa: E402

import gpurisk  # noqa: E402
from gpurisk import Book, BookError, Engine, apply_funding  # noqa: E402
from gpurisk.backend import CpuBackend  # noqa: E402


def tiny():
    return Book.from_frames(**tiny_frames())


def test_longs_pay_shorts_receive_when_the_rate_is_positive():
    # tiny book: 1 long BTC 0.5 & short ETH 3 (cross), 2 short BTC 0.1 (cross), 3 long ETH 2 (isolated).
    r = apply_funding(tiny(), {"BTCUSDT": 0.0001, "ETHUSDT": -0.0003}, backend="cpu")
    # BTC at 60,000: long 0.5 pays 0.0001·30,000 = 3; short 0.1 receives 0.6.
    # ETH at 3,000, r < 0: shorts pay: account 1's 3 ETH pay 0.0003·9,000 = 2.7; account 3's 2 ETH receive 1.8.
    assert r.payments.tolist() == pytest.approx([3.0, 2.7, -0.6, -1.8])
    acc = r.accounts.to_dicts()
    assert [a["funding_paid"] for a in acc] == pytest.approx([5.7, -0.6, -1.8])
    assert [a["wallet_balance"] for a in acc] == pytest.approx([9_994.3, 2_000.6, 500.0])
    assert r.book.isolated_margin[3] == pytest.approx(301.8)  # isolated funding settles against its margin
    sym = r.by_symbol.to_dicts()
    assert sym[0]["long_paid"] == pytest.approx(3.0) and sym[0]["short_received"] == pytest.approx(0.6)
    assert sym[0]["net_to_external"] == pytest.approx(2.4)  # this tiny book is not balanced
    assert sym[1]["long_paid"] == pytest.approx(-1.8) and sym[1]["short_received"] == pytest.approx(-2.7)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(book_strategy(max_accounts=6, max_symbols=3), st.data())
def test_conservation_with_the_rounding_residual_is_exact_in_decimal(rows, data):
    """Σ before = Σ after + Σ payments + Σ rounding, in exact arithmetic on the engine's floats,
    up to the rounding of the tiny error terms themselves (far below one ulp of any balance);
    each payment is side · fl(r · N) with N the revaluation's notional."""
    book = engine_book(rows)
    rates = {s: data.draw(st.sampled_from([0.0, 1e-4, -1e-4, 3.7e-4, -0.0075, 0.01, 1 / 3]))
             for s in book.symbols}
    r = apply_funding(book, rates, backend="cpu")
    n = np.abs(book.size) * book.mark_price[book.pos_symbol] * book.contract_size[book.pos_symbol]
    rate = np.array([rates[s] for s in book.symbols])[book.pos_symbol]
    assert np.array_equal(r.payments, np.sign(book.size) * (rate * n))
    with localcontext() as ctx:
        ctx.prec = 400
        D = lambda xs: sum((Decimal(float(x)) for x in xs), Decimal(0))  # noqa: E731
        before = D(book.wallet) + D(book.isolated_margin)
        after = D(r.book.wallet) + D(r.book.isolated_margin)
        gap = before - after - D(r.payments) - D(r.rounding)
        scale = D(np.abs(book.wallet)) + D(book.isolated_margin) + D(np.abs(r.payments)) + 1
        assert abs(gap) <= scale * Decimal(2) ** -100, gap
        # without the rounding line, conservation holds only to float64 rounding
        assert abs(before - after - D(r.payments)) <= scale * Decimal(2) ** -50


def test_a_balanced_book_pays_nothing_to_the_outside_and_the_residual_is_tiny():
    book = gpurisk.synthetic_book(20_000, seed=2)
    rates = dict(zip(book.symbols, np.linspace(-3e-4, 5e-4, book.n_symbols)))
    r = apply_funding(book, rates, backend="cpu")
    t = r.symbol_totals()
    gross = t["long_paid"] + t["short_received"]
    # Σ size = 0 per symbol: longs pay what shorts receive, up to each payment's rounding.
    assert np.all(np.abs(t["net_to_external"]) <= 1e-12 * np.abs(gross))
    assert abs(r.rounding_residual) <= 1e-12 * float(np.sum(np.abs(book.wallet)))
    # threads do not change a bit
    r1 = apply_funding(book, rates, backend=CpuBackend(threads=1))
    assert np.array_equal(r1.book.wallet, r.book.wallet) and np.array_equal(r1.rounding, r.rounding)


def test_engine_funds_its_resident_book():
    book = gpurisk.synthetic_book(2_000, seed=4)
    rates = {"BTCUSDT": 0.0005, "ETHUSDT": -0.0002}
    eng = Engine(book, backend="cpu")
    res = eng.apply_funding(rates, marks={"BTCUSDT": 62_000.0})
    fresh = apply_funding(book, rates, marks={"BTCUSDT": 62_000.0}, backend="cpu")
    assert np.array_equal(eng.book.wallet, fresh.book.wallet)
    assert np.array_equal(res.payments, fresh.payments)
    assert not np.array_equal(book.wallet, eng.book.wallet)  # the input book is untouched
    # the resident book revalues as the funded book does, chunked or not
    want = gpurisk.revalue(fresh.book, backend="cpu").accounts
    assert eng.revalue().accounts.equals(want)
    chunked = Engine(book, backend="cpu", chunk_positions=700)
    chunked.apply_funding(rates, marks={"BTCUSDT": 62_000.0})
    assert chunked.revalue().accounts.equals(want)


def test_written_funded_book_reads_back(tmp_path):
    r = apply_funding(tiny(), {"BTCUSDT": 0.001}, backend="cpu")
    out = r.write(tmp_path / "funded")
    back = gpurisk.read_book(out)
    assert np.array_equal(back.wallet, r.book.wallet)
    assert np.array_equal(back.isolated_margin, r.book.isolated_margin)
    assert pl.read_parquet(out / "funding_by_symbol.parquet").equals(r.by_symbol)


def test_bad_rates_are_refused():
    with pytest.raises(BookError) as exc:
        apply_funding(tiny(), {"BTCUSDT": float("nan"), "NOPE": 0.1, "ETHUSDT": 1.5}, backend="cpu")
    text = str(exc.value)
    assert "funding.symbol: must be a symbol of the book — 1 row: symbol='NOPE'" in text
    assert "funding.funding_rate: must be a finite number with |rate| < 1 — 2 rows" in text
    with pytest.raises(BookError, match="funding.funding_rate: required column is missing"):
        apply_funding(tiny(), pl.DataFrame({"symbol": ["BTCUSDT"], "rate": [0.1]}), backend="cpu")
    with pytest.raises(BookError, match="given more than once"):
        apply_funding(tiny(), pl.DataFrame({"symbol": ["BTCUSDT", "BTCUSDT"], "funding_rate": [0.1, 0.2]}),
                      backend="cpu")
    with pytest.raises(ValueError, match="one rate per symbol"):
        apply_funding(tiny(), np.array([0.1]), backend="cpu")


# ------------------------------------------------------------------ a stress step


def _edge_book():
    """Account 7 holds a long just above liquidation: one funding payment pushes it over."""
    f = tiny_frames()
    # BTC long 1 @ 60,000, mark 60,000: MM 250 (tier 2: 60,000·0.005 − 50); wallet 260: 30 of funding tips it.
    f["accounts"] = pl.concat([f["accounts"], pl.DataFrame({"account_id": [7, 8], "wallet_balance": [260.0, 1e6]})])
    f["positions"] = pl.concat([f["positions"], pl.DataFrame({
        "account_id": [7, 8], "symbol": ["BTCUSDT", "BTCUSDT"], "size": [1.0, -1.4], "entry_price": [60_000.0] * 2,
        "margin_mode": ["cross"] * 2, "isolated_margin": [0.0] * 2})], how="diagonal_relaxed")
    return Book.from_frames(**f)


def test_funding_as_a_stress_step():
    book = _edge_book()
    scen = pl.DataFrame({"scenario": [0], "symbol": ["BTCUSDT"], "shock": [0.0]})
    calm = gpurisk.stress(book, scen, backend="cpu")
    assert calm.summary["accounts_liquidated"][0] == 0
    funded = gpurisk.stress(book, scen, backend="cpu", funding={"BTCUSDT": 0.0005})  # 30 from account 7
    assert funded.summary["accounts_liquidated"][0] >= 1
    assert 7 in funded.liquidations["account_id"].to_list()
    assert abs(funded.summary["conservation_error"][0]) <= 1e-12
    zero = gpurisk.stress(book, scen, backend="cpu", funding={"BTCUSDT": 0.0})
    assert zero.summary.equals(calm.summary)
    # per step: paid at step 1 of a two-step path only
    path = pl.DataFrame({"scenario": [0, 0], "step": [0, 1], "symbol": ["BTCUSDT"] * 2, "shock": [0.0, 0.0]})
    late = gpurisk.stress(book, path, backend="cpu",
                          funding=pl.DataFrame({"step": [1], "symbol": ["BTCUSDT"], "funding_rate": [0.0005]}))
    assert late.liquidations["step"].to_list() and set(late.liquidations["step"].to_list()) == {1}
    assert abs(late.summary["conservation_error"][0]) <= 1e-12
    with pytest.raises(BookError, match="funding.symbol: must be a symbol of the book"):
        gpurisk.stress(book, scen, backend="cpu", funding={"NOPE": 0.1})


def test_what_if_after_funding_sees_the_funded_wallets():
    book = tiny()
    eng = Engine(book, backend="cpu")
    order = pl.DataFrame({"account_id": [2], "symbol": ["ETHUSDT"], "size": [1.0], "price": [3_000.0]})
    before = eng.what_if(order).row(0, named=True)
    eng.apply_funding({"BTCUSDT": 0.001})  # account 2 is short BTC 0.1 at 60,000: receives 6
    after = eng.what_if(order).row(0, named=True)
    assert after["wallet_balance"] == pytest.approx(before["wallet_balance"] + 6.0)
    assert after["available_balance"] == pytest.approx(before["available_balance"] + 6.0)


def test_stress_funding_as_an_array_of_steps():
    book = _edge_book()
    path = pl.DataFrame({"scenario": [0, 0], "step": [0, 1], "symbol": ["BTCUSDT"] * 2, "shock": [0.0, 0.0]})
    rates = np.zeros((2, book.n_symbols))
    rates[1, book.symbols.index("BTCUSDT")] = 0.0005
    res = gpurisk.stress(book, path, backend="cpu", funding=rates)
    assert set(res.liquidations["step"].to_list()) == {1}
    with pytest.raises(ValueError, match="one column per symbol"):
        gpurisk.stress(book, path, backend="cpu", funding=np.zeros((2, 1)))
