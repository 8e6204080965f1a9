"""The command ``gpurisk report``: one HTML page from written revaluation and/or stress
results (gpurisk/report.py draws it). Its arguments are declared in gpurisk/cli.py.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from .cli_common import InputError
from .output import check_file_place


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
