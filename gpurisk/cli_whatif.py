"""The command-line commands ``gpurisk what-if`` and ``gpurisk funding`` (registered by
gpurisk/cli.py; the shared helpers, exit codes and error handling are its own). The cli module
is passed in rather than imported: run as ``python -m gpurisk.cli`` it is ``__main__``, and its
InputError must be the class its ``main`` catches."""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl


def add_commands(sub, common, cli) -> None:
    w = sub.add_parser(
        "what-if", parents=[common], help="pre-trade check of a table of prospective orders",
        description="Apply each order of ORDERS (account_id, symbol, signed size, price; optional margin_mode, "
                    "isolated_margin, leverage) on its own to the book, which does not change, and report the "
                    "position, the account's margin ratio, available balance and status, the liquidation price "
                    "after it, and whether it passes the initial-margin check. Example:\n"
                    "  gpurisk what-if my_book/ orders.parquet --out what-if.parquet",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    w.add_argument("book", help="book directory")
    w.add_argument("orders", help="orders table (.parquet, .csv or .arrow)")
    w.add_argument("--out", help="write the result table here (.parquet or .csv), atomically")
    w.add_argument("--mark", action="append", metavar="SYMBOL=PRICE", help="override one mark price (repeatable)")
    w.add_argument("--marks", metavar="FILE", help="override marks from a file with symbol, mark_price columns")
    cli._add_portfolio_options(w)
    w.set_defaults(func=lambda args: cmd_what_if(args, cli))

    f = sub.add_parser(
        "funding", parents=[common], help="pay funding on a book and write the funded book",
        description="Each open position pays rate x notional at the mark (longs pay when the rate is positive), "
                    "cross positions from the wallet, isolated ones from their margin. Writes the funded book "
                    "(a book directory) with the per-symbol and per-account reports. Example:\n"
                    "  gpurisk funding my_book/ --rate BTCUSDT=0.0001 --rate ETHUSDT=-0.0002 --out funded/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("book", help="book directory")
    f.add_argument("--rate", action="append", metavar="SYMBOL=RATE", help="funding rate of one symbol (repeatable)")
    f.add_argument("--rates", metavar="FILE", help="rates from a file with symbol, funding_rate columns")
    f.add_argument("--out", required=True, help="directory for the funded book and the reports")
    f.add_argument("--mark", action="append", metavar="SYMBOL=PRICE", help="override one mark price (repeatable)")
    f.add_argument("--marks", metavar="FILE", help="override marks from a file with symbol, mark_price columns")
    f.set_defaults(func=lambda args: cmd_funding(args, cli))


def cmd_what_if(args, cli) -> int:
    InputError, _stage, _done = cli.InputError, cli._stage, cli._done
    from .engine import Engine
    from .output import atomic_file, check_file_place

    marks = cli._parse_marks(args.mark, args.marks)
    venue = cli._margin_venue(args)
    if args.out:
        if Path(args.out).suffix not in (".parquet", ".csv"):
            raise InputError(f"--out {args.out}: name a .parquet or .csv file")
        check_file_place(Path(args.out))  # refused before any compute
    orders = cli._read_frame(args.orders, "orders")
    t = _stage(f"reading {args.book}")
    book = cli._read_any_book(args.book)
    _done(t, f"  ({book!r})")
    t = _stage(f"checking {orders.height:,} orders")
    out = Engine(book, venue=venue, backend=args.backend).what_if(orders, marks)
    _done(t)
    fails = out.filter(~pl.col("im_check"))
    print(f"{out.height:,} orders: {out.height - fails.height:,} pass the initial-margin check, "
          f"{fails.height:,} fail")
    if fails.height:
        with pl.Config(tbl_rows=10, tbl_cols=8):
            assets = ["asset"] if len(book.assets) > 1 else []  # the balance's asset, where they differ
            print(fails.select("order", "account_id", "symbol", *assets, "order_size", "order_price",
                               "available_balance", "margin_ratio", "liq_price").head(10))
    if args.out:
        with atomic_file(args.out) as tmp:
            (out.write_parquet if args.out.endswith(".parquet") else out.write_csv)(tmp)
        print(f"\nresults written to {args.out}")
    return 0


def cmd_funding(args, cli) -> int:
    InputError, _column_problems, _read_frame = cli.InputError, cli._column_problems, cli._read_frame
    from .funding import apply_funding
    from .output import reserved

    marks = cli._parse_marks(args.mark, args.marks)
    symbols: list = []
    values: list = []
    if args.rates:
        df = _read_frame(args.rates, "rates")
        problems = _column_problems(df, "rates", args.rates, {"symbol": "text", "funding_rate": "number"})
        if problems:
            raise InputError(*problems)
        symbols += df["symbol"].cast(pl.String).to_list()
        values += df["funding_rate"].cast(pl.Float64).to_list()
    problems = []
    for item in args.rate or []:
        sym, eq, value = item.partition("=")
        try:
            if not (sym and eq):
                raise ValueError
            values.append(float(value))
            symbols.append(sym)
        except ValueError:
            problems.append(f"--rate expects SYMBOL=RATE with a number for RATE, got {item!r}")
    if problems:
        raise InputError(*problems)
    # one table: a symbol given twice (in the file and by --rate) is refused by name, not overridden
    rates = pl.DataFrame({"symbol": symbols, "funding_rate": values},
                         schema={"symbol": pl.String, "funding_rate": pl.Float64})
    if not args.rates and not args.rate:
        raise InputError("give the funding rates: --rate SYMBOL=RATE (repeatable) or --rates FILE")
    with reserved(args.out, "book", inputs=[args.book]):
        book = cli._read_any_book(args.book)
        res = apply_funding(book, rates, marks, backend=args.backend)
        with pl.Config(tbl_rows=len(book.symbols)):
            print(res.by_symbol.filter(pl.col("funding_rate") != 0))
        print(f"rounding residual booked: {res.rounding_residual:.3g}")
        res.write(args.out, inputs=[args.book])
        print(f"\nfunded book written to {args.out} (with funding_by_symbol.parquet, funding_accounts.parquet)")
    return 0
