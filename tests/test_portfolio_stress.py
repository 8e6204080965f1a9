"""Portfolio margin in the stress engine and in what-if orders (README "Portfolio margin"):

- the stress screen and step 0 of every scenario act on exactly the units a revaluation at the
  shocked marks finds liquidatable, portfolio accounts judged by their portfolio requirement;
- the ladder's target reduction against Decimal, conservation of money through cascades, the
  same bits on thread counts and batches;
- each what-if order on a portfolio account against a revaluation of the modified book.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from decimal import Decimal

import numpy as np
import polars as pl
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_portfolio import model_of, synthetic_case  # noqa: E402

from gpurisk import Book, Engine, get_venue, synthetic_book  # noqa: E402
from gpurisk.backend import CpuBackend  # noqa: E402


def check_books_balance(res):
    s = res.summary
    assert (s["conservation_error"].abs() < 1e-9).all(), s.filter(pl.col("conservation_error").abs() >= 1e-9)
    gap = (s["deficit"] - s["insurance_used"] - s["socialized_loss"]).abs()
    assert (gap <= 1e-9 * s["deficit"].abs().clip(lower_bound=1.0)).all()


@pytest.mark.parametrize("ladder", ["binance", "hyperliquid", "bitmex"])
def test_stress_conserves_money_and_liquidates_whom_a_revaluation_says(ladder):
    """Step 0 of each scenario acts on exactly the units a revaluation at the shocked marks
    finds liquidatable (portfolio accounts by their portfolio requirement), and money is
    conserved through the cascade, under each ladder."""
    from gpurisk import shock_grid, stress

    book, venue = synthetic_case(800)
    grid = shock_grid(-0.12, 0.12, 5)
    res = stress(book, grid, venue=venue, backend="cpu", ladder=ladder, steps=3, insurance_fund=50_000.0)
    check_books_balance(res)
    liq = res.liquidations.filter(pl.col("step") == 0)
    assert liq.height > 0
    for sid, shock in grid.select("scenario", "shock").unique().iter_rows():
        risk = Engine(book, venue=venue, backend="cpu").revalue(book.mark_price * (1 + shock))
        hit = risk.positions.filter(pl.col("status").is_in(["liquidatable", "bankrupt"]))
        got = liq.filter(pl.col("scenario") == sid).select("account_id", pl.col("symbol").cast(pl.String),
                                                            pl.col("margin_mode").cast(pl.String)).sort(pl.all())
        want = hit.select("account_id", pl.col("symbol").cast(pl.String),
                          pl.col("margin_mode").cast(pl.String)).sort(pl.all())
        assert got.equals(want), f"shock {shock}"
    # portfolio accounts are among the liquidated
    pf_ids = set(book.account_id[np.where(book.margin_model == 0, 0, 1) == 1].tolist())
    assert set(liq["account_id"].to_list()) & pf_ids


def test_stress_restoring_reduction_hits_the_target_under_portfolio_margin():
    """Binance's ladder (one reduction to 0.8 of equity): a portfolio account past liquidation is
    cut in proportion until its requirement, liquidity contingency included, is 0.8 × equity."""
    from gpurisk import stress
    from gpurisk.ladder import Ladder

    book = Book.from_frames(
        markets=pl.DataFrame({"symbol": ["BTCUSDT", "ETHUSDT"], "mark_price": [60_000.0, 3_000.0]}),
        tiers=pl.DataFrame({"symbol": ["BTCUSDT", "ETHUSDT"], "notional_floor": [0.0, 0.0],
                            "maint_margin_rate": [0.004, 0.005], "max_leverage": [125.0, 100.0]}),
        accounts=pl.DataFrame({"account_id": [1, 2], "wallet_balance": [250_000.0, 1e8]}),
        positions=pl.DataFrame({"account_id": [1, 1, 2, 2], "symbol": ["BTCUSDT", "ETHUSDT"] * 2,
                                "size": [40.0, -100.0, -40.0, 100.0], "entry_price": [60_000.0, 3_000.0] * 2}))
    rows = [dict(symbol=s, risk_group=s[:3], price_range=0.1, shocks=11, offset_rate=0.0,
                 liquidity_threshold=1_000_000.0, liquidity_rate=0.05) for s in ("BTCUSDT", "ETHUSDT")]
    venue = get_venue("binance").with_(margin_model="portfolio", portfolio=model_of(rows))
    res = stress(book, pl.DataFrame({"scenario": [0], "symbol": ["*"], "shock": [-0.02]}), venue=venue,
                 backend="cpu", ladder=Ladder(partial="target", target_ratio=0.5, max_partial_steps=1))
    red = res.liquidations.filter(pl.col("action") == "reduce").sort("symbol")
    assert red["account_id"].to_list() == [1, 1]
    marks = {"BTCUSDT": Decimal(60_000) * Decimal("0.98"), "ETHUSDT": Decimal(3_000) * Decimal("0.98")}
    size = {"BTCUSDT": Decimal(40), "ETHUSDT": Decimal(-100)}
    entry = {"BTCUSDT": Decimal(60_000), "ETHUSDT": Decimal(3_000)}
    equity = Decimal(250_000) + sum(size[s] * (marks[s] - entry[s]) for s in size)
    kept = {r["symbol"]: size[r["symbol"]] - Decimal(repr(r["qty"])) * (1 if size[r["symbol"]] > 0 else -1)
            for r in red.iter_rows(named=True)}
    after = Decimal(0)
    for s in kept:
        n = abs(kept[s]) * marks[s]
        after += n * Decimal("0.1") + Decimal("0.05") * max(n - Decimal(1_000_000), Decimal(0))
    assert abs(after / equity - Decimal("0.5")) < Decimal("1e-9"), after / equity
    check_books_balance(res)


@pytest.mark.parametrize("groups_move", ["independent", "joint"])
@pytest.mark.parametrize("fee", [0.0, 0.005])
def test_the_screen_agrees_with_a_revaluation_under_portfolio_margin(groups_move, fee):
    """A scenario is screened quiet exactly when a revaluation at its marks finds nobody to
    liquidate, portfolio accounts judged by their portfolio requirement (close fee beside it)."""
    import importlib

    from gpurisk.backend import get_backend
    from gpurisk.ladder import get_ladder
    from gpurisk.ledger import Ledger
    from gpurisk.screen import account_flags, screen

    stress_module = importlib.import_module("gpurisk.stress")
    book, venue = synthetic_case(1_500, groups_move)
    venue = venue.with_(close_fee_rate=fee)
    book = dataclasses.replace(book, wallet=book.wallet * 40.0, isolated_margin=book.isolated_margin * 40.0, meta={})
    ctx = stress_module.StressContext(book, venue, get_backend("cpu"), get_ladder(None, venue.name), None, 0.0)
    shocks = np.linspace(-0.5, 0.5, 201)[:, None] * np.ones(book.n_symbols)
    flags = account_flags(ctx, shocks)
    want = np.zeros_like(flags)
    for k, sh in enumerate(shocks):
        units = ctx.units(ctx.revalue(Ledger(book), book.mark_price * (1 + sh)))
        want[k, book.pos_account[units]] = 1
    assert np.array_equal(flags, want)
    busy = want.any(axis=1)
    assert busy.any() and not busy.all()  # the grid has quiet and busy scenarios
    assert screen(ctx, shocks, 7).tolist() == busy.tolist()
    # the portfolio pass matters: tiered flags of the same accounts differ
    pf = ctx.portfolio.use.astype(bool)
    tiered_book = dataclasses.replace(book, margin_model=None, meta={})
    tiered = stress_module.StressContext(tiered_book, venue.with_(margin_model="tiered"), get_backend("cpu"),
                                    get_ladder(None, venue.name), None, 0.0)
    assert (account_flags(tiered, shocks)[:, pf] != want[:, pf]).any()


def test_stress_with_portfolio_accounts_same_bits_on_threads_batches_and_devices():
    """Portfolio accounts through the ladder's restoring reduction: the same tables on one
    thread and two, any screening batch, and on both stand-ins for a GPU (the strict one
    keeps CuPy's rules: the run's ledger lives on its device)."""
    from gpurisk import shock_grid, stress
    from gpurisk.parity import StandInBackend, StrictStandInBackend

    book, venue = synthetic_case(600, groups_move="joint")
    runs = [stress(book, shock_grid(-0.1, 0.1, 5), venue=venue, backend=backend, batch=b, ladder="binance")
            for backend, b in ((CpuBackend(threads=1), 1), (CpuBackend(threads=2), 5), (StandInBackend(), 5),
                               (StrictStandInBackend(), 2))]
    assert runs[0].liquidations.height > 0
    for run in runs[1:]:
        for table in ("summary", "liquidations", "adl_fills", "haircuts", "prices"):
            assert getattr(run, table).equals(getattr(runs[0], table)), table


@pytest.mark.parametrize("groups_move, chunk_positions, venue_name", [
    ("independent", None, "binance"), ("joint", 97, "binance"), ("independent", 97, "okx"), ("joint", None, "bybit")])
def test_what_if_on_portfolio_accounts_is_a_revaluation_of_the_modified_book(groups_move, chunk_positions, venue_name):
    """Every order on its own against a revaluation of the book with that order applied: the
    account's portfolio requirement, initial margin and the resulting position's figures the same
    bits (the requirement walks the positions in the revaluation's order); equity as the tiered
    what-if has it (a delta, within a few ulps of the account's scale); no liquidation price for
    portfolio accounts; tiered accounts as before."""
    from test_whatif import _random_orders, modified_frames

    book = synthetic_book(150, seed=5, n_symbols=4)
    codes = np.random.default_rng(1).choice(np.array([-1, 0, 1], dtype=np.int8), size=book.n_accounts)
    book = dataclasses.replace(book, margin_model=codes, meta={})
    rows = [dict(symbol=s, risk_group=f"G{i % 2}", price_range=0.12, shocks=11, offset_rate=0.02,
                 liquidity_threshold=20_000.0, liquidity_rate=0.05) for i, s in enumerate(book.symbols)]
    venue = get_venue(venue_name).with_(margin_model="portfolio", portfolio=model_of(rows, groups_move, 1.25))
    engine = Engine(book, venue=venue, backend="cpu", chunk_positions=chunk_positions)
    res = engine.what_if(_random_orders(book, 120, seed=9))
    seen = {"portfolio": 0, "tiered": 0}
    for row in res.iter_rows(named=True):
        risk = Engine(Book.from_frames(**modified_frames(book, row)), venue=venue, backend="cpu").revalue()
        a = risk.accounts.filter(pl.col("account_id") == row["account_id"]).row(0, named=True)
        seen[a["margin_model"]] += 1
        scale = abs(a["wallet_balance"]) + float(risk.positions.filter(pl.col("account_id") == row["account_id"])
                                                 .select(pl.col("upnl").abs().sum() + pl.col("notional").sum()).item())
        if a["margin_model"] == "portfolio":  # recomputed in the revaluation's order: the same bits
            for mine, theirs in (("account_maint_margin", "maint_margin"), ("account_init_margin", "init_margin"),
                                 ("equity", "equity"), ("available_balance", "available_balance"),
                                 ("margin_ratio", "margin_ratio"), ("status", "status")):
                assert row[mine] == a[theirs], (mine, row)
        else:  # the tiered what-if's delta (tests/test_whatif.py bounds it)
            assert abs(row["account_maint_margin"] - a["maint_margin"]) <= 16 * 2.0 ** -52 * scale
        assert abs(row["equity"] - a["equity"]) <= 16 * 2.0 ** -52 * scale
        assert abs(row["available_balance"] - a["available_balance"]) <= 16 * 2.0 ** -52 * (scale + a["init_margin"])
        if a["margin_model"] == "portfolio":
            if a["equity"] > 0 and a["maint_margin"] > 0:
                assert row["margin_ratio"] == pytest.approx(a["margin_ratio"], rel=1e-12)
                if abs(a["margin_ratio"] - 1) > 1e-9 and abs(a["margin_ratio"] - 0.8) > 1e-9:
                    assert row["status"] == a["status"]
            assert row["liq_price"] is None
        if row["size"] != 0.0:
            p = risk.positions.filter((pl.col("account_id") == row["account_id"]) & (pl.col("symbol") == row["symbol"])
                                      & (pl.col("margin_mode") == row["margin_mode"])).row(0, named=True)
            for c in ("notional", "upnl", "maint_margin", "init_margin"):
                assert row[c] == p[c], c
            if a["margin_model"] == "portfolio" and row["margin_mode"] == "isolated" and p["margin_ratio"] < 1e300:
                assert row["position_margin_ratio"] == pytest.approx(p["margin_ratio"], rel=1e-12)
    assert seen["portfolio"] > 20 and seen["tiered"] > 10
