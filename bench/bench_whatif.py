"""What-if benchmark: N prospective orders against a resident synthetic book, in one run.

    python bench/bench_whatif.py --accounts 3760000 --orders 1000000   # ~10M positions, 1M orders
    python bench/bench_whatif.py --accounts 37000 --orders 10000 --backend gpu
    python bench/bench_whatif.py --venue okx          # contract tiers, whole-position rate, close fee
    python bench/bench_whatif.py --inverse-markets 3  # BTC, ETH, SOL coin-margined: wallets per asset

Stages timed (medians of --repeats runs after a warm-up, on the same engine and orders):
- base: the revaluation figures the what-if reads (position and account margin at the marks),
  computed once per set of marks and kept on the engine;
- arrays: ``what_if_arrays`` with the base kept: checks, upload, the what-if kernel, results
  back to the host (the path of a caller that holds orders as indices);
- frame: ``engine.what_if(frame)`` with the base kept: validation of the orders table
  (account and symbol look-ups, value rules), the kernel, and the result frame;
- funding: ``engine.apply_funding(rates)`` on the same resident book (every symbol paying),
  the two funding kernels and the host copies of wallets, margins and payments.
Orders: 70% on held positions (adds, reduces, closes and flips), 30% opening new positions,
20% of the new ones isolated; prices within about 2% of the mark.
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

from gpurisk import Engine  # noqa: E402
from gpurisk.backend import get_backend  # noqa: E402
from gpurisk.synthetic import synthetic_book  # noqa: E402
from gpurisk.whatif import base_figures, what_if_arrays  # noqa: E402


def random_orders(book, n: int, seed: int = 0):
    """(account index, symbol index, size, price, isolated) arrays of ``n`` orders. With wallets
    in several assets, a new position's symbol is drawn among those its account row (margin
    pool) settles."""
    rng = np.random.default_rng(seed)
    held = rng.random(n) < 0.7
    pick = rng.integers(0, book.n_positions, n)
    acc = np.where(held, book.pos_account[pick], rng.integers(0, book.n_accounts, n)).astype(np.int32)
    sym = np.where(held, book.pos_symbol[pick], rng.integers(0, book.n_symbols, n)).astype(np.int32)
    if len(book.assets) > 1:  # a new position in a market of its pool's asset
        by_asset = [np.flatnonzero(book.settle_asset == a) for a in range(len(book.assets))]
        for a, syms in enumerate(by_asset):
            mine = ~held & (book.account_asset[acc] == a)
            if syms.size:
                sym[mine] = rng.choice(syms, int(mine.sum()))
            else:  # a wallet with no market of its asset: the order trades a held position instead
                acc[mine] = book.pos_account[pick[mine]]
                sym[mine] = book.pos_symbol[pick[mine]]
                held |= mine
    iso = np.where(held, book.isolated[pick], rng.random(n) < 0.2).astype(np.int8)
    q0 = np.where(held, book.size[pick], 0.0)
    mult = rng.choice([0.5, -0.3, -1.0, -1.7], n)
    lot = np.abs(book.size[rng.integers(0, book.n_positions, n)])
    size = np.where(q0 != 0, q0 * mult, lot * rng.choice([-1.0, 1.0], n))
    price = book.mark_price[sym] * (1 + rng.normal(size=n) * 0.01)
    return acc, sym, size, price, iso


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    fn()  # warm-up: kernel build, first touch of the result buffers
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=3_760_000)
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--venue", default="binance", help="venue preset (okx, gate, bybit: close fee, contract tiers, "
                                                       "entry-based margin)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--inverse-markets", type=int, default=0, help="the N most traded symbols coin-margined "
                                                                  "(synthetic_book's inverse_markets)")
    ap.add_argument("--no-frame", action="store_true", help="skip the frame path (no Polars needed)")
    args = ap.parse_args(argv)

    t = time.perf_counter()
    book = synthetic_book(args.accounts, seed=0, inverse_markets=args.inverse_markets)
    build_s = time.perf_counter() - t
    backend = get_backend(args.backend)
    engine = Engine(book, venue=args.venue, backend=backend)
    acc, sym, size, price, iso = random_orders(book, args.orders, seed=1)

    t = time.perf_counter()
    base_figures(engine)
    backend.synchronize()
    base_s = time.perf_counter() - t

    arrays_s, arrays_all = median_time(lambda: what_if_arrays(engine, acc, sym, size, price, iso), args.repeats)
    res = what_if_arrays(engine, acc, sym, size, price, iso)
    row = dict(backend=backend.name, venue=engine.venue.name, inverse_markets=args.inverse_markets,
               positions=book.n_positions, accounts=book.n_accounts, orders=args.orders,
               build_s=round(build_s, 2), base_s=round(base_s, 4), arrays_s=round(arrays_s, 4),
               arrays_runs=[round(x, 4) for x in arrays_all], orders_per_s=round(args.orders / arrays_s),
               share_held=float(np.mean(res.position_index >= 0)), share_pass=float(np.mean(res.im_ok)),
               cores=os.cpu_count(), machine=platform.processor() or platform.machine())
    if not args.no_frame:
        import polars as pl

        frame = pl.DataFrame({"account_id": book.account_id[acc], "symbol": pl.Series(book.symbols).gather(sym),
                              "size": size, "price": price,
                              "margin_mode": np.array(["cross", "isolated"])[iso]})
        frame_s, frame_all = median_time(lambda: engine.what_if(frame), args.repeats)
        row.update(frame_s=round(frame_s, 4), frame_runs=[round(x, 4) for x in frame_all])
    rates = dict(zip(book.symbols, np.linspace(-3e-4, 5e-4, book.n_symbols)))
    funding_s, funding_all = median_time(lambda: engine.apply_funding(rates), args.repeats)
    row.update(funding_s=round(funding_s, 4), funding_runs=[round(x, 4) for x in funding_all])
    print(json.dumps(row))


if __name__ == "__main__":
    main()
