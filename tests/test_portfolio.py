"""Risk-based portfolio margin (README "Portfolio margin", kernels/portfolio.cu).

- every figure against the Decimal oracle (tests/oracle_portfolio.py) on random books, groups
  moving independently and jointly, books mixing tiered and portfolio accounts;
- Deribit's published example of the offsetting-futures contingency;
- properties: a hedged account never needs more than its legs alone; scaling every size by k
  scales the loss part by k;
- same bits on every thread count and chunk size (CPU), and on the GPU (skipped without one;
  the stand-in backend is its CPU twin);
- the parameters table and the accounts' margin models are validated before any compute;
- the command line, the report's plot, Dask shards, book updates, inverse markets and the monitor.
The stress engine and what-if orders under portfolio margin: tests/test_portfolio_stress.py.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from decimal import Decimal

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
from books import tiny_frames  # noqa: E402
from oracle import book_strategy, engine_book, frames  # noqa: E402
from oracle_portfolio import oracle_portfolio  # noqa: E402

from gpurisk import Book, BookError, Engine, PortfolioModel, get_venue, synthetic_book  # noqa: E402
from gpurisk.backend import CpuBackend, get_backend, gpu_available  # noqa: E402

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=60)

def revalue(book, venue, backend="cpu", **options):
    return Engine(book, venue=venue, backend=backend, **options).revalue()


# ---------------------------------------------------------------- random parameters


@st.composite
def portfolio_cases(draw, joint=None):
    """A random book (tests/oracle.py), a parameters table over its symbols, the accounts'
    margin models and the venue's default."""
    book = draw(book_strategy(max_accounts=5, max_symbols=3))
    joint = draw(st.booleans()) if joint is None else joint
    names = [m["symbol"] for m in book["markets"]]
    group_names = draw(st.lists(st.sampled_from(["BTC", "ETH", "ALT"]), min_size=len(names), max_size=len(names)))
    common = (draw(st.sampled_from([0.05, 0.1, 0.125, 0.16])), draw(st.sampled_from([2, 3, 11, 33])))
    per_group = {}
    for g in sorted(set(group_names)):
        rng, n = common if joint else (draw(st.sampled_from([0.05, 0.1, 0.125, 0.16])),
                                       draw(st.sampled_from([2, 3, 11, 33])))
        per_group[g] = dict(price_range=rng, shocks=n, offset_rate=draw(st.sampled_from([0.0, 0.01, 0.02])),
                            liquidity_threshold=draw(st.sampled_from([None, 0.0, 1_000.0, 1e6])),
                            liquidity_rate=draw(st.sampled_from([0.0, 0.05, 0.3])))
    params = [dict(symbol=s, risk_group=g, **per_group[g]) for s, g in zip(names, group_names)]
    default = draw(st.sampled_from(["tiered", "portfolio"]))
    models = [draw(st.sampled_from([None, None, "tiered", "portfolio"])) for _ in book["accounts"]]
    im = draw(st.sampled_from([1.0, 1.25, 2.0]))
    return book, params, ("joint" if joint else "independent"), default, models, im


def model_of(params, groups_move="independent", im_multiple=1.0):
    cols = ["symbol", "risk_group", "price_range", "shocks", "offset_rate", "liquidity_threshold", "liquidity_rate"]
    table = pl.DataFrame({c: [p.get(c) for p in params] for c in cols},
                         schema={"symbol": pl.String, "risk_group": pl.String, "price_range": pl.Float64,
                                 "shocks": pl.Int64, "offset_rate": pl.Float64, "liquidity_threshold": pl.Float64,
                                 "liquidity_rate": pl.Float64})
    return PortfolioModel.from_frame(table, groups_move=groups_move, im_multiple=im_multiple)


def book_with_models(book: dict, models) -> Book:
    f = frames(book)
    f["accounts"] = f["accounts"].with_columns(pl.Series("margin_model", models, dtype=pl.String))
    return Book.from_frames(**f)


def close(got, want: Decimal, tol: Decimal, what: str):
    assert got is not None, what
    assert abs(Decimal(got) - want) <= tol, f"{what}: engine {got!r}, oracle {want}"


# ---------------------------------------------------------------- the oracle


@settings(**SETTINGS)
@given(portfolio_cases())
def test_every_figure_matches_the_decimal_oracle(case):
    book, params, move, default, models, im = case
    eb = book_with_models(book, models)
    venue = get_venue("binance").with_(margin_model=default, portfolio=model_of(params, move, im))
    risk = revalue(eb, venue)
    tiered = revalue(engine_book(book), "binance")  # the same book, every account tiered
    orc = oracle_portfolio(book, params, move, im)
    accounts = {r["account_id"]: r for r in risk.accounts.to_dicts()}
    plain = {r["account_id"]: r for r in tiered.accounts.to_dicts()}
    model_by_id = {a["account_id"]: (m or default) for a, m in zip(book["accounts"], models)}
    for aid, o in orc.items():
        got, base = accounts[aid], plain[aid]
        where = f"account {aid}"
        assert got["margin_model"] == model_by_id[aid], where
        assert got["tiered_margin"] == base["maint_margin"], where  # the tiered sum, bit for bit
        tol = max(o["scale"], Decimal(1)) * Decimal("1e-12")
        close(got["portfolio_margin"], o["requirement"], tol, f"{where} requirement")
        close(got["scenario_loss"], o["loss"], tol, f"{where} loss")
        close(got["offset_contingency"], o["offset"], tol, f"{where} offset")
        close(got["liquidity_contingency"], o["liquidity"], tol, f"{where} liquidity")
        assert any(g == got["worst_group"] and got["worst_shock"] is not None and
                   abs(Decimal(got["worst_shock"]) - x) < Decimal("1e-12") for _, g, x in o["worst"]) or \
            (o["n_cross"] == 0 and got["worst_group"] is None and got["worst_shock"] is None), \
            f"{where}: worst scenario ({got['worst_group']}, {got['worst_shock']}) not among {o['worst'][:4]}"
        if model_by_id[aid] == "tiered":
            for c in ("maint_margin", "init_margin", "margin_ratio", "available_balance", "status"):
                assert got[c] == base[c], f"{where} {c}: a tiered account must not change"
            continue
        assert got["maint_margin"] == got["portfolio_margin"], where
        close(got["init_margin"], o["init"], tol * Decimal(im), f"{where} init")
        close(got["available_balance"], o["equity"] - o["init"], tol * 4, f"{where} available")
        if o["n_cross"]:
            eq, req = o["equity"], o["requirement"]
            if eq > 0:
                want_ratio = req / eq
                assert abs(Decimal(got["margin_ratio"]) - want_ratio) <= want_ratio * Decimal("1e-9") + tol / eq, where
                margin = abs(want_ratio - 1) > Decimal("1e-9") and abs(want_ratio - Decimal("0.8")) > Decimal("1e-9")
                if margin:
                    want = "liquidatable" if want_ratio >= 1 else ("margin_call" if want_ratio >= Decimal("0.8") else "healthy")
                    assert got["status"] == want, where
            elif eq < -tol:
                assert got["status"] == "bankrupt", where
    positions = risk.positions.to_dicts()
    for p in positions:
        if model_by_id[p["account_id"]] != "portfolio":
            continue
        assert p["liq_price"] is None, "no liquidation price under portfolio margin"
        if p["margin_mode"] == "isolated":
            want = orc[p["account_id"]]["isolated"][p["symbol"]]
            close(p["maint_margin"], want, max(Decimal(p["notional"]), Decimal(1)) * Decimal("1e-12"),
                  f"isolated {p['account_id']} {p['symbol']}")
    # tiered accounts' positions are untouched
    base_pos = tiered.positions.to_dicts()
    for p, b in zip(positions, base_pos):
        if model_by_id[p["account_id"]] == "tiered":
            assert p == b


# ---------------------------------------------------------------- Deribit's example


def deribit_book(price_a: float, price_b: float):
    """Long 100 BTC in future A, short 100 BTC in future B (USD-quoted linear stand-ins)."""
    return Book.from_frames(
        markets=pl.DataFrame({"symbol": ["BTC-FUT-A", "BTC-FUT-B"], "mark_price": [price_a, price_b]}),
        tiers=pl.DataFrame({"symbol": ["BTC-FUT-A", "BTC-FUT-B"], "notional_floor": [0.0, 0.0],
                            "maint_margin_rate": [0.005, 0.005], "max_leverage": [100.0, 100.0]}),
        accounts=pl.DataFrame({"account_id": [1], "wallet_balance": [1_000_000.0]}),
        positions=pl.DataFrame({"account_id": [1, 1], "symbol": ["BTC-FUT-A", "BTC-FUT-B"], "size": [100.0, -100.0],
                                "entry_price": [price_a, price_b]}))


# Deribit, "Portfolio Margin" (www.deribit.com/pages/docs/portfoliomargin, as stored 2026-11):
# a price move of ±10% and "1.00% of underlying value is added for offsetting futures. Example:
# you are long 100 BTC in Future A, and short 100 BTC in Future B, then 1.00%*100 BTC will be
# added". The earlier page (www.deribit.com/docs, category "uncategorized"): ±12.5% and 2%, "then
# 2BTC will be added".
@pytest.mark.parametrize("price_range, rate, btc_added", [(0.10, 0.01, 1.0), (0.125, 0.02, 2.0)])
def test_deribit_offsetting_futures_contingency(price_range, rate, btc_added):
    price = 60_000.0
    model = model_of([dict(symbol=s, risk_group="BTC", price_range=price_range, shocks=11, offset_rate=rate)
                      for s in ("BTC-FUT-A", "BTC-FUT-B")])
    risk = revalue(deribit_book(price, price), get_venue("binance").with_(margin_model="portfolio", portfolio=model))
    row = risk.accounts.to_dicts()[0]
    assert row["scenario_loss"] == 0.0  # the two legs offset at every move of the grid
    assert row["offset_contingency"] == pytest.approx(btc_added * price, rel=1e-15)  # in USD: BTC × index price
    assert row["portfolio_margin"] == row["maint_margin"] == pytest.approx(btc_added * price, rel=1e-15)
    # either leg alone needs the whole move
    alone = revalue(Book.from_frames(**{**deribit_book(price, price).frames(),
                                        "positions": deribit_book(price, price).frames()["positions"].head(1)}),
                    get_venue("binance").with_(margin_model="portfolio", portfolio=model))
    assert alone.accounts["portfolio_margin"][0] == pytest.approx(100 * price * price_range, rel=1e-15)
    assert alone.accounts["offset_contingency"][0] == 0.0


def test_futures_at_different_prices_lose_on_the_spread():
    """Long A at 60,000 and short B at 61,000: the grid's worst move is the range times the spread."""
    model = model_of([dict(symbol=s, risk_group="BTC", price_range=0.1, shocks=11, offset_rate=0.01)
                      for s in ("BTC-FUT-A", "BTC-FUT-B")])
    risk = revalue(deribit_book(60_000.0, 61_000.0), get_venue("binance").with_(margin_model="portfolio",
                                                                                portfolio=model))
    row = risk.accounts.to_dicts()[0]
    assert row["scenario_loss"] == pytest.approx(0.1 * 100 * 1_000.0, rel=1e-12)
    assert row["worst_shock"] == 0.1 and row["worst_group"] == "BTC"  # net short: the rise hurts
    assert row["offset_contingency"] == pytest.approx(0.01 * 100 * 60_000.0, rel=1e-15)


# ---------------------------------------------------------------- properties


@settings(**SETTINGS)
@given(portfolio_cases(joint=False))
def test_a_hedged_account_never_needs_more_than_its_legs(case):
    """With offset_rate <= 2·price_range (the offset contingency never exceeds what the hedge
    saves) and no liquidity contingency (it charges size, and is meant to grow faster than the
    legs), the account's requirement is at most the sum of each cross position's own."""
    book, params, _, _, _, _ = case
    params = [dict(p, liquidity_threshold=None, offset_rate=min(p["offset_rate"], 2 * p["price_range"]))
              for p in params]
    venue = get_venue("binance").with_(margin_model="portfolio", portfolio=model_of(params))
    whole = revalue(engine_book(book), venue).accounts
    legs = [dict(p, account_id=i) for i, p in enumerate(book["positions"]) if p.get("margin_mode", "cross") == "cross"]
    if not legs:
        return
    owner = {i: p["account_id"] for i, p in enumerate(book["positions"]) if p.get("margin_mode", "cross") == "cross"}
    split = dict(book, accounts=[dict(account_id=i, wallet_balance=1.0) for i in owner], positions=legs)
    alone = revalue(engine_book(split), venue).accounts
    sums: dict = {}
    for i, req in zip(alone["account_id"].to_list(), alone["portfolio_margin"].to_list()):
        sums[owner[i]] = sums.get(owner[i], 0.0) + req
    for aid, req in zip(whole["account_id"].to_list(), whole["portfolio_margin"].to_list()):
        if aid in sums:
            assert req <= sums[aid] * (1 + 1e-12) + 1e-9, f"account {aid}: {req} > legs {sums[aid]}"


@settings(**SETTINGS)
@given(portfolio_cases(), st.integers(-3, 3), st.sampled_from([3.0, 0.1, 7.5]))
def test_scaling_every_size_scales_the_loss(case, power, k):
    """×2^j: the loss part (and the offset contingency) scale exactly, bit for bit; any other k
    within rounding. Liquidity contingency aside (its threshold does not scale)."""
    book, params, move, _, _, _ = case
    venue = get_venue("binance").with_(margin_model="portfolio", portfolio=model_of(params, move))
    base = revalue(engine_book(book), venue).accounts
    for factor, exact in ((2.0 ** power, True), (k, False)):
        scaled = dict(book, positions=[dict(p, size=p["size"] * factor,
                                            isolated_margin=p.get("isolated_margin", 0.0) * factor)
                                       for p in book["positions"]])
        got = revalue(engine_book(scaled), venue).accounts
        for col in ("scenario_loss", "offset_contingency"):
            want = base[col].to_numpy() * factor
            have = got[col].to_numpy()
            if exact:
                np.testing.assert_array_equal(have, want, err_msg=col)
            else:
                np.testing.assert_allclose(have, want, rtol=1e-12, atol=1e-9, err_msg=col)


# ---------------------------------------------------------------- same bits


def synthetic_case(n_accounts=3_000, groups_move="independent"):
    book = synthetic_book(n_accounts, seed=7)
    rng = np.random.default_rng(3)
    codes = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=book.n_accounts)
    book = dataclasses.replace(book, margin_model=codes, meta={})
    rows = [dict(symbol=s, risk_group=f"G{i % 3}", price_range=0.15, shocks=33, offset_rate=0.01,
                 liquidity_threshold=250_000.0, liquidity_rate=0.02) for i, s in enumerate(book.symbols)]
    venue = get_venue("binance").with_(margin_model="portfolio", portfolio=model_of(rows, groups_move, 1.5))
    return book, venue


def portfolio_arrays(risk) -> dict:
    am, pm, pr, pf = risk.account_margin, risk.position_margin, risk.position_risk, risk.portfolio
    h = risk.backend.to_host
    out = {}
    for prefix, group in (("am", am), ("pm", pm), ("pr", pr), ("pf", pf)):
        for k, v in vars(group).items():
            if v is not None:
                out[f"{prefix}.{k}"] = np.array(h(v))
    out["adl.score"] = np.array(h(risk.adl.score))
    return out


def assert_same_bits(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), f"{k} differs"


@pytest.mark.parametrize("groups_move", ["independent", "joint"])
def test_same_bits_on_every_thread_count_and_chunk_size(groups_move):
    book, venue = synthetic_case(groups_move=groups_move)
    ref = portfolio_arrays(revalue(book, venue, CpuBackend(threads=1)))
    assert np.isfinite(ref["pf.requirement"]).all() and (ref["pf.requirement"] > 0).any()
    assert_same_bits(ref, portfolio_arrays(revalue(book, venue, CpuBackend(threads=2))))
    assert_same_bits(ref, portfolio_arrays(revalue(book, venue, CpuBackend(threads=2), chunk_positions=997)))


@pytest.fixture(params=["gpu", "stand-in", "stand-in-strict"])
def candidate(request):
    if request.param == "gpu":
        if not gpu_available():
            pytest.skip("needs a CUDA GPU (CuPy reports none); the stand-in twin runs instead")
        return get_backend("gpu")
    from gpurisk.parity import StandInBackend, StrictStandInBackend

    return StrictStandInBackend() if request.param == "stand-in-strict" else StandInBackend()


@pytest.mark.parametrize("groups_move", ["independent", "joint"])
def test_gpu_gives_the_cpu_bits(candidate, groups_move):
    from gpurisk.whatif import what_if_arrays

    book, venue = synthetic_case(20_000 if candidate.name == "gpu" else 2_000, groups_move)
    reference = Engine(book, venue=venue, backend=CpuBackend(threads=os.cpu_count() or 1))
    engine = Engine(book, venue=venue, backend=candidate)
    assert_same_bits(portfolio_arrays(reference.revalue()), portfolio_arrays(engine.revalue()))
    rng = np.random.default_rng(4)
    n = 500
    pick = rng.integers(0, book.n_positions, n)
    orders = (book.pos_account[pick], book.pos_symbol[pick], book.size[pick] * rng.choice([0.5, -0.4, -1.6], n),
              book.mark_price[book.pos_symbol[pick]] * 1.01, book.isolated[pick])
    want, got = what_if_arrays(reference, *orders), what_if_arrays(engine, *orders)
    assert_same_bits({k: np.asarray(v) for k, v in vars(want).items()}, {k: np.asarray(v) for k, v in vars(got).items()})
    from gpurisk import shock_grid, stress

    grid = shock_grid(-0.1, 0.1, 3)
    runs = [stress(book, grid, venue=venue, backend=be, ladder="binance", steps=2, insurance_fund=1e5)
            for be in (CpuBackend(threads=os.cpu_count() or 1), candidate)]
    for table in ("summary", "liquidations", "adl_fills"):
        assert getattr(runs[0], table).equals(getattr(runs[1], table)), table


# ---------------------------------------------------------------- modes and validation


def tiny_model(**changes):
    rows = [dict(symbol="BTCUSDT", risk_group="BTC", price_range=0.1, shocks=11, offset_rate=0.01),
            dict(symbol="ETHUSDT", risk_group="ETH", price_range=0.15, shocks=11, offset_rate=0.01)]
    return model_of([dict(r, **changes) for r in rows])


def test_a_tiered_venue_with_a_model_keeps_every_tiered_figure():
    book = Book.from_frames(**tiny_frames())
    plain = revalue(book, "binance")
    risk = revalue(book, get_venue("binance").with_(portfolio=tiny_model()))
    assert risk.accounts.select(plain.accounts.columns).equals(plain.accounts)
    assert risk.positions.equals(plain.positions)
    assert risk.accounts["margin_model"].to_list() == ["tiered"] * 3
    assert risk.accounts["portfolio_margin"].to_list() == [30_000 * 0.1 + 9_000 * 0.15, 6_000 * 0.1, 0.0]


def test_portfolio_mode_can_liquidate_what_tiers_keep_healthy():
    """Account 2 (short 0.1 BTC, wallet 2,000): tiered MM 24, portfolio 10% of 6,000 = 600."""
    f = tiny_frames()
    f["accounts"] = f["accounts"].with_columns(wallet_balance=pl.Series([10_000.0, 400.0, 500.0]),
                                               margin_model=pl.Series(["tiered", "portfolio", None]))
    risk = revalue(Book.from_frames(**f), get_venue("binance").with_(portfolio=tiny_model()))
    row = risk.accounts.filter(account_id=2).to_dicts()[0]
    assert row["tiered_margin"] == 24.0 and row["maint_margin"] == 600.0
    assert row["status"] == "liquidatable" and row["margin_ratio"] == pytest.approx(600 / 500)
    pos = risk.positions.filter(account_id=2).to_dicts()[0]
    assert pos["status"] == "liquidatable" and pos["liq_price"] is None and pos["bankruptcy_price"] == 65_000.0


def test_the_accounts_table_has_no_portfolio_columns_without_a_model():
    risk = revalue(Book.from_frames(**tiny_frames()), "binance")
    assert "portfolio_margin" not in risk.accounts.columns


def params_frame(**changes):
    base = {"symbol": ["BTCUSDT", "ETHUSDT"], "risk_group": ["BTC", "ETH"], "price_range": [0.1, 0.15],
            "shocks": [11, 11]}
    base.update(changes)
    return pl.DataFrame(base)


@pytest.mark.parametrize("changes, column, words", [
    ({"price_range": [0.1, 1.5]}, "price_range", "(0, 1)"),
    ({"price_range": [0.1, None]}, "price_range", "null"),
    ({"shocks": [1, 11]}, "shocks", "2..1001"),
    ({"symbol": ["BTCUSDT", "BTCUSDT"]}, "symbol", "unique"),
    ({"offset_rate": [0.01, -0.5]}, "offset_rate", "[0, 1)"),
    ({"liquidity_threshold": [float("inf"), 1.0]}, "liquidity_threshold", "finite"),
    ({"risk_group": ["BTC", "BTC"]}, "price_range", "same on every row"),
    ({"shocks": ["a", "b"]}, "shocks", "integer"),
])
def test_bad_parameters_name_table_column_and_rows(changes, column, words):
    with pytest.raises(BookError) as err:
        PortfolioModel.from_frame(params_frame(**changes))
    text = str(err.value)
    assert "portfolio" in text and column in text and words in text, text


def test_missing_parameter_column_is_named():
    with pytest.raises(BookError, match="shocks.*required column is missing"):
        PortfolioModel.from_frame(params_frame().drop("shocks"))


def test_joint_groups_need_one_grid():
    with pytest.raises(ValueError, match="same price_range and shocks"):
        PortfolioModel.from_frame(params_frame(), groups_move="joint")


def test_bad_accounts_margin_model_is_named():
    f = tiny_frames()
    f["accounts"] = f["accounts"].with_columns(margin_model=pl.Series(["tiered", "portfolo", None]))
    with pytest.raises(BookError, match=r"accounts.*margin_model.*row 1 \(account_id=2\)"):
        Book.from_frames(**f)


def test_portfolio_accounts_need_the_parameters():
    f = tiny_frames()
    f["accounts"] = f["accounts"].with_columns(margin_model=pl.Series([None, "portfolio", None]))
    with pytest.raises(ValueError, match="account_id 2.*--portfolio"):
        revalue(Book.from_frames(**f), "binance")
    with pytest.raises(ValueError, match="needs the portfolio parameters"):
        get_venue("binance").with_(margin_model="portfolio")


def test_a_symbol_without_a_group_is_refused_for_portfolio_accounts_only():
    model = model_of([dict(symbol="BTCUSDT", risk_group="BTC", price_range=0.1, shocks=11)])
    book = Book.from_frames(**tiny_frames())
    with pytest.raises(ValueError, match="'ETHUSDT'.*account_id 1, 3"):
        revalue(book, get_venue("binance").with_(margin_model="portfolio", portfolio=model))
    risk = revalue(book, get_venue("binance").with_(portfolio=model))  # tiered accounts: figures null
    assert risk.accounts["portfolio_margin"].to_list() == [None, 6_000 * 0.1, 0.0]


def test_margin_model_column_round_trips_through_frames():
    f = tiny_frames()
    f["accounts"] = f["accounts"].with_columns(margin_model=pl.Series([None, "portfolio", "tiered"]))
    book = Book.from_frames(**f)
    assert book.margin_model.tolist() == [-1, 1, 0]
    again = Book.from_frames(**book.frames())
    assert again.margin_model.tolist() == [-1, 1, 0]


def test_parameters_round_trip_and_read(tmp_path):
    model = tiny_model(liquidity_threshold=1e6, liquidity_rate=0.1)
    path = tmp_path / "portfolio.csv"
    model.frame().write_csv(path)
    assert PortfolioModel.read(path) == model
    with pytest.raises(FileNotFoundError, match="no such portfolio parameters file"):
        PortfolioModel.read(tmp_path / "missing.csv")


# ---------------------------------------------------------------- stress, what-if, CLI, report


def test_cli_revalue_with_portfolio_and_the_report_plot(tmp_path, capsys):
    from gpurisk.cli import main

    book = synthetic_book(300, seed=2)
    book.write(tmp_path / "book")
    rows = [dict(symbol=s, risk_group=s[:3], price_range=0.12, shocks=11, offset_rate=0.01) for s in book.symbols]
    pl.DataFrame(rows).write_csv(tmp_path / "portfolio.csv")
    assert main(["revalue", str(tmp_path / "book"), "--backend", "cpu", "--margin-model", "portfolio",
                 "--portfolio", str(tmp_path / "portfolio.csv"), "--im-multiple", "1.5",
                 "--out", str(tmp_path / "res")]) == 0
    assert "portfolio margin: 301 accounts in portfolio mode" in capsys.readouterr().out
    acc = pl.read_parquet(tmp_path / "res" / "accounts.parquet")
    assert (acc["maint_margin"] == acc["portfolio_margin"]).all()
    assert np.allclose(acc["init_margin"].to_numpy(), 1.5 * acc["portfolio_margin"].to_numpy(), rtol=1e-15)
    assert main(["report", str(tmp_path / "res"), "--out", str(tmp_path / "report.html")]) == 0
    html = (tmp_path / "report.html").read_text()
    assert 'data-plot="portfolio-vs-tiered"' in html and "Portfolio margin" in html
    # without portfolio accounts, no such section
    assert main(["revalue", str(tmp_path / "book"), "--backend", "cpu", "--out", str(tmp_path / "plain")]) == 0
    assert main(["report", str(tmp_path / "plain"), "--out", str(tmp_path / "plain.html")]) == 0
    assert "portfolio-vs-tiered" not in (tmp_path / "plain.html").read_text()


def test_cli_usage_errors_exit_2(tmp_path, capsys):
    from gpurisk.cli import main

    synthetic_book(20, seed=2).write(tmp_path / "book")
    assert main(["revalue", str(tmp_path / "book"), "--margin-model", "portfolio"]) == 2
    assert "--portfolio FILE" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("symbol,risk_group,price_range,shocks\nBTCUSDT,BTC,2.0,11\n")
    assert main(["revalue", str(tmp_path / "book"), "--portfolio", str(tmp_path / "bad.csv")]) == 2
    assert "portfolio.price_range: must be in (0, 1)" in capsys.readouterr().err


def test_cli_revalue_with_portfolio_on_a_local_dask_cluster(tmp_path, capsys):
    """Shards of whole accounts, each margined on its worker: the same tables as one machine."""
    pytest.importorskip("distributed")
    from gpurisk.cli import main

    book, venue = synthetic_case(400)
    book.write(tmp_path / "book")
    venue.portfolio.frame().write_csv(tmp_path / "portfolio.csv")
    common = [str(tmp_path / "book"), "--backend", "cpu", "--margin-model", "portfolio", "--portfolio",
              str(tmp_path / "portfolio.csv"), "--im-multiple", "1.5"]
    assert main(["revalue", *common, "--out", str(tmp_path / "one")]) == 0
    assert main(["revalue", *common, "--workers", "2", "--out", str(tmp_path / "dask")]) == 0
    for table in ("accounts", "positions"):
        one = pl.read_parquet(tmp_path / "one" / f"{table}.parquet")
        assert pl.read_parquet(tmp_path / "dask" / f"{table}.parquet").equals(one), table
    assert pl.read_parquet(tmp_path / "one" / "accounts.parquet")["margin_model"].to_list().count("tiered") > 0


def test_shards_and_book_updates_keep_the_accounts_margin_models():
    from gpurisk.distributed import slice_book

    book, _ = synthetic_case(200)
    assert np.array_equal(slice_book(book, 10, 50).margin_model, book.margin_model[10:50])
    assert np.array_equal(book.slice_accounts(10, 50).margin_model, book.margin_model[10:50])
    from gpurisk.book_updates import LiveBook, writable_copy

    live = LiveBook(writable_copy(book))
    new_id = int(book.account_id.max()) + 1
    applied = live.apply([{"type": "account", "account_id": new_id, "wallet_balance": 1_000.0},
                          {"type": "position", "account_id": new_id, "symbol": book.symbols[0], "size": 1.0,
                           "entry_price": float(book.mark_price[0])}])
    after = applied.book
    assert after.n_accounts == book.n_accounts + 1
    assert after.margin_model[-1] == -1  # a new account takes the venue's model
    assert np.array_equal(after.margin_model[:-1], book.margin_model)


def test_cli_stress_with_portfolio(tmp_path, capsys):
    from gpurisk.cli import main

    book, venue = synthetic_case(300)
    dataclasses.replace(book, margin_model=None, meta={}).write(tmp_path / "book")  # the venue's model decides
    venue.portfolio.frame().write_csv(tmp_path / "portfolio.csv")
    args = ["stress", str(tmp_path / "book"), "--backend", "cpu", "--grid", "-0.1", "0.1", "3", "--no-report"]
    assert main([*args, "--out", str(tmp_path / "tiered")]) == 0
    assert main([*args, "--margin-model", "portfolio", "--portfolio", str(tmp_path / "portfolio.csv"),
                 "--out", str(tmp_path / "pf")]) == 0
    assert "money conserved on every scenario" in capsys.readouterr().out
    tiered = pl.read_parquet(tmp_path / "tiered" / "summary.parquet")
    pf = pl.read_parquet(tmp_path / "pf" / "summary.parquet")
    assert pf["accounts_liquidated"].sum() > tiered["accounts_liquidated"].sum()  # ±10% moves vs tier rates


def test_inverse_markets_are_refused_for_portfolio_pools_and_null_for_tiered_ones():
    """Mixed book (tests/test_inverse.py): account 7 has a USDT pool (linear BTCUSDT) and a BTC
    pool (inverse BTCUSD). The model values linear contracts only."""
    from test_inverse import mixed_book

    model = model_of([dict(symbol=s, risk_group="BTC", price_range=0.1, shocks=11) for s in ("BTCUSD", "BTCUSDT")])
    book = mixed_book()
    with pytest.raises(ValueError, match="linear contracts only.*'BTCUSD'.*account_id 3, 7"):
        revalue(book, get_venue("binance").with_(margin_model="portfolio", portfolio=model))
    f = book.frames()
    f["accounts"] = f["accounts"].with_columns(
        margin_model=pl.when((pl.col("account_id") == 7) & (pl.col("asset") == "USDT")).then(pl.lit("portfolio")))
    risk = revalue(Book.from_frames(**f), get_venue("binance").with_(portfolio=model))
    rows = {(r["account_id"], r["asset"]): r for r in risk.accounts.to_dicts()}
    assert rows[(7, "USDT")]["margin_model"] == "portfolio"
    assert rows[(7, "USDT")]["maint_margin"] == pytest.approx(0.5 * 50_000.0 * 0.1, rel=1e-15)
    assert rows[(7, "BTC")]["portfolio_margin"] is None and rows[(3, "BTC")]["portfolio_margin"] is None
    assert rows[(7, "BTC")]["margin_model"] == "tiered"


def test_the_monitor_refuses_portfolio_accounts():
    from gpurisk.monitor import Monitor

    engine = Engine(Book.from_frames(**tiny_frames()),
                    venue=get_venue("binance").with_(margin_model="portfolio", portfolio=tiny_model()), backend="cpu")
    with pytest.raises(ValueError, match="the monitor does not model portfolio margin yet: 3 account"):
        Monitor(engine)
    Monitor(Engine(Book.from_frames(**tiny_frames()), venue=get_venue("binance").with_(portfolio=tiny_model()),
                   backend="cpu"))  # every account tiered: runs


def test_cli_what_if_with_portfolio(tmp_path, capsys):
    from gpurisk.cli import main

    book = Book.from_frames(**tiny_frames())
    book.write(tmp_path / "book")
    tiny_model().frame().write_csv(tmp_path / "portfolio.csv")
    pl.DataFrame({"account_id": [2], "symbol": ["BTCUSDT"], "size": [-0.5], "price": [60_000.0]}).write_csv(
        tmp_path / "orders.csv")
    common = ["what-if", str(tmp_path / "book"), str(tmp_path / "orders.csv"), "--backend", "cpu"]
    assert main([*common, "--out", str(tmp_path / "tiered.parquet")]) == 0
    assert main([*common, "--margin-model", "portfolio", "--portfolio", str(tmp_path / "portfolio.csv"),
                 "--out", str(tmp_path / "pf.parquet")]) == 0
    tiered, pf = (pl.read_parquet(tmp_path / f"{n}.parquet").row(0, named=True) for n in ("tiered", "pf"))
    # short 0.6 BTC after the order: 10% of 36,000 under portfolio margin
    assert pf["account_maint_margin"] == pytest.approx(3_600.0, rel=1e-15)
    assert tiered["account_maint_margin"] < 200 and tiered["im_check"] and not pf["im_check"]
