"""Monitor sources against real streams: a WebSocket server on 127.0.0.1 replaying recorded
venue messages (Binance markPrice, Hyperliquid allMids; tests/fixtures/monitor) with
disconnects mid-stream, and tick files replayed."""

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import polars as pl
import pytest

import gpurisk
from gpurisk.engine import Engine
from gpurisk.monitor import Monitor
from gpurisk.streams import TickFileSource, WebSocketSource, binance_ticks, hyperliquid_ticks

pytest.importorskip("websockets")  # a dependency of gpurisk (pyproject); here for a clear message

FIXTURES = Path(__file__).parent / "fixtures" / "monitor"


class ReplayServer:
    """Serves ``messages`` in order to whoever connects, from where the last connection left
    off; drops the connection (close code 1011) after the message numbers in ``drop_after``."""

    def __init__(self, messages, drop_after=(), port=0, expect_subscribe=False):
        from websockets.asyncio.server import serve

        self.messages, self.drop_after, self.expect_subscribe = messages, set(drop_after), expect_subscribe
        self.cursor, self.connections, self.subscriptions = 0, 0, []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        async def start():
            return await serve(self._handler, "127.0.0.1", port)

        self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handler(self, ws):
        self.connections += 1
        if self.expect_subscribe:
            self.subscriptions.append(json.loads(await ws.recv()))
        while self.cursor < len(self.messages):
            await ws.send(self.messages[self.cursor])
            self.cursor += 1
            if self.cursor in self.drop_after:
                self.drop_after.discard(self.cursor)
                await ws.close(code=1011, reason="replay: dropped mid-stream")
                return
        await ws.wait_closed()

    def close(self):
        self.server.close()
        asyncio.run_coroutine_threadsafe(self.server.wait_closed(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def _run_until(mon, done, timeout=30.0):
    stop = threading.Event()
    t = threading.Thread(target=mon.run, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    t.join(10)
    assert done(), "the stream did not arrive in time"


def _expected(messages, parse, rename=lambda s: s):
    ticks = [(rename(s), float(p)) for m in messages for s, p, _ in parse(json.loads(m))]
    last = {}
    for s, p in ticks:
        last[s] = p
    return ticks, last


@pytest.fixture(scope="module")
def book():
    return gpurisk.synthetic_book(300, seed=2)


def test_binance_mark_price_stream_with_drops_loses_no_tick(book):
    messages = FIXTURES.joinpath("binance_markprice.jsonl").read_text().splitlines()
    ticks, last = _expected(messages, binance_ticks)
    known = [t for t in ticks if t[0] in book.symbols]
    server = ReplayServer(messages, drop_after=(13, 31, 47))
    mon = Monitor(Engine(book, backend="cpu"))
    src = WebSocketSource(mon.inbox, f"ws://127.0.0.1:{server.port}", "binance", backoff=0.05).start()
    try:
        _run_until(mon, lambda: mon.stats["ticks"] == len(known) and mon.inbox.ignored == len(ticks) - len(known))
    finally:
        src.close()
        server.close()
    assert server.connections == 4 and src.connects == 4 and src.reconnects >= 3
    assert mon.inbox.received == len(known) == mon.stats["ticks"]  # every tick applied or counted coalesced
    assert mon.inbox.ignored == sum(1 for s, _ in ticks if s == "PEPEUSDT") > 0
    for s, p in last.items():
        if s in book.symbols:
            assert mon.marks[book.symbols.index(s)] == p
    assert mon.status()["latency_p99_ms"] >= 0


def test_hyperliquid_all_mids_subscribes_and_maps_coins(book):
    messages = FIXTURES.joinpath("hyperliquid_allmids.jsonl").read_text().splitlines()
    ticks, last = _expected(messages, hyperliquid_ticks, lambda c: c + "USDT")
    known = [t for t in ticks if t[0] in book.symbols]
    server = ReplayServer(messages, drop_after=(20,), expect_subscribe=True)
    mon = Monitor(Engine(book, backend="cpu"))
    src = WebSocketSource(mon.inbox, f"ws://127.0.0.1:{server.port}", "hyperliquid", backoff=0.05).start()
    try:
        _run_until(mon, lambda: mon.stats["ticks"] == len(known))
    finally:
        src.close()
        server.close()
    assert server.subscriptions == [{"method": "subscribe", "subscription": {"type": "allMids"}}] * 2
    assert mon.inbox.ignored == sum(1 for s, _ in ticks if s == "HYPEUSDT") > 0
    for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        assert mon.marks[book.symbols.index(s)] == last[s]


def test_reconnects_with_exponential_backoff_until_the_server_is_up(book):
    with socket.socket() as s:  # a free port, nobody listening yet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mon = Monitor(Engine(book, backend="cpu"))
    src = WebSocketSource(mon.inbox, f"ws://127.0.0.1:{port}", "binance", backoff=0.05, max_backoff=0.4).start()
    time.sleep(1.0)  # refused: 0.05, 0.1, 0.2, 0.4, 0.4 ...
    messages = FIXTURES.joinpath("binance_markprice.jsonl").read_text().splitlines()[:5]
    server = ReplayServer(messages, port=port)
    try:
        known = [t for m in messages for t in binance_ticks(json.loads(m)) if t[0] in book.symbols]
        _run_until(mon, lambda: mon.stats["ticks"] == len(known))
    finally:
        src.close()
        server.close()
    assert src.waits[:4] == [0.05, 0.1, 0.2, 0.4] and max(src.waits) == 0.4
    assert src.connects == 1


def test_gives_up_after_max_attempts_with_a_clear_error(book):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mon = Monitor(Engine(book, backend="cpu"))
    src = WebSocketSource(mon.inbox, f"ws://127.0.0.1:{port}", backoff=0.01, max_attempts=3).start()
    src.thread.join(10)
    assert isinstance(src.error, ConnectionError) and "no connection after 3 attempts" in str(src.error)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_tick_file_replays_in_time_order_accelerated(tmp_path, book, fmt):
    t0 = 1_732_780_800_000
    ticks = pl.DataFrame({"time": [t0 + 200, t0, t0 + 100, t0 + 300],
                          "symbol": ["BTCUSDT", "ETHUSDT", "BTCUSDT", "SOLUSDT"],
                          "mark_price": [61_000.0, 2_400.0, 60_500.0, 150.0]})
    path = tmp_path / f"ticks.{fmt}"
    ticks.write_parquet(path) if fmt == "parquet" else ticks.write_csv(path)
    mon = Monitor(Engine(book, backend="cpu"))
    start = time.monotonic()
    src = TickFileSource(mon.inbox, str(path), speed=10.0).start()
    src.thread.join(10)
    elapsed = time.monotonic() - start
    assert elapsed >= 0.3 / 10  # the recorded 300 ms, ten times faster
    batch = mon.inbox.take(timeout=0)
    assert batch.coalesced <= 1 and sum(t.count for t in batch.marks.values()) == 4
    assert batch.marks[book.symbols.index("BTCUSDT")].price == 61_000.0  # the later tick won
    assert batch.marks[book.symbols.index("BTCUSDT")].tick_time == t0 + 200
