"""A/B of the stress takeover: the NumPy definition (``take_over_bankrupt_numpy``, what the
stress step ran before) against the kernels (``take_over_bankrupt``), interleaved in one
process, one scenario run at a time, on the bench_stress grid (no ladder, queue ADL, fund 0).

    python bench/ab_takeover.py --accounts 375000 --scenarios 40 --rounds 3 --slices 8

Prints, per variant, the takeover's time per scenario, the whole scenario's (``run_scenario``)
and the stress call's per scenario (setup and screen included), as median and best over
slices and rounds, the paired ratio per slice, and the load average per round.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpurisk import synthetic_book  # noqa: E402

stress_mod = importlib.import_module("gpurisk.stress")  # the module (gpurisk.stress is also a function)
from gpurisk.deleverage import take_over_bankrupt, take_over_bankrupt_numpy  # noqa: E402
from gpurisk.ladder import Ladder  # noqa: E402
from gpurisk.stress import shock_grid, stress  # noqa: E402


def numpy_takeover(book):
    """The call stress._settle made before the kernels, with the order it passed."""
    def run(backend, ledger, pos, bp, market):
        def order(group, score):
            return backend.to_host(backend.queue_order(backend.asarray(np.ascontiguousarray(group, dtype=np.int32)),
                                                       backend.asarray(np.ascontiguousarray(score, dtype=np.float64)),
                                                       int(group.max()) + 1 if group.size else 1))
        return take_over_bankrupt_numpy(ledger, order, pos, bp, market, book.pos_start, ledger._cs_pos)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=375_000)
    ap.add_argument("--scenarios", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slices", type=int, default=8)
    args = ap.parse_args()
    book = synthetic_book(args.accounts, seed=0)
    grid = shock_grid(-0.5, 0.5, args.scenarios)
    plain = Ladder()
    spent = [0.0]

    def timed(fn):
        def run(backend, ledger, *rest):
            t = time.perf_counter()
            out = fn(backend, ledger, *rest)
            spent[0] += time.perf_counter() - t
            return out
        return run

    variants = {"numpy": timed(numpy_takeover(book)), "kernels": timed(take_over_bankrupt)}
    in_runs = [0.0]
    run_scenario = stress_mod.run_scenario

    def timed_run(*a, **k):  # a scenario's run, without the stress call's setup and screen
        t = time.perf_counter()
        out = run_scenario(*a, **k)
        in_runs[0] += time.perf_counter() - t
        return out

    stress_mod.run_scenario = timed_run
    stress(book, shock_grid(-0.1, 0.1, 2), backend="cpu", ladder=plain, progress=False, threads=1)  # warm-up
    # Under a shared machine's swinging load, the variants alternate on short slices of the grid
    # (every --slices-th scenario), so both see the same load; each round covers the grid once.
    import polars as pl

    slices = [grid.filter(pl.col("scenario") % args.slices == k) for k in range(args.slices)]
    per_slice = args.scenarios / args.slices
    times = {name: {"takeover": [], "scenario": [], "call": []} for name in variants}
    summaries = {name: [] for name in variants}
    print(f"{book.n_positions:,} positions, {args.scenarios} scenarios in {args.slices} slices, one scenario "
          "run at a time")
    for r in range(args.rounds):
        for k, part in enumerate(slices):
            names = ("numpy", "kernels") if (r + k) % 2 == 0 else ("kernels", "numpy")
            for name in names:
                stress_mod.take_over_bankrupt = variants[name]
                spent[0] = in_runs[0] = 0.0
                t = time.perf_counter()
                res = stress(book, part, backend="cpu", ladder=plain, progress=False, detail=False, threads=1)
                times[name]["call"].append((time.perf_counter() - t) / per_slice)
                times[name]["scenario"].append(in_runs[0] / per_slice)
                times[name]["takeover"].append(spent[0] / per_slice)
                if r == 0:
                    summaries[name].append(res.summary)
        print(f"round {r}: load {os.getloadavg()[0]:.2f}", flush=True)
    stress_mod.take_over_bankrupt, stress_mod.run_scenario = take_over_bankrupt, run_scenario
    for what in ("takeover", "scenario", "call"):
        a, b = np.array(times["numpy"][what]) * 1e3, np.array(times["kernels"][what]) * 1e3
        ratio = a / b
        print(f"{what:8s} ms/scenario, per slice: numpy median {np.median(a):.1f} (best {a.min():.1f}), "
              f"kernels median {np.median(b):.1f} (best {b.min():.1f}); paired ratio median {np.median(ratio):.2f} "
              f"(quartiles {np.percentile(ratio, 25):.2f}-{np.percentile(ratio, 75):.2f})")
    same = all(x.equals(y) for x, y in zip(summaries["numpy"], summaries["kernels"]))
    print("summaries identical:", same)


if __name__ == "__main__":
    main()
