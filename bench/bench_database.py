"""Books from PostgreSQL and results back: rows per second beside Parquet and beside a CSV
export read by Polars, and the candidate drivers side by side, in one run on one book.

Reading, the book (markets, tiers, accounts, positions):

- ``parquet``: ``gpurisk.read_book(DIR)``, the book directory as Parquet files.
- ``postgres (ADBC)``: ``gpurisk.read_book(URI)``, one repeatable-read snapshot over ADBC.
- ``COPY TO csv + Polars``: each table ``COPY ... TO STDOUT (FORMAT csv)`` into a file
  (psycopg), then ``pl.read_csv`` and ``Book.from_frames``.
- ``ConnectorX``: each table with ``connectorx.read_sql(return_type="arrow")`` (a connection
  per table, so no common snapshot), then ``Book.from_frames``.

Every path ends in the same validated Book, checked bit for bit against the Parquet one
before its time counts. Writing, the results (accounts + positions rows): ``risk.write(DIR)``
(Parquet, atomic directory), ``risk.write(URI)`` (ADBC COPY binary into staging tables swapped
in one transaction), and Polars ``write_csv`` + psycopg ``COPY ... FROM STDIN (FORMAT csv)``
into a new table in one transaction.

    python bench/bench_database.py --uri postgresql://postgres@127.0.0.1:5432/postgres            # ~2M positions
    python bench/bench_database.py --uri ... --accounts 3760000 --repeats 1                       # ~10M positions

ConnectorX (pip install connectorx) and psycopg (pip install 'psycopg[binary]') are
optional: a path whose package is missing is reported as skipped.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="Sortedness of columns cannot be checked")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

import gpurisk  # noqa: E402
from gpurisk import database as db  # noqa: E402
from gpurisk.book import Book  # noqa: E402

TABLES = db.BOOK_TABLES
ARRAYS = ("mark_price", "contract_size", "tier_floor", "tier_mmr", "tier_cum", "tier_max_leverage", "account_id",
          "wallet", "pos_start", "pos_account", "pos_symbol", "size", "entry", "isolated", "isolated_margin",
          "leverage", "tick_size")


def same_book(a: Book, b: Book) -> None:
    assert a.symbols == b.symbols
    for name in ARRAYS:
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def read_csv_export(uri: str, folder: Path) -> Book:
    import psycopg

    frames = {}
    with psycopg.connect(uri) as conn:
        for name in TABLES:
            path = folder / f"{name}.csv"
            with conn.cursor() as cur, open(path, "wb") as f:
                with cur.copy(f"COPY {name} TO STDOUT (FORMAT csv, HEADER)") as copy:
                    for chunk in copy:
                        f.write(chunk)
            frames[name] = pl.read_csv(path, infer_schema_length=None)
    return Book.from_frames(**frames)


def read_connectorx(uri: str) -> Book:
    import connectorx as cx

    return Book.from_frames(**{name: pl.from_arrow(cx.read_sql(uri, f"SELECT * FROM {name}", return_type="arrow"))
                               for name in TABLES})


def write_csv_copy(uri: str, risk, folder: Path) -> None:
    import psycopg

    with psycopg.connect(uri) as conn, conn.cursor() as cur:  # one transaction, committed on exit
        for name, frame in (("accounts", risk.accounts), ("positions", risk.positions)):
            frame = frame.with_columns(pl.col(c).cast(pl.String) for c, t in frame.schema.items()
                                       if isinstance(t, pl.Enum))
            path = folder / f"{name}.csv"
            frame.write_csv(path)
            pg_type = {pl.Float64: "double precision", pl.Int64: "bigint", pl.Int32: "integer",
                       pl.Int8: "smallint", pl.String: "text"}
            columns = ", ".join(f"{c} {pg_type[t]}" for c, t in frame.schema.items())
            cur.execute(f"DROP TABLE IF EXISTS csv_{name}")
            cur.execute(f"CREATE TABLE csv_{name} ({columns})")
            with cur.copy(f"COPY csv_{name} FROM STDIN (FORMAT csv, HEADER)") as copy, open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    copy.write(chunk)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uri", required=True, help="a PostgreSQL database the benchmark may write tables into")
    ap.add_argument("--accounts", type=int, default=752_000, help="synthetic accounts (752,000 ≈ 2M positions)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per path (the median counts)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()

    book = gpurisk.synthetic_book(args.accounts, seed=0)
    rows_in = sum(df.height for df in book.frames().values())
    print(f"{book!r}; {rows_in:,} input rows; server {db.redact(args.uri)}", flush=True)
    res: dict = {"positions": book.n_positions, "accounts": book.n_accounts, "input_rows": rows_in}
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        db.write_book(args.uri, book)
        res["load_book_into_postgres"] = time.perf_counter() - t
        book.write(tmp / "book")
        read = {}
        read["parquet"] = timed(lambda: gpurisk.read_book(tmp / "book"), args.repeats)
        read["postgres (ADBC)"] = timed(lambda: gpurisk.read_book(args.uri), args.repeats)
        for name, fn in (("COPY TO csv + Polars", lambda: read_csv_export(args.uri, tmp)),
                         ("ConnectorX", lambda: read_connectorx(args.uri))):
            try:
                read[name] = timed(fn, args.repeats)
            except ImportError as exc:
                print(f"  {name}: skipped ({exc})")
        for name, (seconds, got) in read.items():
            same_book(read["parquet"][1], got)
            res[f"read {name}"] = seconds
            print(f"  read  {name:24s} {seconds:7.2f} s  {rows_in / seconds / 1e6:6.2f} M rows/s", flush=True)

        # Raw fetch of the positions table alone (no validation): the drivers themselves.
        conn = db.connect(args.uri)
        cur = conn.cursor()

        def adbc_positions():
            cur.execute("SELECT * FROM positions")
            return cur.fetch_arrow_table()

        fetch = {"ADBC": timed(adbc_positions, args.repeats)[0]}
        conn.close()
        try:
            import connectorx as cx

            fetch["ConnectorX"] = timed(lambda: cx.read_sql(args.uri, "SELECT * FROM positions", return_type="arrow"),
                                        args.repeats)[0]
        except ImportError:
            pass
        fetch["Parquet (pl.read_parquet)"] = timed(lambda: pl.read_parquet(tmp / "book" / "positions.parquet"),
                                                   args.repeats)[0]
        for name, seconds in fetch.items():
            res[f"fetch positions {name}"] = seconds
            print(f"  fetch positions {name:24s} {seconds:7.2f} s  {book.n_positions / seconds / 1e6:6.2f} M rows/s",
                  flush=True)

        risk = gpurisk.revalue(book, backend="cpu")
        risk.accounts, risk.positions  # built before the writes are timed
        rows_out = book.n_accounts + book.n_positions
        res["output_rows"] = rows_out
        write = {"parquet": timed(lambda: risk.write(tmp / "results"), args.repeats)[0],
                 "postgres (ADBC COPY)": timed(lambda: risk.write(args.uri, table="bench"), args.repeats)[0]}
        try:
            write["Polars csv + COPY FROM"] = timed(lambda: write_csv_copy(args.uri, risk, tmp), args.repeats)[0]
        except ImportError as exc:
            print(f"  csv write: skipped ({exc})")
        for name, seconds in write.items():
            res[f"write {name}"] = seconds
            print(f"  write {name:24s} {seconds:7.2f} s  {rows_out / seconds / 1e6:6.2f} M rows/s", flush=True)
    res.update(date=datetime.date.today().isoformat(), machine=platform.machine(), python=platform.python_version(),
               polars=pl.__version__, numpy=np.__version__)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
