"""The benchmark suite: revaluation at 10k, 100k, 1M and 10M positions, gpurisk and the
Polars peer side by side in the same run, against the memory floor; a scaling plot.

    python bench/run.py                 # all sizes (about 5 minutes on 2 cores)
    python bench/run.py --max 1000000   # up to 1M positions

Each size runs in its own process (clean memory figures). Writes bench/out/revalue.json
and bench/out/scaling.png and prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
POSITIONS_PER_ACCOUNT = 2.66  # of the synthetic book
SIZES = (10_000, 100_000, 1_000_000, 10_000_000)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max", type=int, default=SIZES[-1], help="largest size in positions")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    rows = []
    for n in [s for s in SIZES if s <= args.max]:
        accounts = max(1, round(n / POSITIONS_PER_ACCOUNT))
        path = out / f"revalue-{n}.json"
        cmd = [sys.executable, str(HERE / "bench_revalue.py"), "--accounts", str(accounts), "--backend",
               args.backend, "--repeats", str(args.repeats), "--json", str(path)]
        print(f"--- {n:,} positions: {' '.join(cmd[1:])}", flush=True)
        subprocess.run(cmd, check=True)
        rows.append(json.loads(path.read_text()))
    (out / "revalue.json").write_text(json.dumps(rows, indent=2))
    print_table(rows)
    plot(rows, out / "scaling.png")
    print(f"\nplot: {out / 'scaling.png'}")
    return 0


def print_table(rows: list[dict]) -> None:
    print(f"\n{rows[0]['machine']}, backend {rows[0]['backend']}, {datetime.date.today()}, "
          f"copy bandwidth {rows[-1]['copy_bandwidth_GBps']:.1f} GB/s\n")
    print("| positions | kernel pass | floor | kernel/floor | ranking | revalue end to end | positions/s | "
          "Polars peer | speedup | engine peak memory |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        peak = f"{r['engine_peak_bytes'] / r['positions']:.0f} B/position" if r.get("engine_peak_bytes") else "-"
        print(f"| {r['positions']:,} | {r['kernel_pass_s'] * 1e3:.2f} ms | {r['memory_floor_s'] * 1e3:.2f} ms | "
              f"{r['kernel_vs_floor']:.2f}x | {r['ranking_s'] * 1e3:.1f} ms | {r['revalue_end_to_end_s'] * 1e3:.1f} ms | "
              f"{r['positions'] / r['revalue_end_to_end_s'] / 1e6:.1f} M | {r.get('polars_peer_s', float('nan')) * 1e3:.0f} ms | "
              f"{r.get('speedup_vs_polars', float('nan')):.1f}x | {peak} |")
    big = rows[-1]
    print(f"\nStages at {big['positions']:,} positions: load + validate {big['load_validate_s']:.2f} s, "
          f"upload {big['upload_s'] * 1e3:.1f} ms, kernel pass {big['kernel_pass_s'] * 1e3:.1f} ms, "
          f"ranking {big['ranking_s'] * 1e3:.1f} ms, result tables {big['result_tables_s'] * 1e3:.1f} ms")
    per = [(r["positions"], r["revalue_end_to_end_s"] / r["positions"] * 1e9) for r in rows]
    print("ns per position (end to end): " + ", ".join(f"{n:,}: {t:.0f}" for n, t in per))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["positions"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for key, label in (("revalue_end_to_end_s", "gpurisk end to end"), ("kernel_pass_s", "gpurisk kernel pass"),
                       ("ranking_s", "gpurisk ADL ranking"), ("polars_peer_s", "Polars peer"),
                       ("memory_floor_s", "memory floor (kernel bytes)")):
        if all(key in r for r in rows):
            ax.plot(n, [r[key] * 1e3 for r in rows], marker="o", label=label,
                    linestyle="--" if key == "memory_floor_s" else "-")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("positions")
    ax.set_ylabel("time (ms)")
    ax.set_title(f"Revaluation scaling ({rows[0]['backend']}, {platform.node() or 'this machine'})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
