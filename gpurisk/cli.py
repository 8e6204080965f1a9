"""The ``gpurisk`` command line: its arguments (every subcommand's; ``monitor``, ``what-if``
and ``funding`` declare their own in gpurisk/monitor_run.py and gpurisk/cli_whatif.py), the
exit codes and the error handling of ``main``.

The commands themselves live beside it, one module per group, and their names stay
importable from here: gpurisk/cli_revalue.py (demo, synth, revalue), gpurisk/cli_stress.py
(stress), gpurisk/cli_report.py (report), gpurisk/cli_whatif.py (what-if, funding),
gpurisk/monitor_run.py (monitor); what they share (InputError, stage lines, reading inputs,
output places, the cluster) is gpurisk/cli_common.py.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
import warnings

import polars as pl

from .backend import BackendUnavailable
from .book import BookError
from .database import DatabaseError
from .distributed import DistributedRunError
from .kernels import KernelBuildError
from .output import OutputError
from .venue import PRESETS, VARIANTS

# The commands and what they share; their names stay importable from here (gpurisk.cli.X).
from .cli_common import (  # noqa: F401
    SYNTH_BYTES_PER_ACCOUNT, InputError, _available_memory, _check_synthetic_size, _cluster, _column_problems,
    _db_tables, _done, _end_stage_line, _margin_venue, _parse_marks, _read_any_book, _read_frame, _report,
    _reserved_out, _shown, _stage, _write_out)
from .cli_report import _load_results, _table_problems, cmd_report, format_report_line  # noqa: F401
from .cli_revalue import _print_summary, _revalue, _synth, cmd_demo, cmd_revalue, cmd_synth  # noqa: F401
from .cli_stress import _insurance_fund, _stress, cmd_stress  # noqa: F401

# The exit-code rule of every command (README, "Exit codes").
EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug in gpurisk: traceback, and a line asking to report it
EXIT_INPUT = 2  # bad input or usage: one line per problem on stderr, no traceback
EXIT_INTERRUPTED = 130  # SIGINT (128 + 2)

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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


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
                        "README 'Inverse contracts')")
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
