"""Continuous monitoring: a resident book revalued on every batch of mark-price ticks and kept
current with position and balance updates, emitting what changed as events.

>>> mon = Monitor(Engine(book, venue="binance"), sinks=[JsonLinesSink(sys.stdout)])
>>> mon.start()         # the state it starts from: accounts not healthy, ADL heads
>>> mon.inbox.put_mark("BTCUSDT", 61_000.0)
>>> mon.step()          # one revaluation of what arrived; returns its events

Each ``step`` takes what the inbox holds (the newest mark per symbol, the updates in order),
applies the updates (gpurisk.book_updates), revalues and compares with the previous
revaluation:

- ``account_status``: an account's status moved (healthy, margin_call, liquidatable,
  bankrupt, either way), with its margin ratio, equity and maintenance margin;
- ``liquidation``: a position entered liquidation (liquidatable or bankrupt), with its
  liquidation and bankruptcy prices;
- ``adl_head``: the first ``adl_top`` places of an ADL queue (symbol, side) changed: accounts,
  sizes, scores, ranks and lights;
- ``revaluation``: one per step: the uncovered deficit at the current marks (what bankrupt
  accounts and isolated positions owe beyond their collateral), statuses counted, what the
  step covered;
- ``rejected``: a tick or update refused, with the reason (the book is unchanged by it).

A book whose money is not all USDT (inverse contracts: a wallet per (account, settle asset),
README "Inverse contracts") labels its money: ``account_status`` and ``liquidation`` events
carry the ``asset`` of the wallet, and ``revaluation`` events the deficit per asset
(``deficit_by_asset``; ``deficit`` is null when there are several: money of different assets
is never added).

A pooled-collateral venue (README "Multi-asset collateral") reports the pool: one
``account_status`` event per account with the pool's ratio, equity and maintenance margin in the
margin currency (``margin_currency``, ``pooled``), cross positions' pooled liquidation and
bankruptcy prices, and the bankrupt pools' deficit in the margin currency (``pooled_deficit``).
A step's touched-accounts subset holds every row (wallet) of a touched account's pool, so each
pool is summed over the same rows in the same order as a full revaluation. The collateral
table's index prices stay fixed; ticks move marks only.

The resident layout keeps free rows (gpurisk/live_layout.py): positions open and close by
moving a few rows in place, and ``book`` is the current book without them.

Where a step's ticks move only some symbols, only the accounts holding them are revalued
(every position of those accounts, so each account's sums run over the same positions in the
same order as a full revaluation: the same bits). The ADL queues are not fully ranked on each
step: their heads are selected (the same first places as the full ranking, tied by account
id); ``Monitor.risk(rank=True)`` ranks everything on demand.
"""

from __future__ import annotations

import collections
import itertools
import math
import time
from types import SimpleNamespace

import numpy as np

from .collateral import pool_margin, pooled_prices, pooled_prices_of
from .adl import AdlQueues, adl_score, queue_heads, uncovered_deficit
from .book import Book
from .book_updates import LiveBook, writable, writable_copy
from .live_layout import Slack, live_rows
from .engine import Engine, Risk
from .liquidation import liquidation_prices, position_risk
from .margin import account_margin, position_margin
from .schema import SIDES, STATUSES
from .streams import Inbox

LIQUIDATABLE = STATUSES.index("liquidatable")
UNKNOWN = -1  # a status not yet reported (at start, a new account or position)
#: a step revalues only the touched accounts when they hold at most this share of the positions.
#: On the cpu backend gathering and scattering them (NumPy, one thread) costs about what it saves
#: at 30% (1M positions: 26 ms either way, bench/RESULTS.md); it pays for steps that touch few
#: accounts (updates between ticks, a thinly held symbol).
SUBSET_SHARE = 0.2
_SUBSET_FIELDS = ("pos_symbol", "size", "entry", "leverage", "isolated", "isolated_margin")


def _wall_ms() -> float:
    return time.time_ns() / 1e6


class Monitor:
    """A resident engine fed by an Inbox of ticks and updates (see the module doc).

    ``adl_top``: places of each ADL queue reported in adl_head events. ``subset_share``: see
    SUBSET_SHARE (0 forces full revaluations; the results are identical either way).
    ``sinks``: objects with ``write(events)`` (gpurisk.sinks). ``event_seq``: the first
    sequence number (a resumed monitor continues its predecessor's)."""

    def __init__(self, engine: Engine, sinks=(), adl_top: int = 5, subset_share: float = SUBSET_SHARE,
                 inbox: Inbox | None = None, event_seq: int = 0, latency_window: int = 100_000,
                 slack: Slack | None = Slack()):
        if len(engine.chunks) != 1:
            raise ValueError("the monitor needs the whole book resident in one pass (an Engine without "
                             "chunk_positions); this book is processed in chunks")
        if adl_top < 1:
            raise ValueError(f"adl_top must be >= 1, got {adl_top}")
        if getattr(engine, "portfolio_flags", None) is not None:
            from .portfolio import refuse_portfolio

            # its subset revaluations apply tiered margin
            refuse_portfolio(engine.book, engine.venue, "the monitor")
        self.slack = slack
        if slack is not None:  # a layout with free rows, resident in an engine of its own
            self.live = LiveBook(engine.book, slack)
            engine = Engine(self.live.book, venue=engine.venue, backend=engine.backend)
        else:
            if not writable(engine.book):  # e.g. arrays Polars shares read-only: updates need their own
                engine = Engine(writable_copy(engine.book), venue=engine.venue, backend=engine.backend)
            self.live = LiveBook(engine.book)
        self.engine = engine
        self.venue, self.backend = engine.venue, engine.backend
        self.pooled = engine.pooled  # README "Multi-asset collateral": accounts revalued as whole pools
        self.marks = engine.book.mark_price.astype(np.float64).copy()
        self.inbox = inbox or Inbox(engine.book)
        self.sinks = list(sinks)
        self.adl_top = adl_top
        self.subset_share = subset_share
        self.seq = event_seq
        self.stats = collections.Counter()
        self.latencies_ms = collections.deque(maxlen=latency_window)
        self.updates_applied = 0
        self.source_lines: dict[str, int] = {}  # per JSON-lines input, the last update line a step took
        self._count_symbol_positions()
        self._revalue_full()
        # what consumers were told: nothing yet (-1: unknown; start() or the first step says all)
        self._acc_status = np.full(self.resident.n_accounts, UNKNOWN, dtype=np.int8)
        self._pos_status = np.full(self.resident.n_positions, UNKNOWN, dtype=np.int8)
        self._heads = [[] for _ in range(2 * self.resident.n_symbols)]  # per queue, the last adl_head queue told

    # ------------------------------------------------------------------ state

    @property
    def resident(self) -> Book:
        """The resident layout (with free rows where slack is reserved)."""
        return self.live.book

    @property
    def book(self) -> Book:
        """The current book without free rows (built on demand where slack is reserved)."""
        return self.live.compact()

    def live_rows(self) -> np.ndarray:
        """The resident rows holding positions, in storage order (row k of ``book``)."""
        return live_rows(self.resident)

    def _h(self, a) -> np.ndarray:
        return self.backend.to_host(a)

    def _count_symbol_positions(self) -> None:
        b = self.resident
        self._symbol_positions = np.bincount(b.pos_symbol[b.size != 0], minlength=b.n_symbols)

    def risk(self, rank: bool = True) -> Risk:
        """The book's full results at the current marks (a fresh revaluation of ``book``, free
        rows left out; rank=True ranks every ADL queue): for a snapshot of the results, or to
        check the monitor."""
        if self.slack is None:
            return self.engine.revalue(self.marks, rank=rank)
        return Engine(self.book, venue=self.venue, backend=self.backend).revalue(self.marks, rank=rank)

    @property
    def results(self) -> Risk:
        """The resident results of the last step (ADL scores, no full ranking). Steps skip
        the liquidation prices (only positions entering liquidation need theirs); they are
        computed here, for every position, when asked for."""
        if self._liq_stale:
            self._liquidation_prices(np.arange(self.resident.n_positions, dtype=np.int64))
            self._liq_stale = False
        if self.slack is None:
            return self._risk
        return _live_risk(self._risk, self.book, self.live_rows(), self._h)

    def _liquidation_prices(self, positions: np.ndarray) -> None:
        r = self._risk
        liquidation_prices(self.backend, self.engine.device, r.position_margin, r.account_margin, self.venue,
                           positions, r.position_risk.liq_price)
        if self.pooled:  # cross positions: against their pool, as the revaluation's pooled_prices
            pooled_prices_of(self.backend, self.engine.device, self.engine.pools, self.backend.asarray(self.marks),
                             r.position_margin, r.account_margin, r.pool_margin, r.position_risk, self.venue,
                             positions)

    # ------------------------------------------------------------------ revaluation

    def _revalue_full(self) -> None:
        risk = getattr(self, "_risk", None)
        self._risk = self.engine.revalue(self.marks, out=risk, rank=False, liq_price=False)
        self._liq_stale = True

    def _revalue_accounts(self, accounts: np.ndarray) -> None:
        """Revalue the accounts ``accounts`` (sorted indices) and all their positions, and
        write their results into the resident ones."""
        b, be, xp, dev = self.resident, self.backend, self.backend.xp, self.engine.device
        starts, ends = b.pos_start[accounts], b.pos_start[accounts + 1]
        counts = ends - starts
        sub_start = np.zeros(accounts.size + 1, dtype=np.int64)
        np.cumsum(counts, out=sub_start[1:])
        pos = np.repeat(starts - sub_start[:-1], counts) + np.arange(int(sub_start[-1]), dtype=np.int64)
        pos_d, acc_d = be.asarray(pos), be.asarray(accounts)
        sub = SimpleNamespace(
            n_accounts=int(accounts.size), n_positions=int(pos.size), pos_start=be.asarray(sub_start),
            pos_account=be.asarray(np.repeat(np.arange(accounts.size, dtype=np.int32), counts)),
            wallet=xp.take(dev.wallet, acc_d),
            **{k: getattr(dev, k) for k in ("mark_price", "contract_size", "tier_start", "tier_floor", "tier_mmr",
                                            "tier_cum", "tier_root_bound", "tier_max_leverage", "tick_size",
                                            "inverse")},
            **{k: xp.take(getattr(dev, k), pos_d) for k in _SUBSET_FIELDS})
        mark = be.asarray(self.marks)
        pm = position_margin(be, sub, mark, self.venue)
        am = account_margin(be, sub, pm, self.venue)
        pool = None
        if self.pooled:  # ``accounts`` holds whole pools (_touched_accounts): each summed as in the full pass
            whole = self.engine.pools
            ids = b.account_id[accounts]
            first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if ids.size else np.zeros(0, np.int64)
            sub_pools = SimpleNamespace(pool_start=be.asarray(np.append(first, ids.size).astype(np.int64)),
                                        row_asset=xp.ascontiguousarray(xp.take(whole.row_asset, acc_d)),
                                        n_pools=int(first.size), **{k: getattr(whole, k) for k in (
                                            "index_price", "coll_start", "coll_floor", "coll_ratio")})
            pool = pool_margin(be, sub_pools, am, self.venue)
        pr = position_risk(be, sub, mark, pm, am, self.venue)
        if pool is not None:
            pooled_prices(be, sub, sub_pools, mark, pm, am, pool, pr, self.venue)
        score = adl_score(be, sub, mark, pm, pr, self.venue)
        risk = self._risk
        if pool is not None:
            for k in vars(risk.pool_margin):
                getattr(risk.pool_margin, k)[acc_d] = getattr(pool, k)
        for whole, part in ((risk.position_margin, pm), (risk.position_risk, pr)):
            for k in vars(whole):
                getattr(whole, k)[pos_d] = getattr(part, k)
        for k in vars(risk.account_margin):
            getattr(risk.account_margin, k)[acc_d] = getattr(am, k)
        risk.adl.score[pos_d] = score
        risk.mark = self.marks.copy()
        be.synchronize()

    def _touched_accounts(self, symbols: list[int], extra: np.ndarray) -> np.ndarray:
        b = self.resident
        flag = np.zeros(b.n_accounts, dtype=bool)
        if symbols:
            moved = np.zeros(b.n_symbols, dtype=bool)
            moved[symbols] = True
            flag[b.pos_account[moved[b.pos_symbol]]] = True
        flag[extra] = True
        if self.pooled and flag.any():  # a pooled venue: every row of a touched account's pool
            ids = b.account_id
            flag = np.isin(ids, ids[flag])
        return np.flatnonzero(flag)

    # ------------------------------------------------------------------ ADL heads

    def _adl_heads(self) -> list[tuple]:
        """Per queue (symbol, side): the positions of its first adl_top places, in the order of
        the full ranking (score descending, NaN last, ties by index = account id): one pass
        over the positions keeping each block's best places (kernels/adl.cu,
        queue_head_candidates), then a merge of the candidates."""
        dev = self.engine.device
        found = queue_heads(self.backend, dev.pos_symbol, dev.size, self._risk.adl.score, 2 * self.resident.n_symbols,
                            self.adl_top)
        self._queue_count, self._queue_abs_size = found.count, found.abs_size
        self._symbol_positions = found.count.reshape(-1, 2).sum(axis=1)
        return found.heads

    def _head_lights(self, heads) -> list[np.ndarray]:
        """Ranks and lights of the head places (kernels/adl.cu head_lights), from each queue's
        count and total |size| (taken by the _adl_heads pass that found ``heads``)."""
        b, be = self.resident, self.backend
        lengths = [len(h) for h in heads]
        flat = np.array([i for h in heads for i in h], dtype=np.int64)
        rank = np.concatenate([np.arange(1, k + 1) for k in lengths] or [np.empty(0, np.int64)]).astype(np.int64)
        group_of = np.repeat(np.arange(len(heads)), lengths)
        count = self._queue_count[group_of].astype(np.int64)
        by_size = int(self.venue.lights == "size")
        if by_size:  # running |size| from the front, as the full ranking's scan starts each queue
            sizes = np.abs(b.size)
            cum = np.concatenate([np.cumsum(sizes[list(h)]) if h else np.empty(0) for h in heads] or [np.empty(0)])
            total = self._queue_abs_size[group_of]
        else:
            cum = total = np.zeros(flat.size)
        lights = be.asarray(np.empty(flat.size, dtype=np.int8))
        if flat.size:
            be.launch("head_lights", int(flat.size), be.asarray(rank), be.asarray(count), be.asarray(cum),
                      be.asarray(total), by_size, lights)
        return self._h(lights), rank

    # ------------------------------------------------------------------ one step

    def start(self) -> list[dict]:
        """Emit the state at the start (a consumer's baseline): every account not healthy
        (``from`` null), every position in liquidation, the head of every ADL queue, and a
        ``revaluation`` event of mode ``initial``. Without it the first step says the same."""
        from .streams import Batch

        events = self._changes()
        events.append(self._summary(Batch(), "initial", self.resident.n_positions, []))
        self._emit(events, Batch())
        return events

    def step(self, batch=None) -> list[dict]:
        """Take what the inbox holds (or ``batch``, an Inbox.take result), apply and revalue;
        emit and return the events. Returns [] when there was nothing to do."""
        batch = batch if batch is not None else self.inbox.take(timeout=0)
        if batch is None or batch.empty:
            return []
        events: list[dict] = [self._rejected(u, why) for u, why in batch.rejected]
        applied = None
        for u in batch.updates:
            name, _, line = str(u.get("_source", "")).rpartition(":")
            if name and line.isdigit():
                self.source_lines[name] = max(self.source_lines.get(name, 0), int(line))
        if batch.updates:
            applied = self.live.apply(batch.updates)
            events += [self._rejected(u, why) for u, why in applied.rejected]
            self.updates_applied += applied.applied
            if applied.rebuilt:
                self._rebuild(applied)
            else:
                self._pos_status = applied.remap_positions(self._pos_status, UNKNOWN)  # rows moved in place
                self._push_in_place(applied)
            # (with slack the resident engine's queue tables are not kept: steps select heads
            # from sizes, and risk() ranks the compact book)
            if applied.flipped and not applied.rebuilt and self.slack is None:
                self._set_engine_groups()
        moved = []
        for s, tick in batch.marks.items():
            if self.marks[s] != tick.price:
                self.marks[s] = tick.price
                moved.append(s)
        self.resident.mark_price[:] = self.marks  # the book carries the current marks (snapshots)
        extra = applied.accounts if applied is not None and not applied.rebuilt else np.empty(0, np.int64)
        full = applied is not None and applied.rebuilt
        mode = "none"
        if full or moved or extra.size:
            limit = self.subset_share * self.resident.n_positions
            # the moved symbols' positions alone may decide it: then no accounts are gathered
            full = full or int(self._symbol_positions[moved].sum()) > limit
            accounts = None if full else self._touched_accounts(moved, extra)
            starts = self.resident.pos_start
            touched = None if full else int((starts[accounts + 1] - starts[accounts]).sum())
            if full or touched > limit:
                self._revalue_full()
                mode, touched = "full", self.resident.n_positions
            elif accounts.size:
                self._revalue_accounts(accounts)
                mode = "accounts"
            events += self._changes()
        else:
            touched = 0
        events.append(self._summary(batch, mode, touched, moved))
        self._emit(events, batch)
        return events

    def _rebuild(self, applied) -> None:
        """A new layout: a new resident engine; previous statuses carried over (new accounts
        and positions start as healthy, so a new position already past liquidation reports)."""
        self._acc_status = applied.remap_accounts(self._acc_status, UNKNOWN)
        self._pos_status = applied.remap_positions(self._pos_status, UNKNOWN)
        self.engine = Engine(applied.book, venue=self.venue, backend=self.backend)
        self._risk = None
        self._count_symbol_positions()

    def _push_in_place(self, applied) -> None:
        """Updates written into the host book reach the device arrays (on the cpu backend
        they are the same arrays)."""
        b, be, dev = self.resident, self.backend, self.engine.device
        moved = applied.moved_rows()
        if moved.size and dev.pos_start is not b.pos_start:
            dev.pos_start[...] = be.asarray(b.pos_start)
        for host, idx, names in ((b, applied.positions, ("size", "entry", "isolated_margin", "leverage")),
                                 (b, moved, ("pos_account", "pos_symbol", "size", "entry", "isolated",
                                             "isolated_margin", "leverage")),
                                 (b, applied.accounts, ("wallet",))):
            if not idx.size:
                continue
            for k in names:
                d = getattr(dev, k)
                if d is not getattr(host, k):
                    d[be.asarray(idx)] = be.asarray(getattr(host, k)[idx])

    def _set_engine_groups(self) -> None:
        """Positions changed side in place: the engine's ADL queue membership follows."""
        dev = self.engine.device
        dev.group, dev.group_start = self.backend.queue_groups(dev.pos_symbol, dev.size, dev.n_groups)

    def _changes(self) -> list[dict]:
        b, risk = self.resident, self._risk
        am, pr = risk.account_margin, risk.position_risk
        events = []
        status = self._h(am.status)
        if self.pooled:
            events += self._pool_changes(status)
        # a healthy account nobody was told about yet is not news
        if self.pooled:
            moved = np.empty(0, np.int64)
        else:  # the few rows that differ, then those of them that are news
            moved = np.flatnonzero(status != self._acc_status)
            moved = moved[~((self._acc_status[moved] == UNKNOWN) & (status[moved] == 0))]
        if moved.size:
            ratio, equity, maint = (self._h(x)[moved] for x in (am.ratio, am.equity, am.maint))
            for k, a in enumerate(moved.tolist()):
                events.append({"type": "account_status", "account_id": int(b.account_id[a]),
                               "from": STATUSES[self._acc_status[a]] if self._acc_status[a] >= 0 else None,
                               "to": STATUSES[status[a]],
                               "margin_ratio": _num(ratio[k]), "equity": float(equity[k]),
                               "maint_margin": float(maint[k]), **self._asset_of(a)})
        self._acc_status = status.copy()
        pstatus = self._h(pr.status)
        entering = np.flatnonzero((pstatus >= LIQUIDATABLE) & (self._pos_status < LIQUIDATABLE))
        entering = entering[b.size[entering] != 0]
        if entering.size:
            if self._liq_stale:
                self._liquidation_prices(entering)
            liq, bkr, ratio = (self._h(x)[entering] for x in (pr.liq_price, pr.bankruptcy_price, pr.ratio))
            for k, i in enumerate(entering.tolist()):
                events.append({"type": "liquidation", "account_id": int(b.account_id[b.pos_account[i]]),
                               "symbol": b.symbols[b.pos_symbol[i]], "margin_mode": ("cross", "isolated")[b.isolated[i]],
                               "side": SIDES[int(b.size[i] < 0)], "size": float(b.size[i]),
                               "mark_price": float(self.marks[b.pos_symbol[i]]), "status": STATUSES[pstatus[i]],
                               "margin_ratio": _num(ratio[k]), "liq_price": _num(liq[k]),
                               "bankruptcy_price": _num(bkr[k]) if bkr[k] > 0 else None,
                               **self._asset_of(b.pos_account[i]), **({"pooled": True} if self.pooled else {})})
        self._pos_status = pstatus.copy()
        # a queue's head is news when what its event says changed (rows move in place and on a
        # new layout: positions are compared by what they are, not by row)
        heads = self._adl_heads()
        lights, rank = self._head_lights(heads)
        # the head places' figures gathered at once (only their scores leave the device)
        flat = np.array([i for h in heads for i in h], dtype=np.int64)
        score = self._h(risk.adl.score[self.backend.asarray(flat)]) if flat.size else np.empty(0)
        places = iter(zip(rank.tolist(), b.account_id[b.pos_account[flat]].tolist(), b.isolated[flat].tolist(),
                          b.size[flat].tolist(), score.tolist(), lights.tolist()))
        for g, head in enumerate(heads):
            queue = [{"rank": r, "account_id": a, "margin_mode": ("cross", "isolated")[iso], "size": q,
                      "adl_score": _num(sc), "adl_lights": light}
                     for r, a, iso, q, sc, light in itertools.islice(places, len(head))]
            if queue != self._heads[g]:
                events.append({"type": "adl_head", "symbol": b.symbols[g // 2], "side": SIDES[g % 2], "queue": queue})
                self._heads[g] = queue
        return events

    def _pool_starts(self) -> np.ndarray:
        """Each pool's first row (rows of one account_id, sorted by asset), and the end."""
        ids = self.resident.account_id
        return np.append(np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]), ids.size).astype(np.int64) \
            if ids.size else np.zeros(1, np.int64)

    def _pool_changes(self, status: np.ndarray) -> list[dict]:
        """account_status events of a pooled venue: one per account (pool) whose status moved,
        with the pool's figures in the margin currency. Every row of a pool carries the pool's
        status; what was told is kept per row (a wallet opened later starts unknown), so the
        pool's told status is the known one among its rows."""
        pool = self.pool_margin_host()
        first = self._pool_starts()[:-1]
        told = np.maximum.reduceat(self._acc_status, first) if first.size else np.empty(0, np.int8)
        now = status[first]
        moved = np.flatnonzero((now != told) & ~((told == UNKNOWN) & (now == 0)))
        ratio = self._h(self._risk.account_margin.ratio)
        ids = self.resident.account_id
        return [{"type": "account_status", "account_id": int(ids[first[p]]),
                 "from": STATUSES[told[p]] if told[p] >= 0 else None, "to": STATUSES[now[p]],
                 "margin_ratio": _num(ratio[first[p]]), "equity": float(pool["pool_equity"][first[p]]),
                 "maint_margin": float(pool["pool_maint"][first[p]]),
                 "close_fee": float(pool["pool_close_fee"][first[p]]),
                 "margin_currency": self.venue.margin_currency, "pooled": True} for p in moved.tolist()]

    def pool_margin_host(self) -> dict[str, np.ndarray]:
        """The last step's pool figures per accounts row (a pooled venue), as host arrays."""
        return {k: self._h(v) for k, v in vars(self._risk.pool_margin).items()}

    def pooled_deficit(self) -> dict:
        """A pooled venue's uncovered deficit: ``deficit``, what bankrupt pools owe beyond their
        collateral in the margin currency (−pool equity, summed once per account whose pool holds
        cross positions and has pool equity < 0, in account order), and
        ``deficit_isolated_by_asset``: isolated positions with equity < 0, per settle asset as
        for any venue (an isolated position's margin is its own, in its asset, outside the
        pool; not converted)."""
        b = self.resident
        first = self._pool_starts()
        pool_equity = self.pool_margin_host()["pool_equity"]
        n_cross = self._h(self._risk.account_margin.n_cross)
        rows = first[:-1]
        cross = (np.add.reduceat(n_cross.astype(np.int64), rows) > 0) if rows.size else np.zeros(0, bool)
        equity = pool_equity[rows] if rows.size else np.zeros(0)
        deficit = 0.0 - float(np.add.reduce(equity, where=cross & (equity < 0)))  # 0.0 - : no -0.0
        pos_equity = self._h(self._risk.position_risk.equity)
        iso = (b.isolated == 1) & (pos_equity < 0)
        pos_asset = b.settle_asset[b.pos_symbol]
        return {"deficit": deficit, "margin_currency": self.venue.margin_currency,
                "deficit_isolated_by_asset": {a: 0.0 - float(np.add.reduce(pos_equity, where=iso & (pos_asset == k)))
                                              for k, a in enumerate(b.assets)}}

    def deficit(self) -> float:
        """What bankrupt units owe beyond their collateral at the current marks: −equity summed
        over cross accounts (with cross positions) and isolated positions with equity < 0.
        Summed in fixed blocks (kernels/adl.cu uncovered_blocks), the blocks in block order:
        the same bits on every backend and thread count. A book with wallets in several
        assets: ``deficit_by_asset`` (ValueError here)."""
        if self.pooled:
            raise ValueError("a pooled venue's deficit is in its margin currency beside isolated positions' per "
                             "asset: use pooled_deficit()")
        if len(self.resident.assets) > 1:
            raise ValueError(f"the book's wallets are in {', '.join(self.resident.assets)}: money of different assets "
                             "is never added; use deficit_by_asset()")
        am, pr = self._risk.account_margin, self._risk.position_risk
        return uncovered_deficit(self.backend, am.equity, am.n_cross, pr.equity, self.engine.device.isolated)

    def deficit_by_asset(self) -> dict[str, float]:
        """``deficit`` per asset of the wallets (a book with inverse contracts: one per settle
        asset); each asset's sum over its own accounts' rows and isolated positions."""
        b = self.resident
        am, pr = self._risk.account_margin, self._risk.position_risk
        equity, n_cross, pos_equity = self._h(am.equity), self._h(am.n_cross), self._h(pr.equity)
        cross = (n_cross > 0) & (equity < 0)
        iso = (b.isolated == 1) & (pos_equity < 0)
        pos_asset = b.account_asset[b.pos_account]
        return {a: -float(np.add.reduce(equity, where=cross & (b.account_asset == k)))
                - float(np.add.reduce(pos_equity, where=iso & (pos_asset == k))) for k, a in enumerate(b.assets)}

    def _asset_of(self, account: int) -> dict:
        """{"asset": ...} of an account row's wallet where the book's money is not all USDT."""
        b = self.resident
        return {} if b.default_assets else {"asset": b.assets[b.account_asset[account]]}

    def _summary(self, batch, mode: str, touched: int, moved: list) -> dict:
        status = self._h(self._risk.account_margin.status)
        if self.pooled:  # accounts (pools) counted once, not per wallet row
            status = status[self._pool_starts()[:-1]]
        counts = [np.count_nonzero(status == k) for k in range(len(STATUSES))]  # no int8 -> intp copy
        if self.pooled:
            deficit = self.pooled_deficit()
        elif self.resident.default_assets:
            deficit = {"deficit": self.deficit()}
        else:  # money per asset, never added across assets
            by_asset = self.deficit_by_asset()
            deficit = {"deficit": by_asset[self.resident.assets[0]] if len(by_asset) == 1 else None,
                       "deficit_by_asset": by_asset}
        return {"type": "revaluation", "mode": mode, "positions_revalued": int(touched),
                "symbols_moved": [self.resident.symbols[s] for s in moved],
                "ticks": int(sum(t.count for t in batch.marks.values())), "coalesced": int(batch.coalesced),
                "updates": len(batch.updates), **deficit,
                **{f"accounts_{s}": int(c) for s, c in zip(STATUSES, counts)}}

    def _rejected(self, update, why: str) -> dict:
        self.stats["rejected"] += 1
        return {"type": "rejected", "reason": why,
                "update": {k: v for k, v in update.items() if not k.startswith("_")} if isinstance(update, dict) else update}

    def _emit(self, events: list[dict], batch) -> None:
        now_ms = _wall_ms()
        tick_time = batch.tick_time
        received = batch.received_ms
        for e in events:
            e["seq"] = self.seq
            self.seq += 1
            e["tick_time"] = tick_time
            e["received_time"] = received
            e["emitted_time"] = now_ms
        mono = time.monotonic()
        for t in batch.marks.values():
            self.latencies_ms.append((mono - t.first_mono) * 1e3)
        self.stats["steps"] += 1
        self.stats["ticks"] += sum(t.count for t in batch.marks.values())
        self.stats["coalesced"] += batch.coalesced
        self.stats["updates"] += len(batch.updates)
        self.stats["events"] += len(events)
        for sink in self.sinks:
            sink.write(events)

    # ------------------------------------------------------------------ the loop

    def status(self) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {"ticks": self.stats["ticks"], "steps": self.stats["steps"], "events": self.stats["events"],
                "coalesced": self.stats["coalesced"], "updates": self.stats["updates"],
                "rejected": self.stats["rejected"], "ignored": self.inbox.ignored,
                "latency_p50_ms": float(np.percentile(lat, 50)), "latency_p99_ms": float(np.percentile(lat, 99))}

    def run(self, stop, on_idle=None, idle_every: float = 1.0, until_drained: bool = False) -> None:
        """Step until ``stop`` (a threading.Event) is set, or, with ``until_drained``, until every
        source has ended and the inbox is empty. ``on_idle(monitor)`` runs every ``idle_every``
        seconds (status lines, snapshots)."""
        last = time.monotonic()
        while not stop.is_set():
            batch = self.inbox.take(timeout=0.05)
            if batch is not None and not batch.empty:
                self.step(batch)
            elif until_drained and self.inbox.drained():
                break
            if on_idle is not None and time.monotonic() - last >= idle_every:
                last = time.monotonic()
                on_idle(self)
        # What arrived before the stop is still applied: no tick or update is lost at shutdown.
        batch = self.inbox.take(timeout=0)
        if batch is not None and not batch.empty:
            self.step(batch)
        for sink in self.sinks:
            sink.flush()


def _live_risk(risk: Risk, book: Book, rows: np.ndarray, to_host) -> Risk:
    """The resident results on the live rows only (the rows of ``book``), as host arrays."""
    def part(obj, per_position: bool):
        return type(obj)(**{k: to_host(v)[rows] if per_position else to_host(v) for k, v in vars(obj).items()})

    adl = AdlQueues(to_host(risk.adl.score)[rows], None, None, None, None)
    return Risk(book, risk.venue, risk.backend, risk.mark, part(risk.position_margin, True),
                part(risk.account_margin, False), part(risk.position_risk, True), adl, dict(risk.timings),
                pool_margin=None if risk.pool_margin is None else part(risk.pool_margin, False))


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None
