"""What the ``gpurisk`` commands share (gpurisk/cli.py and the command modules beside it):
InputError (exit 2, one line per problem), the stage lines printed as a command goes, reading
the tables, marks and books given on the command line, the size check of a synthetic book,
refusing an output place before any compute, the venue of the margin-model options, the Dask
cluster of --scheduler/--workers, and the HTML report a command writes.

Not in gpurisk/cli.py, so that the command modules can import it: run as
``python -m gpurisk.cli``, that module is ``__main__``, and a second import of it would bring a
second InputError that ``main`` does not catch.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import polars as pl

from .book import read_book
from .database import is_database_uri, redact
from .engine import Risk
from .output import reserved


class InputError(Exception):
    """Bad input or usage found by the command line: exit 2, one line per problem."""

    def __init__(self, *problems: str):
        self.problems = problems
        super().__init__("\n".join(problems))


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
