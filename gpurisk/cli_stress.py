"""The command ``gpurisk stress``: price-shock scenarios and liquidation cascades on a book
or a synthetic one, on one machine or a Dask cluster; the conservation check, the result
tables and the HTML report. Its arguments are declared in gpurisk/cli.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from .book import Book
from .cli_common import (InputError, _check_synthetic_size, _cluster, _column_problems, _done, _margin_venue,
                         _read_any_book, _read_frame, _report, _reserved_out, _shown, _stage)
from .database import is_database_uri, redact
from .engine import Engine
from .synthetic import synthetic_book


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
