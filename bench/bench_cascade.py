"""Cascade benchmark: multi-step liquidation cascades with price impact and a ladder, with
the run's time split into kernels, queue sorts, host↔device copies and host work.

    python bench/bench_cascade.py --accounts 375000 --scenarios 100 --steps 20   # ~1M positions

Each scenario shocks every symbol (a grid from --lo to --hi) and then runs up to --steps
cascade steps: what is liquidated moves prices through the impact model (sqrt by default),
which can liquidate more. A cascade stops early at a step that liquidates nobody.

The wall time is measured at the default thread count (one scenario run per core). The split
is measured on --split-scenarios of the grid (spread over it), one run at a time (threads=1,
every device call synchronised), and must give the same summary rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpurisk import synthetic_book  # noqa: E402
from gpurisk.backend import CpuBackend, GpuBackend  # noqa: E402
from gpurisk.stress import conservation_check, shock_grid, stress  # noqa: E402
from harness import TimedBackend  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=375_000)
    ap.add_argument("--scenarios", type=int, default=100)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--impact", default="sqrt", choices=["sqrt", "linear"])
    ap.add_argument("--venue", default="binance")
    ap.add_argument("--ladder", default="binance")
    ap.add_argument("--policy", default="queue")
    ap.add_argument("--lo", type=float, default=-0.3)
    ap.add_argument("--hi", type=float, default=0.3)
    ap.add_argument("--split-scenarios", type=int, default=10)
    ap.add_argument("--backend", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    book = synthetic_book(args.accounts, seed=0)
    grid = shock_grid(args.lo, args.hi, args.scenarios)
    options = dict(venue=args.venue, ladder=args.ladder, impact=args.impact, steps=args.steps, policy=args.policy,
                   progress=False, detail=False)
    make = CpuBackend if args.backend == "cpu" else GpuBackend
    stress(book, shock_grid(-0.1, 0.1, 2), backend=make(), **options)  # warm-up: kernels built and loaded

    t = time.perf_counter()
    res = stress(book, grid, backend=make(), **options)
    wall_n = time.perf_counter() - t

    pick = np.linspace(0, args.scenarios - 1, min(args.split_scenarios, args.scenarios)).round().astype(int)
    sub = grid.filter(pl.col("scenario").is_in(pick.tolist()))
    be = TimedBackend(make())
    t = time.perf_counter()
    res_1 = stress(book, sub, backend=be, threads=1, **options)
    wall_1 = time.perf_counter() - t
    assert res_1.summary.equals(res.summary.filter(pl.col("scenario").is_in(pick.tolist()))), "threads changed results"
    spent = dict(be.seconds, bytes_to_device=be.bytes["to_device"], bytes_to_host=be.bytes["to_host"])
    if args.backend == "cpu":  # host arrays: nothing is copied
        spent.update(bytes_to_device=0, bytes_to_host=0)
    device = spent["kernels"] + spent["sorts"] + spent["to_device"] + spent["to_host"]
    host = wall_1 - device
    failed, worst = conservation_check(res.summary)
    steps = res.summary["steps"]
    figures = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "backend": args.backend,
        "positions": book.n_positions, "accounts": book.n_accounts, "scenarios": args.scenarios,
        "max_steps": args.steps, "impact": args.impact, "venue": args.venue, "ladder": args.ladder,
        "policy": args.policy, "steps_run_total": int(steps.sum()), "steps_run_max": int(steps.max()),
        "wall_s": wall_n, "threads": res.timings["threads"], "split_scenarios": int(pick.size),
        "split_wall_s_threads1": wall_1,
        "kernels_s": spent["kernels"], "sorts_s": spent["sorts"], "to_device_s": spent["to_device"],
        "to_host_s": spent["to_host"], "host_s": host,
        "bytes_to_device": spent["bytes_to_device"], "bytes_to_host": spent["bytes_to_host"],
        "conservation_failures": failed, "max_conservation_error": worst,
    }
    print(f"\n{figures['machine']}, {args.backend}: {book.n_positions:,} positions, {args.scenarios} scenarios "
          f"({args.lo:+.0%}..{args.hi:+.0%}), up to {args.steps} steps, {args.impact} impact, "
          f"{args.ladder} ladder, {args.policy} ADL")
    print(f"steps run: {int(steps.sum()):,} in all (longest cascade {int(steps.max())})")
    print(f"{res.timings['threads']} runs at a time: {wall_n:.1f} s")
    print(f"split, on {pick.size} scenarios one run at a time: {wall_1:.1f} s = kernels {spent['kernels']:.1f} s ({spent['kernels'] / wall_1:.0%}), "
          f"queue sorts {spent['sorts']:.1f} s ({spent['sorts'] / wall_1:.0%}), copies "
          f"{spent['to_device'] + spent['to_host']:.1f} s ({(spent['to_device'] + spent['to_host']) / wall_1:.0%}; "
          f"{spent['bytes_to_device'] / 1e9:.2f} GB to the device, {spent['bytes_to_host'] / 1e9:.2f} GB back), "
          f"host {host:.1f} s ({host / wall_1:.0%})")
    print(f"money conserved: {failed} failures, largest relative error {worst:.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
