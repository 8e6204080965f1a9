"""Portfolio-margin benchmark: the portfolio requirement of every account of a resident book.

    python bench/bench_portfolio.py                          # ~10M positions, 10 groups x 33 shocks
    python bench/bench_portfolio.py --accounts 37000 --backend gpu

The synthetic book (tests' and bench's: 10 symbols, 15% isolated) with one risk group per
symbol, 10 groups of 33 shocks over ±15%, offset and liquidity contingencies, every account in
portfolio mode. Stages timed (medians of --repeats runs after a warm-up, device events on a GPU,
perf_counter on the CPU), on the resident engine's buffers:
- account_margin: the tiered account sums the portfolio kernel runs after (it overwrites their
  maintenance margin for portfolio accounts, so each portfolio run needs them fresh);
- account_margin + portfolio_margin: the sums and the portfolio requirement of every account
  (loss over the grid of each group held, worst scenario, both contingencies, the account's
  ratio, status and available balance, and each isolated position's own requirement);
- portfolio_margin alone: the difference of the two medians (the target: < 2 s on 2 cores);
- revalue: ``engine.revalue(out=...)`` end to end with portfolio margin, and without it.
Both ``groups_move`` settings are run. Arrays only: no Polars in the timed path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import Timer, warm_up  # noqa: E402
from gpurisk import Engine  # noqa: E402
from gpurisk.backend import get_backend  # noqa: E402
from gpurisk.margin import account_margin  # noqa: E402
from gpurisk.portfolio import PortfolioModel, portfolio_margin  # noqa: E402
from gpurisk.synthetic import synthetic_book  # noqa: E402
from gpurisk.venue import get_venue  # noqa: E402


def model_for(book, shocks: int, groups_move: str) -> PortfolioModel:
    """One risk group per symbol (the synthetic book has 10), ``shocks`` over ±15%."""
    n = book.n_symbols
    return PortfolioModel(symbols=tuple(book.symbols), symbol_group=tuple(range(n)),
                          groups=tuple(f"G{k}" for k in range(n)), price_range=(0.15,) * n, shocks=(shocks,) * n,
                          offset_rate=(0.01,) * n, liquidity_threshold=(5e6,) * n, liquidity_rate=(0.02,) * n,
                          groups_move=groups_move, im_multiple=1.3)


def median(timer, fn, repeats):
    timer(fn, 1)  # warm-up: first touch of the buffers
    runs = timer(fn, repeats)
    return statistics.median(runs), runs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=3_760_000, help="traders (~2.66 positions each; default ~10M positions)")
    ap.add_argument("--shocks", type=int, default=33, help="shocks per group (default 33)")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    t = time.perf_counter()
    book = synthetic_book(args.accounts, seed=0)
    build_s = time.perf_counter() - t
    backend = get_backend(args.backend)
    warm_up(backend)
    timer = Timer(backend)
    rows = []
    plain = Engine(book, venue="binance", backend=backend)
    plain_risk = plain.revalue()
    plain_s, _ = median(timer, lambda: plain.revalue(out=plain_risk), args.repeats)
    for move in ("independent", "joint"):
        venue = get_venue("binance").with_(margin_model="portfolio", portfolio=model_for(book, args.shocks, move))
        engine = Engine(book, venue=venue, backend=backend)
        risk = engine.revalue()
        b, dev, pf = engine.backend, engine.device, engine.portfolio
        mark = b.asarray(book.mark_price)
        pm, am, out = risk.position_margin, risk.account_margin, risk.portfolio

        def sums():
            account_margin(b, dev, pm, venue, am)

        def sums_and_portfolio():
            account_margin(b, dev, pm, venue, am)
            portfolio_margin(b, dev, pf, mark, pm, am, venue, out)

        sums_s, _ = median(timer, sums, args.repeats)
        both_s, both_runs = median(timer, sums_and_portfolio, args.repeats)
        revalue_s, _ = median(timer, lambda: engine.revalue(out=risk), args.repeats)
        req = b.to_host(out.requirement)
        rows.append(dict(
            groups_move=move, backend=backend.name, positions=book.n_positions, accounts=book.n_accounts,
            groups=book.n_symbols, shocks_per_group=args.shocks,
            account_margin_s=round(sums_s, 4), account_margin_and_portfolio_s=round(both_s, 4),
            runs=[round(x, 4) for x in both_runs], portfolio_kernel_s=round(both_s - sums_s, 4),
            revalue_portfolio_s=round(revalue_s, 4), revalue_tiered_s=round(plain_s, 4),
            requirement_total=float(np.sum(req)), tiered_total=float(np.sum(b.to_host(out.tiered))),
            build_s=round(build_s, 2), cores=os.cpu_count(), threads=getattr(backend, "threads", None),
            machine=platform.processor() or platform.machine()))
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
