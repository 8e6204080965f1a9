"""Dask revaluation: a resident book (DistributedEngine) against one-shot runs
(revalue_distributed, which reads and validates every shard on each call), on a local cluster.

    python bench/bench_distributed.py                       # ~1M positions, 4 shards, 2 workers
    python bench/bench_distributed.py --accounts 3700000 --shards 8 --workers 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import distributed  # noqa: E402

import gpurisk  # noqa: E402
from gpurisk.distributed import DistributedEngine, revalue_distributed, write_sharded  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=375_000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2, help="local worker processes, 1 thread each")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    book = gpurisk.synthetic_book(args.accounts, seed=0)
    with tempfile.TemporaryDirectory() as tmp, \
            distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                     dashboard_address=":0", env={"OMP_NUM_THREADS": "1"}) as cluster, \
            distributed.Client(cluster) as client:
        root = write_sharded(book, Path(tmp) / "book", args.shards)
        revalue_distributed(root, client, backend="cpu").release()  # warm-up: kernel cache, imports
        one_shot = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            revalue_distributed(root, client, backend="cpu").release()
            one_shot.append(time.perf_counter() - t)
        t = time.perf_counter()
        engine = DistributedEngine(root, client, backend="cpu")
        load = time.perf_counter() - t
        resident = []
        for k in range(args.repeats):
            marks = {book.symbols[0]: float(book.mark_price[0]) * (1 + 0.01 * k)}
            t = time.perf_counter()
            engine.revalue(marks).release()
            resident.append(time.perf_counter() - t)
        engine.close()
    print(f"{book.n_positions:,} positions, {args.shards} shards, {args.workers} local workers (1 thread each), cpu")
    print("| run | time per revaluation (median of %d) |\n|---|---|" % args.repeats)
    print(f"| one-shot `revalue_distributed` | {statistics.median(one_shot):.3f} s |")
    print(f"| resident `DistributedEngine.revalue` | {statistics.median(resident):.3f} s (loading once: {load:.3f} s) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
