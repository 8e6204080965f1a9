"""Every bad-input class of DESIGN §9 is refused before compute, naming table, column and rows."""

import numpy as np
import polars as pl
import pytest

from gpurisk import Book, BookError, read_book, revalue
from tests.books import tiny_frames


def build(**changes):
    frames = tiny_frames()
    frames.update(changes)
    return Book.from_frames(**frames)


def problem_text(**changes) -> str:
    with pytest.raises(BookError) as exc:
        build(**changes)
    return str(exc.value)


def positions_with(**cols):
    return tiny_frames()["positions"].with_columns(**{k: pl.Series(v) for k, v in cols.items()})


def test_valid_book_builds_from_polars_pandas_and_arrow():
    frames = tiny_frames()
    b1 = Book.from_frames(**frames)
    b2 = Book.from_frames(**{k: v.to_pandas() for k, v in frames.items()})
    b3 = Book.from_frames(**{k: v.to_arrow() for k, v in frames.items()})
    for b in (b2, b3):
        assert b.n_positions == b1.n_positions == 4
        np.testing.assert_array_equal(b.size, b1.size)
        np.testing.assert_array_equal(b.tier_cum, b1.tier_cum)


@pytest.mark.parametrize("price", [float("nan"), float("inf"), 0.0, -5.0])
def test_bad_mark_price_names_symbol(price):
    msg = problem_text(markets=pl.DataFrame({"symbol": ["BTCUSDT", "ETHUSDT"], "mark_price": [60_000.0, price]}))
    assert "markets.mark_price" in msg and "finite and > 0" in msg and "'ETHUSDT'" in msg and "row 1" in msg


def test_zero_and_nan_sizes_are_named_with_their_keys():
    msg = problem_text(positions=positions_with(size=[0.5, 0.0, float("nan"), 2.0]))
    assert "positions.size" in msg and "2 rows" in msg
    assert "account_id=1, symbol='ETHUSDT'" in msg and "account_id=2, symbol='BTCUSDT'" in msg


def test_unknown_symbol_and_account():
    msg = problem_text(positions=positions_with(symbol=["BTCUSDT", "DOGEUSDT", "BTCUSDT", "ETHUSDT"],
                                                account_id=[1, 1, 2, 99]))
    assert "positions.symbol: must be a symbol of markets" in msg and "'DOGEUSDT'" in msg
    assert "positions.account_id: must be an account of accounts" in msg and "account_id=99" in msg


def test_duplicate_positions_in_one_way_mode():
    p = tiny_frames()["positions"]
    msg = problem_text(positions=pl.concat([p, p.head(1)]))
    assert "one position per (account_id, symbol, margin_mode)" in msg and "2 rows" in msg


def test_broken_tiers():
    tiers = pl.DataFrame({
        "symbol": ["BTCUSDT", "BTCUSDT", "ETHUSDT", "ETHUSDT"],
        "notional_floor": [0.0, 50_000.0, 10.0, 20.0],
        "maint_margin_rate": [0.004, 0.003, 0.005, 0.006],
        "max_leverage": [125.0, 100.0, 100.0, 100.0],
    })
    msg = problem_text(tiers=tiers)
    assert "tiers.notional_floor: first tier of each symbol must start at 0" in msg and "'ETHUSDT'" in msg
    assert "tiers.maint_margin_rate: must be non-decreasing" in msg and "notional_floor=50000.0" in msg


def test_tier_rate_out_of_range_and_missing_tiers_for_traded_symbol():
    tiers = pl.DataFrame({"symbol": ["BTCUSDT"], "notional_floor": [0.0], "maint_margin_rate": [1.5],
                          "max_leverage": [0.5]})
    msg = problem_text(tiers=tiers)
    assert "tiers.maint_margin_rate: must be in (0, 1)" in msg
    assert "tiers.max_leverage: must be >= 1" in msg
    tiers = tiny_frames()["tiers"].filter(pl.col("symbol") == "BTCUSDT")
    msg = problem_text(tiers=tiers)
    assert "every traded symbol needs at least one tier" in msg and "'ETHUSDT'" in msg


def test_discontinuous_maint_amount_is_refused_and_continuous_one_accepted():
    tiers = tiny_frames()["tiers"].with_columns(maint_amount=pl.Series([0.0, 10.0, 0.0]))
    msg = problem_text(tiers=tiers)
    assert "tiers.maint_amount: must keep maintenance margin continuous" in msg and "notional_floor=50000.0" in msg
    ok = build(tiers=tiny_frames()["tiers"].with_columns(maint_amount=pl.Series([0.0, 50.0, 0.0])))
    assert ok.tier_cum.tolist() == [0.0, 50.0, 0.0]


def test_isolated_without_margin_and_cross_with_margin():
    msg = problem_text(positions=positions_with(isolated_margin=[5.0, 0.0, 0.0, 0.0]))
    assert "isolated positions need isolated_margin > 0" in msg and "account_id=3" in msg
    assert "cross positions carry no isolated_margin" in msg and "account_id=1, symbol='BTCUSDT'" in msg


def test_bad_margin_mode_and_leverage():
    msg = problem_text(positions=positions_with(margin_mode=["cross", "hedge", "cross", "isolated"],
                                                leverage=[None, 0.5, 10.0, None]))
    assert "positions.margin_mode: must be 'cross' or 'isolated'" in msg
    assert "positions.leverage: must be finite and >= 1" in msg


def test_wrong_dtypes_are_named():
    msg = problem_text(accounts=pl.DataFrame({"account_id": ["a", "b", "c"], "wallet_balance": [1.0, 2.0, 3.0]}))
    assert "accounts.account_id: must be an integer, got column type String" in msg
    msg = problem_text(positions=positions_with(size=["1", "2", "3", "4"]))
    assert "positions.size: must be a number" in msg


def test_missing_column_and_empty_tables():
    msg = problem_text(markets=pl.DataFrame({"symbol": ["BTCUSDT", "ETHUSDT"]}))
    assert "markets.mark_price: required column is missing" in msg
    msg = problem_text(accounts=pl.DataFrame({"account_id": [], "wallet_balance": []},
                                             schema={"account_id": pl.Int64, "wallet_balance": pl.Float64}))
    assert "accounts: table is empty" in msg


def test_duplicate_accounts_and_non_finite_wallet():
    msg = problem_text(accounts=pl.DataFrame({"account_id": [1, 2, 2, 3], "wallet_balance": [1.0, 2.0, 3.0, float("inf")]}))
    assert "accounts.account_id: must be unique" in msg and "2 rows" in msg
    assert "accounts.wallet_balance: must be finite" in msg and "account_id=3" in msg


def test_many_problems_reported_together_with_counts():
    n = 20
    pos = pl.DataFrame({"account_id": [1] * n, "symbol": ["BTCUSDT"] * n, "size": [0.0] * n,
                        "entry_price": [1.0] * n})
    with pytest.raises(BookError) as exc:
        build(positions=pos)
    sizes = [p for p in exc.value.problems if p.column == "size"]
    assert sizes and sizes[0].count == n and len(sizes[0].examples) == 5
    assert "(and 15 more)" in str(exc.value)


def test_empty_positions_is_a_valid_book_and_every_account_comes_out():
    pos = tiny_frames()["positions"].clear()
    risk = revalue(build(positions=pos), backend="cpu")
    assert risk.accounts["account_id"].to_list() == [1, 2, 3]
    assert risk.accounts["status"].to_list() == ["healthy"] * 3
    assert risk.positions.height == 0


def test_read_book_csv_and_parquet_roundtrip(tmp_path):
    book = build()
    book.write(tmp_path / "pq")
    book.write(tmp_path / "csv", format="csv")
    for d in ("pq", "csv"):
        again = read_book(tmp_path / d)
        np.testing.assert_array_equal(again.size, book.size)
        np.testing.assert_array_equal(again.isolated, book.isolated)
        np.testing.assert_array_equal(again.account_id, book.account_id)


def test_read_book_reports_missing_table(tmp_path):
    build().write(tmp_path)
    (tmp_path / "tiers.parquet").unlink()
    (tmp_path / "manifest.json").unlink()  # a user's own book directory (with a manifest: refused, see test_reliability)
    with pytest.raises(FileNotFoundError, match="no tiers table"):
        read_book(tmp_path)


def test_csv_with_bad_text_in_numeric_column(tmp_path):
    build().write(tmp_path, format="csv")
    text = (tmp_path / "positions.csv").read_text().splitlines()
    fields = text[2].split(",")
    fields[2] = "oops"
    text[2] = ",".join(fields)
    (tmp_path / "positions.csv").write_text("\n".join(text) + "\n")
    (tmp_path / "manifest.json").unlink()  # edited on purpose
    with pytest.raises(BookError, match="positions.size: must be a number"):
        read_book(tmp_path)


def test_unsupported_table_type():
    with pytest.raises(TypeError, match="positions: expected a polars, pandas or Arrow table"):
        build(positions=[1, 2, 3])


def test_book_error_survives_pickling():
    import pickle

    with pytest.raises(BookError) as exc:
        build(markets=pl.DataFrame({"symbol": ["BTCUSDT", "ETHUSDT"], "mark_price": [1.0, -1.0]}))
    again = pickle.loads(pickle.dumps(exc.value))
    assert str(again) == str(exc.value) and again.problems == exc.value.problems


@pytest.mark.parametrize("tick", [float("nan"), float("inf"), 0.0, -0.5])
def test_bad_tick_size_names_symbol(tick):
    msg = problem_text(markets=pl.DataFrame({"symbol": ["BTCUSDT", "ETHUSDT"], "mark_price": [60_000.0, 3_000.0],
                                             "tick_size": [0.1, tick]}))
    assert "markets.tick_size: must be finite and > 0 (or null)" in msg and "'ETHUSDT'" in msg and "row 1" in msg


def test_tick_size_is_optional_per_symbol_and_survives_a_round_trip(tmp_path):
    markets = pl.DataFrame({"symbol": ["BTCUSDT", "ETHUSDT"], "mark_price": [60_000.0, 3_000.0],
                            "tick_size": [0.5, None]})
    book = build(markets=markets)
    assert book.tick_size.tolist() == [0.5, 0.0]  # 0: no tick
    assert read_book(book.write(tmp_path)).tick_size.tolist() == [0.5, 0.0]
    lp = revalue(book, backend="cpu").positions.filter(symbol="BTCUSDT")["liq_price"].drop_nulls()
    assert lp.len() and all(x == round(x / 0.5) * 0.5 for x in lp)
