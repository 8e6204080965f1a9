"""Inputs are trusted only when checked (issue 13): scenarios and marks validated like books,
every problem at once with rows named; bounded inputs (gpurisk.schema's limits) so that no
intermediate of the kernels overflows, underflows or turns NaN; NaN never passes a check;
`gpurisk.stress` is always the function; `Engine.revalue(out=)` refuses another engine's Risk."""

import importlib
import subprocess
import sys
import textwrap

import numpy as np
import polars as pl
import pytest

import gpurisk
from gpurisk import Book, BookError, Engine, Impact, schema
from gpurisk.engine import check_marks, resolve_marks
from tests.books import tiny_frames

stress_module = importlib.import_module("gpurisk.stress")
scenario_paths, run_stress, shock_grid = stress_module.scenario_paths, stress_module.run_stress, stress_module.shock_grid


@pytest.fixture(scope="module")
def book():
    return Book.from_frames(**tiny_frames())


def problems(exc) -> dict:
    """{"table.column": [problem text, ...]} of a BookError."""
    out = {}
    for p in exc.value.problems:
        out.setdefault(f"{p.table}.{p.column}", []).append(str(p))
    return out


# ------------------------------------------------------------------ scenarios


def test_scenarios_every_problem_at_once_with_rows_named(book):
    bad = pl.DataFrame({
        "scenario": [0, None, 1, 2, 3, 4],
        "symbol": ["*", "*", None, "*", "BTCUSDT", "ETHUSDT"],
        "shock": [0.1, 0.1, 0.1, 1e300, -0.1, 0.0],
        "step": [0.0, 0.0, 0.0, 0.0, 0.5, 1e9],
    })
    with pytest.raises(BookError, match=r"invalid scenarios \(4 problem") as exc:
        scenario_paths(book, bad)
    got = problems(exc)
    assert "must not be null — 1 row: row 1 (scenario=None" in got["scenarios.scenario"][0]  # was a NaN scenario
    assert "must not be null — 1 row: row 2 (scenario=1, symbol=None)" in got["scenarios.symbol"][0]  # was dropped
    assert "shocked mark price" in got["scenarios.shock"][0] and "row 3 (scenario=2" in got["scenarios.shock"][0]
    step = got["scenarios.step"][0]  # fractional: IndexError before; 1e9: a 74.5 GiB allocation
    assert "whole number in [0, 9999]" in step and "2 rows" in step and "step=0.5" in step and "step=1000000000.0" in step


def test_scenarios_wrong_types_missing_columns_and_empty_frame(book):
    with pytest.raises(BookError, match=r"scenarios.shock: must be a number, got column type String"):
        scenario_paths(book, pl.DataFrame({"scenario": [0], "symbol": ["*"], "shock": ["-0.1"]}))
    with pytest.raises(BookError) as exc:
        scenario_paths(book, pl.DataFrame({"scenario": [0], "sym": ["*"]}))
    assert set(problems(exc)) == {"scenarios.symbol", "scenarios.shock"}
    empty = pl.DataFrame({"scenario": [], "symbol": [], "shock": []},
                         schema={"scenario": pl.Int64, "symbol": pl.String, "shock": pl.Float64})
    with pytest.raises(BookError, match=r"scenarios: table is empty"):
        scenario_paths(book, empty)
    with pytest.raises(BookError, match="table is empty"):
        gpurisk.stress(book, empty, backend="cpu")


def test_scenario_shock_cube_memory_checked_before_allocating(book, monkeypatch):
    many = pl.DataFrame({"scenario": np.arange(200_000), "symbol": "*", "shock": 0.0, "step": 9_999})
    allocated = []
    real_full = np.full
    monkeypatch.setattr(np, "full", lambda *a, **k: allocated.append(a) or real_full(*a, **k))
    with pytest.raises(BookError, match=r"scenarios.step: 200,000 scenarios × 10,000 steps × 2 symbols .* GiB"):
        scenario_paths(book, many)
    assert not allocated


def test_stress_options_refused_before_any_compute(book, monkeypatch):
    started = []
    monkeypatch.setattr(stress_module, "StressContext", lambda *a, **k: started.append(a) or 1 / 0)
    grid = shock_grid(-0.1, 0.1, 2)
    for kw, msg in [(dict(policy=[]), "at least one"), (dict(policy=["queue", "rap", "queue"]), "more than once"),
                    (dict(steps=2.5), "steps must be a whole number"), (dict(steps=10**9), "steps must be a whole"),
                    (dict(steps=True), "steps must be a whole"), (dict(insurance_fund=1e300), "insurance_fund"),
                    (dict(impact=Impact(depth={"BTCUSDT": 1e6, "BTCUSDTT": 1e6})), "'BTCUSDTT'")]:
        with pytest.raises(ValueError, match=msg):
            gpurisk.stress(book, grid, backend="cpu", **kw)
    assert not started
    assert stress_module._options("binance", "cpu", None, None, "queue", 10_000, 0.0)[4] == ["queue"]


@pytest.mark.parametrize("kw", [dict(depth=-5), dict(depth=0), dict(depth=float("nan")), dict(depth={"BTCUSDT": -1.0}),
                                dict(coefficient=float("inf")), dict(depth_share=-0.1)])
def test_impact_refuses_non_positive_depths(kw):
    with pytest.raises(ValueError, match="Impact"):
        Impact("sqrt", **kw)  # depth=-5 meant "no impact" before


def test_run_stress_arrays_keep_shocked_marks_in_limits(book):
    shocks = np.zeros((2, 1, book.n_symbols))
    shocks[1, 0, 0] = 1e300  # passed validation before; the deficit came out NaN
    with pytest.raises(BookError, match=r"shocked mark price .* 1 row: scenario=1, step=0, symbol='BTCUSDT'"):
        run_stress(book, np.arange(2), shocks, backend="cpu")


def test_impacted_marks_held_within_limits_unchanged_inside():
    inside = np.array([1e-12, 1.0, 6e4, 1e12])
    assert np.array_equal(stress_module._in_limits(inside), inside)
    assert np.array_equal(stress_module._in_limits(np.array([0.0, 1e-300, 1e300])), [1e-12, 1e-12, 1e12])


# ------------------------------------------------------------------ marks


def test_marks_frame_every_problem_at_once(book):
    df = pl.DataFrame({"symbol": ["BTCUSDT", "ETHUSDT", "BTCUSDT", None, "NOPE"],
                       "mark_price": [61_000.0, None, 62_000.0, 1.0, 5.0]})
    with pytest.raises(BookError, match=r"invalid marks \(4 problem") as exc:
        resolve_marks(book, df)  # the last BTCUSDT price silently won before
    got = problems(exc)
    assert "priced more than once — 2 rows: row 0 (symbol='BTCUSDT'); row 2 (symbol='BTCUSDT')" in \
        " ".join(got["marks.symbol"])
    assert any("must not be null — 1 row: row 3" in t for t in got["marks.symbol"])
    assert any("must be a symbol of the book — 1 row: 'NOPE'" in t for t in got["marks.symbol"])
    assert "must be finite and > 0 — 1 row: row 1 (symbol='ETHUSDT')" in got["marks.mark_price"][0]


def test_marks_as_list_of_rows_or_pairs_and_dict_of_columns(book):
    rows = [{"symbol": "BTCUSDT", "mark_price": 1.0}, {"symbol": "BTCUSDT", "mark_price": 2.0}]
    with pytest.raises(BookError, match="priced more than once"):
        resolve_marks(book, rows)
    with pytest.raises(BookError, match="priced more than once"):
        resolve_marks(book, [("ETHUSDT", 1.0), ("ETHUSDT", 2.0)])
    with pytest.raises(BookError, match="priced more than once"):
        resolve_marks(book, {"symbol": ["ETHUSDT", "ETHUSDT"], "mark_price": [1.0, 2.0]})
    ok = resolve_marks(book, {"symbol": ["ETHUSDT"], "mark_price": [2_500.0]})
    assert ok[book.symbol_index("ETHUSDT")] == 2_500.0
    assert resolve_marks(book, [("BTCUSDT", 59_000.0)])[book.symbol_index("BTCUSDT")] == 59_000.0


def test_marks_wrong_columns_and_text_prices(book):
    with pytest.raises(BookError) as exc:
        resolve_marks(book, pl.DataFrame({"sym": ["BTCUSDT"], "price": [1.0]}))
    assert set(problems(exc)) == {"marks.symbol", "marks.mark_price"}
    with pytest.raises(BookError, match="marks.mark_price: must be a number, got column type String"):
        resolve_marks(book, pl.DataFrame({"symbol": ["BTCUSDT"], "mark_price": ["abc"]}))
    with pytest.raises(BookError, match=r"marks.mark_price: must be finite and > 0 — 1 row: BTCUSDT='abc'"):
        resolve_marks(book, {"BTCUSDT": "abc"})
    with pytest.raises(BookError, match=r"marks.mark_price: must be in \[1e-12, 1e\+12\]"):
        resolve_marks(book, {"BTCUSDT": 1e300})


def test_cli_marks_file_priced_twice_is_refused(tmp_path, capsys):
    from gpurisk.cli import main

    Book.from_frames(**tiny_frames()).write(tmp_path / "book")
    pl.DataFrame({"symbol": ["BTCUSDT", "BTCUSDT"], "mark_price": [1.0, 2.0]}).write_csv(tmp_path / "m.csv")
    assert main(["revalue", str(tmp_path / "book"), "--backend", "cpu", "--marks", str(tmp_path / "m.csv")]) == 2
    assert "priced more than once" in capsys.readouterr().err
    assert check_marks(pl.DataFrame({"symbol": ["X"], "mark_price": [1.0]})) == [("X", 1.0)]  # no book: shape only


# ------------------------------------------------------------------ bounded inputs


def _with(table: str, **cols):
    f = tiny_frames()
    f[table] = f[table].with_columns(**{k: pl.Series(k, v) for k, v in cols.items()})
    return f


ISSUE_EXAMPLES = [
    # (table, columns, "table.column" refused, rule fragment)
    ("positions", dict(size=[1e300, -3.0, -0.1, 2.0]), "positions.size", "|size| must be in"),
    ("positions", dict(size=[1e17, -3.0, -0.1, 2.0], entry_price=[1e12, 3_100.0, 61_000.0, 2_900.0]),
     "positions.size", "entry notional"),
    ("markets", dict(contract_size=[1.0, 5e-324]), "markets.contract_size", "in [1e-12, 1e+09]"),
    ("markets", dict(mark_price=[1e13, 3_000.0]), "markets.mark_price", "in [1e-12, 1e+12]"),
    ("positions", dict(entry_price=[58_000.0, 1e-13, 61_000.0, 2_900.0]), "positions.entry_price", "in [1e-12"),
    ("accounts", dict(wallet_balance=[1e16, 2_000.0, 500.0]), "accounts.wallet_balance", "|wallet_balance|"),
    ("accounts", dict(wallet_balance=[1e-300, 2_000.0, 500.0]), "accounts.wallet_balance", "or 0"),
    ("positions", dict(isolated_margin=[0.0, 0.0, 0.0, 1e16]), "positions.isolated_margin", "in [1e-12, 1e+15] or 0"),
    ("tiers", dict(maint_margin_rate=[0.004, 0.995, 0.005]), "tiers.maint_margin_rate", "in [1e-06, 0.99]"),
    ("tiers", dict(max_leverage=[1e7, 100.0, 100.0]), "tiers.max_leverage", "in [1, 1e+06]"),
    ("tiers", dict(notional_floor=[0.0, 1e16, 0.0]), "tiers.notional_floor", "in [0, 1e+15]"),
]


@pytest.mark.parametrize("table,cols,where,rule", ISSUE_EXAMPLES, ids=[e[2] + "-" + str(i) for i, e in
                                                                      enumerate(ISSUE_EXAMPLES)])
def test_values_beyond_the_input_limits_are_refused_with_rows(table, cols, where, rule):
    with pytest.raises(BookError) as exc:
        Book.from_frames(**_with(table, **cols))
    got = problems(exc)
    assert list(got) == [where], got  # one problem, not reported twice
    assert rule in got[where][0] and "input limits" in got[where][0] and " row" in got[where][0]


def test_issue_size_times_entry_1e200_is_refused():
    # gave -inf equity before
    with pytest.raises(BookError, match=r"positions.size: entry notional .* <= 1e\+15 .* row 0 \(account_id=1"):
        Book.from_frames(**_with("positions", size=[1e150, -3.0, -0.1, 2.0],
                                 entry_price=[1e50, 3_100.0, 61_000.0, 2_900.0]))


def test_out_of_range_and_broken_values_reported_once():
    f = _with("positions", size=[0.0, -1e-300, -0.1, 2.0], entry_price=[-5.0, 3_100.0, 61_000.0, 2_900.0])
    with pytest.raises(BookError) as exc:
        Book.from_frames(**f)
    got = problems(exc)
    assert [t.split(" — ")[0] for t in got["positions.size"]] == [
        "positions.size: must be finite and non-zero", "positions.size: |size| must be in [1e-12, 1e+18] "
        "(input limits, gpurisk.schema)"]
    assert len(got["positions.entry_price"]) == 1 and "finite and > 0" in got["positions.entry_price"][0]


def _extreme_book(seed: int) -> Book:
    """Every input at or near the corners of the limits, log-uniformly (entry notional kept within NOTIONAL_MAX)."""
    rng = np.random.default_rng(seed)
    lg = lambda lo, hi, n: 10 ** rng.uniform(np.log10(lo), np.log10(hi), n)  # noqa: E731
    n_sym, n_acc, n_pos = 4, 40, 120
    syms = [f"S{i}" for i in range(n_sym)]
    cs = np.array([schema.CONTRACT_SIZE_MIN, schema.CONTRACT_SIZE_MAX, 1.0, 1e-6])
    marks = np.array([schema.PRICE_MIN, schema.PRICE_MAX, 1e-6, 1e6])
    acc = rng.integers(0, n_acc, n_pos)
    sym = rng.integers(0, n_sym, n_pos)
    entry = np.where(rng.random(n_pos) < 0.5, lg(schema.PRICE_MIN, schema.PRICE_MAX, n_pos),
                     np.choose(rng.integers(0, 2, n_pos), [schema.PRICE_MIN, schema.PRICE_MAX]))
    cap = schema.NOTIONAL_MAX / (entry * cs[sym])
    size = np.minimum(lg(schema.SIZE_MIN, schema.SIZE_MAX, n_pos), np.minimum(cap, schema.SIZE_MAX))
    size = np.where(size < schema.SIZE_MIN, schema.SIZE_MIN, size) * np.where(rng.random(n_pos) < 0.5, 1, -1)
    iso = rng.random(n_pos) < 0.3
    pos = pl.DataFrame({"account_id": acc, "symbol": [syms[s] for s in sym], "size": size, "entry_price": entry,
                        "margin_mode": np.where(iso, "isolated", "cross"),
                        "isolated_margin": np.where(iso, lg(schema.BALANCE_MIN, schema.BALANCE_MAX, n_pos), 0.0)})
    pos = pos.unique(["account_id", "symbol", "margin_mode"], keep="first")
    pos = pos.filter(pl.col("size").abs() * pl.col("entry_price")
                     * pl.col("symbol").replace_strict(syms, cs.tolist()) <= schema.NOTIONAL_MAX)
    wallet = lg(schema.BALANCE_MIN, schema.BALANCE_MAX, n_acc) * np.where(rng.random(n_acc) < 0.2, -1, 1)
    wallet[:3] = [0.0, schema.BALANCE_MAX, -schema.BALANCE_MAX]
    # The smallest equity against the largest margin: a balance of BALANCE_MIN, positions at
    # their entry price (no PnL) and of the largest notional (cross, then isolated).
    big = min(schema.SIZE_MAX, schema.NOTIONAL_MAX / (marks[2] * cs[2]))
    pos = pl.concat([pos, pl.DataFrame({
        "account_id": [n_acc, n_acc + 1], "symbol": [syms[2]] * 2, "size": [big, -big],
        "entry_price": [marks[2]] * 2, "margin_mode": ["cross", "isolated"],
        "isolated_margin": [0.0, schema.BALANCE_MIN]})], how="vertical_relaxed")
    wallet = np.append(wallet, [schema.BALANCE_MIN, 0.0])
    n_acc += 2
    tiers = pl.DataFrame({"symbol": [s for s in syms for _ in range(3)],
                          "notional_floor": [0.0, 1e3, schema.NOTIONAL_MAX] * n_sym,
                          "maint_margin_rate": [schema.MAINT_RATE_MIN, 0.5, schema.MAINT_RATE_MAX] * n_sym,
                          "max_leverage": [schema.LEVERAGE_MAX, 10.0, 1.0] * n_sym})
    return Book.from_frames(markets=pl.DataFrame({"symbol": syms, "mark_price": marks, "contract_size": cs}),
                            tiers=tiers, accounts=pl.DataFrame({"account_id": np.arange(n_acc), "wallet_balance": wallet}),
                            positions=pos)


@pytest.mark.parametrize("seed", range(4))
def test_every_output_stays_finite_within_the_limits(seed):
    """Within the limits no intermediate overflows, underflows or becomes NaN: every figure is
    finite; the margin ratio is +inf only where equity <= 0 (its definition); a liquidation
    price is finite and > 0 or null, never ±inf."""
    book = _extreme_book(seed)
    engine = Engine(book, backend="cpu")
    lo, hi = np.full(book.n_symbols, schema.PRICE_MIN), np.full(book.n_symbols, schema.PRICE_MAX)
    for marks in (None, lo, hi, np.where(np.arange(book.n_symbols) % 2, lo, hi)):
        r = engine.revalue(marks)
        pm, am, pr = r.position_margin, r.account_margin, r.position_risk
        for name, arr in [("notional", pm.notional), ("upnl", pm.upnl), ("maint", pm.maint), ("init", pm.init),
                          ("equity", am.equity), ("acc maint", am.maint), ("available", am.available),
                          ("pos equity", pr.equity), ("bankruptcy_price", pr.bankruptcy_price)]:
            assert np.all(np.isfinite(arr)), (name, arr[~np.isfinite(arr)])
        assert np.all(pm.maint > 0) and np.all(pm.init > 0) and np.all(pm.notional > 0)
        assert np.all(np.isfinite(am.ratio) | (am.equity <= 0))
        assert np.all(np.isfinite(pr.ratio) | (pr.equity <= 0))
        liq = pr.liq_price
        assert np.all(np.isnan(liq) | (np.isfinite(liq) & (liq > 0)))


# ------------------------------------------------------------------ NaN never passes a check


def test_conservation_check_fails_on_nan():
    ok = {"conservation_error": np.array([1e-17, -2e-16])}
    assert stress_module.conservation_check(ok) == (0, 2e-16)
    bad = pl.DataFrame({"conservation_error": [1e-17, float("nan"), 2e-16]})
    assert pl.Series([1e-17, float("nan")]).abs().max() < 1e-9  # why: a plain max skips NaN
    failed, worst = stress_module.conservation_check(bad)
    assert failed == 1 and np.isnan(worst)
    assert stress_module.conservation_check({"conservation_error": [float("inf")]})[0] == 1


def test_cli_stress_does_not_say_money_conserved_on_nan(monkeypatch, capsys, tmp_path):
    from gpurisk.cli import main

    real = stress_module.stress

    def nan_stress(*a, **k):
        res = real(*a, **k)
        res.summary = res.summary.with_columns(
            pl.when(pl.int_range(pl.len()) == 0).then(float("nan")).otherwise(pl.col("conservation_error"))
            .alias("conservation_error"))
        return res

    monkeypatch.setattr(stress_module, "stress", nan_stress)
    rc = main(["stress", "--accounts", "300", "--backend", "cpu", "--grid", "-0.2", "0.2", "3", "--quiet"])
    out = capsys.readouterr()
    assert rc == 1 and "money conserved" not in out.out and "NOT conserved on 1 of 3" in out.err


# ------------------------------------------------------------------ API


def test_gpurisk_stress_is_the_function_whatever_was_imported_first():
    code = textwrap.dedent("""
        import importlib, pkgutil, types
        import gpurisk
        book = gpurisk.synthetic_book(30)
        grid = gpurisk.shock_grid(-0.1, 0.1, 2)         # imports the gpurisk.stress module first
        assert callable(gpurisk.stress), gpurisk.stress
        gpurisk.stress(book, grid, backend="cpu", progress=False)
        import gpurisk.stress                              # and again, by path
        from gpurisk.stress import run_stress              # the module stays importable
        assert isinstance(gpurisk.stress, types.FunctionType) and callable(run_stress)
        # every export, after every submodule was imported: the exported object, never a module
        for m in pkgutil.iter_modules(gpurisk.__path__):
            if m.name not in ("cli",):
                importlib.import_module("gpurisk." + m.name)
        for name, mod in gpurisk._EXPORTS.items():
            want = getattr(importlib.import_module("gpurisk." + mod), name)
            assert getattr(gpurisk, name) is want, name
        from gpurisk import stress
        assert stress is gpurisk.stress.__globals__["stress"]
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


def test_revalue_out_of_another_engine_is_refused():
    small, big = gpurisk.synthetic_book(20, seed=1), gpurisk.synthetic_book(60, seed=2)
    engine = Engine(gpurisk.synthetic_book(40, seed=0), backend="cpu")
    twin = Engine(gpurisk.synthetic_book(40, seed=3), backend="cpu")  # same shape, another book
    mine = engine.revalue()
    before = mine.account_margin.equity.copy()
    for other in (Engine(small, backend="cpu").revalue(), Engine(big, backend="cpu").revalue(), twin.revalue()):
        kept = other.account_margin.equity.copy()
        with pytest.raises(ValueError, match="another engine"):
            engine.revalue(out=other)  # segfault, hang, ShapeError or a silent overwrite before
        assert np.array_equal(other.account_margin.equity, kept)
    with pytest.raises(ValueError, match="must be a Risk"):
        engine.revalue(out=object())
    again = engine.revalue(out=mine)  # this engine's own Risk: accepted, buffers reused
    assert again.account_margin.equity is mine.account_margin.equity
    assert np.array_equal(again.account_margin.equity, before)
    again2 = engine.revalue(out=again)
    assert again2.positions.height == engine.book.n_positions
