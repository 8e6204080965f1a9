"""Tick-to-event latency of `gpurisk monitor` under a live stream (bench/RESULTS.md, "Monitor").

A synthetic book of about N positions; 10 symbols each ticking every 100 ms (staggered, a
small random walk) plus position and balance updates at a steady rate (fills on existing
positions, funding payments, opens and closes), fed from a producer thread into the monitor's
inbox while the monitor steps on the main thread and writes JSON events to /dev/null.

Latency: from the arrival of a symbol's first tick not yet applied to the emission of the
step's events (Monitor.latencies_ms). Counts: ticks sent, ticks received (every one, applied
or coalesced), coalesced.

    python bench/bench_monitor.py --positions 1000000 --seconds 30
    python bench/bench_monitor.py --positions 10000000 --seconds 30 --backend gpu
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import gpurisk  # noqa: E402
from gpurisk.engine import Engine  # noqa: E402
from gpurisk.monitor import Monitor  # noqa: E402
from gpurisk.sinks import JsonLinesSink  # noqa: E402

POSITIONS_PER_ACCOUNT = 2.66


def producer(mon: Monitor, book, seconds: float, tick_ms: float, updates_per_s: float, stop, sent, seed=0):
    """Ticks: symbol k at k·tick_ms/10 past each tick_ms period; updates spread evenly."""
    rng = np.random.default_rng(seed)
    marks = book.mark_price.copy()
    n_sym = book.n_symbols
    ids = book.account_id.copy()
    pos_account, pos_symbol, isolated = book.pos_account.copy(), book.pos_symbol.copy(), book.isolated.copy()
    start = time.monotonic()
    events = []  # (time offset, kind, symbol index)
    period = tick_ms / 1e3
    for k in range(int(seconds / period)):
        for s in range(n_sym):
            events.append((k * period + s * period / n_sym, "tick", s))
    n_updates = int(seconds * updates_per_s)
    for j in range(n_updates):
        events.append((j / updates_per_s, "update", -1))
    events.sort(key=lambda e: e[0])
    for at, kind, s in events:
        if stop.is_set():
            return
        wait = at - (time.monotonic() - start)
        if wait > 0:
            time.sleep(wait)
        if kind == "tick":
            marks[s] *= float(np.exp(rng.normal(0, 0.0005)))
            mon.inbox.put_mark(book.symbols[s], float(marks[s]))
            sent["ticks"] += 1
            continue
        r = rng.random()
        i = int(rng.integers(pos_account.size))
        account = int(ids[pos_account[i]])
        sym = book.symbols[pos_symbol[i]]
        mode = ("cross", "isolated")[isolated[i]]
        price = float(marks[pos_symbol[i]])
        if r < 0.7:  # a fill on an existing position (adds or reduces)
            u = {"type": "fill", "account_id": account, "symbol": sym, "margin_mode": mode,
                 "qty": float(np.round(rng.normal(0, 0.01), 3)) or 0.001, "price": price}
        elif r < 0.9:  # funding, as a wallet delta
            u = {"type": "balance", "account_id": account, "delta": float(np.round(rng.normal(0, 1), 2)) or 0.01,
                 "reason": "funding"}
        elif r < 0.95:  # a new position (cross, in a symbol the account may not hold)
            u = {"type": "fill", "account_id": account, "symbol": book.symbols[int(rng.integers(n_sym))],
                 "qty": 0.01, "price": float(marks[int(rng.integers(n_sym))]) or price}
            u["price"] = float(marks[book.symbols.index(u["symbol"])])
        else:  # a close
            u = {"type": "position", "account_id": account, "symbol": sym, "margin_mode": mode, "size": 0}
        mon.inbox.put_update(u)
        sent["updates"] += 1


def run(positions: int, seconds: float, backend: str, tick_ms: float, updates_per_s: float, seed: int) -> dict:
    t = time.perf_counter()
    book = gpurisk.synthetic_book(max(int(positions / POSITIONS_PER_ACCOUNT), 1), seed=seed)
    built = time.perf_counter() - t
    engine = Engine(book, backend=backend)
    devnull = open(os.devnull, "w")
    refusals = collections.Counter()

    class Refusals:  # why updates were refused, by reason (the part after "refused: ")
        def write(self, events):
            refusals.update(e["reason"].split("refused: ", 1)[-1] for e in events if e["type"] == "rejected")

        def flush(self):
            pass

    mon = Monitor(engine, sinks=[JsonLinesSink(devnull), Refusals()])
    for _ in range(3):  # warm-up: kernels loaded, buffers touched
        mon.inbox.put_mark(book.symbols[0], float(book.mark_price[0] * 1.0001))
        mon.step()
    gc.collect()  # as `gpurisk monitor` does after start-up (gpurisk/monitor_run.py)
    gc.freeze()
    mon.latencies_ms.clear()
    mon.stats.clear()
    refusals.clear()
    mon.inbox.received = 0
    step_ms, modes = [], collections.Counter()
    stop, sent = threading.Event(), collections.Counter()
    prod = threading.Thread(target=producer, args=(mon, book, seconds, tick_ms, updates_per_s, stop, sent, seed),
                            daemon=True)
    gc_pauses_ms = []  # Python's full (generation 2) collections while stepping: pauses inside a step

    def on_gc(phase, info):
        if info["generation"] == 2:
            if phase == "start":
                on_gc.started = time.perf_counter()
            else:
                gc_pauses_ms.append((time.perf_counter() - on_gc.started) * 1e3)

    gc.callbacks.append(on_gc)
    prod.start()
    while prod.is_alive() or not mon.inbox.take.__self__._batch.empty:
        batch = mon.inbox.take(timeout=0.05)
        if batch is None or batch.empty:
            continue
        t0 = time.perf_counter()
        events = mon.step(batch)
        step_ms.append((time.perf_counter() - t0) * 1e3)
        modes[events[-1]["mode"]] += 1
    gc.callbacks.remove(on_gc)
    lat = np.array(mon.latencies_ms)
    s = mon.stats
    return {
        "positions": book.n_positions, "accounts": book.n_accounts, "backend": engine.backend.name,
        "book_build_s": round(built, 1), "seconds": seconds,
        "ticks_sent": sent["ticks"], "ticks_received": mon.inbox.received, "ticks_in_steps": s["ticks"],
        "ticks_coalesced": s["coalesced"], "ticks_lost": sent["ticks"] - s["ticks"],
        "updates_sent": sent["updates"], "updates_in_steps": s["updates"], "updates_refused": s["rejected"],
        "steps": s["steps"], "steps_by_mode": dict(modes), "events": s["events"],
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 1), "latency_p99_ms": round(float(np.percentile(lat, 99)), 1),
        "latency_max_ms": round(float(lat.max()), 1),
        "step_p50_ms": round(float(np.percentile(step_ms, 50)), 1), "step_p99_ms": round(float(np.percentile(step_ms, 99)), 1),
        "final_positions": mon.book.n_positions, "refusals": dict(refusals),
        "full_gc_pauses_ms": [round(x, 1) for x in gc_pauses_ms],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--positions", type=int, default=1_000_000)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--backend", default="cpu")
    p.add_argument("--tick-ms", type=float, default=100.0, help="each symbol ticks this often (default 100)")
    p.add_argument("--updates-per-s", type=float, default=1000.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(json.dumps(run(a.positions, a.seconds, a.backend, a.tick_ms, a.updates_per_s, a.seed), indent=1))


if __name__ == "__main__":
    main()
