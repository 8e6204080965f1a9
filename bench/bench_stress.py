"""Stress benchmark: a single-step shock grid over a synthetic book, gpurisk against a
Polars implementation of the same single-step stress (who is liquidated, the deficit), in
the same run, in scenario-positions per second.

    python bench/bench_stress.py --accounts 375000 --scenarios 1000   # ~1M positions
    python bench/bench_stress.py --policy rap          # a haircut policy instead of queue ADL
    python bench/bench_stress.py --policy all          # each scenario under all four policies
    python bench/bench_stress.py --scenarios 40 --peer-scenarios 0   # a quick slice: summary run only

The Polars peer revalues the book once per scenario; it runs on --peer-scenarios of the
grid (its rate is per scenario, so a subset measures it) and must agree with gpurisk on
those scenarios before its time counts. Its outputs (who is liquidated, the deficit) do not
depend on the policy: with ``--policy all`` gpurisk runs every scenario four times against
one peer pass, so the speedup is a single policy's only under a single ``--policy``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl

warnings.filterwarnings("ignore", message="Sortedness of columns cannot be checked")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpurisk import synthetic_book  # noqa: E402
from gpurisk.ladder import Ladder  # noqa: E402
from gpurisk.stress import shock_grid, stress  # noqa: E402
from gpurisk.stress_result import POLICIES  # noqa: E402
from polars_peer import polars_revalue  # noqa: E402


def polars_stress(frames: dict, shocks: np.ndarray) -> pl.DataFrame:
    """Per scenario: accounts with a liquidatable cross book or isolated position, and the
    deficit of bankrupt units (cross books and isolated positions with equity < 0)."""
    rows = []
    for k, shock in enumerate(shocks):
        f = dict(frames)
        f["markets"] = frames["markets"].with_columns(pl.col("mark_price") * (1 + shock))
        acc, pos = polars_revalue(f)
        cross_liq = acc.filter((pl.col("n_cross") > 0) & pl.col("status").is_in(["liquidatable", "bankrupt"]))
        iso = pos.filter(pl.col("isolated")).with_columns(eq=pl.col("isolated_margin") + pl.col("upnl"))
        iso_liq = iso.filter((pl.col("eq") <= 0) | (pl.col("maint") >= pl.col("eq")))
        liquidated = pl.concat([cross_liq.select("account_id"), iso_liq.select("account_id")]).unique().height
        deficit = float((-cross_liq["equity"]).clip(lower_bound=0).sum() + (-iso_liq["eq"]).clip(lower_bound=0).sum())
        rows.append({"scenario": k, "accounts_liquidated": liquidated, "deficit": deficit})
    return pl.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=375_000)
    ap.add_argument("--scenarios", type=int, default=1000)
    ap.add_argument("--peer-scenarios", type=int, default=10, help="0: no Polars peer (a quick slice of the grid)")
    ap.add_argument("--detail-scenarios", type=int, default=50,
                    help="scenarios timed with every fill recorded and summary only; what recording adds "
                         "per scenario is extrapolated to the grid (0: none)")
    ap.add_argument("--lo", type=float, default=-0.5)
    ap.add_argument("--hi", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=None,
                    help="scenario runs at a time (default: one per core; 1 gives the single-thread figure)")
    ap.add_argument("--policy", choices=[*POLICIES, "all"], default="queue",
                    help="deleveraging policy (default: queue ADL); all: every scenario under each of the four")
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    policy = list(POLICIES) if args.policy == "all" else args.policy
    first_policy = POLICIES[0] if args.policy == "all" else args.policy
    book = synthetic_book(args.accounts, seed=0)
    grid = shock_grid(args.lo, args.hi, args.scenarios)
    plain = Ladder()  # liquidate in full: the peer has no ladder
    stress(book, shock_grid(-0.1, 0.1, 2), backend="cpu", ladder=plain, progress=False, policy=policy)  # warm-up
    t, cpu = time.perf_counter(), time.process_time()
    res = stress(book, grid, backend="cpu", ladder=plain, progress=False, detail=False, threads=args.threads,
                 policy=policy)
    t_gpurisk, cpu_gpurisk = time.perf_counter() - t, time.process_time() - cpu
    from gpurisk.stress import conservation_check

    worst = conservation_check(res.summary)[1]  # NaN when any run's error is NaN (a failure)
    print(f"summary only: {t_gpurisk / args.scenarios * 1e3:.1f} ms per scenario ({cpu_gpurisk / args.scenarios * 1e3:.1f} "
          f"ms of process CPU), load average {os.getloadavg()[0]:.2f}, largest conservation error {worst:.1e}")
    if args.detail_scenarios <= 0 or args.peer_scenarios <= 0:  # a quick slice: the summary run only
        return 0
    # With every liquidation and fill recorded, on scenarios spread evenly over the grid (the
    # tables of the whole grid would not fit in memory; the grid's first scenarios are its
    # heaviest, so a leading slice would overstate the time).
    detail_n = min(args.scenarios, args.detail_scenarios)
    spread = np.linspace(0, args.scenarios - 1, detail_n).round().astype(int).tolist()
    # What recording every row adds per scenario, on the slice (the same slice's summary-only
    # run timed just before), is extrapolated to the grid and added to the grid's summary time:
    # the fixed costs of a run (its context, the screen's batches) then count once, as they
    # would in one run over the grid with every row recorded.
    sub = grid.filter(pl.col("scenario").is_in(spread))
    t = time.perf_counter()
    stress(book, sub, backend="cpu", ladder=plain, progress=False, detail=False, threads=args.threads, policy=policy)
    t_sub = time.perf_counter() - t
    t = time.perf_counter()
    full = stress(book, sub, backend="cpu", ladder=plain, progress=False, threads=args.threads, policy=policy)
    t_sub_detail = time.perf_counter() - t
    t_detail = t_gpurisk + (t_sub_detail - t_sub) / detail_n * args.scenarios
    print(f"every row recorded, {detail_n} scenarios spread over the grid: {t_sub_detail / detail_n * 1e3:.1f} ms "
          f"per scenario against {t_sub / detail_n * 1e3:.1f} ms summary only")
    assert full.summary.equals(res.summary.filter(pl.col("scenario").is_in(spread)))

    pick = np.linspace(0, args.scenarios - 1, args.peer_scenarios).round().astype(int)
    shocks = np.linspace(args.lo, args.hi, args.scenarios)[pick]
    frames = book.frames()
    polars_stress(frames, shocks[:1])  # warm-up
    t = time.perf_counter()
    peer = polars_stress(frames, shocks)
    t_peer = (time.perf_counter() - t) / len(pick) * args.scenarios  # same rate, whole grid
    ours = res.summary.filter(pl.col("scenario").is_in(pick.tolist()) & (pl.col("policy") == first_policy))
    ours = ours.sort("scenario")
    assert ours["accounts_liquidated"].to_list() == peer["accounts_liquidated"].to_list(), "peer disagrees"
    np.testing.assert_allclose(ours["deficit"].to_numpy(), peer["deficit"].to_numpy(), rtol=1e-9, atol=1e-6)

    n_policies = len(POLICIES) if args.policy == "all" else 1
    sp = book.n_positions * args.scenarios * n_policies  # scenario runs × positions
    sp_peer = book.n_positions * args.scenarios  # the peer's result does not depend on the policy
    figures = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "positions": book.n_positions, "accounts": book.n_accounts, "scenarios": args.scenarios,
        "policy": args.policy,
        "gpurisk_s": t_gpurisk, "gpurisk_scenario_positions_per_s": sp / t_gpurisk,
        "screened_quiet": res.timings["screened_quiet"], "threads": res.timings["threads"],
        "polars_peer_s_extrapolated": t_peer, "polars_scenario_positions_per_s": sp_peer / t_peer,
        "peer_scenarios_timed": int(len(pick)), "speedup": t_peer / t_gpurisk,
        "gpurisk_detail_s_extrapolated": t_detail, "detail_scenarios_timed": detail_n,
        "detail_slice_s": t_sub_detail, "summary_slice_s": t_sub,
        "liquidations_per_scenario": full.liquidations.height / detail_n,
        "adl_fills_per_scenario": full.adl_fills.height / detail_n,
        "haircuts_per_scenario": full.haircuts.height / detail_n,
        "max_conservation_error": worst,
    }
    print(f"\n{figures['machine']}: {book.n_positions:,} positions, {args.scenarios:,} scenarios "
          f"({args.lo:+.0%}..{args.hi:+.0%}), single step, policy {args.policy}, insurance fund 0")
    print("| engine | time | scenario-positions/s | note |\n|---|---|---|---|")
    print(f"| gpurisk (cpu, {res.timings['threads']} scenario threads), summary | {t_gpurisk:.1f} s | {sp / t_gpurisk / 1e6:.1f} M | full sequence: liquidation, "
          f"takeover, ADL queue fills or haircuts; {figures['screened_quiet']} scenarios screened quiet |")
    print(f"| gpurisk (cpu), every fill recorded | {t_detail:.1f} s (summary + the extra of {detail_n} scenarios) | "
          f"{sp / t_detail / 1e6:.1f} M | {figures['adl_fills_per_scenario']:,.0f} ADL fills, "
          f"{figures['haircuts_per_scenario']:,.0f} haircuts and "
          f"{figures['liquidations_per_scenario']:,.0f} liquidation rows per scenario |")
    print(f"| Polars peer | {t_peer:.1f} s (from {len(pick)} scenarios) | {sp_peer / t_peer / 1e6:.1f} M | liquidated "
          f"accounts and deficit only; agrees on the timed scenarios |")
    print(f"speedup {t_peer / t_gpurisk:.1f}x; largest conservation error {worst:.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
