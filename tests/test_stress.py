"""Stress engine: conservation of money on every scenario and step, the ADL queue and its
fills, the insurance fund, haircut policies, the ladder's restoring reduction, cascades."""

import importlib
import os
import subprocess
import sys
import textwrap
from decimal import Decimal, getcontext

import numpy as np
import polars as pl
import pytest

from gpurisk import Book, synthetic_book
from gpurisk.book import BookError
from gpurisk.ladder import Ladder
from gpurisk.deleverage import water_fill
from gpurisk.stress import (ACTIONS, ADL_FILL_COLUMNS, HAIRCUT_COLUMNS, LIQUIDATION_COLUMNS, MARGIN_MODES, POLICIES,
                            PRICE_COLUMNS, SUMMARY_COLUMNS, Impact, run_stress, scenario_paths, shock_grid,
                            stress)

getcontext().prec = 50
stress_module = importlib.import_module("gpurisk.stress")  # `gpurisk.stress` the attribute is the function


@pytest.fixture(scope="module")
def book():
    return synthetic_book(1_500, seed=3)


def check_books_balance(res):
    s = res.summary
    assert (s["conservation_error"].abs() < 1e-9).all(), s.filter(pl.col("conservation_error").abs() >= 1e-9)
    gap = (s["deficit"] - s["insurance_used"] - s["socialized_loss"]).abs()
    assert (gap <= 1e-9 * s["deficit"].abs().clip(lower_bound=1.0)).all()


def test_grid_conserves_money_and_accounts_for_every_deficit(book):
    res = stress(book, shock_grid(-0.4, 0.4, 17), venue="binance", backend="cpu")
    check_books_balance(res)
    s = res.summary
    assert s.height == 17 and s["deficit"].max() > 0
    # Bigger moves liquidate more.
    far = s.filter(pl.col("scenario").is_in([0, 16]))["accounts_liquidated"].min()
    near = s.filter(pl.col("scenario") == 8)["accounts_liquidated"].item()
    assert far > near


@pytest.mark.parametrize("policy", ["queue", "pro_rata", "capped_pro_rata", "rap"])
@pytest.mark.parametrize("venue", ["binance", "bybit", "bitmex", "hyperliquid", "dydx"])
def test_every_policy_and_venue_conserves(book, policy, venue):
    res = stress(book, shock_grid(-0.3, 0.3, 5), venue=venue, backend="cpu", policy=policy,
                 insurance_fund=20_000.0)
    check_books_balance(res)
    s = res.summary
    assert (s["insurance_left"] >= -1e-6).all() or (s["socialized_loss"] > 0).any()


def test_cascade_moves_prices_and_conserves_every_step(book):
    res = stress(book, shock_grid(-0.25, -0.15, 3), backend="cpu", steps=20, impact=Impact("sqrt", coefficient=0.2),
                 insurance_fund=10_000.0)
    check_books_balance(res)
    assert (res.summary["steps"] > 1).any()
    btc = res.prices.filter((pl.col("scenario") == 0) & (pl.col("symbol") == "BTCUSDT")).sort("step")
    assert btc.height == res.summary.filter(pl.col("scenario") == 0)["steps"].item() + 1
    assert btc["mark_price"][-1] != btc["mark_price"][0]  # liquidation flow moved the mark
    # Every step's liquidations are after the previous step's (no account liquidated twice in full).
    full = res.liquidations.filter(pl.col("action").is_in(["liquidate", "takeover", "backstop"]))
    assert full.select("scenario", "account_id", "symbol", "margin_mode").is_duplicated().sum() == 0


def test_stress_is_the_same_for_any_batch_and_thread_count(book):
    runs = [stress(book, shock_grid(-0.3, 0.3, 7), backend="cpu", batch=b).summary for b in (1, 2, 7)]
    for r in runs[1:]:
        assert r.equals(runs[0])


def bitmex_example_book():
    """BitMEX's ADL example: six longs (qty 10, 10, 20, 30, 20, 10 for accounts 1..6) ranked
    2, 5, 4, 1, 6, 3; a short of 20 is bankrupt at 650."""
    qty = {1: 10.0, 2: 10.0, 3: 20.0, 4: 30.0, 5: 20.0, 6: 10.0}
    entry = {2: 500.0, 5: 520.0, 4: 540.0, 1: 560.0, 6: 580.0, 3: 600.0}  # lower entry, higher rank
    rows = [(a, "XBTUSD", qty[a], entry[a], "isolated", 0.1 * entry[a] * qty[a]) for a in range(1, 7)]
    rows += [(7, "XBTUSD", -20.0, 600.0, "cross", 0.0), (8, "XBTUSD", -80.0, 700.0, "cross", 0.0)]
    positions = pl.DataFrame(rows, schema=["account_id", "symbol", "size", "entry_price", "margin_mode",
                                           "isolated_margin"], orient="row")
    return Book.from_frames(
        markets=pl.DataFrame({"symbol": ["XBTUSD"], "mark_price": [700.0]}),
        tiers=pl.DataFrame({"symbol": ["XBTUSD"], "notional_floor": [0.0], "maint_margin_rate": [0.005],
                            "max_leverage": [100.0]}),
        accounts=pl.DataFrame({"account_id": list(range(1, 9)),
                               "wallet_balance": [0.0] * 6 + [1_000.0, 1_000_000.0]}),
        positions=positions)


def test_bitmex_adl_example_queue_full_then_partial_fill_at_bankruptcy_price():
    """https://www.bitmex.com/app/autoDeleveragingExamples: the short of 20 with bankruptcy
    price 650 closes account 2 in full (10) and account 5 in part (10 of 20), both at 650."""
    b = bitmex_example_book()
    zero = pl.DataFrame({"scenario": [0], "symbol": ["*"], "shock": [0.0]})
    res = stress(b, zero, venue="bitmex", backend="cpu", insurance_fund=0.0)
    fills = res.adl_fills.sort("counterparty_account_id")
    assert fills.select("bankrupt_account_id", "counterparty_account_id").rows() == [(7, 2), (7, 5)]
    assert fills["qty"].to_list() == pytest.approx([10.0, 10.0])
    assert fills["price"].to_list() == pytest.approx([650.0, 650.0])
    s = res.summary.row(0, named=True)
    assert s["deficit"] == pytest.approx(1_000.0) and s["socialized_loss"] == pytest.approx(1_000.0)
    assert s["adl_accounts"] == 2
    check_books_balance(res)


def test_insurance_fund_pays_first_and_only_the_rest_is_deleveraged():
    b = bitmex_example_book()
    zero = pl.DataFrame({"scenario": [0], "symbol": ["*"], "shock": [0.0]})
    full = stress(b, zero, venue="bitmex", backend="cpu", insurance_fund=5_000.0)
    assert full.adl_fills.height == 0
    s = full.summary.row(0, named=True)
    assert s["insurance_used"] == pytest.approx(1_000.0) and s["insurance_left"] == pytest.approx(4_000.0)
    half = stress(b, zero, venue="bitmex", backend="cpu", insurance_fund=500.0)
    s = half.summary.row(0, named=True)
    assert s["insurance_used"] == pytest.approx(500.0) and s["socialized_loss"] == pytest.approx(500.0)
    assert half.adl_fills["qty"].sum() == pytest.approx(10.0)  # half the position went to ADL
    assert half.adl_fills["counterparty_account_id"].to_list() == [2]


def test_queue_fills_respect_positions_and_rank(book):
    res = stress(book, shock_grid(-0.35, -0.35, 1), venue="bybit", backend="cpu")
    fills = res.adl_fills
    assert fills.height > 0
    pos = book.frames()["positions"]
    held = dict(zip(zip(pos["account_id"].to_list(), pos["symbol"].to_list()), pos["size"].abs().to_list()))
    per_cp = fills.group_by("counterparty_account_id", "symbol").agg(pl.col("qty").sum())
    for a, s, q in per_cp.iter_rows():
        assert q <= held[(a, s)] * (1 + 1e-12)
    liq = res.liquidations.filter(pl.col("action") == "takeover")
    bp = dict(zip(zip(liq["account_id"].to_list(), liq["symbol"].cast(pl.String).to_list()), liq["price"].to_list()))
    for r in fills.iter_rows(named=True):
        assert r["price"] == bp[(r["bankrupt_account_id"], r["symbol"])]
        assert r["qty"] <= held[(r["bankrupt_account_id"], r["symbol"])] * (1 + 1e-12)


def test_haircut_policies():
    assert water_fill(6.0, caps=np.array([1.0, 5.0, 10.0]), weights=np.ones(3)).tolist() == [1.0, 2.5, 2.5]
    assert water_fill(100.0, caps=np.array([1.0, 5.0]), weights=np.ones(2)).tolist() == [1.0, 5.0]
    cut = water_fill(3.0, caps=np.array([10.0, 10.0]), weights=np.array([1.0, 2.0]))
    assert cut.tolist() == pytest.approx([1.0, 2.0])
    b = bitmex_example_book()
    zero = pl.DataFrame({"scenario": [0], "symbol": ["*"], "shock": [0.0]})
    pr = stress(b, zero, venue="bitmex", backend="cpu", policy=["pro_rata", "capped_pro_rata", "rap"])
    check_books_balance(pr)
    for pol in ("pro_rata", "capped_pro_rata", "rap"):
        cuts = pr.haircuts.filter(pl.col("policy") == pol)
        assert cuts["amount"].sum() == pytest.approx(1_000.0)
    # Pro rata: one rate on every winner's positive PnL (mark 700).
    cuts = pr.haircuts.filter(pl.col("policy") == "pro_rata").sort("account_id")
    entry = {2: 500.0, 5: 520.0, 4: 540.0, 1: 560.0, 6: 580.0, 3: 600.0}
    qty = {1: 10.0, 2: 10.0, 3: 20.0, 4: 30.0, 5: 20.0, 6: 10.0}
    rates = [r["amount"] / (qty[r["account_id"]] * (700.0 - entry[r["account_id"]])) for r in cuts.iter_rows(named=True)]
    assert max(rates) == pytest.approx(min(rates))
    comparison = pr.policy_comparison()
    assert comparison["policy"].to_list() == ["pro_rata", "capped_pro_rata", "rap"]


def test_restoring_reduction_hits_the_target_ratio():
    """Oracle (plain Decimal): after the ladder's proportional reduction, MM/equity = target."""
    tiers = [(0.0, 0.004, 125.0), (50_000.0, 0.005, 100.0), (250_000.0, 0.01, 50.0), (1_000_000.0, 0.025, 20.0)]
    book = Book.from_frames(
        markets=pl.DataFrame({"symbol": ["BTCUSDT", "ETHUSDT"], "mark_price": [60_000.0, 3_000.0]}),
        tiers=pl.DataFrame([(s, *t) for s in ("BTCUSDT", "ETHUSDT") for t in tiers],
                           schema=["symbol", "notional_floor", "maint_margin_rate", "max_leverage"], orient="row"),
        accounts=pl.DataFrame({"account_id": [1, 2], "wallet_balance": [30_000.0, 1e7]}),
        positions=pl.DataFrame({"account_id": [1, 1, 2, 2], "symbol": ["BTCUSDT", "ETHUSDT", "BTCUSDT", "ETHUSDT"],
                                "size": [25.0, 150.0, -25.0, -150.0], "entry_price": [60_000.0, 3_000.0] * 2}))
    # Shocked down 1.5%: account 1 is past liquidation with BTC in tier 4 (1.5M notional).
    lad = Ladder(partial="target", target_ratio=0.5, max_partial_steps=1)
    res = stress(book, pl.DataFrame({"scenario": [0], "symbol": ["*"], "shock": [-0.015]}), backend="cpu",
                 ladder=lad)
    red = res.liquidations.filter(pl.col("action") == "reduce").sort("symbol")
    assert red.height == 2
    marks = {"BTCUSDT": Decimal(60_000) * Decimal("0.985"), "ETHUSDT": Decimal(3_000) * Decimal("0.985")}
    size = {"BTCUSDT": Decimal(25), "ETHUSDT": Decimal(150)}
    entry = {"BTCUSDT": Decimal(60_000), "ETHUSDT": Decimal(3_000)}
    equity = Decimal(30_000) + sum(size[s] * (marks[s] - entry[s]) for s in size)

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
    after = sum(mm(kept[s] * marks[s]) for s in kept)
    assert abs(after / equity - Decimal("0.5")) < Decimal("1e-9")
    # Same fraction of each position.
    assert abs(kept["BTCUSDT"] / size["BTCUSDT"] - kept["ETHUSDT"] / size["ETHUSDT"]) < Decimal("1e-12")
    check_books_balance(res)


def test_hyperliquid_slices_large_positions():
    book = synthetic_book(800, seed=5)
    res = stress(book, shock_grid(-0.2, -0.2, 1), venue="hyperliquid", backend="cpu", steps=3,
                 impact=Impact("linear", coefficient=0.05))
    check_books_balance(res)
    red = res.liquidations.filter(pl.col("action") == "reduce")
    if red.height:
        pos = book.frames()["positions"]
        held = dict(zip(zip(pos["account_id"].to_list(), pos["symbol"].to_list()), pos["size"].abs().to_list()))
        first = red.filter(pl.col("step") == 0)
        for r in first.iter_rows(named=True):
            assert r["qty"] == pytest.approx(0.2 * held[(r["account_id"], r["symbol"])])


def test_price_path_scenarios_run_every_step(book):
    path = pl.DataFrame({"scenario": [0, 0, 0], "step": [0, 1, 2], "symbol": ["*", "*", "*"],
                         "shock": [-0.05, -0.15, -0.3]})
    res = stress(book, path, backend="cpu", steps=1)
    check_books_balance(res)
    assert res.summary["steps"].item() == 3
    btc = res.prices.filter(pl.col("symbol") == "BTCUSDT").sort("step")["mark_price"].to_list()
    assert btc[-1] == pytest.approx(book.mark_price[book.symbol_index("BTCUSDT")] * 0.7)


def test_bad_scenarios_are_refused_by_row(book):
    with pytest.raises(BookError, match="scenarios.shock: must be finite and > -1 .*row 1"):
        stress(book, pl.DataFrame({"scenario": [0, 1], "symbol": ["*", "*"], "shock": [0.1, -1.5]}), backend="cpu")
    with pytest.raises(BookError, match="scenarios.symbol: must be a symbol of the book .*'NOPE'"):
        stress(book, pl.DataFrame({"scenario": [0], "symbol": ["NOPE"], "shock": [0.1]}), backend="cpu")
    with pytest.raises(ValueError, match="unknown policy 'lottery'"):
        stress(book, shock_grid(0, 0, 1), backend="cpu", policy="lottery")


def test_write(tmp_path, book):
    res = stress(book, shock_grid(-0.3, 0.3, 3), backend="cpu", policy=["queue", "pro_rata"])
    res.write(tmp_path)
    for name in ("summary", "liquidations", "adl_fills", "haircuts", "prices", "policy_comparison"):
        assert (tmp_path / f"{name}.parquet").exists()
    assert pl.read_parquet(tmp_path / "summary.parquet").height == 6


@pytest.mark.parametrize("venue", ["binance", "bybit", "hyperliquid"])
def test_counterparties_are_the_front_of_the_ranked_queue(book, venue):
    """Single step, no impact: ADL counterparties of each queue are, in fill order, exactly
    the front of that queue as revalue ranks it at the scenario's marks, skipping positions
    that are themselves being liquidated."""
    from gpurisk import revalue

    shock = -0.35
    res = stress(book, shock_grid(shock, shock, 1), venue=venue, backend="cpu", ladder=Ladder())
    marks = {s: float(p) * (1 + shock) for s, p in zip(book.symbols, book.mark_price)}
    ranked = revalue(book, venue=venue, backend="cpu", marks=marks).positions
    liq = res.liquidations.select("account_id", "symbol", "margin_mode").unique()
    cross_liq = set(liq.filter(pl.col("margin_mode") == "cross")["account_id"].to_list())
    iso_liq = set(zip(liq.filter(pl.col("margin_mode") == "isolated")["account_id"].to_list(),
                      liq.filter(pl.col("margin_mode") == "isolated")["symbol"].cast(pl.String).to_list()))
    fills = res.adl_fills.with_columns(pl.col("symbol").cast(pl.String))
    assert fills.height > 0
    for sym in fills["symbol"].unique().to_list():
        f = fills.filter(pl.col("symbol") == sym)
        bankrupt_side = ranked.filter((pl.col("symbol") == sym) & pl.col("account_id").is_in(
            f["bankrupt_account_id"].unique().implode()))["side"].unique().to_list()
        for side in bankrupt_side:
            opposite = "short" if side == "long" else "long"
            queue = ranked.filter((pl.col("symbol") == sym) & (pl.col("side") == opposite)).sort("adl_rank")
            eligible = [a for a, m in zip(queue["account_id"].to_list(), queue["margin_mode"].cast(pl.String).to_list())
                        if not ((m == "cross" and a in cross_liq) or (m == "isolated" and (a, sym) in iso_liq))]
            seen = list(dict.fromkeys(f.filter(pl.col("counterparty_account_id").is_in(eligible))
                                      ["counterparty_account_id"].to_list()))
            assert seen == eligible[:len(seen)]


def test_summary_only_runs_give_the_same_summary(book):
    full = stress(book, shock_grid(-0.4, 0.4, 5), backend="cpu", policy=["queue", "rap"])
    lean = stress(book, shock_grid(-0.4, 0.4, 5), backend="cpu", policy=["queue", "rap"], detail=False)
    assert lean.summary.equals(full.summary)
    assert lean.adl_fills.height == 0 and lean.liquidations.height == 0 and full.adl_fills.height > 0


def test_dydx_deleveraging_example_through_stress():
    """dYdX governance docs ("Trading Core"): A deposits 1,000 USDC and buys 1 BTC at 2,000;
    at index 900 A is worth −100 and the insurance fund is empty; B (short 9 BTC, worth
    1,900) takes A's whole position at A's bankruptcy price 1,000, losing 100 nominal."""
    book = Book.from_frames(
        markets=pl.DataFrame({"symbol": ["BTC-USD"], "mark_price": [900.0]}),
        tiers=pl.DataFrame({"symbol": ["BTC-USD"], "notional_floor": [0.0], "maint_margin_rate": [0.075],
                            "max_leverage": [10.0]}),
        accounts=pl.DataFrame({"account_id": [1, 2, 3], "wallet_balance": [1_000.0, 1_000.0, 1e6]}),
        positions=pl.DataFrame({"account_id": [1, 2, 3], "symbol": ["BTC-USD"] * 3, "size": [1.0, -9.0, 8.0],
                                "entry_price": [2_000.0, 1_000.0, 900.0]}))
    res = stress(book, pl.DataFrame({"scenario": [0], "symbol": ["*"], "shock": [0.0]}), venue="dydx",
                 backend="cpu")
    assert res.adl_fills.select("bankrupt_account_id", "counterparty_account_id", "qty", "price").rows() == [
        (1, 2, 1.0, 1_000.0)]
    s = res.summary.row(0, named=True)
    assert s["deficit"] == pytest.approx(100.0) and s["socialized_loss"] == pytest.approx(100.0)
    check_books_balance(res)


# ------------------------------------------------------------------ the array core (run_stress)


def assert_frame_is_arrays(frame: pl.DataFrame, arrays: dict, dtypes: dict, labels: dict):
    """The frame holds exactly these arrays: same columns, same rows, floats bit for bit,
    Enum columns by their codes and labels (``labels``: column -> labels of the codes)."""
    assert list(arrays) == list(dtypes) == frame.columns
    for name, a in arrays.items():
        assert a.dtype == dtypes[name], name
        col = frame[name]
        if name in labels:
            assert col.dtype == pl.Enum(list(labels[name])), name
            assert col.cast(pl.String).to_list() == [labels[name][i] for i in a], name
            col = col.to_physical()
        got = col.to_numpy()
        assert got.shape == a.shape, name
        if a.dtype.kind == "f":
            assert got.dtype == np.float64 and np.array_equal(got.view(np.uint64), a.view(np.uint64)), name
        else:
            assert np.array_equal(got, a), name


@pytest.mark.parametrize("detail", [True, False])
def test_run_stress_gives_the_arrays_behind_the_frames(book, detail):
    """A multi-step path with impact and every policy: run_stress on scenario_paths' arrays
    gives every summary column and every detail row of stress() bit for bit."""
    path = pl.DataFrame({"scenario": [7, 7, 7, 3, 3], "step": [0, 1, 2, 0, 2],
                         "symbol": ["*", "*", "BTCUSDT", "*", "ETHUSDT"], "shock": [-0.05, -0.15, -0.3, -0.2, -0.25]})
    options = dict(backend="cpu", policy=["queue", "pro_rata", "capped_pro_rata", "rap"], steps=4,
                   impact=Impact("sqrt", coefficient=0.2), insurance_fund=5_000.0, detail=detail)
    frames = stress(book, path, **options)
    ids, shocks = scenario_paths(book, path)
    rec = run_stress(book, ids, shocks, **options)
    assert rec.summary["scenario"].tolist() == [3] * 4 + [7] * 4
    assert rec.summary["policy"].tolist() == [0, 1, 2, 3] * 2
    assert (rec.summary["steps"] > 1).all()
    labels = {"policy": POLICIES, "symbol": book.symbols, "margin_mode": MARGIN_MODES, "action": ACTIONS}
    assert_frame_is_arrays(frames.summary, rec.summary, SUMMARY_COLUMNS, labels)
    tables = [("liquidations", LIQUIDATION_COLUMNS), ("adl_fills", ADL_FILL_COLUMNS), ("haircuts", HAIRCUT_COLUMNS),
              ("prices", PRICE_COLUMNS)]
    for name, dtypes in tables:
        assert_frame_is_arrays(getattr(frames, name), getattr(rec, name), dtypes, labels)
        has_rows = len(getattr(rec, name)["scenario"]) > 0
        assert has_rows == (detail or name == "prices"), name
    assert set(rec.timings) == {"seconds", "scenarios", "screened_quiet", "threads"}


def test_stress_keeps_the_scenario_frames_labels(book):
    """Scenario ids that are not integers run under their positions and come back as given."""
    grid = shock_grid(-0.4, 0.4, 3)
    by_int = stress(book, grid, backend="cpu")
    by_name = stress(book, grid.with_columns(pl.col("scenario").replace_strict([0, 1, 2], ["lo", "mid", "hi"])),
                     backend="cpu")
    assert by_name.summary["scenario"].to_list() == ["hi", "lo", "mid"]  # sorted, as scenario_paths orders them
    back = {"lo": 0, "mid": 1, "hi": 2}
    for name in ("summary", "liquidations", "adl_fills", "prices"):
        relabelled = getattr(by_name, name).with_columns(pl.col("scenario").replace_strict(back, return_dtype=pl.Int64))
        assert relabelled.height > 0
        key = [c for c in ("scenario", "policy", "step") if c in relabelled.columns]
        assert relabelled.sort(key, maintain_order=True).equals(getattr(by_int, name).sort(key, maintain_order=True))


def test_run_stress_runs_without_polars(tmp_path):
    """The array core imports no Polars: a subprocess where `import polars` fails runs it."""
    script = textwrap.dedent("""
        import sys

        class NoPolars:
            def find_spec(self, name, path=None, target=None):
                if name == "polars" or name.startswith("polars."):
                    raise ImportError("polars is blocked in this test")

        sys.meta_path.insert(0, NoPolars())
        try:
            import polars
            raise SystemExit("the blocker did not block polars")
        except ImportError:
            pass
        import numpy as np
        import gpurisk
        from gpurisk.stress import run_stress

        book = gpurisk.synthetic_book(300, seed=1)
        shocks = np.full((2, 1, book.n_symbols), -0.4)
        shocks[1] = 0.0
        rec = run_stress(book, np.array([10, 11]), shocks, backend="cpu", policy=["queue", "rap"])
        assert rec.summary["scenario"].tolist() == [10, 10, 11, 11], rec.summary
        assert rec.summary["accounts_liquidated"][0] > 0 and len(rec.liquidations["qty"]) > 0
        assert not [m for m in sys.modules if m.split(".")[0] == "polars"]
        print("ran without polars")
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(stress_module.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "ran without polars" in done.stdout


@pytest.mark.parametrize("change, problem", [
    (lambda ids, sh: (ids, sh[:, 0, :]), r"scenarios.shock: shocks must be a float64 array .*shape \(3, 10\)"),
    (lambda ids, sh: (ids, sh[:, :, :4]),
     r"scenarios.shock: shocks must be a float64 array .*symbol = 10\); got float64 of shape \(3, 2, 4\)"),
    (lambda ids, sh: (ids, sh.astype(np.float32)), r"scenarios.shock: shocks must be a float64 array .*; got float32"),
    (lambda ids, sh: (ids[:2], sh), r"scenarios.shock: needs one row of shocks per scenario id: 2 ids, 3 rows"),
    (lambda ids, sh: (ids.astype(float), sh), r"scenarios.scenario: scenario_ids must be a 1-D int64 array"),
    (lambda ids, sh: (ids[:0], sh[:0]), r"scenarios.scenario: needs at least one scenario"),
    (lambda ids, sh: (ids, _set(sh, (1, 1, 3), np.nan)),
     r"scenarios.shock: must be finite and > -1 .* 1 row: scenario=11, step=1, symbol='BTCUSDT'"),
    (lambda ids, sh: (ids, _set(sh, (2, 0, 0), np.inf)), r"scenarios.shock: must be finite .*scenario=12, step=0"),
    (lambda ids, sh: (ids, _set(sh, (0, 1, 0), -1.0)), r"scenarios.shock: must be finite and > -1 .*scenario=10"),
    (lambda ids, sh: (ids, _set(sh, (0, 0, 0), -1.5)), r"scenarios.shock: must be finite and > -1"),
    (lambda ids, sh: (np.array([10, 11, 10]), sh),
     r"scenarios.scenario: one row per scenario id; .* 2 rows: scenario=10"),
])
def test_run_stress_refuses_bad_arrays_before_computing(book, monkeypatch, change, problem):
    ids, shocks = np.array([10, 11, 12]), np.full((3, 2, book.n_symbols), -0.2)
    assert book.symbols[3] == "BTCUSDT"
    started = []
    monkeypatch.setattr(stress_module, "StressContext", lambda *a, **k: started.append(a) or 1 / 0)
    with pytest.raises(ZeroDivisionError):  # good arrays reach the compute
        run_stress(book, ids, shocks, backend="cpu")
    assert len(started) == 1
    bad_ids, bad_shocks = change(ids, shocks.copy())
    with pytest.raises(BookError, match=problem):
        run_stress(book, bad_ids, bad_shocks, backend="cpu")
    assert len(started) == 1


def _set(a: np.ndarray, where, value) -> np.ndarray:
    a[where] = value
    return a


# ------------------------------------------------------------------ scenario runs side by side


def test_runs_on_threads_come_back_in_task_order():
    import random
    import time as _time

    from gpurisk.stress import _in_order

    rng = random.Random(0)
    delays = [rng.random() * 0.01 for _ in range(40)]

    def slow(k):
        _time.sleep(delays[k])
        return k

    assert list(_in_order(slow, list(range(40)), 4)) == list(range(40))
    assert list(_in_order(slow, list(range(5)), 1)) == list(range(5))


def test_an_error_in_one_run_stops_the_others_soon():
    import threading

    from gpurisk.stress import _in_order

    started = []
    lock = threading.Lock()

    def run(k):
        with lock:
            started.append(k)
        if k == 3:
            raise RuntimeError("run 3 failed")
        return k

    with pytest.raises(RuntimeError, match="run 3 failed"):
        list(_in_order(run, list(range(1000)), 2))
    # At most a window (twice the threads) beyond the failed run was ever started.
    assert max(started) < 3 + 2 * 2 + 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_threads_must_be_a_whole_number(bad):
    book = synthetic_book(50, seed=1)
    with pytest.raises(ValueError, match="threads"):
        stress(book, shock_grid(-0.1, 0.1, 2), backend="cpu", threads=bad, progress=False)


def test_default_threads_follow_the_backend():
    from gpurisk.backend import get_backend
    from gpurisk.parity import StandInBackend
    from gpurisk.stress import default_threads

    assert default_threads(get_backend("cpu")) >= 1
    assert default_threads(StandInBackend()) == 1


@pytest.mark.parametrize("venue", ["binance", "bybit", "bitmex", "hyperliquid", "dydx", "okx", "gate"])
def test_the_screen_agrees_with_a_revaluation_under_every_venue(venue):
    """A scenario is screened quiet exactly when a revaluation at its marks finds nobody to
    liquidate: the screen's requirement follows the venue's conventions (close fee, tiers in
    contracts, whole-position rates)."""
    from gpurisk.backend import get_backend
    from gpurisk.ladder import get_ladder
    from gpurisk.ledger import Ledger
    from gpurisk.screen import account_flags, screen
    from gpurisk.venue import get_venue

    frames = synthetic_book(3_000, seed=5).frames()  # collateral scaled up: calm at today's marks
    book = Book.from_frames(markets=frames["markets"], tiers=frames["tiers"],
                            accounts=frames["accounts"].with_columns(pl.col("wallet_balance") * 6.0),
                            positions=frames["positions"].with_columns(pl.col("isolated_margin") * 6.0))
    v = get_venue(venue)
    ctx = stress_module.StressContext(book, v, get_backend("cpu"), get_ladder(None, v.name), None, 0.0)
    shocks = np.linspace(-0.4, 0.4, 81)[:, None] * np.ones(book.n_symbols)
    flags = account_flags(ctx, shocks)  # per scenario and account
    want = np.zeros_like(flags)
    for k, sh in enumerate(shocks):
        units = ctx.units(ctx.revalue(Ledger(book), book.mark_price * (1 + sh)))
        want[k, book.pos_account[units]] = 1
    assert np.array_equal(flags, want)
    busy = want.any(axis=1)
    assert busy.any() and not busy.all()  # the grid has quiet and busy scenarios
    assert screen(ctx, shocks, 7).tolist() == busy.tolist()


def test_accounts_of_marked_positions_counts_each_account_once():
    """The summary's adl_accounts: the distinct accounts of the positions a run's ADL touched
    (marked per position, counted at the end), as np.unique counts them."""
    from gpurisk.stress import _accounts_of

    book = synthetic_book(2_000, seed=5, isolated_share=0.3)
    rng = np.random.default_rng(5)
    for share in (0.0, 0.001, 0.05, 0.5, 1.0):
        marked = rng.random(book.n_positions) < share
        want = np.unique(book.pos_account[marked]).size
        assert _accounts_of(book, marked) == want
    assert _accounts_of(book, np.ones(book.n_positions, bool)) == np.unique(book.pos_account).size > 1


def test_per_unit_takes_the_account_result_for_cross_and_the_position_result_for_isolated():
    """A unit's ratio and equity per position, each gathered from one result: equal to the
    np.where of both gathers it replaces, bit for bit."""
    from gpurisk.stress import _per_unit
    from gpurisk.backend import get_backend
    from gpurisk.ladder import Ladder
    from gpurisk.ledger import Ledger
    from gpurisk.stress_context import StressContext
    from gpurisk.venue import get_venue

    book = synthetic_book(3_000, seed=6, isolated_share=0.3)
    ctx = StressContext(book, get_venue("binance"), get_backend("cpu"), Ladder(), None, 0.0)
    r = ctx.revalue(Ledger(book, 0.0), book.mark_price * 0.75)
    idx = np.flatnonzero(ctx.units(r))
    acc, iso = book.pos_account[idx], book.isolated[idx] == 1
    assert iso.any() and (~iso).any()
    for pos_name, acc_name in (("pos_ratio", "ratio"), ("pos_equity", "equity")):
        got = _per_unit(r, pos_name, acc_name, idx, acc, np.flatnonzero(iso))
        want = np.where(iso, getattr(r, pos_name)[idx], getattr(r, acc_name)[acc])
        assert got.dtype == want.dtype and np.array_equal(got.view(np.int64), want.view(np.int64))



from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("run"), st.integers(0, 7), st.integers(-100, 100)),
                          st.tuples(st.just("array"), st.lists(st.integers(-100, 100), max_size=7))),
                max_size=12),
       st.sampled_from([np.int64, np.int32, np.int8, np.float64]))
def test_a_record_column_of_runs_and_arrays_equals_their_materialised_concatenation(parts, dtype):
    """Record tables keep a step's scalar labels as (count, value) runs; the finished column
    is what materialising each run (np.full in the column's dtype) and concatenating gives."""
    from gpurisk.stress_result import _column, _Run

    runs = [_Run(p[1], p[2]) if p[0] == "run" else np.asarray(p[1], dtype=dtype) for p in parts]
    plain = [np.full(p[1], p[2], dtype=dtype) if p[0] == "run" else np.asarray(p[1], dtype=dtype) for p in parts]
    expected = np.concatenate(plain) if plain else np.zeros(0, dtype=dtype)
    got = _column(runs, dtype)
    assert got.dtype == np.dtype(dtype)
    assert np.array_equal(got, expected)


def test_record_tables_finished_on_threads_equal_those_finished_on_one(monkeypatch):
    """Large record tables finish their columns on threads (stress_result.FINISH_THREADS_ROWS):
    every column of every table is the same, in dtype and bits, as finished on one thread."""
    import gpurisk.stress_result as sr
    from gpurisk.stress import run_stress

    book = synthetic_book(2_000, seed=3)
    shocks = np.linspace(-0.45, 0.1, 6)[:, None, None] * np.ones((1, 2, book.n_symbols))
    ids = np.arange(6)

    def records(rows):
        monkeypatch.setattr(sr, "FINISH_THREADS_ROWS", rows)
        return run_stress(book, ids, shocks, backend="cpu", policy=["queue", "pro_rata"], steps=2, progress=False)

    one, threaded = records(1 << 62), records(0)
    assert one.adl_fills["qty"].size > 0 and one.haircuts["amount"].size > 0 and one.liquidations["qty"].size > 0
    for table in ("liquidations", "adl_fills", "haircuts", "prices"):
        a, b = getattr(one, table), getattr(threaded, table)
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), (table, k)


@pytest.mark.parametrize("chunked_rows", [0, None], ids=["chunked", "small-tables-whole"])
@pytest.mark.parametrize("relabel", [None, "string", "int32"])
def test_stress_frames_from_chunks_equal_the_finished_records_frames(book, relabel, chunked_rows, monkeypatch):
    """stress() builds its frames from the records' chunks (no concatenated StressRecords in
    between; tables under stress_result.CHUNKED_FRAME_ROWS rows in one piece); they equal,
    schema and values, StressRecords.to_result's, under integer, narrow integer and string
    scenario labels, with several policies and steps."""
    import gpurisk.stress_result as sr

    if chunked_rows is not None:
        monkeypatch.setattr(sr, "CHUNKED_FRAME_ROWS", chunked_rows)
    grid = shock_grid(-0.4, 0.3, 5)
    if relabel == "string":
        grid = grid.with_columns(pl.format("s{}", pl.col("scenario")).alias("scenario"))
    elif relabel == "int32":
        grid = grid.with_columns((pl.col("scenario") * 3 + 5).cast(pl.Int32).alias("scenario"))
    options = dict(backend="cpu", policy=["queue", "rap"], steps=3, impact=Impact("sqrt", coefficient=0.2),
                   progress=False)
    chunked = stress(book, grid, **options)
    labels, shocks = scenario_paths(book, grid)
    finished = run_stress(book, stress_module.run_ids(labels), shocks, **options).to_result(scenario_labels=labels)
    assert chunked.adl_fills.height > 0 and chunked.haircuts.height > 0 and chunked.liquidations.height > 0
    assert (chunked.adl_fills.n_chunks() > 1) == (chunked_rows == 0)  # a chunk per step of a run, or one
    for name in ("summary", "liquidations", "adl_fills", "haircuts", "prices"):
        a, b = getattr(chunked, name), getattr(finished, name)
        assert a.schema == b.schema, name
        assert a.equals(b), name


def test_a_chunked_frame_copies_views_and_keeps_arrays_it_owns():
    """A record part that is a view of another array (whose memory a thread may reuse) is
    copied into the frame; an array of its own is taken as it is. Runs repeat their value;
    a table with no parts is empty with the table's dtypes."""
    from gpurisk.stress_result import _chunked_frame, _Run

    buffer = np.arange(10, dtype=np.float64)
    own = np.array([1.5, 2.5])
    parts = {"scenario": [_Run(3, 7), _Run(2, 8)], "qty": [buffer[:3], own]}
    frame = _chunked_frame(parts, {"scenario": np.int64, "qty": np.float64}, None)
    buffer[:] = -1.0  # the view's memory reused after the frame was built
    assert frame["scenario"].to_list() == [7, 7, 7, 8, 8]
    assert frame["qty"].to_list() == [0.0, 1.0, 2.0, 1.5, 2.5]
    empty = _chunked_frame({"scenario": [], "qty": []}, {"scenario": np.int64, "qty": np.float64}, None)
    assert empty.height == 0 and empty.schema == pl.Schema({"scenario": pl.Int64, "qty": pl.Float64})
