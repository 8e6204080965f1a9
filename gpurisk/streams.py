"""Where a monitor's ticks and updates come from, and the inbox that holds them between steps.

The ``Inbox`` coalesces mark ticks: per symbol only the newest price waits (with how many
ticks it stands for and when the first of them arrived), so memory stays bounded however
fast ticks come, and every tick is either applied or counted as coalesced. Position and
balance updates queue in order (bounded: a source blocks while the queue is full).

Sources run on their own threads and feed the inbox:

- ``JsonLinesSource``: one JSON object a line from a file or stdin: ``{"type": "mark",
  "symbol": ..., "mark_price": ..., "time": ms}`` or an update (gpurisk.book_updates);
- ``TickFileSource``: a Parquet or CSV file of ticks (time in ms or a datetime, symbol,
  mark_price) replayed at recorded speed, faster, or as fast as possible;
- ``WebSocketSource``: a venue's public mark-price stream (Binance ``markPrice``,
  Hyperliquid ``allMids``), reconnecting with exponential backoff.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .book import BookError


@dataclass
class PendingTick:
    price: float
    tick_time: float | None  # the venue's time of the newest tick (ms), if it gives one
    first_mono: float  # when the first tick not yet applied arrived (time.monotonic)
    first_wall_ms: float
    count: int = 1


@dataclass
class Batch:
    """What one step takes: the newest mark per symbol index, updates in order, refusals."""

    marks: dict = field(default_factory=dict)
    updates: list = field(default_factory=list)
    rejected: list = field(default_factory=list)
    coalesced: int = 0

    @property
    def empty(self) -> bool:
        return not (self.marks or self.updates or self.rejected)

    @property
    def tick_time(self) -> float | None:
        times = [t.tick_time if t.tick_time is not None else t.first_wall_ms for t in self.marks.values()]
        return max(times) if times else None

    @property
    def received_ms(self) -> float | None:
        return min((t.first_wall_ms for t in self.marks.values()), default=None)


class Inbox:
    """Thread-safe holder of what arrived since the last step (see the module doc)."""

    def __init__(self, book, max_updates: int = 100_000):
        self._book = book  # for the symbols and the marks' rules (gpurisk.engine.check_marks)
        self._index = {s: i for i, s in enumerate(book.symbols)}
        self._cond = threading.Condition()
        self._batch = Batch()
        self.max_updates = max_updates
        self.ignored = 0  # ticks of symbols the book does not trade, from a venue's stream
        self.received = 0
        self._open = 0
        self.sources: list = []

    def put_mark(self, symbol, price, tick_time=None, source: str = "tick", known_only: bool = False) -> None:
        """A mark tick; a bad one becomes a ``rejected`` event. ``known_only``: a venue stream's
        ticks for symbols outside the book are counted (``ignored``), not refused."""
        from .engine import check_marks

        if known_only and symbol not in self._index:
            with self._cond:
                self.ignored += 1
            return
        if tick_time is not None and (isinstance(tick_time, bool) or not isinstance(tick_time, (int, float))
                                      or not math.isfinite(tick_time)):
            self.put_rejected({"type": "mark", "symbol": symbol, "mark_price": price, "time": tick_time},
                              f"{source} refused: time must be milliseconds since the epoch (a number), got {tick_time!r}")
            return
        try:
            (_, price), = check_marks([(symbol, price)], self._book)
        except BookError as exc:
            self.put_rejected({"type": "mark", "symbol": symbol, "mark_price": price, "time": tick_time},
                              f"{source} refused: " + "; ".join(f"{p.column}: {p.rule}" for p in exc.problems))
            return
        now, wall = time.monotonic(), time.time_ns() / 1e6
        with self._cond:
            self.received += 1
            s = self._index[symbol]
            pending = self._batch.marks.get(s)
            if pending is None:
                self._batch.marks[s] = PendingTick(price, tick_time, now, wall)
            else:  # coalesce: the newest price wins; the first arrival time stays (latency)
                pending.price, pending.count = price, pending.count + 1
                pending.tick_time = tick_time if tick_time is not None else pending.tick_time
                self._batch.coalesced += 1
            self._cond.notify()

    def put_update(self, update: dict) -> None:
        with self._cond:
            while len(self._batch.updates) >= self.max_updates:
                self._cond.wait(0.1)
            self._batch.updates.append(update)
            self._cond.notify()

    def put_rejected(self, update, why: str) -> None:
        with self._cond:
            self._batch.rejected.append((update, why))
            self._cond.notify()

    def take(self, timeout: float = 0.05) -> Batch | None:
        """Everything pending (None if nothing came within ``timeout`` seconds)."""
        with self._cond:
            if self._batch.empty and timeout:
                self._cond.wait(timeout)
            if self._batch.empty:
                return None
            batch, self._batch = self._batch, Batch()
            self._cond.notify_all()
            return batch

    # sources register so a finite run knows when everything has arrived
    def source_started(self, source) -> None:
        with self._cond:
            self._open += 1
            self.sources.append(source)

    def source_ended(self) -> None:
        with self._cond:
            self._open -= 1
            self._cond.notify_all()

    def drained(self) -> bool:
        with self._cond:
            return self._open == 0 and self._batch.empty


def feed_line(inbox: Inbox, line: str, where: str) -> None:
    """One JSON line: a mark tick or an update (blank lines are skipped)."""
    text = line.strip()
    if not text:
        return
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        inbox.put_rejected({"line": text[:200]}, f"{where} refused: not JSON ({exc.msg} at column {exc.colno})")
        return
    if not isinstance(obj, dict):
        inbox.put_rejected({"line": text[:200]}, f"{where} refused: an update must be a JSON object")
        return
    if obj.get("type") == "mark":
        inbox.put_mark(obj.get("symbol"), obj.get("mark_price"), obj.get("time"), source=where)
    else:
        obj["_source"] = where
        inbox.put_update(obj)


class _Source:
    """A daemon thread feeding an inbox; ``error`` holds what stopped it, if anything."""

    def __init__(self, inbox: Inbox, name: str):
        self.inbox, self.name = inbox, name
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"gpurisk-{name}", daemon=True)

    def start(self):
        self.inbox.source_started(self)
        self.thread.start()
        return self

    def _run(self):
        try:
            self.run()
        except BaseException as exc:  # reported by the monitor's owner (the CLI says it)
            self.error = exc
        finally:
            self.inbox.source_ended()

    def close(self):
        self.stop.set()


class JsonLinesSource(_Source):
    """JSON lines from ``path`` ("-" is stdin); ``skip``: lines already taken (a resumed run)."""

    def __init__(self, inbox: Inbox, path: str, skip: int = 0):
        super().__init__(inbox, "stdin" if path == "-" else Path(path).name)
        self.path, self.skip = path, skip

    def run(self):
        stream = sys.stdin if self.path == "-" else open(self.path, encoding="utf-8")
        try:
            for n, line in enumerate(stream, 1):
                if self.stop.is_set():
                    return
                if n <= self.skip:
                    continue
                feed_line(self.inbox, line, f"{self.name}:{n}")
        finally:
            if stream is not sys.stdin:
                stream.close()


def read_ticks(path: str | Path):
    """A tick file (Parquet or CSV: time, symbol, mark_price) as (time_ms, symbol, price) rows
    in time order; BookError naming the file's problem otherwise."""
    import polars as pl

    from .book import Problem

    path = Path(path)
    try:
        df = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
    except Exception as exc:
        raise BookError([Problem("ticks", "", f"cannot read {path}: {exc}")]) from exc
    missing = [c for c in ("time", "symbol", "mark_price") if c not in df.columns]
    if missing:
        raise BookError([Problem("ticks", c, f"required column is missing (columns present: {', '.join(df.columns)})")
                         for c in missing])
    t = df["time"]
    if t.dtype == pl.Datetime or isinstance(t.dtype, pl.Datetime):
        t = t.dt.epoch("ms")
    elif not t.dtype.is_numeric():
        raise BookError([Problem("ticks", "time", f"must be milliseconds since the epoch or a datetime, got {t.dtype}")])
    df = df.with_columns(t.cast(pl.Float64).alias("time")).sort("time", maintain_order=True)
    return list(zip(df["time"].to_list(), df["symbol"].cast(pl.String).to_list(), df["mark_price"].to_list()))


class TickFileSource(_Source):
    """Replay a tick file: ``speed`` 1 = recorded speed, 10 = ten times faster, None = as fast
    as possible."""

    def __init__(self, inbox: Inbox, path: str, speed: float | None = 1.0):
        super().__init__(inbox, Path(path).name)
        self.ticks = read_ticks(path)
        self.speed = speed

    def run(self):
        start, t0 = time.monotonic(), self.ticks[0][0] if self.ticks else 0.0
        for n, (t, symbol, price) in enumerate(self.ticks, 1):
            if self.stop.is_set():
                return
            if self.speed:
                wait = (t - t0) / 1e3 / self.speed - (time.monotonic() - start)
                if wait > 0:
                    self.stop.wait(wait)
            self.inbox.put_mark(symbol, price, t, source=f"{self.name}:{n}")


# ------------------------------------------------------------------ venue WebSocket streams

FORMATS = ("binance", "hyperliquid")
HYPERLIQUID_SUBSCRIBE = {"method": "subscribe", "subscription": {"type": "allMids"}}


def binance_ticks(message) -> list[tuple[str, str, float | None]]:
    """(symbol, price, event time ms) of a Binance markPrice message: one update
    (``e: markPriceUpdate``), the all-market array, or either in a combined-stream wrapper."""
    if isinstance(message, dict) and "data" in message and "stream" in message:
        message = message["data"]
    items = message if isinstance(message, list) else [message]
    return [(m["s"], m["p"], m.get("E")) for m in items
            if isinstance(m, dict) and m.get("e") == "markPriceUpdate" and "s" in m and "p" in m]


def hyperliquid_ticks(message) -> list[tuple[str, str, float | None]]:
    """(coin, mid, None) of a Hyperliquid allMids message (it carries no time)."""
    if not (isinstance(message, dict) and message.get("channel") == "allMids"):
        return []
    mids = (message.get("data") or {}).get("mids") or {}
    return [(coin, px, None) for coin, px in mids.items()]


class WebSocketSource(_Source):
    """A venue's mark-price stream at ``url`` (``fmt``: binance or hyperliquid). Reconnects
    after a drop or a refused connection, waiting ``backoff`` seconds, doubling up to
    ``max_backoff``, reset by a connection that delivers. ``symbol_map``: venue name → book
    symbol (Hyperliquid's coins: default the coin itself, else coin + "USDT", whichever the
    book has). Ticks of symbols outside the book are counted in ``inbox.ignored``."""

    def __init__(self, inbox: Inbox, url: str, fmt: str = "binance", symbol_map: dict | None = None,
                 backoff: float = 0.5, max_backoff: float = 30.0, max_attempts: int | None = None):
        if fmt not in FORMATS:
            raise ValueError(f"stream format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        super().__init__(inbox, f"{fmt}-ws")
        self.url, self.fmt = url, fmt
        self.symbol_map = dict(symbol_map or {})
        self.backoff, self.max_backoff, self.max_attempts = backoff, max_backoff, max_attempts
        self.connects = 0
        self.reconnects = 0
        self.messages = 0
        self.waits: list[float] = []  # the backoff waits taken, in order

    def _symbol(self, name: str) -> str:
        if name in self.symbol_map:
            return self.symbol_map[name]
        if self.fmt == "hyperliquid" and name not in self.inbox._index and name + "USDT" in self.inbox._index:
            return name + "USDT"
        return name

    def run(self):
        asyncio.run(self._loop())

    async def _loop(self):
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        parse = binance_ticks if self.fmt == "binance" else hyperliquid_ticks
        wait, failures = self.backoff, 0
        while not self.stop.is_set():
            delivered = False
            try:
                async with connect(self.url, open_timeout=10, max_size=2**24) as ws:
                    self.connects += 1
                    if self.fmt == "hyperliquid":
                        await ws.send(json.dumps(HYPERLIQUID_SUBSCRIBE))
                    while not self.stop.is_set():
                        try:
                            raw = await asyncio.wait_for(ws.recv(), timeout=0.2)
                        except asyncio.TimeoutError:
                            continue
                        self.messages += 1
                        delivered = True
                        try:
                            message = json.loads(raw)
                        except json.JSONDecodeError:
                            self.inbox.put_rejected({"message": str(raw)[:200]}, f"{self.name} refused: not JSON")
                            continue
                        for symbol, price, t in parse(message):
                            self.inbox.put_mark(self._symbol(symbol), _price(price), t, source=self.name,
                                                known_only=True)
            except (OSError, WebSocketException, asyncio.TimeoutError):
                pass
            if self.stop.is_set():
                return
            failures = 0 if delivered else failures + 1
            if self.max_attempts is not None and failures >= self.max_attempts:
                raise ConnectionError(f"{self.url}: no connection after {failures} attempts")
            wait = self.backoff if delivered else min(wait * 2, self.max_backoff) if self.waits else self.backoff
            self.waits.append(wait)
            self.reconnects += 1
            await asyncio.sleep(wait)


def _price(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return text  # refused by the marks' rules, with the value shown


__all__ = ["Inbox", "Batch", "JsonLinesSource", "TickFileSource", "WebSocketSource", "binance_ticks",
           "hyperliquid_ticks", "feed_line", "read_ticks"]
