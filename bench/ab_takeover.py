"""A/B of the stress takeover: the NumPy definition (``take_over_bankrupt_numpy``, what the
stress step ran before) against the kernels (``take_over_bankrupt``), interleaved in one
process, one scenario run at a time, on the bench_stress grid (no ladder, queue ADL, fund 0).

    python bench/ab_takeover.py --accounts 375000 --scenarios 40 --rounds 3

Prints per round and variant the takeover's time per scenario and the whole scenario's
(the run's own clock), and the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gpurisk.stress  # noqa: E402
from gpurisk import synthetic_book  # noqa: E402

stress_mod = sys.modules["gpurisk.stress"]
from gpurisk.deleverage import take_over_bankrupt, take_over_bankrupt_numpy  # noqa: E402
from gpurisk.ladder import Ladder  # noqa: E402
from gpurisk.stress import shock_grid, stress  # noqa: E402


def numpy_takeover(backend, ledger, pos, bp, market):
    """The call stress._settle made before the kernels, with the order it passed."""
    def order(group, score):
        return backend.to_host(backend.queue_order(backend.asarray(np.ascontiguousarray(group, dtype=np.int32)),
                                                   backend.asarray(np.ascontiguousarray(score, dtype=np.float64)),
                                                   int(group.max()) + 1 if group.size else 1))
    return take_over_bankrupt_numpy(ledger, order, pos, bp, market, ledger._book_pos_start, ledger._cs_pos)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=375_000)
    ap.add_argument("--scenarios", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    book = synthetic_book(args.accounts, seed=0)
    grid = shock_grid(-0.5, 0.5, args.scenarios)
    plain = Ladder()
    spent = [0.0]

    def timed(fn):
        def run(backend, ledger, *rest):
            ledger._book_pos_start = book.pos_start
            t = time.perf_counter()
            out = fn(backend, ledger, *rest)
            spent[0] += time.perf_counter() - t
            return out
        return run

    variants = {"numpy": timed(numpy_takeover), "kernels": timed(take_over_bankrupt)}
    stress(book, shock_grid(-0.1, 0.1, 2), backend="cpu", ladder=plain, progress=False, threads=1)  # warm-up
    results = {}
    print(f"{book.n_positions:,} positions, {args.scenarios} scenarios per run, one thread")
    for r in range(args.rounds):
        for name in (("numpy", "kernels") if r % 2 == 0 else ("kernels", "numpy")):
            stress_mod.take_over_bankrupt = variants[name]
            spent[0] = 0.0
            t = time.perf_counter()
            res = stress(book, grid, backend="cpu", ladder=plain, progress=False, detail=False, threads=1)
            whole = time.perf_counter() - t
            results.setdefault(name, []).append(res.summary)
            print(f"round {r} {name:8s} takeover {1e3 * spent[0] / args.scenarios:6.1f} ms/scenario, "
                  f"whole {1e3 * whole / args.scenarios:6.1f} ms/scenario, load {os.getloadavg()[0]:.2f}",
                  flush=True)
    stress_mod.take_over_bankrupt = take_over_bankrupt
    a, b = results["numpy"][0], results["kernels"][0]
    print("summaries identical:", a.equals(b))


if __name__ == "__main__":
    main()
