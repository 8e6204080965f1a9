"""The command line as a user runs it."""

import subprocess
import sys

import polars as pl

from gpurisk.cli import main


def test_demo_writes_book_and_results(tmp_path, capsys):
    assert main(["demo", "--accounts", "2000", "--backend", "cpu", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "venue binance, backend cpu" in out and "bankrupt" in out
    acc = pl.read_parquet(tmp_path / "results" / "accounts.parquet")
    assert acc.height == 2001  # 2,000 traders and the market maker
    assert (tmp_path / "book" / "positions.parquet").exists()


def test_synth_then_revalue_with_mark_override(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "book"), "--accounts", "500", "--format", "csv"]) == 0
    assert main(["revalue", str(tmp_path / "book"), "--backend", "cpu", "--venue", "bitmex",
                 "--mark", "BTCUSDT=30000", "--out", str(tmp_path / "res")]) == 0
    pos = pl.read_parquet(tmp_path / "res" / "positions.parquet")
    assert (pos.filter(pl.col("symbol") == "BTCUSDT")["mark_price"] == 30_000.0).all()


def test_bad_book_exits_2_with_the_rows_named(tmp_path, capsys):
    main(["synth", str(tmp_path), "--accounts", "50"])
    pos = pl.read_parquet(tmp_path / "positions.parquet")
    pos.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(0.0).otherwise(pl.col("size")).alias("size")) \
       .write_parquet(tmp_path / "positions.parquet")
    (tmp_path / "manifest.json").unlink()  # edited on purpose: now the user's own book
    assert main(["revalue", str(tmp_path), "--backend", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "positions.size: must be finite and non-zero — 1 row: row 3 (account_id=" in err


def test_help_teaches():
    out = subprocess.run([sys.executable, "-m", "gpurisk.cli", "revalue", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "--venue" in out.stdout and "SYMBOL=PRICE" in out.stdout and "markets, tiers, accounts" in out.stdout
