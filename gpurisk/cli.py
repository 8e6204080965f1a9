"""The ``gpurisk`` command line: demo, synth, revalue, stress (on one machine or a Dask cluster)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import polars as pl

from .backend import BackendUnavailable
from .book import Book, BookError, read_book
from .database import DatabaseError, is_database_uri, redact
from .distributed import DistributedRunError
from .engine import Engine, Risk
from .kernels import KernelBuildError
from .output import OutputError, check_file_place, check_place, reserved
from .synthetic import synthetic_book
from .venue import PRESETS, VARIANTS

# The exit-code rule of every command (README, "Exit codes").
EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug in gpurisk: traceback, and a line asking to report it
EXIT_INPUT = 2  # bad input or usage: one line per problem on stderr, no traceback
EXIT_INTERRUPTED = 130  # SIGINT (128 + 2)


class InputError(Exception):
    """Bad input or usage found by the command line: exit 2, one line per problem."""

    def __init__(self, *problems: str):
        self.problems = problems
        super().__init__("\n".join(problems))


# Errors that mean the input, the usage or the machine's resources are at fault (exit 2).
_INPUT_ERRORS = (InputError, BookError, OutputError, FileNotFoundError, BackendUnavailable, KernelBuildError,
                 ValueError, DistributedRunError, DatabaseError)
# OSErrors about a path or the machine's resources, not about gpurisk (exit 2).
_INPUT_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EEXIST,
                 errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG, errno.EFBIG}

DESCRIPTION = """\
gpurisk: batch risk for crypto perpetual-futures venues. Revalues every account and
position at once (equity, tiered maintenance/initial margin, margin ratio, status,
liquidation and bankruptcy prices, ADL queue rank and lights) on the GPU or the CPU.

Start with `gpurisk demo`; then `gpurisk synth` a book and `gpurisk revalue` it, or
revalue your own book directory (markets, tiers, accounts, positions as .parquet/.csv).
`gpurisk report` turns written results into one HTML page of plots and tables.
"""


_open_stage = False  # a stage line printed without its newline yet


def _stage(msg: str) -> float:
    global _open_stage
    print(f"  {msg} ...", end="", flush=True)
    _open_stage = True
    return time.perf_counter()


def _done(t0: float, extra: str = "") -> None:
    global _open_stage
    print(f" {time.perf_counter() - t0:.2f} s{extra}", flush=True)
    _open_stage = False


def _end_stage_line() -> None:
    """End a stage line left open by an error, so the message starts on a line of its own."""
    global _open_stage
    if _open_stage:
        print(flush=True)
        _open_stage = False


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


def _read_frame(path: str | Path, what: str) -> pl.DataFrame:
    """A table file (.parquet, .csv, .arrow) given on the command line, or an InputError
    that names it: missing, unreadable, empty, not a table."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} file {p} does not exist")
    if p.is_dir():
        raise InputError(f"{what} file {p} is a directory")
    try:
        if p.suffix == ".parquet":
            df = pl.read_parquet(p)
        elif p.suffix in (".arrow", ".feather", ".ipc"):
            df = pl.read_ipc(p)
        else:
            df = pl.read_csv(p, infer_schema_length=None)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read the {what} file {p}: {first}") from None
    if df.height == 0:
        raise InputError(f"{what} file {p} has no rows")
    return df


def _column_problems(df: pl.DataFrame, what: str, path, need: dict[str, str]) -> list[str]:
    """One line per column of ``need`` ({name: "any" | "text" | "number" | "integer"}) that is
    missing or of the wrong type."""
    out = []
    for name, kind in need.items():
        if name not in df.columns:
            out.append(f"{what} file {path}: column {name!r} is missing (columns: {', '.join(df.columns)})")
            continue
        dtype = df.schema[name]
        if df[name].null_count() == df.height:
            continue  # all null: the validation after names the rows
        ok = {"any": True, "text": dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum),
              "number": dtype.is_numeric(), "integer": dtype.is_integer()}[kind]
        if not ok:
            want = {"text": "text", "number": "a number", "integer": "an integer"}[kind]
            out.append(f"{what} file {path}: column {name!r} must be {want}, got {dtype}")
    return out


def _parse_marks(items: list[str] | None, path: str | None):
    marks = {}
    problems = []
    if path:
        df = _read_frame(path, "marks")
        problems += _column_problems(df, "marks", path, {"symbol": "text", "mark_price": "number"})
        if not problems:
            from .engine import check_marks

            marks.update(check_marks(df))  # nulls, a symbol priced twice, the limits: refused, rows named
    for item in items or []:
        sym, eq, price = item.partition("=")
        try:
            if not (sym and eq):
                raise ValueError
            marks[sym] = float(price)
        except ValueError:
            problems.append(f"--mark expects SYMBOL=PRICE with a number for PRICE, got {item!r}")
    if problems:
        raise InputError(*problems)
    return marks or None


#: host memory per synthetic account (book, device copy, results, tables), measured ~0.6 KiB
SYNTH_BYTES_PER_ACCOUNT = 1024


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_synthetic_size(n_accounts: int) -> None:
    """Refuse a synthetic book that cannot fit in memory, before allocating any of it."""
    need = n_accounts * SYNTH_BYTES_PER_ACCOUNT
    avail = _available_memory()
    if avail is not None and need > avail:
        raise InputError(f"--accounts {n_accounts:,} needs about {need / 2**30:,.1f} GiB of memory "
                         f"({SYNTH_BYTES_PER_ACCOUNT} bytes per account); {avail / 2**30:,.1f} GiB is available "
                         f"— use at most about {avail // SYNTH_BYTES_PER_ACCOUNT:,} accounts")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


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


def _report(path, **kw) -> None:
    """Write the HTML report and say where it is (a missing matplotlib skips it, with the fix)."""
    try:
        from .report import write_report

        t = _stage("writing the HTML report")
        path = write_report(path, **kw)
    except ImportError as exc:
        print(f"\nreport skipped: {exc} (pip install 'matplotlib>=3.7')")
        return
    _done(t)
    print(f"report: {Path(path).resolve()}  (open it in a browser)")


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


def _read_any_book(path, args=None):
    """A book directory, plain or sharded (gpurisk synth --shards), or a postgresql:// URI."""
    from .shards import is_sharded, read_sharded_book

    if is_database_uri(path):
        return read_book(path, **_db_tables(args))
    if getattr(args, "db_table", None) or getattr(args, "db_query", None):
        raise InputError(f"--db-table and --db-query name tables of a postgresql:// BOOK, not of the directory {path}")
    return read_sharded_book(path) if is_sharded(path) else read_book(path)


def _db_tables(args) -> dict:
    """tables= / queries= for a database book from --db-table / --db-query TABLE=VALUE."""
    out = {"tables": {}, "queries": {}}
    for option, key in (("db_table", "tables"), ("db_query", "queries")):
        for item in getattr(args, option, None) or []:
            name, sep, value = item.partition("=")
            if not sep or not value.strip():
                raise InputError(f"--{option.replace('_', '-')} {item!r}: expected TABLE=VALUE "
                                 f"(TABLE one of markets, tiers, accounts, positions)")
            out[key][name.strip()] = value.strip()
    return out


def _shown(place) -> str:
    """A book or output place as printed: a database URI without its password."""
    return redact(place) if is_database_uri(place) else str(place)


@contextlib.contextmanager
def _reserved_out(args, kind: str):
    """The output place, refused before any compute: a directory as gpurisk.output.reserved;
    a database by connecting and checking it takes the tables."""
    if is_database_uri(args.out):
        from .database import check_writable

        if args.book and is_database_uri(args.book):
            _db_tables(args)  # usage errors first
        check_writable(args.out, args.out_table)
        yield args.out
        return
    with reserved(args.out, kind, inputs=[] if is_database_uri(args.book) else [args.book]):
        yield args.out


def _write_out(result, args) -> str:
    """Write a revalue result to --out (directory or database); the line to print."""
    if not is_database_uri(args.out):
        result.write(args.out)
        return f"results written to {args.out} (accounts.parquet, positions.parquet)"
    if isinstance(result, Risk):
        run = result.write(args.out, table=args.out_table)
    else:  # gathered from a cluster
        from .database import write_frames

        run = write_frames(args.out, {"accounts": result.accounts, "positions": result.positions},
                           args.out_table, "revalue", {"venue": result.venue.name, "backend": result.backend.name})
    return (f"results written to {redact(args.out)}: tables {args.out_table}_accounts, {args.out_table}_positions "
            f"(run_id {run}; the run is listed in {args.out_table}_runs)")


def _cluster(args):
    """A Dask client when --scheduler or --workers is given, else None (one machine)."""
    if not (args.scheduler or args.workers):
        return None
    from .distributed import connect

    where = args.scheduler or f"a local cluster of {args.workers} worker processes"
    print(f"  Dask: {where}", flush=True)
    return connect(scheduler=args.scheduler, workers=args.workers)


def cmd_revalue(args) -> int:
    marks = _parse_marks(args.mark, args.marks)  # usage first: before any reading or computing
    venue = _margin_venue(args)
    with _reserved_out(args, "revalue"):  # refused before any compute
        return _revalue(args, marks, venue)


def _margin_venue(args):
    """The venue of --venue with the margin model of --margin-model and --portfolio (README
    "Portfolio margin"); the preset's name when neither is given."""
    if args.portfolio is None:
        if args.margin_model == "portfolio":
            raise InputError("--margin-model portfolio needs the portfolio parameters: --portfolio FILE "
                             "(one row per symbol: symbol, risk_group, price_range, shocks, ...; README \"Portfolio margin\")")
        if args.groups_move or args.im_multiple is not None:
            raise InputError("--groups-move and --im-multiple set portfolio parameters: give --portfolio FILE too")
        return args.venue
    from .portfolio import PortfolioModel
    from .venue import get_venue

    model = PortfolioModel.read(args.portfolio, groups_move=args.groups_move or "independent",
                                im_multiple=1.0 if args.im_multiple is None else args.im_multiple)
    return get_venue(args.venue).with_(margin_model=args.margin_model or "tiered", portfolio=model)


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


def cmd_stress(args) -> int:
    venue = _margin_venue(args)  # usage first: before any reading or computing
    with _reserved_out(args, "stress"):  # refused before any compute
        return _stress(args, venue)


def _stress(args, venue) -> int:
    from .stress import POLICIES, Impact, shock_grid, stress

    if args.scenarios:
        scenarios = _read_frame(args.scenarios, "scenarios")
        problems = _column_problems(scenarios, "scenarios", args.scenarios,
                                    {"scenario": "any", "symbol": "text", "shock": "number"}
                                    | ({"step": "integer"} if "step" in scenarios.columns else {}))
        if problems:
            raise InputError(*problems)
        what = f"scenarios from {args.scenarios}"
    else:
        lo, hi, n = args.grid
        scenarios = shock_grid(float(lo), float(hi), int(n))
        what = f"a grid of {int(n):,} shocks from {float(lo):+.0%} to {float(hi):+.0%} on every symbol"
    cluster = _cluster(args)
    if args.book and cluster is not None and not is_database_uri(args.book) and not args.asset:
        book = args.book  # each worker reads the book directory itself
    elif args.book:
        t = _stage(f"reading {_shown(args.book)}")
        book = _read_any_book(args.book, args)
        _done(t, f"  ({book!r})")
    else:
        _check_synthetic_size(args.accounts)
        t = _stage(f"building a synthetic book of {args.accounts:,} accounts (seed {args.seed})")
        book = synthetic_book(args.accounts, seed=args.seed)
        _done(t, f"  ({book.n_positions:,} positions)")
    fund = _insurance_fund(args.insurance_fund)
    if isinstance(fund, dict) and not isinstance(book, str):
        unknown = sorted(set(fund) - set(book.assets))
        if unknown:
            raise InputError(f"--insurance-fund {unknown[0]}=...: the book has no wallet or market in "
                             f"{unknown[0]}; its assets are {', '.join(book.assets)}")
    if args.asset:
        if args.asset not in book.assets:
            raise InputError(f"--asset {args.asset}: the book has no wallet or market in it; its assets are "
                             f"{', '.join(book.assets)}")
        book = book.for_asset(args.asset)
        if isinstance(fund, dict):
            fund = {a: v for a, v in fund.items() if a == args.asset}
        print(f"stress: the {args.asset} margin pools ({book!r}); money in {args.asset}")
    elif isinstance(book, Book) and len(book.assets) > 1:
        if not isinstance(fund, dict) and fund != 0:
            raise InputError(f"--insurance-fund {fund:g}: the book holds wallets or markets in "
                             f"{', '.join(book.assets)}; give the fund per asset: "
                             + " ".join(f"--insurance-fund {a}=AMOUNT" for a in book.assets))
        print(f"stress: {len(book.assets)} settle assets ({', '.join(book.assets)}), each with its own margin "
              "pools, insurance fund and money (one summary row per scenario, policy and asset)")
    policies = list(POLICIES) if args.policy == ["all"] else args.policy or ["queue"]
    impact = Impact(args.impact, coefficient=args.impact_coefficient, depth_share=args.depth_share) if args.impact else None
    shown_fund = ", ".join(f"{v:,.8g} {a}" for a, v in fund.items()) if isinstance(fund, dict) else f"{fund:,.0f}"
    print(f"stress: {what}; venue {args.venue}; policies {', '.join(policies)}; steps {args.steps}; "
          f"insurance fund {shown_fund or 0}" + (f"; {args.impact} impact" if impact else ""))
    if cluster is not None:
        from .distributed import stress_distributed

        with cluster as client:
            res = stress_distributed(book, scenarios, client, venue=venue, backend=args.backend,
                                     insurance_fund=fund, policy=policies, steps=args.steps,
                                     impact=impact)
    else:
        res = stress(book, scenarios, venue=venue, backend=args.backend, insurance_fund=fund,
                     policy=policies, steps=args.steps, impact=impact, progress=not args.quiet,
                     detail=not args.summary_only, threads=args.threads)
    t = res.timings
    on = f" on {t['threads']} threads" if t.get("threads", 1) > 1 else ""
    print(f"{t['scenarios']:,} scenarios x {len(policies)} policies in {t['seconds']:.1f} s{on} "
          f"({t['screened_quiet']:,} screened as quiet by the batched kernel pass)")
    from .report import format_headline

    print(format_headline(stress=res))
    from .report import stress_assets

    assets = stress_assets(res)
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, float_precision=2,
                   tbl_width_chars=200, thousands_separator=True, tbl_rows=12, tbl_cols=12):
        for asset in assets or [None]:  # money of different assets never compared: per asset
            part = res if asset is None else res.for_asset(asset)
            worst = part.summary.sort("deficit", descending=True).head(8).select(
                "scenario", "policy", "steps", "accounts_liquidated", "notional_liquidated", "deficit",
                "insurance_used", "socialized_loss", "adl_accounts")
            print(f"\nworst scenarios by deficit{'' if asset is None else f' (money in {asset})'}:")
            print(worst)
        print("\npolicy comparison (all scenarios):")
        print(res.policy_comparison())
    from .stress import CONSERVATION_TOLERANCE, conservation_check

    failed, worst_err = conservation_check(res.summary)  # NaN counts as a failure, never skipped
    if failed:
        print(f"\ngpurisk stress: money NOT conserved on {failed:,} of {res.summary.height:,} scenario runs "
              f"(largest relative error {worst_err:.1e}; NaN or inf count as failures; tolerance "
              f"{CONSERVATION_TOLERANCE:g}). This is a bug: please report it with the command line.",
              file=sys.stderr)
    else:
        print(f"\nmoney conserved on every scenario: largest relative error {worst_err:.1e}")
    if args.out:
        whole = book if isinstance(book, Book) else None  # not when cluster workers read the book themselves
        if is_database_uri(args.out):
            run = res.write(args.out, book=whole, venue=args.venue, backend=args.backend, table=args.out_table)
            print(f"results written to {redact(args.out)}: tables {args.out_table}_summary, _liquidations, "
                  f"_adl_fills, _haircuts, _prices, _policy_comparison (run_id {run})")
            return 1 if failed else 0
        res.write(args.out, book=whole, venue=args.venue, backend=args.backend)
        print(f"results written to {args.out} (summary, liquidations, adl_fills, haircuts, prices, "
              f"policy_comparison .parquet)")
        if not args.no_report:
            base = risk = None
            if whole is not None:
                base = dict(zip(book.symbols, book.mark_price.tolist()))
                risk = Engine(book, venue=venue, backend=args.backend).revalue()
            if not assets:
                _report(Path(args.out) / "report.html", risk=risk, stress=res, base_marks=base,
                        title=f"gpurisk stress: {what}")
            from .report import select_asset

            for asset in assets:  # a page per asset: its money in its own unit
                risk_a, res_a = select_asset(asset, risk=risk, stress=res)
                _report(Path(args.out) / f"report-{asset}.html", risk=risk_a, stress=res_a, base_marks=base,
                        title=f"gpurisk stress: {what} ({asset} margin pools)")
    return 1 if failed else 0


def _insurance_fund(values):
    """--insurance-fund values: one AMOUNT (the book's one asset), or ASSET=AMOUNT repeated
    (a book with several settle assets); InputError naming the bad value."""
    if not values:
        return 0.0
    plain = [v for v in values if "=" not in v]
    if plain and len(values) > 1:
        raise InputError(f"--insurance-fund {plain[0]}: give one AMOUNT (a book in one asset), or ASSET=AMOUNT "
                         "for each asset")
    funds = {}
    for v in values:
        asset, _, amount = v.rpartition("=") if "=" in v else ("", "", v)
        asset = asset.strip()
        try:
            x = float(amount)
        except ValueError:
            raise InputError(f"--insurance-fund {v}: {amount!r} is not a number") from None
        if "=" in v and not asset:
            raise InputError(f"--insurance-fund {v}: name the asset, e.g. BTC={amount}")
        if asset in funds:
            raise InputError(f"--insurance-fund {v}: {asset} is given twice")
        if not plain:
            funds[asset] = x
        else:
            return x
    return funds


def cmd_report(args) -> int:
    from .report import load_risk_tables, load_stress_tables, write_report

    from .output import _peek_manifest

    results, stress_dir = args.results, args.stress
    check_file_place(args.out, inputs=[results, stress_dir])  # before reading or drawing anything
    if results and not stress_dir and not (Path(results) / "accounts.parquet").exists() \
            and ((Path(results) / "summary.parquet").exists()
                 or (_peek_manifest(Path(results)) or {}).get("kind") == "stress"):
        results, stress_dir = None, results  # a stress directory given alone
    if not results and not stress_dir:
        raise InputError("give a results directory (gpurisk revalue --out / demo), --stress DIR, or both")
    risk = _load_results(load_risk_tables, results, "results") if results else None
    stress = _load_results(load_stress_tables, stress_dir, "stress results") if stress_dir else None
    problems = []
    if risk is not None:
        from .schema import ACCOUNT_OUTPUT, POSITION_OUTPUT

        optional = {"close_fee", "asset"}  # results written before these columns existed
        problems += _table_problems(risk.accounts, f"{results}/accounts.parquet", ACCOUNT_OUTPUT.keys() - optional)
        problems += _table_problems(risk.positions, f"{results}/positions.parquet", POSITION_OUTPUT.keys() - optional)
    if stress is not None:
        from .stress import SUMMARY_COLUMNS

        problems += _table_problems(stress.summary, f"{stress_dir}/summary.parquet", SUMMARY_COLUMNS)
    if problems:
        raise InputError(*problems)
    from .report import select_asset, stress_assets

    if args.asset:
        try:
            risk, stress = select_asset(args.asset, risk=risk, stress=stress)
        except KeyError as exc:
            raise InputError(f"--asset {args.asset}: {exc.args[0]}") from None
    elif stress_assets(stress):
        raise InputError(f"{stress_dir}: stress results in several settle assets ({', '.join(stress_assets(stress))})"
                         "; report one at a time with --asset ASSET")
    path = write_report(args.out, risk=risk, stress=stress, title=args.title)
    print(format_report_line(path, risk, stress))
    return 0


def _load_results(loader, directory, what):
    """Tables written by gpurisk, or an InputError when a file is not a readable Parquet table."""
    try:
        return loader(directory)
    except (pl.exceptions.PolarsError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read the {what} in {directory} (not written by gpurisk, or truncated): "
                         f"{first}") from None


def _table_problems(df: pl.DataFrame, path: str, columns) -> list[str]:
    missing = [c for c in columns if c not in df.columns]
    if not missing:
        return []
    return [f"{path} is not a gpurisk table: columns {', '.join(missing)} are missing"]


def format_report_line(path, risk, stress) -> str:
    what = [f"{risk.accounts.height:,} accounts" if risk is not None else "",
            f"{stress.summary['scenario'].n_unique():,} stress scenarios" if stress is not None else ""]
    return f"report of {' and '.join(w for w in what if w)}: {Path(path).resolve()}  (open it in a browser)"


def _add_portfolio_options(parser) -> None:
    pm = parser.add_argument_group("portfolio margin (README \"Portfolio margin\")")
    pm.add_argument("--margin-model", choices=["tiered", "portfolio"],
                    help="the margin model of accounts whose accounts.margin_model is null (default tiered)")
    pm.add_argument("--portfolio", metavar="FILE",
                    help="portfolio parameters (.csv/.parquet/.arrow), one row per symbol: symbol, risk_group, "
                         "price_range, shocks[, offset_rate, liquidity_threshold, liquidity_rate]; the accounts "
                         "table then carries every account's portfolio requirement beside the tiered one")
    pm.add_argument("--groups-move", choices=["independent", "joint"],
                    help="risk groups shocked independently (requirements summed; default) or jointly (one "
                         "common move, the worst total)")
    pm.add_argument("--im-multiple", type=float, metavar="X",
                    help="initial margin = X times the portfolio requirement (default 1)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpurisk", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--venue", default="binance", choices=sorted(PRESETS) + sorted(VARIANTS),
                        help="venue conventions: tiers, MM and IM base, close fee, available balance, ADL score and lights "
                             "(default binance; binance_adl_2019 and hyperliquid_side_2025 are the older ADL rules)")
    common.add_argument("--backend", default="auto", choices=["auto", "cpu", "gpu"],
                        help="where kernels run: gpu (CuPy), cpu (same kernels compiled with the host "
                             "C++ compiler) or auto (gpu when a CUDA GPU is visible; default)")
    dist = argparse.ArgumentParser(add_help=False)
    dist.add_argument("--scheduler", metavar="ADDRESS",
                      help="run on a Dask cluster (e.g. tcp://10.0.0.1:8786; start it with `dask scheduler` and "
                           "`dask worker ADDRESS`); BOOK must be a path every worker can read")
    dist.add_argument("--workers", type=int, metavar="N",
                      help="run on a local Dask cluster of N worker processes (same results as one process)")
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument("--db-table", action="append", metavar="TABLE=NAME",
                          help="with a postgresql:// BOOK: read TABLE (markets, tiers, accounts, positions) from "
                               "the database table NAME or SCHEMA.NAME (repeatable; default: the same names)")
    database.add_argument("--db-query", action="append", metavar="TABLE=SQL",
                          help="with a postgresql:// BOOK: read TABLE with this SQL query (repeatable)")

    d = sub.add_parser("demo", parents=[common], help="synthesize an exchange, revalue it, print and write results",
                       description="End to end on a built-in synthetic exchange: build a balanced book, "
                                   "revalue and rank every account and position, print a summary and "
                                   "write the book and the results as Parquet.")
    d.add_argument("--accounts", type=_positive_int, default=200_000, help="trader accounts (default 200,000; ~2.7 positions each)")
    d.add_argument("--seed", type=int, default=0, help="random seed of the synthetic book (default 0)")
    d.add_argument("--out", default="gpurisk-demo", help="output directory (default ./gpurisk-demo)")
    d.add_argument("--no-report", action="store_true", help="skip the HTML report (OUT/report.html)")
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("synth", help="write a synthetic book directory",
                       description="Write a balanced synthetic book (markets, tiers, accounts, positions).")
    s.add_argument("out", help="directory to write, or a postgresql:// URI (tables markets, tiers, accounts, "
                               "positions, replaced in one transaction)")
    s.add_argument("--accounts", type=_positive_int, default=100_000, help="trader accounts (default 100,000)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--format", choices=["parquet", "csv"], default="parquet", help="file format (default parquet)")
    s.add_argument("--shards", type=_positive_int, metavar="N",
                   help="write a sharded book: N shards of whole accounts (for --scheduler/--workers runs)")
    s.add_argument("--inverse-markets", type=int, default=0, metavar="N",
                   help="make the N most traded symbols coin-margined (BTCUSD, ETHUSD, ...; wallets per asset; "
                        "README 'Inverse contracts'); stress and what-if refuse such a book for now")
    s.set_defaults(func=cmd_synth)

    r = sub.add_parser("revalue", parents=[common, dist, database], help="revalue a book directory",
                       description="Validate and revalue a book directory holding markets, tiers, accounts and "
                                   "positions (.parquet, .csv or .arrow), or those tables in PostgreSQL "
                                   "(postgresql:// URI). Marks default to the markets table.")
    r.add_argument("book", help="book directory, or postgresql://USER@HOST/DB (one consistent snapshot)")
    r.add_argument("--out", help="write accounts.parquet and positions.parquet here; or a postgresql:// URI: "
                                 "tables OUT_TABLE_accounts and OUT_TABLE_positions, replaced in one transaction")
    r.add_argument("--out-table", default="gpurisk", metavar="NAME",
                   help="with a postgresql:// --out: table name prefix, NAME or SCHEMA.NAME (default gpurisk)")
    r.add_argument("--mark", action="append", metavar="SYMBOL=PRICE", help="override one mark price (repeatable)")
    r.add_argument("--marks", metavar="FILE", help="override marks from a file with symbol, mark_price columns")
    _add_portfolio_options(r)
    r.set_defaults(func=cmd_revalue)

    from .monitor_run import add_parser as add_monitor_parser
    add_monitor_parser(sub, common)

    st = sub.add_parser(
        "stress", parents=[common, dist, database], help="price-shock scenarios and liquidation cascades",
        description="Run price-shock scenarios through the deleveraging ladder (partial reduction, "
                    "liquidation, backstop), the insurance fund and ADL, on a book directory or a synthetic "
                    "book. Money is conserved and checked on every scenario. Examples:\n"
                    "  gpurisk stress --accounts 100000 --grid -0.5 0.5 1000 --policy all\n"
                    "  gpurisk stress BOOK --grid -0.3 -0.1 5 --steps 20 --impact sqrt --insurance-fund 1e6",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    st.add_argument("book", nargs="?", help="book directory or postgresql:// URI (default: a synthetic book, "
                                          "see --accounts)")
    st.add_argument("--accounts", type=_positive_int, default=100_000, help="synthetic book size when no BOOK is given")
    st.add_argument("--seed", type=int, default=0, help="synthetic book seed (default 0)")
    st.add_argument("--grid", nargs=3, metavar=("LO", "HI", "N"), default=("-0.5", "0.5", "101"),
                    help="N shocks from LO to HI applied to every symbol (default -0.5 0.5 101)")
    st.add_argument("--scenarios", metavar="FILE",
                    help="scenario file (.parquet/.csv) with scenario, symbol ('*' = all), shock and optional "
                         "step columns (a step column makes multi-step price paths)")
    st.add_argument("--policy", action="append", choices=["queue", "pro_rata", "capped_pro_rata", "rap", "all"],
                    help="ADL policy; repeat to compare several, or 'all' (default queue)")
    st.add_argument("--insurance-fund", action="append", metavar="[ASSET=]AMOUNT",
                    help="insurance fund at the start (default 0); a book with several settle assets takes one "
                         "per asset, repeated: --insurance-fund USDT=1e6 --insurance-fund BTC=20")
    st.add_argument("--asset", metavar="ASSET",
                    help="stress one asset's margin pools (its wallets, positions and markets; e.g. BTC for "
                         "coin-margined markets): a book with wallets in several assets runs per asset, the "
                         "insurance fund and every money figure in that asset")
    st.add_argument("--steps", type=int, default=1, help="cascade steps: liquidations move prices (default 1)")
    st.add_argument("--impact", choices=["linear", "sqrt"], help="price impact of liquidation flow (cascades)")
    st.add_argument("--impact-coefficient", type=float, default=0.1,
                    help="relative move when the flow equals the depth (default 0.1)")
    st.add_argument("--depth-share", type=float, default=0.1,
                    help="depth per symbol as a share of its open interest notional (default 0.1)")
    st.add_argument("--out", help="write the result tables here (a directory, or a postgresql:// URI)")
    st.add_argument("--out-table", default="gpurisk_stress", metavar="NAME",
                    help="with a postgresql:// --out: table name prefix (default gpurisk_stress)")
    st.add_argument("--quiet", action="store_true", help="no progress bar")
    st.add_argument("--threads", type=_positive_int, default=None,
                    help="scenario runs at a time (default: one per CPU core on the cpu backend, 1 on the gpu); "
                         "the results are the same on any count")
    st.add_argument("--summary-only", action="store_true",
                    help="keep the summary and price paths only, not every liquidation and ADL fill "
                         "(large grids: fills can run to hundreds of millions of rows)")
    st.add_argument("--no-report", action="store_true", help="with --out: skip the HTML report (OUT/report.html)")
    _add_portfolio_options(st)
    st.set_defaults(func=cmd_stress)

    rp = sub.add_parser(
        "report", help="an HTML page of plots and tables from written results",
        description="Write one self-contained HTML page (plots embedded) from the Parquet results of\n"
                    "`gpurisk revalue --out` or `gpurisk demo` (margin-ratio distribution, ADL queues per\n"
                    "symbol) and/or `gpurisk stress --out` (stress curve, cascade, policy comparison).\n"
                    "Examples:\n"
                    "  gpurisk report gpurisk-demo/results --out report.html\n"
                    "  gpurisk report RESULTS --stress STRESS_DIR --out report.html",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    rp.add_argument("results", nargs="?", help="directory with accounts.parquet and positions.parquet")
    rp.add_argument("--stress", metavar="DIR", help="directory written by `gpurisk stress --out DIR`")
    rp.add_argument("--out", default="report.html", help="the HTML file to write (default ./report.html)")
    rp.add_argument("--title", default="gpurisk report", help="page title")
    rp.add_argument("--asset", metavar="ASSET", help="the rows of one settle asset (results of a book with "
                                                    "several: inverse contracts; money is never added across assets)")
    rp.set_defaults(func=cmd_report)

    from .cli_whatif import add_commands  # what-if and funding (gpurisk/cli_whatif.py)

    add_commands(sub, common, sys.modules[__name__])
    return p


class _QuietStdout:
    """sys.stdout that a closed reader (``gpurisk ... | head``) cannot break: on the first
    BrokenPipeError it points file descriptor 1 at /dev/null, drops what is printed after,
    and lets the command finish its work (files under --out are still written)."""

    def __init__(self, stream):
        self._stream = stream
        self.reader_gone = False

    def _gone(self) -> None:
        self.reader_gone = True
        try:  # what is still buffered, and the interpreter's last flush, go to /dev/null
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._gone()
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._gone()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _problem_lines(exc: BaseException) -> list[str]:
    """One line per problem of an input error."""
    if isinstance(exc, InputError):
        return list(exc.problems)
    if isinstance(exc, BookError):
        return [str(p) for p in exc.problems]
    if isinstance(exc, KernelBuildError):
        return [str(exc)]  # the compiler's log follows the first line
    text = str(exc).strip()
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.strerror or text}: {exc.filename}"
    return [line for line in text.splitlines() if line.strip()] or [type(exc).__name__]


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (README, "Exit codes"): 0 done, 2 bad input or
    usage, 130 interrupted, 1 internal error."""
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors: argparse prints the usage and one line, exits 2
    command = f"gpurisk {args.command}"
    stdout = sys.stdout
    quiet = sys.stdout = _QuietStdout(stdout)

    def say(line: str) -> None:
        _end_stage_line()
        print(f"{command}: {line}", file=sys.stderr, flush=True)

    def show_warning(message, category, filename, lineno, file=None, line=None):
        say(f"warning: {message}")

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            return args.func(args)
    except KeyboardInterrupt:
        quiet.flush()
        say("interrupted")
        return EXIT_INTERRUPTED
    except MemoryError:
        say("out of memory: the input is too large for this machine's memory")
        return EXIT_INPUT
    except _INPUT_ERRORS as exc:
        quiet.flush()
        for line in _problem_lines(exc):
            say(line)
        return EXIT_INPUT
    except OSError as exc:  # a closed stdout never gets here (_QuietStdout): EPIPE is gpurisk's own
        if exc.errno not in _INPUT_ERRNOS:
            return _internal_error(command, say)
        for line in _problem_lines(exc):
            say(line)
        return EXIT_INPUT
    except Exception:
        return _internal_error(command, say)
    finally:
        quiet.flush()
        sys.stdout = stdout


def _internal_error(command: str, say) -> int:
    traceback.print_exc()
    say(f"internal error in gpurisk {_version()} (Python {sys.version.split()[0]}, Polars {pl.__version__}); "
        f"this is a bug: please report it to the gpurisk maintainers with the command line and the traceback above")
    return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
