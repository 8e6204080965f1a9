"""Where a monitor's events go: JSON lines (stdout or a file) and a Parquet event log written
in atomic, rotated segments.

Every event carries ``seq`` (consecutive from the monitor's first, so a consumer sees a gap),
``tick_time`` (the newest venue tick time of its step, ms since the epoch), ``received_time``
(when the step's first tick arrived) and ``emitted_time`` (ms since the epoch).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .output import atomic_file

if TYPE_CHECKING:  # Polars is imported where a segment is written or read
    import polars as pl

#: columns of the Parquet event log: the fields every event has, the keys events are looked up
#: by, and the whole event as JSON
LOG_COLUMNS = ("seq", "type", "tick_time", "received_time", "emitted_time", "account_id", "symbol", "event")


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def event_json(event: dict) -> str:
    """One event as strict JSON (a non-finite number is null). Events rarely hold one (the
    monitor writes null itself): they are encoded as they are, and copied with nulls only
    where the encoder refuses a non-finite number."""
    try:
        return _ENCODER.encode(event)
    except ValueError:
        return _ENCODER.encode(_clean(event))


class JsonLinesSink:
    """One JSON object a line to ``target``: "-" (stdout), a path (appended), or a text stream."""

    def __init__(self, target="-"):
        if target == "-":
            self._stream, self._own = None, False
        elif isinstance(target, (str, Path)):
            self._stream, self._own = open(target, "a", encoding="utf-8"), True
        else:
            self._stream, self._own = target, False

    def _out(self):
        return self._stream if self._stream is not None else sys.stdout

    def write(self, events: list[dict]) -> None:
        if events:
            out = self._out()
            out.write("".join(event_json(e) + "\n" for e in events))
            out.flush()

    def flush(self) -> None:
        self._out().flush()

    def close(self) -> None:
        if self._own:
            self._stream.close()


class ParquetEventLog:
    """Events to ``directory`` as ``events-<first seq>-<last seq>.parquet`` segments, each
    written atomically (a reader never sees half a segment) once it holds ``segment_events``
    events or is ``segment_seconds`` old, and on flush (shutdown)."""

    def __init__(self, directory, segment_events: int = 100_000, segment_seconds: float = 60.0):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.segment_events, self.segment_seconds = segment_events, segment_seconds
        self._buffer: list[dict] = []
        self._opened = time.monotonic()
        self.segments: list[Path] = []

    def write(self, events: list[dict]) -> None:
        if not self._buffer:
            self._opened = time.monotonic()
        self._buffer.extend(events)
        if len(self._buffer) >= self.segment_events or time.monotonic() - self._opened >= self.segment_seconds:
            self.flush()

    def flush(self) -> None:
        while self._buffer:
            events = self._buffer[:self.segment_events]
            self._buffer = self._buffer[self.segment_events:]
            self._write_segment(events)

    def _write_segment(self, events: list[dict]) -> None:
        import polars as pl

        frame = pl.DataFrame({
            "seq": [e["seq"] for e in events],
            "type": [e["type"] for e in events],
            "tick_time": [e.get("tick_time") for e in events],
            "received_time": [e.get("received_time") for e in events],
            "emitted_time": [e.get("emitted_time") for e in events],
            "account_id": [e.get("account_id") for e in events],
            "symbol": [e.get("symbol") for e in events],
            "event": [event_json(e) for e in events],
        }, schema={"seq": pl.Int64, "type": pl.String, "tick_time": pl.Float64, "received_time": pl.Float64,
                   "emitted_time": pl.Float64, "account_id": pl.Int64, "symbol": pl.String, "event": pl.String})
        path = self.directory / f"events-{events[0]['seq']:012d}-{events[-1]['seq']:012d}.parquet"
        with atomic_file(path) as tmp:
            frame.write_parquet(tmp)
        self.segments.append(path)

    def close(self) -> None:
        self.flush()


def read_event_log(directory) -> "pl.DataFrame":
    """Every segment of an event log, in sequence order."""
    import polars as pl

    files = sorted(Path(directory).glob("events-*.parquet"))
    if not files:
        return pl.DataFrame(schema={c: pl.String for c in LOG_COLUMNS})
    return pl.concat([pl.read_parquet(f) for f in files]).sort("seq")
