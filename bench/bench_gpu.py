"""GPU benchmark: 30M positions revalued and ranked, timed with device events after
warm-up, median of many runs, against the bytes-moved floor of the card.

Runs where only CuPy, NumPy and pyarrow are installed (no Polars): the hot path takes the
book's arrays, never frames.

    python bench/bench_gpu.py                       # 30M positions on the GPU
    python bench/bench_gpu.py --positions 1e6 --backend cpu   # smoke test without a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpurisk.backend import get_backend  # noqa: E402
from gpurisk.engine import Engine  # noqa: E402
from gpurisk.synthetic import synthetic_book  # noqa: E402
from harness import Timer, device_bandwidth, kernel_pass_bytes, stages, warm_up  # noqa: E402

POSITIONS_PER_ACCOUNT = 2.66


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--positions", type=float, default=30e6)
    ap.add_argument("--backend", default="gpu")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--venue", default="binance")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    backend = get_backend(args.backend)
    t = time.perf_counter()
    book = synthetic_book(max(1, round(args.positions / POSITIONS_PER_ACCOUNT)), seed=0)
    t_synth = time.perf_counter() - t
    warm_up(backend)  # the upload below then times the copy, not CuPy compiling its kernels
    engine = Engine(book, venue=args.venue, backend=backend)
    b = engine.backend
    if engine.device is None:
        raise SystemExit("the book does not fit in device memory at once; benchmark a smaller --positions")
    risk = engine.revalue()  # warm-up: compiles kernels, allocates
    engine.revalue(out=risk)
    kernels, ranking = stages(engine, risk)
    timer = Timer(b)
    t_kernels = statistics.median(timer(kernels, args.repeats))
    t_rank = statistics.median(timer(ranking, args.repeats))
    t_e2e = statistics.median(timer(lambda: engine.revalue(out=risk), args.repeats))
    nbytes = kernel_pass_bytes(engine, risk)
    bw = device_bandwidth(b)
    device = "cpu"
    if b.name == "gpu":
        props = b.xp.cuda.runtime.getDeviceProperties(0)
        device = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    figures = {
        "device": device, "host": platform.node(), "backend": b.name, "positions": book.n_positions,
        "accounts": book.n_accounts, "synth_s": t_synth, "upload_s": engine.upload_seconds,
        "kernel_pass_ms": t_kernels * 1e3, "ranking_ms": t_rank * 1e3, "revalue_end_to_end_ms": t_e2e * 1e3,
        "kernel_bytes": nbytes, "bandwidth_GBps": bw / 1e9, "kernel_floor_ms": nbytes / bw * 1e3,
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"\n{device} ({b.name}): {book.n_positions:,} positions, {book.n_accounts:,} accounts, "
          f"median of {args.repeats}")
    print("| stage | time | note |\n|---|---|---|")
    print(f"| upload (once) | {engine.upload_seconds * 1e3:.1f} ms | tables stay resident |")
    print(f"| kernel pass | {t_kernels * 1e3:.2f} ms | {nbytes / 1e9:.2f} GB; floor {nbytes / bw * 1e3:.2f} ms at "
          f"{bw / 1e9:.0f} GB/s copy bandwidth ({t_kernels / (nbytes / bw):.2f}x) |")
    print(f"| ADL score + ranking | {t_rank * 1e3:.2f} ms | two stable radix sorts (CuPy/CUB), queue places |")
    print(f"| revalue end to end | {t_e2e * 1e3:.2f} ms | {book.n_positions / t_e2e / 1e9:.2f} G positions/s |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
