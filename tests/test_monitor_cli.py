"""`gpurisk monitor` end to end: JSON-lines input, events on stdout and in the Parquet log,
snapshots and resuming from one, a clean stop on SIGTERM, and usage errors."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

import gpurisk
from gpurisk.book import read_book
from gpurisk.cli import main
from gpurisk.sinks import read_event_log

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def book_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("monitor") / "book"
    gpurisk.synthetic_book(500, seed=4).write(d)
    return d


def _lines(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


STREAM = [
    {"type": "mark", "symbol": "BTCUSDT", "mark_price": 45_000.0, "time": 1_732_780_800_000},
    {"type": "account", "account_id": 900_001, "wallet_balance": 500.0},
    {"type": "fill", "account_id": 900_001, "symbol": "ETHUSDT", "qty": 1.5, "price": 2_400.0},
    {"type": "balance", "account_id": 900_001, "delta": -100.0, "reason": "withdrawal"},
    {"type": "mark", "symbol": "ETHUSDT", "mark_price": 1_500.0, "time": 1_732_780_800_100},
    {"type": "fill", "account_id": 900_001, "symbol": "ETHUSDT", "qty": 1e30, "price": 2_400.0},
]


def test_monitor_events_log_and_snapshot(tmp_path, book_dir, capsys):
    inp = _lines(tmp_path / "stream.jsonl", STREAM)
    rc = main(["monitor", str(book_dir), "--input", str(inp), "--backend", "cpu", "--event-log", str(tmp_path / "log"),
               "--snapshot", str(tmp_path / "snap"), "--status-every", "0", "--segment-events", "7"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in events] == list(range(len(events)))  # consecutive: no gaps
    assert all(e["emitted_time"] >= e["received_time"] for e in events if e["received_time"] is not None)
    rejected = [e for e in events if e["type"] == "rejected"]
    assert len(rejected) == 1 and "stream.jsonl:6" in rejected[0]["reason"] and "entry notional" in rejected[0]["reason"]
    assert any(e["type"] == "account_status" for e in events) and any(e["type"] == "liquidation" for e in events)
    # the Parquet log holds the same events, in segments of at most 7
    log = read_event_log(tmp_path / "log")
    assert log["seq"].to_list() == [e["seq"] for e in events]
    assert [json.loads(x) for x in log["event"]] == events
    assert all(pl.read_parquet(f).height <= 7 for f in (tmp_path / "log").glob("events-*.parquet"))
    assert "ticks/s" in err and "revaluations/s" in err
    # the snapshot is a book: the new account, its position and the marks of the stream
    snap = read_book(tmp_path / "snap")
    a = int((snap.account_id == 900_001).nonzero()[0][0])
    assert snap.wallet[a] == 400.0
    i = int(((snap.pos_account == a)).nonzero()[0][0])
    assert snap.size[i] == 1.5 and snap.entry[i] == 2_400.0
    assert snap.mark_price[snap.symbols.index("ETHUSDT")] == 1_500.0
    manifest = json.loads((tmp_path / "snap" / "manifest.json").read_text())
    assert manifest["monitor"]["next_seq"] == len(events) and manifest["monitor"]["sources"] == {"stream.jsonl": 6}

    # resume: the same input grown by two lines; the lines the snapshot holds are skipped
    _lines(inp, STREAM + [{"type": "balance", "account_id": 900_001, "delta": 50.0},
                          {"type": "mark", "symbol": "BTCUSDT", "mark_price": 47_000.0}])
    rc = main(["monitor", str(tmp_path / "snap"), "--resume", "--input", str(inp), "--backend", "cpu",
               "--snapshot", str(tmp_path / "snap2"), "--status-every", "0"])
    out2, err2 = capsys.readouterr()
    assert rc == 0, err2
    again = [json.loads(line) for line in out2.splitlines()]
    assert again[0]["seq"] == len(events)
    assert not any(e["type"] == "rejected" for e in again)  # the account was not opened twice
    snap2 = read_book(tmp_path / "snap2")
    assert snap2.wallet[int((snap2.account_id == 900_001).nonzero()[0][0])] == 450.0


def test_start_up_is_left_out_of_full_garbage_collections(tmp_path, book_dir, capsys):
    """The command freezes what start-up built (gc.freeze), so a full collection during a step
    does not walk the resident book's objects (a stall of tens of ms at 1M positions)."""
    import gc

    inp = _lines(tmp_path / "stream.jsonl", STREAM[:2])
    gc.unfreeze()
    try:
        assert main(["monitor", str(book_dir), "--input", str(inp), "--backend", "cpu", "--status-every", "0"]) == 0
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
    capsys.readouterr()


def test_sigterm_stops_cleanly_with_the_log_complete(tmp_path, book_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "gpurisk.cli", "monitor", str(book_dir), "--input", "-",
                             "--backend", "cpu", "--event-log", str(tmp_path / "log"), "--status-every", "0"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    errors: list[str] = []
    readers = [threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True),
               threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)]
    for r in readers:
        r.start()

    def ticks_seen() -> int:
        return sum(e["ticks"] for e in map(json.loads, list(lines)) if e["type"] == "revaluation")

    try:
        for k in range(20):
            proc.stdin.write(json.dumps({"type": "mark", "symbol": "BTCUSDT", "mark_price": 60_000.0 - 500 * k}) + "\n")
            proc.stdin.flush()
            time.sleep(0.05)
        # SIGTERM once every tick has reached a revaluation (a loaded machine may take seconds to
        # start the monitor; a signal before its handlers are installed would test nothing)
        deadline = time.monotonic() + 120
        while ticks_seen() < 20 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        for r in readers:
            r.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(errors)
    events = [json.loads(line) for line in lines]
    assert events and sum(e["ticks"] for e in events if e["type"] == "revaluation") == 20
    log = read_event_log(tmp_path / "log")
    assert log["seq"].to_list() == [e["seq"] for e in events]


@pytest.mark.parametrize("args, message", [
    (["--speed", "0", "--ticks", "x.csv"], "--speed must be a number > 0 or 'max'"),
    ([], "no input: give --input FILE"),
    (["--input", "nowhere.jsonl"], "input nowhere.jsonl does not exist"),
    (["--input", "-", "--symbol-map", "BTC"], "--symbol-map takes VENUE=BOOK"),
    (["--input", "-", "--segment-events", "0"], "--segment-events must be > 0"),
    (["--input", "-", "--snapshot-every", "-1"], "--snapshot-every must be > 0"),
])
def test_usage_errors_exit_2_with_a_message(book_dir, capsys, args, message):
    assert main(["monitor", str(book_dir), *args]) == 2
    assert message in capsys.readouterr().err


def test_resume_needs_a_snapshot(book_dir, tmp_path, capsys):
    inp = _lines(tmp_path / "s.jsonl", STREAM[:1])
    assert main(["monitor", str(book_dir), "--resume", "--input", str(inp)]) == 2
    assert "is not a monitor snapshot" in capsys.readouterr().err


def test_a_snapshot_place_that_is_not_a_book_is_refused_before_starting(book_dir, tmp_path, capsys):
    inp = _lines(tmp_path / "s.jsonl", STREAM[:1])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["monitor", str(book_dir), "--input", str(inp), "--snapshot", str(mine)]) == 2
    assert "mine" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "keep me"
