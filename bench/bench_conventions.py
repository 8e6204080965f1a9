"""What each venue's conventions cost: the revaluation kernel pass and the ADL ranking of one
synthetic book under several presets, in interleaved rounds of one run (issue 14).

    python bench/bench_conventions.py --accounts 370000          # ~1M positions
    python bench/bench_conventions.py --accounts 3700000         # ~10M positions

`binance_adl_2019` runs the kernels as they were before the conventions (no close fee, notional
tiers with deductions, the 2019 ADL score): the baseline of the ratios. `okx` adds tiers in
contracts, the whole-position rate and a close fee; `gate` a close fee on notional tiers.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpurisk import Engine, synthetic_book  # noqa: E402
from harness import Timer, stages  # noqa: E402

VENUES = ("binance_adl_2019", "binance", "bybit", "okx", "gate")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=370_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--backend", default="cpu")
    args = ap.parse_args(argv)
    book = synthetic_book(args.accounts, seed=0)
    runs = {}
    for v in VENUES:
        engine = Engine(book, venue=v, backend=args.backend)
        risk = engine.revalue()
        runs[v] = stages(engine, risk)
        timer = Timer(engine.backend)
    times = {v: ([], []) for v in VENUES}
    for _ in range(args.rounds):  # interleaved: every venue sees the same stretch of the machine
        for v in VENUES:
            kernel_pass, ranking = runs[v]
            times[v][0].append(statistics.median(timer(kernel_pass, 3)))
            times[v][1].append(statistics.median(timer(ranking, 3)))
    base = statistics.median(times[VENUES[0]][0])
    print(f"{book.n_positions:,} positions, backend {args.backend}, {platform.machine()}, "
          f"medians of {args.rounds} rounds (each the median of 3)")
    print("| venue | kernel pass | vs binance_adl_2019 | ranking |")
    print("|---|---|---|---|")
    for v in VENUES:
        k, r = statistics.median(times[v][0]), statistics.median(times[v][1])
        print(f"| {v} | {k * 1e3:.1f} ms | {k / base:.2f}x | {r * 1e3:.1f} ms |")


if __name__ == "__main__":
    main()
