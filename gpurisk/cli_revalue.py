"""The commands ``gpurisk demo``, ``gpurisk synth`` and ``gpurisk revalue``: a synthetic
exchange end to end, a synthetic book written, a book revalued (on one machine or a Dask
cluster). Their arguments are declared in gpurisk/cli.py.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from .cli_common import (InputError, _check_synthetic_size, _cluster, _done, _margin_venue, _parse_marks,
                         _read_any_book, _report, _reserved_out, _shown, _stage, _write_out)
from .database import is_database_uri, redact
from .engine import Engine, Risk
from .output import check_file_place, check_place, reserved
from .synthetic import synthetic_book


def _print_summary(risk: Risk) -> None:
    acc, pos = risk.accounts, risk.positions
    print(f"\nvenue {risk.venue.name}, backend {risk.backend.name}: "
          f"{acc.height:,} accounts, {pos.height:,} positions, {len(risk.book.symbols)} symbols")
    from .report import format_headline

    print(format_headline(risk=risk))
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, tbl_width_chars=200,
                   float_precision=2, thousands_separator=True, tbl_rows=20):
        print(risk.summary())
        per_symbol = (pos.group_by("symbol").agg(
            pl.len().alias("positions"),
            pl.col("notional").sum().alias("notional"),
            (pl.col("status") == "bankrupt").sum().alias("bankrupt"),
            (pl.col("status") == "liquidatable").sum().alias("liquidatable"),
            pl.col("liq_price").is_null().sum().alias("no_liq_price"),
        ).sort("notional", descending=True))
        print(per_symbol)
        if "portfolio_margin" in acc.columns:  # the venue carries a portfolio model
            pf = acc.filter(pl.col("margin_model") == "portfolio")
            print(f"portfolio margin: {pf.height:,} accounts in portfolio mode; requirement "
                  f"{pf['portfolio_margin'].sum():,.2f} against {pf['tiered_margin'].sum():,.2f} under tiers")
    t = risk.timings
    print(f"kernel pass {t['kernels'] * 1e3:.1f} ms, ADL ranking {t['ranking'] * 1e3:.1f} ms")


def cmd_demo(args) -> int:
    _check_synthetic_size(args.accounts)
    out = Path(args.out)
    check_place(out / "book", "book", what="--out")  # before any compute
    check_place(out / "results", "revalue", what="--out")
    if not args.no_report:
        check_file_place(out / "report.html")
    print(f"gpurisk demo: a synthetic exchange of {args.accounts:,} accounts (seed {args.seed})")
    t = _stage("building the book")
    book = synthetic_book(args.accounts, seed=args.seed)
    _done(t, f"  ({book.n_positions:,} positions)")
    t = _stage(f"uploading to the {args.backend} backend and compiling kernels")
    engine = Engine(book, venue=args.venue, backend=args.backend)
    engine.revalue()  # first call compiles (or loads cached) kernels
    _done(t)
    t = _stage("revaluing and ranking")
    risk = engine.revalue()
    _done(t)
    _print_summary(risk)
    book.write(out / "book")
    risk.write(out / "results")
    print(f"\nbook written to {out / 'book'}, results to {out / 'results'} "
          f"(accounts.parquet, positions.parquet)")
    if not args.no_report:
        _report(out / "report.html", risk=risk, title=f"gpurisk demo: {args.accounts:,} accounts, seed {args.seed}")
    return 0


def cmd_synth(args) -> int:
    _check_synthetic_size(args.accounts)
    if is_database_uri(args.out):
        if args.shards:
            raise InputError("--shards writes a sharded book directory; a database takes the whole book")
        from .database import write_book

        book = synthetic_book(args.accounts, seed=args.seed, inverse_markets=args.inverse_markets)
        write_book(args.out, book)
        print(f"{book!r} written to {redact(args.out)} (tables markets, tiers, accounts, positions)")
        return 0
    with reserved(args.out, "shard" if args.shards else "book"):
        return _synth(args)


def _synth(args) -> int:
    book = synthetic_book(args.accounts, seed=args.seed, inverse_markets=args.inverse_markets)
    if args.shards:
        from .shards import write_sharded

        out = write_sharded(book, args.out, args.shards, format=args.format)
        print(f"{book!r} written to {out} as {args.shards} shards of whole accounts ({args.format})")
        return 0
    out = book.write(args.out, format=args.format)
    print(f"{book!r} written to {out} ({args.format})")
    return 0


def cmd_revalue(args) -> int:
    marks = _parse_marks(args.mark, args.marks)  # usage first: before any reading or computing
    venue = _margin_venue(args)
    with _reserved_out(args, "revalue"):  # refused before any compute
        return _revalue(args, marks, venue)


def _revalue(args, marks, venue) -> int:
    cluster = _cluster(args)
    if cluster is not None:
        from .distributed import revalue_distributed

        with cluster as client:
            source = _read_any_book(args.book, args) if is_database_uri(args.book) else args.book
            t = _stage(f"revaluing {_shown(args.book)} on the cluster")
            risk = revalue_distributed(source, client, venue=venue, backend=args.backend,
                                       marks=marks)
            _done(t, f"  ({risk!r})")
            _print_summary(risk)
            if args.out:
                print(f"\n{_write_out(risk, args)}")
        return 0
    t = _stage(f"reading {_shown(args.book)}")
    book = _read_any_book(args.book, args)
    _done(t, f"  ({book!r})")
    engine = Engine(book, venue=venue, backend=args.backend)
    risk = engine.revalue(marks)
    _print_summary(risk)
    if args.out:
        print(f"\n{_write_out(risk, args)}")
    return 0
