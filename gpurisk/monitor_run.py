"""`gpurisk monitor`: the long-running process around a Monitor: its sources and sinks, the
status line, book snapshots, and a clean stop on SIGINT/SIGTERM (README, "Monitoring")."""

from __future__ import annotations

import gc
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .book import Book, read_book
from .engine import Engine
from .monitor import SUBSET_SHARE, Monitor
from .output import atomic_dir, book_hash, check_place, manifest_or_none
from .sinks import JsonLinesSink, ParquetEventLog
from .streams import FORMATS, JsonLinesSource, TickFileSource, WebSocketSource


def add_parser(sub, common) -> None:
    m = sub.add_parser(
        "monitor", parents=[common], help="revalue a resident book continuously from a live price stream",
        description="Keep BOOK resident, revalue it on every batch of mark-price ticks, apply position and "
                    "balance updates, and emit events (status changes, liquidations, ADL queue heads, the "
                    "uncovered deficit) as JSON lines. Stops on SIGINT/SIGTERM, or when every finite input "
                    "has ended (no --ws).")
    m.add_argument("book", help="book directory (or a snapshot written by --snapshot)")
    m.add_argument("--input", action="append", default=[], metavar="FILE",
                   help="JSON lines of marks and updates ('-' is stdin; repeatable)")
    m.add_argument("--ticks", metavar="FILE", help="a Parquet or CSV tick file (time in ms, symbol, mark_price) to replay")
    m.add_argument("--speed", default="1", metavar="X|max",
                   help="tick file replay speed: 1 recorded (default), 10 ten times faster, max as fast as possible")
    m.add_argument("--ws", metavar="URL", help="a venue's mark-price WebSocket stream, e.g. "
                   "wss://fstream.binance.com/ws/!markPrice@arr@1s or wss://api.hyperliquid.xyz/ws")
    m.add_argument("--ws-format", choices=FORMATS, default="binance", help="message format of --ws (default binance)")
    m.add_argument("--symbol-map", action="append", default=[], metavar="VENUE=BOOK",
                   help="a stream symbol's name in the book (repeatable), e.g. BTC=BTCUSDT")
    m.add_argument("--events", default="-", metavar="FILE",
                   help="JSON lines of events: '-' stdout (default), a file (appended), or 'none'")
    m.add_argument("--event-log", metavar="DIR", help="also write events as Parquet segments into DIR")
    m.add_argument("--segment-events", type=int, default=100_000, help="events per Parquet segment (default 100,000)")
    m.add_argument("--segment-seconds", type=float, default=60.0, help="longest a segment stays open (default 60 s)")
    m.add_argument("--snapshot", metavar="DIR", help="write the resident book to DIR atomically, periodically and at exit")
    m.add_argument("--snapshot-every", type=float, default=300.0, metavar="S", help="seconds between snapshots (default 300)")
    m.add_argument("--resume", action="store_true",
                   help="BOOK is a snapshot: continue its event numbers and skip the --input lines it holds")
    m.add_argument("--status-every", type=float, default=10.0, metavar="S",
                   help="seconds between status lines on stderr (default 10; 0: none)")
    m.add_argument("--adl-top", type=int, default=5, metavar="N", help="places of each ADL queue in adl_head events (default 5)")
    m.add_argument("--full", action="store_true", help="always revalue every account (the results are the same)")
    m.set_defaults(func=cmd_monitor)


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"--speed must be a number > 0 or 'max', got {text!r}")
    return value


def _symbol_map(items) -> dict:
    out = {}
    for item in items:
        venue, sep, book = item.partition("=")
        if not sep or not venue or not book:
            raise ValueError(f"--symbol-map takes VENUE=BOOK, got {item!r}")
        out[venue] = book
    return out


def snapshot_state(monitor: Monitor) -> tuple[Book, dict]:
    """A copy of the resident book (so the monitor goes on while it is written) and what a
    resumed monitor needs."""
    b = monitor.book
    arrays = {k: np.copy(getattr(b, k)) for k in ("mark_price", "account_id", "wallet", "pos_start", "pos_account",
                                                   "pos_symbol", "size", "entry", "isolated", "isolated_margin",
                                                   "leverage")}
    book = Book(symbols=b.symbols, contract_size=b.contract_size, tier_start=b.tier_start, tier_floor=b.tier_floor,
                tier_mmr=b.tier_mmr, tier_cum=b.tier_cum, tier_max_leverage=b.tier_max_leverage,
                tick_size=b.tick_size, **b.contract_fields(), account_asset=np.copy(b.account_asset),
                margin_model=None if b.margin_model is None else np.copy(b.margin_model), **arrays)
    state = {"next_seq": monitor.seq, "updates_applied": monitor.updates_applied,
             "sources": dict(monitor.source_lines), "time": time.time()}
    return book, state


def write_snapshot(directory, book: Book, state: dict) -> None:
    meta = {"book_hash": book_hash(book), "marks": dict(zip(book.symbols, book.mark_price.tolist())),
            "accounts": book.n_accounts, "positions": book.n_positions, "monitor": state}
    with atomic_dir(directory, "book", meta) as out:
        for name, df in book.frames().items():
            out.write_frame(f"{name}.parquet", df, "parquet")
        if book.collateral is not None:  # a pooled venue's table: a resumed monitor values wallets through it
            out.write_frame("collateral.parquet", book.collateral, "parquet")


class _Snapshots:
    """Periodic snapshots on a background thread (one at a time), and a last one at exit."""

    def __init__(self, directory, every: float):
        self.directory, self.every = directory, every
        self.last = time.monotonic()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.written = 0

    def _write(self, book, state):
        try:
            write_snapshot(self.directory, book, state)
            self.written += 1
        except BaseException as exc:
            self.error = exc

    def maybe(self, monitor: Monitor) -> None:
        if time.monotonic() - self.last < self.every or (self.thread and self.thread.is_alive()):
            return
        if self.error is not None:  # said once; the monitor goes on, the next snapshot tries again
            print(f"gpurisk monitor: warning: snapshot to {self.directory} failed: {self.error}", file=sys.stderr,
                  flush=True)
            self.error = None
        self.last = time.monotonic()
        self.thread = threading.Thread(target=self._write, args=snapshot_state(monitor), daemon=True)
        self.thread.start()

    def final(self, monitor: Monitor) -> None:
        if self.thread:
            self.thread.join()
        self._write(*snapshot_state(monitor))
        if self.error:
            raise self.error


class _StatusLine:
    def __init__(self, every: float):
        self.every = every
        self.last, self.prev = time.monotonic(), {}

    def maybe(self, monitor: Monitor, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (not self.every or now - self.last < self.every):
            return
        s = monitor.status()
        dt = max(now - self.last, 1e-9)
        rate = lambda k: (s[k] - self.prev.get(k, 0)) / dt  # noqa: E731
        print(f"gpurisk monitor: {rate('ticks'):,.0f} ticks/s, {rate('steps'):,.0f} revaluations/s, latency "
              f"p50 {s['latency_p50_ms']:.1f} ms p99 {s['latency_p99_ms']:.1f} ms, {s['events']:,} events, "
              f"{s['coalesced']:,} ticks coalesced, {s['updates']:,} updates, {s['rejected']:,} refused, "
              f"{s['ignored']:,} ticks of other symbols", file=sys.stderr, flush=True)
        self.last, self.prev = now, s


def cmd_monitor(args) -> int:
    speed = _speed(args.speed)  # usage first
    symbol_map = _symbol_map(args.symbol_map)
    if args.adl_top < 1:
        raise ValueError(f"--adl-top must be >= 1, got {args.adl_top}")
    for name in ("segment_events", "segment_seconds", "snapshot_every"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if args.status_every < 0:
        raise ValueError(f"--status-every must be >= 0, got {args.status_every}")
    if not (args.input or args.ticks or args.ws):
        raise ValueError("no input: give --input FILE (or - for stdin), --ticks FILE or --ws URL")
    for path in args.input + ([args.ticks] if args.ticks else []):
        if path != "-" and not Path(path).is_file():
            raise FileNotFoundError(f"input {path} does not exist (or is not a file)")
    resumed = {}
    if args.resume:
        manifest = manifest_or_none(args.book) or {}
        resumed = manifest.get("monitor") or {}
        if not resumed:
            raise ValueError(f"--resume: {args.book} is not a monitor snapshot (its manifest has no monitor state)")
    if args.snapshot:
        check_place(args.snapshot, "book")  # a bad place is refused now, not at the first snapshot
    book = read_book(args.book)
    engine = Engine(book, venue=args.venue, backend=args.backend)
    sinks = []
    if args.events != "none":
        sinks.append(JsonLinesSink(args.events))
    if args.event_log:
        sinks.append(ParquetEventLog(args.event_log, args.segment_events, args.segment_seconds))
    monitor = Monitor(engine, sinks=sinks, adl_top=args.adl_top, subset_share=0.0 if args.full else SUBSET_SHARE,
                      event_seq=int(resumed.get("next_seq", 0)))
    monitor.updates_applied = int(resumed.get("updates_applied", 0))
    skip = resumed.get("sources", {})
    sources = [JsonLinesSource(monitor.inbox, p, skip=int(skip.get("stdin" if p == "-" else Path(p).name, 0)))
               for p in args.input]
    if args.ticks:
        sources.append(TickFileSource(monitor.inbox, args.ticks, speed))
    if args.ws:
        sources.append(WebSocketSource(monitor.inbox, args.ws, args.ws_format, symbol_map))
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    status = _StatusLine(args.status_every)
    snapshots = _Snapshots(args.snapshot, args.snapshot_every) if args.snapshot else None

    def idle(mon):
        status.maybe(mon)
        if snapshots:
            snapshots.maybe(mon)

    try:
        monitor.start()
        # What start-up built lives as long as the monitor: leave it out of the cyclic
        # collector's full passes, each of which would stall a step by tens of ms at 1M
        # positions (bench/RESULTS.md, "Monitor"). Plain reference counting still frees it.
        gc.collect()
        gc.freeze()
        for s in sources:
            s.start()
        monitor.run(stop, on_idle=idle, idle_every=0.2, until_drained=not args.ws)
    finally:
        for s in sources:
            s.close()
        for s in previous:
            signal.signal(s, previous[s])
        for sink in sinks:
            sink.flush()
    if snapshots:
        snapshots.final(monitor)
    status.maybe(monitor, force=True)
    for sink in sinks:
        if hasattr(sink, "close"):
            sink.close()
    errors = [s.error for s in sources if s.error is not None]
    if errors:
        raise errors[0]
    return 0


__all__ = ["add_parser", "cmd_monitor", "write_snapshot", "snapshot_state"]
