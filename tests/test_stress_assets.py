"""Stress of books with several settle assets (inverse contracts; README "Inverse contracts"):
an insurance fund, an external account and a conservation sum per asset, summary rows per
(scenario, policy, asset), the same figures as each asset's book stressed alone, refusals."""

import numpy as np
import polars as pl
import pytest

import gpurisk
from gpurisk.book import BookError
from gpurisk.stress import CONSERVATION_TOLERANCE, POLICIES, SUMMARY_COLUMNS, Impact, conservation_check, run_stress
from gpurisk.stress_assets import insurance_funds

FUNDS = {"USDT": 2_000.0, "BTC": 0.3, "ETH": 4.0}


@pytest.fixture(scope="module")
def book():
    return gpurisk.synthetic_book(500, seed=4, stressed_share=0.3, isolated_share=0.2, inverse_markets=2)


def _labels_as_text(df: pl.DataFrame) -> pl.DataFrame:
    """Enum columns as text: a sub-book's symbol labels are its own, the whole book's are all."""
    return df.with_columns(pl.col(c).cast(pl.String) for c in ("symbol", "asset") if c in df.columns)


def _same_tables(got, want):
    for name in ("summary", "liquidations", "adl_fills", "haircuts", "prices"):
        g, w = _labels_as_text(getattr(got, name)), _labels_as_text(getattr(want, name))
        assert g.columns == w.columns, name
        assert g.equals(w), name


@pytest.mark.parametrize("venue,policy", [("binance", ["queue", "rap"]), ("dydx", "queue"),
                                          ("bitmex", ["pro_rata", "capped_pro_rata"])])
def test_each_assets_rows_equal_its_book_stressed_alone(book, venue, policy):
    """Pools of different assets never share money: the whole book's rows of an asset are, bit
    for bit, a stress of that asset's book with its fund, its shocks, funding and depths."""
    scen = pl.DataFrame({"scenario": [0, 0, 1, 1, 2], "symbol": ["BTCUSD", "*", "ETHUSD", "*", "*"],
                         "shock": [-0.35, 0.1, 0.3, -0.2, 0.25]})
    funding = {"BTCUSD": 0.001, "ETHUSD": -0.002, "SOLUSDT": 0.0005}
    impact = Impact("sqrt", depth={"BTCUSD": 50.0, "SOLUSDT": 1e6})
    opts = dict(venue=venue, backend="cpu", policy=policy, steps=3, impact=impact, funding=funding, threads=2)
    whole = gpurisk.stress(book, scen, insurance_fund=FUNDS, **opts)
    assert whole.assets == book.assets == ("BTC", "ETH", "USDT")
    assert whole.summary.columns[:3] == ["scenario", "policy", "asset"]
    for asset in book.assets:
        part = book.for_asset(asset)
        sub_scen = scen.filter(pl.col("symbol").is_in(list(part.symbols) + ["*"]))
        alone = gpurisk.stress(part, sub_scen, insurance_fund=FUNDS[asset], **{
            **opts, "funding": {s: r for s, r in funding.items() if s in part.symbols},
            "impact": Impact("sqrt", depth={s: d for s, d in impact.depth.items() if s in part.symbols})})
        _same_tables(whole.for_asset(asset), alone)
    # rows in run order: scenario, then policy as listed, then asset
    s = whole.summary
    n_pol = 1 if isinstance(policy, str) else len(policy)
    assert s.height == 3 * n_pol * 3
    assert s["asset"].cast(pl.String).to_list() == ["BTC", "ETH", "USDT"] * (3 * n_pol)
    assert s["scenario"].to_list() == sorted(s["scenario"].to_list())


@pytest.mark.parametrize("seed", [1, 7])
def test_money_is_conserved_in_each_asset(seed):
    """Each (scenario, policy, asset) row conserves its own asset's money, with the fund,
    external account and every balance of that asset; money never crosses assets."""
    book = gpurisk.synthetic_book(400, seed=seed, stressed_share=0.35, inverse_markets=3)
    res = gpurisk.stress(book, gpurisk.shock_grid(-0.5, 0.5, 9), backend="cpu", policy=list(POLICIES),
                         insurance_fund={"USDT": 5_000.0, "BTC": 0.2}, steps=4, impact="sqrt")
    s = res.summary
    failed, worst = conservation_check(s)
    assert failed == 0 and worst <= CONSERVATION_TOLERANCE
    assert sorted(s["asset"].cast(pl.String).unique().to_list()) == list(book.assets)
    # the deficit is paid by that asset's fund and that asset's counterparties only
    queue = s.filter(pl.col("policy") == "queue")
    gap = (queue["deficit"] - queue["insurance_used"] - queue["socialized_loss"]).abs()
    assert (gap <= 1e-9 * (queue["deficit"].abs() + 1)).all()
    assert (s["deficit"] > 0).any()


def test_each_fund_starts_with_its_own_amount():
    from test_inverse import mixed_book  # BTCUSD (inverse) and BTCUSDT; BTC, ETH and USDT wallets

    res = gpurisk.stress(mixed_book(), pl.DataFrame({"scenario": [0], "symbol": ["*"], "shock": [0.0]}),
                         backend="cpu", insurance_fund={"USDT": 5_000.0, "BTC": 0.2})
    s = res.summary
    assert s["steps"].to_list() == [0, 0]  # quiet: nobody liquidated, the funds untouched
    # ETH: wallets and no market, nothing to stress: no rows
    assert dict(zip(s["asset"].cast(pl.String), s["insurance_left"])) == {"BTC": 0.2, "USDT": 5_000.0}
    assert res.for_asset("ETH").summary.height == 0


def test_a_single_asset_book_keeps_todays_tables_and_bits():
    book = gpurisk.synthetic_book(300, seed=2, stressed_share=0.3)
    grid = gpurisk.shock_grid(-0.4, 0.4, 5)
    plain = gpurisk.stress(book, grid, backend="cpu", insurance_fund=1_000.0)
    named = gpurisk.stress(book, grid, backend="cpu", insurance_fund={"USDT": 1_000.0})
    assert plain.summary.columns == list(SUMMARY_COLUMNS)  # no asset column
    assert "asset" not in plain.liquidations.columns and plain.assets == ("USDT",)
    _same_tables(named, plain)
    assert plain.for_asset("USDT") is plain
    with pytest.raises(KeyError, match="BTC"):
        plain.for_asset("BTC")
    coin = gpurisk.synthetic_book(300, seed=2, stressed_share=0.3, inverse_markets=1).for_asset("BTC")
    one = gpurisk.stress(coin, grid, backend="cpu", insurance_fund={"BTC": 0.5})
    assert "asset" not in one.summary.columns and one.assets == ("BTC",)
    _same_tables(one, gpurisk.stress(coin, grid, backend="cpu", insurance_fund=0.5))


def test_run_stress_records_carry_asset_codes(book):
    ids = np.array([3, 5], dtype=np.int64)
    shocks = np.zeros((2, 1, book.n_symbols))
    shocks[0, 0, :] = -0.3
    shocks[1, 0, :] = 0.3
    rec = run_stress(book, ids, shocks, backend="cpu", insurance_fund={"BTC": 1.0})
    assert rec.assets == book.assets
    assert rec.summary["asset"].tolist() == [0, 1, 2, 0, 1, 2]
    assert rec.summary["scenario"].tolist() == [3, 3, 3, 5, 5, 5]
    # detail rows name the whole book's symbols, each in its asset
    sym_asset = book.settle_asset[rec.prices["symbol"]]
    assert np.array_equal(sym_asset, rec.prices["asset"])
    liq = rec.liquidations
    assert liq["scenario"].size and np.array_equal(book.settle_asset[liq["symbol"]], liq["asset"])
    res = rec.to_result()
    assert res.summary["asset"].dtype == pl.Enum(list(book.assets))
    # one summary row per (scenario, policy, asset) in the policy comparison as well
    comp = res.policy_comparison()
    assert comp.columns[:2] == ["policy", "asset"] and comp.height == 3


def test_insurance_fund_per_asset_is_checked(book):
    grid = gpurisk.shock_grid(-0.1, 0.1, 2)
    with pytest.raises(ValueError, match=r"3 assets \(BTC, ETH, USDT\): give the insurance fund per asset"):
        gpurisk.stress(book, grid, backend="cpu", insurance_fund=1_000.0)
    with pytest.raises(ValueError, match="asset.*the book has no wallet or market in: 'DOGE'"):
        gpurisk.stress(book, grid, backend="cpu", insurance_fund={"DOGE": 1.0})
    with pytest.raises(ValueError, match=r"insurance_fund\['BTC'\] must be finite and in \[0"):
        gpurisk.stress(book, grid, backend="cpu", insurance_fund={"BTC": -1.0})
    with pytest.raises(ValueError, match=r"insurance_fund\['ETH'\] must be a number"):
        gpurisk.stress(book, grid, backend="cpu", insurance_fund={"ETH": "lots"})
    assert insurance_funds(book, 0.0) == {"BTC": 0.0, "ETH": 0.0, "USDT": 0.0}
    assert insurance_funds(book, {"ETH": 2}) == {"BTC": 0.0, "ETH": 2.0, "USDT": 0.0}


def test_pooled_collateral_stays_refused(book):
    with pytest.raises(BookError, match="venue 'bybit_uta' pools collateral across assets"):
        gpurisk.stress(book, gpurisk.shock_grid(-0.1, 0.1, 2), venue="bybit_uta", backend="cpu")
    with pytest.raises(BookError, match="venue 'binance_multi_assets' pools collateral"):
        run_stress(book, np.array([0]), np.zeros((1, 1, book.n_symbols)), venue="binance_multi_assets",
                   backend="cpu", insurance_fund={"BTC": 1.0})


def test_cli_fund_per_asset_and_report_per_asset(tmp_path, capsys):
    from gpurisk.cli import main

    book_dir, out = tmp_path / "book", tmp_path / "out"
    assert main(["synth", str(book_dir), "--accounts", "300", "--inverse-markets", "2", "--seed", "5"]) == 0
    common = ["--grid", "-0.3", "0.3", "3", "--backend", "cpu", "--quiet"]
    assert main(["stress", str(book_dir), *common, "--insurance-fund", "5", "--insurance-fund", "BTC=1"]) == 2
    assert "give one AMOUNT" in capsys.readouterr().err
    assert main(["stress", str(book_dir), *common, "--insurance-fund", "BTC=many"]) == 2
    assert "'many' is not a number" in capsys.readouterr().err
    assert main(["stress", str(book_dir), *common, "--insurance-fund", "DOGE=1"]) == 2
    assert "no wallet or market in DOGE" in capsys.readouterr().err
    assert main(["stress", str(book_dir), *common, "--insurance-fund", "BTC=0.5", "--insurance-fund", "USDT=1e4",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "insurance fund 0.5 BTC, 10,000 USDT" in printed and "worst deficit (ETH)" in printed
    summary = pl.read_parquet(out / "summary.parquet")
    assert summary.height == 9 and (summary["conservation_error"].abs() <= 1e-9).all()
    left = summary.filter(pl.col("steps") == 0)
    for row in left.iter_rows(named=True):
        assert row["insurance_left"] == {"BTC": 0.5, "USDT": 1e4}.get(str(row["asset"]), 0.0)
    assert sorted(p.name for p in out.glob("report*.html")) == ["report-BTC.html", "report-ETH.html",
                                                                "report-USDT.html"]
    # --asset keeps that asset's fund of the per-asset list
    assert main(["stress", str(book_dir), *common, "--summary-only", "--asset", "BTC", "--insurance-fund", "BTC=0.5",
                 "--insurance-fund", "USDT=1e4", "--out", str(tmp_path / "btc")]) == 0
    btc = pl.read_parquet(tmp_path / "btc" / "summary.parquet")
    assert "asset" not in btc.columns
    assert btc.drop("scenario").equals(summary.filter(pl.col("asset") == "BTC").drop("scenario", "asset"))
    # the report of several assets: one at a time
    assert main(["report", "--stress", str(out), "--out", str(tmp_path / "r.html")]) == 2
    assert "report one at a time with --asset ASSET" in capsys.readouterr().err
    assert main(["report", "--stress", str(out), "--out", str(tmp_path / "r.html"), "--asset", "ETH"]) == 0
    assert (tmp_path / "r.html").stat().st_size > 0
    assert main(["report", "--stress", str(out), "--out", str(tmp_path / "r2.html"), "--asset", "DOGE"]) == 2
    assert "no stress rows in 'DOGE'" in capsys.readouterr().err


def test_dask_run_equals_the_single_machine_run(book):
    distributed = pytest.importorskip("distributed")
    from gpurisk.distributed import stress_distributed

    grid = gpurisk.shock_grid(-0.3, 0.3, 4)
    want = gpurisk.stress(book, grid, backend="cpu", insurance_fund=FUNDS, policy=["queue", "rap"])
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cl, \
            distributed.Client(cl) as client:
        got = stress_distributed(book, grid, client, backend="cpu", insurance_fund=FUNDS, policy=["queue", "rap"],
                                 n_tasks=2)
    assert got.assets == book.assets
    _same_tables(got, want)
    _same_tables(got.for_asset("ETH"), want.for_asset("ETH"))
