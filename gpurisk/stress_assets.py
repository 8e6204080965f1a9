"""Stress of a book with several settle assets (README "Inverse contracts"): one insurance
fund, one external account and one conservation sum per asset.

Margin pools are per (account, settle asset) and never share money (a pooled-collateral venue
is refused before this), so an asset's cascade is its own: its wallets, its markets, its fund.
A multi-asset book is therefore stressed as its assets' books side by side
(``Book.for_asset``), each with its own fund, and the records are merged into one set of
tables with an ``asset`` column: per (scenario, policy, asset) one summary row, every money
figure in that asset, never added across assets.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from .book import Book

#: the tables of StressRecords that carry a symbol column (codes remapped to the whole book's)
_SYMBOL_TABLES = ("liquidations", "adl_fills", "haircuts", "prices")
_TABLES = ("summary",) + _SYMBOL_TABLES


def fund_amount(value, what: str = "insurance_fund") -> float:
    """One insurance fund's amount as a float; ValueError naming ``what`` unless it is a finite
    number in [0, BALANCE_MAX]."""
    from .schema import BALANCE_MAX

    try:
        fund = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(fund) or fund < 0 or fund > BALANCE_MAX:
        raise ValueError(f"{what} must be finite and in [0, {BALANCE_MAX:g}] (input limits, "
                         f"gpurisk.schema), got {value!r}")
    return fund


def insurance_funds(book: Book, insurance_fund) -> dict[str, float]:
    """The starting insurance fund per asset of ``book``, checked: a number is the fund of a
    single-asset book (a multi-asset book takes one only when it is 0: money of different
    assets is never one number); {asset: amount} names the book's assets (those left out start
    at 0). ValueError naming the asset otherwise."""
    if isinstance(insurance_fund, dict):
        unknown = sorted(str(a) for a in insurance_fund if a not in book.assets)
        if unknown:
            raise ValueError(f"insurance_fund names asset(s) the book has no wallet or market in: "
                             f"{', '.join(map(repr, unknown))}; the book's assets are {', '.join(book.assets)}")
        given = dict(insurance_fund)
    else:
        given = {book.assets[0]: insurance_fund}
    funds = {}
    for asset in book.assets:
        value = given.get(asset, 0.0)
        what = "insurance_fund" if not isinstance(insurance_fund, dict) else f"insurance_fund[{asset!r}]"
        funds[asset] = fund_amount(value, what)
    if not isinstance(insurance_fund, dict) and len(book.assets) > 1 and funds[book.assets[0]] != 0:
        raise ValueError(f"the book holds wallets or markets in {len(book.assets)} assets "
                         f"({', '.join(book.assets)}): give the insurance fund per asset, "
                         f"e.g. insurance_fund={{{', '.join(f'{a!r}: ...' for a in book.assets)}}} "
                         "(CLI: --insurance-fund ASSET=AMOUNT, repeated)")
    return funds


def single_fund(book: Book, insurance_fund) -> float:
    """The fund of a single-asset book (a number, or {asset: amount} naming its asset)."""
    return insurance_funds(book, insurance_fund)[book.assets[0]]


def asset_symbols(book: Book, asset: str) -> np.ndarray:
    """The whole book's symbol codes of the markets settled in ``asset``, in the order
    ``Book.for_asset`` keeps them (its symbol code k is the whole book's code [k])."""
    return np.flatnonzero(book.settle_asset == book.assets.index(asset))


def run_stress_by_asset(run_stress, book: Book, scenario_ids, shocks, *, insurance_fund, funding, impact,
                        policy, steps, **options):
    """``run_stress`` of a multi-asset book: each asset's book (``Book.for_asset``) with its own
    fund, its own columns of the shocks and funding rates and its own depths, then one
    StressRecords with an ``asset`` code column (see ``merge_records``). Assets without a market
    (wallets only) have nothing to stress and get no rows. Bad input is refused for the whole
    book before any run."""
    from .funding import funding_steps
    from .impact import get_impact
    from .scenarios import check_paths

    funds = insurance_funds(book, insurance_fund)
    ids, shocks = check_paths(book, scenario_ids, shocks)
    rates = funding_steps(book, funding, max(int(steps), shocks.shape[1]))
    imp = get_impact(impact)
    if imp is not None:
        imp.depths(book)  # a depth dict naming a symbol the book lacks: refused before any compute
    t0 = time.perf_counter()
    parts = {}
    for asset in book.assets:
        sym = asset_symbols(book, asset)
        if sym.size == 0:
            continue
        sub = book.for_asset(asset)
        sub_impact = imp
        if imp is not None and isinstance(imp.depth, dict):
            sub_impact = dataclasses.replace(imp, depth={s: d for s, d in imp.depth.items() if s in sub.symbols})
        parts[asset] = run_stress(sub, ids, np.ascontiguousarray(shocks[:, :, sym]), insurance_fund=funds[asset],
                                  funding=None if rates is None else np.ascontiguousarray(rates[:, sym]),
                                  impact=sub_impact, policy=policy, steps=steps, **options)
    policies = [policy] if isinstance(policy, str) else list(policy)
    return merge_records(book, ids, policies, parts, time.perf_counter() - t0)


def merge_records(book: Book, ids: np.ndarray, policies: list, parts: dict, seconds: float):
    """One StressRecords from each asset's (``parts``: asset -> StressRecords of its book):
    symbol codes mapped to the whole book's, an ``asset`` code column (index of book.assets)
    after ``policy``, rows in run order (scenario, then policy as listed, then asset; a run's
    own rows keep their order)."""
    from .stress_result import POLICY_CODE, StressRecords

    scenario_pos = {int(s): k for k, s in enumerate(ids.tolist())}
    policy_pos = np.zeros(len(POLICY_CODE), dtype=np.int64)
    for k, p in enumerate(policies):
        policy_pos[POLICY_CODE[p]] = k
    merged = {}
    for name in _TABLES:
        pieces = []
        for asset, rec in parts.items():
            table = dict(getattr(rec, name))
            if "symbol" in table:
                table["symbol"] = asset_symbols(book, asset).astype(np.int32)[table["symbol"]]
            code = np.full(table["scenario"].size, book.assets.index(asset), dtype=np.int32)
            pieces.append({k2: v for k, v in table.items()
                           for k2, v in ((k, v),) + ((("asset", code),) if k == "policy" else ())})
        columns = pieces[0].keys()
        table = {k: np.concatenate([p[k] for p in pieces]) for k in columns}
        scen = np.array([scenario_pos[int(s)] for s in table["scenario"].tolist()], dtype=np.int64)
        order = np.lexsort((table["asset"], policy_pos[table["policy"]], scen))  # stable: steps stay in order
        merged[name] = {k: v[order] for k, v in table.items()}
    timings = {"seconds": seconds, "scenarios": int(ids.size),
               "screened_quiet": sum(r.timings.get("screened_quiet", 0) for r in parts.values()),
               "threads": max(r.timings.get("threads", 1) for r in parts.values()),
               "by_asset": {a: r.timings for a, r in parts.items()}}
    return StressRecords(**merged, symbols=tuple(book.symbols), timings=timings, assets=tuple(book.assets))
