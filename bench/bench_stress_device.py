"""Stress on a device: issue 12's GPU figure, without Polars (the device machine has none).

A single-step shock grid (the same as bench_stress.py's: every symbol moved from --lo to
--hi), summary only, no ladder, fund 0, over a synthetic book, under one policy or all four.
Timed on --scenarios spread over the grid and extrapolated to --grid scenarios (a run's time
is per scenario); reports where the time goes (kernels, queue sorts, copies each way, the
host) and the bytes copied per scenario run.

    python bench/bench_stress_device.py --positions 10e6 --scenarios 40 --policy all   # on a GPU
    python bench/bench_stress_device.py --backend stand-in-strict --positions 2e4 --scenarios 4   # no GPU

The copies counted are those the backend is asked for (``asarray`` of host arrays,
``to_host``); on CuPy, a host index into a device array copies implicitly and is not
counted here (the strict stand-in counts those too: RESULTS, "Stress on a device").
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpurisk.backend import get_backend  # noqa: E402
from gpurisk.ladder import Ladder  # noqa: E402
from gpurisk.stress import run_stress  # noqa: E402
from gpurisk.stress_result import POLICIES  # noqa: E402
from gpurisk.synthetic import synthetic_book  # noqa: E402
from harness import TimedBackend  # noqa: E402

POSITIONS_PER_ACCOUNT = 2.66


def _backend(name: str):
    if name.startswith("stand-in"):
        from gpurisk.parity import StandInBackend, StrictStandInBackend

        return StrictStandInBackend() if name == "stand-in-strict" else StandInBackend()
    return get_backend(name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--positions", type=float, default=10e6)
    ap.add_argument("--scenarios", type=int, default=40, help="scenarios timed, spread over the grid")
    ap.add_argument("--grid", type=int, default=1000, help="scenarios of the grid the time is extrapolated to")
    ap.add_argument("--policy", choices=[*POLICIES, "all"], default="all")
    ap.add_argument("--backend", default="gpu", help="gpu, cpu, stand-in or stand-in-strict")
    ap.add_argument("--lo", type=float, default=-0.5)
    ap.add_argument("--hi", type=float, default=0.5)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.scenarios < 1 or args.grid < args.scenarios:
        ap.error("--scenarios must be at least 1 and at most --grid")

    inner = _backend(args.backend)
    t = time.perf_counter()
    book = synthetic_book(max(1, round(args.positions / POSITIONS_PER_ACCOUNT)), seed=0)
    t_synth = time.perf_counter() - t
    policy = list(POLICIES) if args.policy == "all" else args.policy
    n_policies = len(POLICIES) if args.policy == "all" else 1
    levels = np.linspace(args.lo, args.hi, args.grid)[np.linspace(0, args.grid - 1, args.scenarios).round().astype(int)]
    shocks = np.ascontiguousarray(levels[:, None, None] * np.ones((1, 1, book.n_symbols)))
    ids = np.arange(args.scenarios, dtype=np.int64)
    options = dict(venue="binance", policy=policy, ladder=Ladder(), insurance_fund=0.0, progress=False,
                   detail=False)
    run_stress(book, ids[:1], shocks[:1], backend=inner, **options)  # warm-up: kernels compiled, pools filled
    timed = TimedBackend(inner)
    t = time.perf_counter()
    records = run_stress(book, ids, shocks, backend=timed, **options)
    total = time.perf_counter() - t
    runs = args.scenarios * n_policies
    device = sum(timed.seconds.values())
    worst = float(np.max(np.abs(records.summary["conservation_error"])))
    name = inner.name
    if name == "gpu":
        props = inner.xp.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    figures = {
        "device": name, "host": platform.node(), "backend": inner.name, "date": time.strftime("%Y-%m-%d"),
        "positions": book.n_positions, "accounts": book.n_accounts, "synth_s": round(t_synth, 1),
        "scenarios_timed": args.scenarios, "policies": n_policies, "runs": runs,
        "screened_quiet": records.timings["screened_quiet"], "seconds": round(total, 3),
        "ms_per_run": round(total / runs * 1e3, 2),
        "grid_scenarios": args.grid, "grid_s_extrapolated": round(total / args.scenarios * args.grid, 3),
        **{f"{k}_s": round(v, 3) for k, v in timed.seconds.items()},
        "host_s": round(total - device, 3), "host_share": round((total - device) / total, 3),
        "bytes_to_device_per_run": round(timed.bytes["to_device"] / runs),
        "bytes_to_host_per_run": round(timed.bytes["to_host"] / runs),
        "max_conservation_error": worst,
    }
    print(f"\n{name} ({inner.name}): {book.n_positions:,} positions, {args.scenarios} scenarios spread over "
          f"{args.lo:+.0%}..{args.hi:+.0%} x {n_policies} policies, single step, summary only")
    print("| | time | share |\n|---|---|---|")
    for k, v in timed.seconds.items():
        print(f"| {k.replace('_', ' ')} | {v:.3f} s | {v / total:.0%} |")
    print(f"| host | {total - device:.3f} s | {(total - device) / total:.0%} |")
    print(f"| **all** | **{total:.3f} s** ({total / runs * 1e3:.1f} ms a scenario run) | |")
    print(f"{args.grid:,} scenarios x {n_policies} policies: {total / args.scenarios * args.grid:.1f} s (extrapolated); "
          f"copies per scenario run: {timed.bytes['to_device'] / runs / 1e6:.2f} MB to the device, "
          f"{timed.bytes['to_host'] / runs / 1e6:.2f} MB back; largest conservation error {worst:.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0 if worst <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
