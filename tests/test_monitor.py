"""The live monitor: incremental revaluation against full ones (same bits), events, the
inbox's coalescing, and position/balance updates against a book built from scratch."""

from decimal import Decimal

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpurisk
from gpurisk.backend import CpuBackend
from gpurisk.book import Book
from gpurisk.book_updates import LiveBook
from gpurisk.engine import Engine
from gpurisk.live_layout import Slack
from gpurisk.monitor import Monitor
from gpurisk.schema import STATUSES
from gpurisk.streams import Inbox

from books import tiny_frames


def _bits(a):
    a = np.asarray(a)
    return a.view(np.uint8) if a.dtype.itemsize > 1 else a


def assert_same_as_full(mon: Monitor):
    """The monitor's resident results equal a fresh full revaluation bit for bit, and its ADL
    heads are the first places of the full ranking with the same lights."""
    full, r = mon.risk(rank=True), mon.results
    for whole, part in ((full.position_margin, r.position_margin), (full.account_margin, r.account_margin),
                        (full.position_risk, r.position_risk)):
        for k in vars(whole):
            assert np.array_equal(_bits(getattr(whole, k)), _bits(getattr(part, k))), k
    assert np.array_equal(_bits(full.adl.score), _bits(r.adl.score))
    heads = mon._adl_heads()
    lights, rank = mon._head_lights(heads)
    rows = mon.live_rows()  # resident rows (free rows between) as rows of the compact book
    heads = [tuple(int(k) for k in np.searchsorted(rows, h)) for h in heads]
    flat = [i for h in heads for i in h]
    start = full.adl.group_start
    for g, head in enumerate(heads):
        want = full.adl.order[start[g]:start[g] + mon.adl_top].tolist()
        assert list(head) == want, f"queue {g}"
    assert np.array_equal(full.adl.rank[flat], rank)
    assert np.array_equal(full.adl.lights[flat], lights)


def _random_update(rng, book: Book, next_account: list) -> dict:
    kind = rng.choice(["fill", "fill", "fill", "balance", "position", "close", "account"])
    if kind == "account":
        next_account[0] += 1
        return {"type": "account", "account_id": next_account[0], "wallet_balance": float(rng.uniform(100, 1e5))}
    ids = book.account_id
    if kind == "balance":
        return {"type": "balance", "account_id": int(rng.choice(ids)), "delta": float(rng.normal(0, 500)),
                "reason": "funding"}
    if kind == "close" and book.n_positions:
        i = int(rng.integers(book.n_positions))
        return {"type": "position", "account_id": int(ids[book.pos_account[i]]), "symbol": book.symbols[book.pos_symbol[i]],
                "margin_mode": ("cross", "isolated")[book.isolated[i]], "size": 0}
    symbol = str(rng.choice(book.symbols))
    price = float(book.mark_price[book.symbols.index(symbol)] * rng.uniform(0.95, 1.05))
    if kind == "position":
        return {"type": "position", "account_id": int(rng.choice(ids)), "symbol": symbol,
                "size": float(rng.normal(0, 5)) or 1.0, "entry_price": price}
    return {"type": "fill", "account_id": int(rng.choice(ids)), "symbol": symbol,
            "qty": float(np.round(rng.normal(0, 2), 3)) or 0.5, "price": price}


# lights by rank, and by size share; free rows reserved (the default), few (running out: new
# layouts), none (every open or close splices the book)
@pytest.mark.parametrize("venue,slack", [("binance", Slack()), ("bitmex", Slack()),
                                         ("binance", Slack(every=60, free=1, search_rows=8)), ("bitmex", None)])
def test_every_step_of_a_long_random_stream_matches_a_full_revaluation(venue, slack):
    book = gpurisk.synthetic_book(1500, seed=3)
    mon = Monitor(Engine(book, venue=venue, backend="cpu"), adl_top=4, subset_share=1.0, slack=slack)
    rng = np.random.default_rng(7)
    next_account = [10**9]
    modes = set()
    for step in range(120):
        for _ in range(int(rng.integers(1, 4))):  # a few ticks, some of the same symbol (coalesced)
            s = int(rng.integers(book.n_symbols))
            mon.inbox.put_mark(book.symbols[s], float(mon.marks[s] * np.exp(rng.normal(0, 0.03))))
        if step % 3 == 0:
            for _ in range(int(rng.integers(1, 6))):
                mon.inbox.put_update(_random_update(rng, mon.book, next_account))
        events = mon.step()
        modes.add(events[-1]["mode"])
        assert events[-1]["type"] == "revaluation"
        assert_same_as_full(mon)
    assert {"accounts", "full"} <= modes  # both paths were exercised
    assert mon.updates_applied > 20


def test_status_transitions_and_liquidations_are_reported_with_the_full_figures():
    book = gpurisk.synthetic_book(800, seed=5)
    mon = Monitor(Engine(book, backend="cpu"))
    initial = mon.start()
    before = mon.risk(rank=False).accounts
    # the baseline: every account not healthy, from nothing, and the head of every queue
    told = {e["account_id"]: e for e in initial if e["type"] == "account_status"}
    assert set(told) == set(before.filter(pl.col("status") != "healthy")["account_id"].to_list()) != set()
    assert all(e["from"] is None and e["to"] == by["status"] for by in before.iter_rows(named=True)
               for e in [told.get(by["account_id"])] if e)
    assert sum(e["type"] == "adl_head" for e in initial) == 2 * book.n_symbols
    assert initial[-1]["type"] == "revaluation" and initial[-1]["mode"] == "initial"
    btc = book.symbols.index("BTCUSDT")
    btc_mark = float(book.mark_price[btc])  # the monitor writes its marks into its book
    mon.inbox.put_mark("BTCUSDT", btc_mark * 0.7)
    events = mon.step()
    after = mon.risk(rank=False)
    acc = after.accounts
    moved = before.join(acc, on="account_id", suffix="_new").filter(pl.col("status") != pl.col("status_new"))
    reported = [e for e in events if e["type"] == "account_status"]
    assert moved.height > 0 and len(reported) == moved.height
    by_id = {r["account_id"]: r for r in acc.iter_rows(named=True)}
    for e in reported:
        row = by_id[e["account_id"]]
        assert e["to"] == row["status"] and e["equity"] == row["equity"] and e["maint_margin"] == row["maint_margin"]
    was = before.select("account_id", "status")
    pos = after.positions.join(was, on="account_id", suffix="_before")
    liq = {(e["account_id"], e["symbol"], e["margin_mode"]): e for e in events if e["type"] == "liquidation"}
    entering = pos.filter(pl.col("status").is_in(["liquidatable", "bankrupt"]) & (pl.col("margin_mode") == "cross")
                          & ~pl.col("status_before").is_in(["liquidatable", "bankrupt"]))
    assert entering.height > 0
    for row in entering.iter_rows(named=True):
        e = liq[(row["account_id"], row["symbol"], "cross")]
        assert e["liq_price"] == row["liq_price"] and e["bankruptcy_price"] == row["bankruptcy_price"]
    # the deficit from the result tables, independently: bankrupt cross accounts and isolated positions
    summary = events[-1]
    pr_eq = after.position_risk.equity
    iso_mask = book.isolated == 1
    want = float(-np.minimum(after.account_margin.equity[after.account_margin.n_cross > 0], 0).sum()) + \
        float(-np.minimum(pr_eq[iso_mask], 0).sum())
    assert summary["deficit"] == pytest.approx(want, rel=1e-12)
    assert summary["deficit"] > 0
    counts = acc["status"].value_counts()
    for s in STATUSES:
        n = counts.filter(pl.col("status") == s)["count"]
        assert summary[f"accounts_{s}"] == (int(n[0]) if n.len() else 0)
    # and back: restoring the mark reports the way back to healthy
    mon.inbox.put_mark("BTCUSDT", btc_mark)
    back = {e["account_id"]: (e["from"], e["to"]) for e in mon.step() if e["type"] == "account_status"}
    want = {r["account_id"]: (r["status_new"], r["status"]) for r in moved.iter_rows(named=True)}
    assert back == want


def test_inbox_coalesces_ticks_and_counts_them():
    book = Book.from_frames(**tiny_frames())
    inbox = Inbox(book)
    for k in range(10_000):
        inbox.put_mark("BTCUSDT", 60_000.0 + k, tick_time=k)
    inbox.put_mark("ETHUSDT", 3_000.0)
    batch = inbox.take(timeout=0)
    assert len(batch.marks) == 2  # bounded by the symbols, not the ticks
    btc = batch.marks[book.symbols.index("BTCUSDT")]
    assert btc.price == 69_999.0 and btc.count == 10_000 and btc.tick_time == 9_999
    assert batch.coalesced == 9_999
    assert inbox.take(timeout=0) is None


def test_bad_ticks_are_refused_with_the_marks_rules():
    book = Book.from_frames(**tiny_frames())
    mon = Monitor(Engine(book, backend="cpu"))
    mon.inbox.put_mark("BTCUSDT", -5.0, source="feed:3")
    mon.inbox.put_mark("DOGE", 1.0, source="feed:4")
    mon.inbox.put_mark("BTCUSDT", 61_000.0, tick_time="noon", source="feed:5")
    events = mon.step()
    reasons = [e["reason"] for e in events if e["type"] == "rejected"]
    assert reasons == ["feed:3 refused: mark_price: must be finite and > 0",
                       "feed:4 refused: symbol: must be a symbol of the book",
                       "feed:5 refused: time must be milliseconds since the epoch (a number), got 'noon'"]
    assert mon.marks.tolist() == book.mark_price.tolist()


# ------------------------------------------------------------------ updates


def _frames_after(frames, positions=None, accounts=None):
    """The tiny book's tables with rows replaced, written independently of LiveBook."""
    out = dict(frames)
    if positions is not None:
        out["positions"] = positions
    if accounts is not None:
        out["accounts"] = accounts
    return out


def test_updates_give_the_book_built_from_scratch():
    frames = tiny_frames()
    live = LiveBook(Book.from_frames(**{k: v.clone() for k, v in frames.items()}))
    applied = live.apply([
        {"type": "account", "account_id": 4, "wallet_balance": 1_000.0},
        {"type": "position", "account_id": 4, "symbol": "BTCUSDT", "size": -0.2, "entry_price": 59_000.0},
        {"type": "position", "account_id": 1, "symbol": "ETHUSDT", "size": 0},  # close
        {"type": "balance", "account_id": 2, "delta": 250.0, "reason": "deposit"},
        {"type": "position", "account_id": 3, "symbol": "ETHUSDT", "margin_mode": "isolated", "size": 2.5,
         "entry_price": 2_950.0, "isolated_margin": 400.0},
    ])
    assert applied.rejected == [] and applied.rebuilt
    want = Book.from_frames(**_frames_after(
        frames,
        positions=pl.DataFrame({
            "account_id": [1, 2, 3, 4], "symbol": ["BTCUSDT", "BTCUSDT", "ETHUSDT", "BTCUSDT"],
            "size": [0.5, -0.1, 2.5, -0.2], "entry_price": [58_000.0, 61_000.0, 2_950.0, 59_000.0],
            "margin_mode": ["cross", "cross", "isolated", "cross"], "isolated_margin": [0.0, 0.0, 400.0, 0.0]}),
        accounts=pl.DataFrame({"account_id": [1, 2, 3, 4], "wallet_balance": [10_000.0, 2_250.0, 500.0, 1_000.0]})))
    for k in ("account_id", "wallet", "pos_start", "pos_account", "pos_symbol", "size", "entry", "isolated",
              "isolated_margin", "leverage"):
        assert np.array_equal(getattr(live.book, k), getattr(want, k)), k
    got = Engine(live.book, backend="cpu").revalue().accounts
    assert got.equals(Engine(want, backend="cpu").revalue().accounts)


def test_fills_average_the_entry_and_realise_pnl_by_decimal_arithmetic():
    live = LiveBook(Book.from_frames(**tiny_frames()))
    fills = [(0.25, 62_000.0), (-0.5, 63_000.0), (-0.5, 61_500.0), (0.3, 60_100.0)]  # add, reduce, cross zero, add
    size, entry, wallet = Decimal("0.5"), Decimal("58000"), Decimal("10000")
    for qty, price in fills:
        live.apply([{"type": "fill", "account_id": 1, "symbol": "BTCUSDT", "qty": qty, "price": price, "fee": 1.5}])
        q, p = Decimal(str(qty)), Decimal(str(price))
        if size != 0 and (size > 0) != (q > 0):
            closed = min(abs(q), abs(size)) * (1 if size > 0 else -1)
            wallet += closed * (p - entry)
            entry = p if abs(q) > abs(size) else entry
        else:
            entry = (size * entry + q * p) / (size + q)
        size += q
        wallet -= Decimal("1.5")
        b = live.book
        i = int(np.flatnonzero((b.pos_account == 0) & (b.pos_symbol == 0))[0])
        assert b.size[i] == pytest.approx(float(size), rel=1e-12)
        assert b.entry[i] == pytest.approx(float(entry), rel=1e-12)
        assert b.wallet[0] == pytest.approx(float(wallet), rel=1e-12)


def test_a_bad_update_is_refused_with_the_book_rule_and_changes_nothing():
    live = LiveBook(Book.from_frames(**tiny_frames()))
    before = {k: np.copy(getattr(live.book, k)) for k in ("wallet", "size", "entry", "isolated_margin")}
    applied = live.apply([
        {"type": "position", "account_id": 1, "symbol": "BTCUSDT", "size": 0.7, "entry_price": -3.0, "_source": "u:1"},
        {"type": "position", "account_id": 3, "symbol": "ETHUSDT", "margin_mode": "isolated", "size": 1.0,
         "entry_price": 3000.0, "isolated_margin": 0.0, "_source": "u:2"},
        {"type": "balance", "account_id": 77, "delta": 5.0, "_source": "u:3"},
        {"type": "fill", "account_id": 2, "symbol": "XRP", "qty": 1, "price": 1, "_source": "u:4"},
        {"type": "balance", "account_id": 2, "delta": 1e300, "_source": "u:5"},
        {"type": "teleport", "account_id": 2, "_source": "u:6"},
        {"type": "fill", "account_id": 1, "symbol": "BTCUSDT", "qty": -0.1, "price": 60_000.0,
         "isolated_margin": "lots", "_source": "u:7"},  # refused after its PnL was worked out
    ])
    reasons = dict((u["_source"], why) for u, why in applied.rejected)
    assert applied.applied == 0 and len(reasons) == 7
    assert "isolated_margin must be a number, got 'lots'" in reasons["u:7"]
    assert "positions.entry_price: must be finite and > 0" in reasons["u:1"]
    assert "positions.isolated_margin: isolated positions need isolated_margin > 0" in reasons["u:2"]
    assert "account_id 77 is not an account of the book" in reasons["u:3"]
    assert "symbol must be a symbol of the book" in reasons["u:4"]
    assert "accounts.wallet_balance: |wallet_balance| must be in [1e-12, 1e+15] or 0" in reasons["u:5"]
    assert "type must be one of" in reasons["u:6"]
    assert reasons["u:1"].startswith("u:1 (position: account_id=1, symbol='BTCUSDT') refused")
    for k, v in before.items():
        assert np.array_equal(getattr(live.book, k), v), k


def test_a_good_update_beside_a_bad_one_still_applies():
    live = LiveBook(Book.from_frames(**tiny_frames()))
    applied = live.apply([{"type": "balance", "account_id": 1, "delta": float("nan")},
                          {"type": "balance", "account_id": 2, "delta": 100.0}])
    assert applied.applied == 1 and len(applied.rejected) == 1
    assert "accounts.wallet_balance: must be finite" in applied.rejected[0][1]
    assert live.book.wallet.tolist() == [10_000.0, 2_100.0, 500.0]


class _SeparateMemoryBackend(CpuBackend):
    """The cpu kernels with a device memory of their own (every upload and download copies),
    as on a GPU: the monitor must send every update to the device, never rely on sharing."""

    name = "separate-memory"

    def asarray(self, a, dtype=None):
        return np.array(a, dtype=dtype, copy=True, order="C")

    def to_host(self, a):
        return np.array(a, copy=True)


def _strict_stand_in():
    from gpurisk.parity import StrictStandInBackend

    return StrictStandInBackend()


@pytest.mark.parametrize("device", [_SeparateMemoryBackend, _strict_stand_in], ids=["separate-memory", "strict"])
def test_updates_reach_a_device_with_its_own_memory(device):
    """Every step's results, on a backend whose memory is its own (and on the strict stand-in,
    whose arrays keep CuPy's rules), are a fresh cpu revaluation's bits."""
    book = gpurisk.synthetic_book(600, seed=9)
    mon = Monitor(Engine(book, backend=device()), adl_top=3, subset_share=1.0)
    rng = np.random.default_rng(1)
    next_account = [10**9]
    for step in range(40):
        s = int(rng.integers(book.n_symbols))
        mon.inbox.put_mark(book.symbols[s], float(mon.marks[s] * np.exp(rng.normal(0, 0.03))))
        for _ in range(3):
            u = _random_update(rng, mon.book, next_account)
            if u["type"] in ("fill", "balance") or step % 4 == 0:  # mostly in-place updates
                mon.inbox.put_update(u)
        mon.step()
        # an independent full revaluation of the monitor's book on the plain cpu backend
        want = Engine(mon.book, backend="cpu").revalue(mon.marks, rank=False)
        got = mon.results
        for whole, part in ((want.account_margin, got.account_margin), (want.position_risk, got.position_risk)):
            for k in vars(whole):
                assert np.array_equal(_bits(getattr(whole, k)), _bits(getattr(part, k))), (step, k)


def test_in_a_large_batch_only_the_update_that_breaks_a_rule_is_refused():
    live = LiveBook(Book.from_frames(**tiny_frames()))
    updates = [{"type": "balance", "account_id": 2, "delta": 1.0, "_source": f"b:{k}"} for k in range(50)]
    # the first fill leaves an entry notional of 6e14 (allowed), the second 1.2e15 (over the limit)
    updates[10:10] = [{"type": "fill", "account_id": 3, "symbol": "BTCUSDT", "qty": 1e10, "price": 60_000.0,
                       "_source": "f:1"},
                      {"type": "fill", "account_id": 3, "symbol": "BTCUSDT", "qty": 1e10, "price": 60_000.0,
                       "_source": "f:2"}]
    applied = live.apply(updates)
    assert [u["_source"] for u, _ in applied.rejected] == ["f:2"]
    assert "entry notional" in applied.rejected[0][1]
    b = live.book
    assert b.wallet[1] == 2_050.0
    i = int(np.flatnonzero((b.pos_account == 2) & (b.pos_symbol == 0))[0])
    assert b.size[i] == 1e10 and applied.applied == 51


def test_splice_equals_delete_then_insert():
    from gpurisk.book_updates import _splice

    rng = np.random.default_rng(0)
    for _ in range(200):
        old = rng.normal(size=int(rng.integers(0, 30)))
        dels = np.unique(rng.integers(0, max(old.size, 1), size=int(rng.integers(0, 5)))) if old.size else np.empty(0, np.int64)
        before = np.sort(rng.integers(0, old.size + 1, size=int(rng.integers(0, 5))))
        values = rng.normal(size=before.size)
        kept = np.delete(old, dels)
        want = np.insert(kept, before - np.searchsorted(dels, before), values)
        assert np.array_equal(_splice(old, dels.astype(np.int64), before.astype(np.int64), values), want)


def test_a_fill_leaving_only_rounding_dust_closes_the_position():
    live = LiveBook(Book.from_frames(**tiny_frames()))  # account 2: BTCUSDT -0.1
    assert 0.3 - 0.1 - 0.2 != 0  # the dust binary floats leave
    live.apply([{"type": "fill", "account_id": 2, "symbol": "BTCUSDT", "qty": -0.2, "price": 61_000.0}])
    applied = live.apply([{"type": "fill", "account_id": 2, "symbol": "BTCUSDT", "qty": 0.1, "price": 60_000.0},
                          {"type": "fill", "account_id": 2, "symbol": "BTCUSDT", "qty": 0.2, "price": 60_000.0}])
    assert applied.rejected == [] and applied.rebuilt
    assert not np.any((live.book.pos_account == 1) & (live.book.pos_symbol == 0))  # closed, no dust left


def test_free_rows_change_no_event():
    """The same stream with free rows (positions opened and closed in place, statuses moved
    with their rows) and without (every open or close splices the book): the same events."""
    book = gpurisk.synthetic_book(1200, seed=8)
    runs = []
    for slack in (Slack(every=8, free=2), None):
        mon = Monitor(Engine(book, backend="cpu"), adl_top=3, subset_share=0.5, slack=slack)
        rng = np.random.default_rng(21)
        next_account = [10**9]
        events = mon.start()
        for step in range(80):
            s = int(rng.integers(book.n_symbols))
            mon.inbox.put_mark(book.symbols[s], float(mon.marks[s] * np.exp(rng.normal(0, 0.04))))
            for _ in range(int(rng.integers(0, 6))):
                mon.inbox.put_update(_random_update(rng, mon.book, next_account))
            events += mon.step()
        runs.append(events)
    with_slack, without = runs
    # the summary's layout-dependent figures aside (rows revalued; the deficit's block sums)
    drop = {"positions_revalued", "deficit", "mode", "emitted_time", "received_time", "tick_time"}
    strip = lambda evs: [{k: v for k, v in e.items() if k not in drop} for e in evs]  # noqa: E731
    assert strip(with_slack) == strip(without)
    assert sum(e["type"] == "liquidation" for e in without) > 0
    assert [e["deficit"] for e in with_slack if e["type"] == "revaluation"] == pytest.approx(
        [e["deficit"] for e in without if e["type"] == "revaluation"], rel=1e-12, abs=1e-9)


def _strict_json_reference(event) -> str:
    """An event as strict JSON, every non-finite number null: cleaned copy, then dumped."""
    import json
    import math

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(event), allow_nan=False, separators=(",", ":"))


_json_leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(), st.text(max_size=5),
                         st.sampled_from([float("nan"), float("inf"), -float("inf"), -0.0, 1e300]))
_json_events = st.dictionaries(st.text(max_size=4), st.recursive(
    _json_leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12), max_size=6)


@settings(max_examples=300, deadline=None)
@given(_json_events)
def test_event_json_is_the_strict_json_of_the_cleaned_event(event):
    from gpurisk.sinks import event_json

    assert event_json(event) == _strict_json_reference(event)


def test_the_monitor_runs_and_refuses_a_bad_update_without_polars():
    """A GPU machine may carry NumPy and CuPy only: the monitor steps, applies good updates
    and words a refusal with the rule's column and limits, without importing Polars."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['polars'] = None\n"
            "import gpurisk\n"
            "from gpurisk.monitor import Monitor\n"
            "import time\n"
            "from gpurisk.streams import Batch, PendingTick\n"
            "book = gpurisk.synthetic_book(300, seed=1)\n"
            "mon = Monitor(gpurisk.Engine(book, backend='cpu'))\n"
            "mon.start()\n"
            "a = int(book.account_id[0])\n"
            "tick = PendingTick(float(book.mark_price[0]) * 0.9, None, time.monotonic(), time.time() * 1e3)\n"
            "batch = Batch(marks={0: tick}, updates=[\n"
            "    {'type': 'balance', 'account_id': a, 'delta': 5.0, '_source': 'u:1'},\n"
            "    {'type': 'balance', 'account_id': a, 'delta': 1e300, '_source': 'u:2'}])\n"
            "events = mon.step(batch)\n"
            "refused = [e for e in events if e['type'] == 'rejected']\n"
            "print(len(refused), refused[0]['reason'] if refused else '')\n"
            "print(float(mon.resident.wallet[0]) == float(book.wallet[0]) + 5.0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()
    assert first.startswith("1 u:2 (balance: account_id=") and "accounts.wallet_balance: must be finite, and 0 or " \
        "in [1e-12, 1e+15]" in first, first
    assert second == "True"
