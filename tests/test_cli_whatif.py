"""``gpurisk what-if`` and ``gpurisk funding``: results written, bad input exits 2 with the
rows named and no traceback."""

import subprocess
import sys

import numpy as np
import polars as pl
import pytest

import gpurisk
from gpurisk.cli import main


@pytest.fixture(scope="module")
def book_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli") / "book"
    assert main(["synth", str(d), "--accounts", "300"]) == 0
    return d


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "gpurisk.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True)


@pytest.mark.parametrize("venue", ["binance", "okx"])
def test_what_if_writes_one_row_per_order(book_dir, tmp_path, venue):
    orders = pl.DataFrame({"account_id": [1, 2, 3], "symbol": ["BTCUSDT", "ETHUSDT", "BTCUSDT"],
                           "size": [0.1, -5.0, 50.0], "price": [61_000.0, 2_480.0, 61_250.0]})
    orders.write_csv(tmp_path / "orders.csv")
    out = tmp_path / "wi.parquet"
    assert main(["what-if", str(book_dir), str(tmp_path / "orders.csv"), "--backend", "cpu", "--venue", venue,
                 "--out", str(out)]) == 0
    got = pl.read_parquet(out)
    engine = gpurisk.Engine(gpurisk.read_book(book_dir), venue=venue, backend="cpu")
    assert got.equals(engine.what_if(orders))
    assert (got["close_fee"] > 0).all() == (venue == "okx")  # OKX counts the fee to close


def test_what_if_bad_orders_exit_2_naming_rows(book_dir, tmp_path):
    pl.DataFrame({"account_id": [1, 99_999], "symbol": ["BTCUSDT", "BTCUSDT"], "size": [0.1, 1.0],
                  "price": [61_000.0, 61_000.0]}).write_csv(tmp_path / "bad.csv")
    res = run("what-if", book_dir, tmp_path / "bad.csv", "--backend", "cpu", "--out", tmp_path / "o.parquet",
              cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "orders.account_id: must be an account of the book — 1 row: row 1 (account_id=99999" in res.stderr
    assert not (tmp_path / "o.parquet").exists()
    res = run("what-if", book_dir, tmp_path / "bad.csv", "--out", tmp_path / "o.txt", cwd=tmp_path)
    assert res.returncode == 2 and "name a .parquet or .csv file" in res.stderr


def test_funding_writes_a_funded_book(book_dir, tmp_path):
    pl.DataFrame({"symbol": ["ETHUSDT"], "funding_rate": [-0.0002]}).write_csv(tmp_path / "rates.csv")
    out = tmp_path / "funded"
    assert main(["funding", str(book_dir), "--rate", "BTCUSDT=0.0001", "--rates", str(tmp_path / "rates.csv"),
                 "--backend", "cpu", "--out", str(out)]) == 0
    want = gpurisk.apply_funding(gpurisk.read_book(book_dir), {"BTCUSDT": 0.0001, "ETHUSDT": -0.0002}, backend="cpu")
    assert np.array_equal(gpurisk.read_book(out).wallet, want.book.wallet)
    assert pl.read_parquet(out / "funding_accounts.parquet").equals(want.accounts)


@pytest.mark.parametrize("args, needle", [
    (["--rate", "BTCUSDT=x"], "--rate expects SYMBOL=RATE"),
    ([], "give the funding rates"),
    (["--rate", "NOPE=0.1"], "funding.symbol: must be a symbol of the book — 1 row: symbol='NOPE'"),
    (["--rate", "BTCUSDT=0.1", "--rate", "BTCUSDT=0.2"], "given more than once"),
])
def test_funding_bad_rates_exit_2(book_dir, tmp_path, args, needle):
    res = run("funding", book_dir, *args, "--backend", "cpu", "--out", tmp_path / "f", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr and needle in res.stderr, res.stderr
    assert not (tmp_path / "f").exists()


def test_what_if_on_a_book_with_inverse_markets(tmp_path):
    """A synthetic book with coin-margined markets (wallets per asset): each order trades in its
    account's pool of the market's settle asset, the asset named in the failures printed."""
    d = tmp_path / "book"
    assert main(["synth", str(d), "--accounts", "200", "--inverse-markets", "2"]) == 0
    book = gpurisk.read_book(d)
    btc = book.for_asset("BTC")
    acc = int(btc.account_id[btc.pos_account[0]])
    orders = pl.DataFrame({"account_id": [acc, acc], "symbol": ["BTCUSD", "BTCUSD"], "size": [10.0, 1e9],
                           "price": [60_000.0, 60_000.0]})
    orders.write_csv(tmp_path / "orders.csv")
    out = tmp_path / "wi.parquet"
    res = run("what-if", d, tmp_path / "orders.csv", "--backend", "cpu", "--out", out, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    got = pl.read_parquet(out)
    assert got.equals(gpurisk.Engine(book, backend="cpu").what_if(orders))
    assert got["asset"].cast(pl.String).to_list() == ["BTC", "BTC"] and got["im_check"].to_list() == [True, False]
    assert "1 fail" in res.stdout and "asset" in res.stdout and "BTC" in res.stdout
