"""One-shot revaluation benchmark: a ``Book`` in hand to the two result frames, gpurisk
against the idiomatic Polars peer (``bench/polars_peer.py``) on the same data, in one run.

gpurisk's one-shot path is ``gpurisk.revalue(book)`` (engine set-up, kernels, ADL ranking)
followed by materialising ``risk.accounts`` and ``risk.positions``. The peer gets the same
book as Polars frames (``book.frames()``, converted once, not timed). Runs alternate between
the two (one of each per round) so that both see the same stretch of this shared VM, and the
peer's results are checked against gpurisk's before any time counts.

    python bench/bench_oneshot.py                                # ~2M positions (752,000 accounts)
    python bench/bench_oneshot.py --accounts 3760000 --no-peer   # ~10M positions, gpurisk stages only
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore", message="Sortedness of columns cannot be checked")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import polars as pl  # noqa: E402

import gpurisk  # noqa: E402
from polars_peer import PEER_VENUE  # noqa: E402


def one_shot(book, backend: str) -> dict:
    """gpurisk's one-shot path, timed by stage. ``setup`` is what ``revalue`` spends outside
    the kernels and the ranking (engine construction: backend, tier padding, upload, queue
    groups; resolving the marks)."""
    t0 = time.perf_counter()
    risk = gpurisk.revalue(book, venue=PEER_VENUE, backend=backend)
    t1 = time.perf_counter()
    accounts = risk.accounts
    t2 = time.perf_counter()
    positions = risk.positions
    t3 = time.perf_counter()
    kernels, ranking = risk.timings["kernels"], risk.timings["ranking"]
    return dict(risk=risk, accounts=accounts, positions=positions, total=t3 - t0, revalue=t1 - t0,
                setup=(t1 - t0) - kernels - ranking, kernels=kernels, ranking=ranking,
                accounts_table=t2 - t1, positions_table=t3 - t2, tables=t3 - t1)


def check_peer(acc: pl.DataFrame, pos: pl.DataFrame, accounts: pl.DataFrame, positions: pl.DataFrame) -> float:
    """The peer must agree with gpurisk before its time counts: margin ratio and maintenance
    margin to 1e-9 relative, statuses equal, ADL ranks equal. Returns the rank agreement."""
    np.testing.assert_allclose(acc["margin_ratio"].to_numpy(), accounts["margin_ratio"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(pos["maint"].to_numpy(), positions["maint_margin"].to_numpy(), rtol=1e-9, atol=1e-9)
    assert (acc["status"].cast(pl.String) == accounts["status"].cast(pl.String)).all(), "statuses differ"
    same_rank = float((pos["adl_rank"].cast(pl.Int64) == positions["adl_rank"]).mean())
    assert same_rank == 1.0, f"ADL ranks agree on {same_rank:.6%} only"
    return same_rank


def write_json(path: str, figures: dict) -> None:
    """Write ``figures`` to ``path`` atomically (a temporary file in the same folder, then
    os.replace), so a reader never sees half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(figures, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=752_000, help="trader accounts (~2.66 positions each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up round")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--no-peer", action="store_true", help="skip the Polars peer (gpurisk's stages only)")
    ap.add_argument("--json", help="write the figures here as JSON (atomically)")
    args = ap.parse_args(argv)

    t = time.perf_counter()
    book = gpurisk.synthetic_book(args.accounts, seed=args.seed)
    t_synth = time.perf_counter() - t
    frames = None
    if not args.no_peer:
        from polars_peer import polars_revalue

        frames = book.frames()  # once, not timed: the peer's input

    # Warm-up: kernels built or loaded, pages faulted in, the peer checked.
    run = one_shot(book, args.backend)
    rank_agreement = None
    if frames is not None:
        acc, pos = polars_revalue(frames)
        rank_agreement = check_peer(acc, pos, run["accounts"], run["positions"])
        del acc, pos
    del run

    stage_names = ("setup", "kernels", "ranking", "accounts_table", "positions_table", "tables", "total")
    samples: dict[str, list[float]] = {k: [] for k in stage_names}
    peer: list[float] = []
    for _ in range(args.repeats):
        run = one_shot(book, args.backend)
        for k in stage_names:
            samples[k].append(run[k])
        del run
        if frames is not None:
            t = time.perf_counter()
            out = polars_revalue(frames)
            peer.append(time.perf_counter() - t)
            del out
    med = {k: statistics.median(v) for k, v in samples.items()}

    figures = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
                   f"{platform.python_version()}, Polars {pl.__version__}, NumPy {np.__version__}",
        "date": datetime.date.today().isoformat(),
        "command": "python bench/bench_oneshot.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "backend": args.backend, "accounts": book.n_accounts, "positions": book.n_positions,
        "repeats": args.repeats, "synth_s": t_synth,
        **{f"{k}_s": v for k, v in med.items()},
        **{f"{k}_s_range": [min(v), max(v)] for k, v in samples.items()},
    }
    if peer:
        figures.update(polars_peer_s=statistics.median(peer), polars_peer_s_range=[min(peer), max(peer)],
                       speedup_vs_polars=statistics.median(peer) / med["total"],
                       peer_rank_agreement=rank_agreement)

    def ms(k):
        lo, hi = figures[f"{k}_s_range"]
        return f"{med[k] * 1e3:.1f} ms | {lo * 1e3:.1f}–{hi * 1e3:.1f} ms"

    print(f"\n{figures['machine']}, backend {args.backend}: {book.n_accounts:,} accounts, "
          f"{book.n_positions:,} positions; medians of {args.repeats} after a warm-up")
    print("| stage | median | range | note |\n|---|---|---|---|")
    print(f"| set-up | {ms('setup')} | Engine: tier padding, upload, queue groups; marks |")
    print(f"| kernels | {ms('kernels')} | position margin, account margin, position risk, ADL score |")
    print(f"| ranking | {ms('ranking')} | ADL queues: sort, ranks, lights |")
    print(f"| accounts table | {ms('accounts_table')} | `risk.accounts` |")
    print(f"| positions table | {ms('positions_table')} | `risk.positions` |")
    print(f"| tables | {ms('tables')} | both frames |")
    print(f"| **one-shot total** | {ms('total')} | `revalue(book)` + both frames |")
    if peer:
        lo, hi = figures["polars_peer_s_range"]
        print(f"| Polars peer | {figures['polars_peer_s'] * 1e3:.1f} ms | {lo * 1e3:.1f}–{hi * 1e3:.1f} ms | "
              f"`polars_revalue(frames)`; agrees (ranks {rank_agreement:.2%}) |")
        print(f"\ngpurisk one-shot is {figures['speedup_vs_polars']:.1f}x faster than the Polars peer "
              f"(target: 10x)")
    if args.json:
        write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
