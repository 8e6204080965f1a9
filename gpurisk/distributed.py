"""Scale-out on Dask: sharded books (written and read by gpurisk/shards.py), exact global ADL
ranking, the same answers as one machine.

A **sharded book** is a directory holding the small tables whole and the big ones split by
whole accounts (an account and all its positions are always in the same shard)::

    <dir>/markets.parquet, <dir>/tiers.parquet          whole, read by every shard
    <dir>/shards/shard-00000/{accounts,positions}.parquet
    <dir>/shards/shard-00001/...                        contiguous account_id ranges, in shard order
    <dir>/manifest.json                                 shard names and row counts (checked on read)

``write_sharded(book, dir, n_shards)`` writes one (balanced on accounts + positions),
``read_sharded_book(dir)`` reads it back as one validated :class:`~gpurisk.book.Book`.

**Revaluation** (``revalue_distributed``). Every per-account and per-position figure
(equity, margin, ratio, status, liquidation and bankruptcy prices, ADL score) depends only
on the account, so each worker runs the ordinary single-machine :class:`~gpurisk.Engine` on
its shards, on its own backend (cpu or gpu). Only the ADL ranks and lights need the whole
queue of a (symbol, side). They are computed by a **gather**, not by a distributed merge:

1. each worker returns, per position, its queue id (int32), its ADL score (float64) and,
   for the size-weighted lights rule only, |size| (float64): 20 bytes a position (12 for
   the rank rule). Everything else stays on the worker;
2. the driver concatenates the shards in shard order. Shards hold contiguous account_id
   ranges in shard order, and each shard's positions are in storage order (account_id,
   symbol, margin_mode), so the concatenation *is* the global storage order, and ties in
   score are broken exactly as on one machine;
3. the driver runs the existing :mod:`gpurisk.adl` ranking once on the global arrays
   (``adl_queues``: the order, the dYdX rotation, ranks and lights; backend cpu by default,
   ``rank_backend="gpu"`` on a driver with a GPU), then sends each shard its slice of ranks
   (int32 on the wire) and lights (int8): 5 bytes a position.

Why a gather and not a two-pass rank merge: a merge (sort each shard, then find every
position's place among the other shards' sorted keys, or a sample sort with score splitters)
still moves every key across the network at least once — the same ~16–20 bytes a position
as the gather — plus splitters and prefix counts, in two shuffles. And it cannot give the
same bits for the size-weighted (BitMEX) lights: those divide a running Σ|size| in queue
order, which :func:`gpurisk.scan.segmented_cumsum` adds in a fixed layout of blocks over the
*global* queue order; a distributed prefix sum adds in another order, and a position right
on a 20% step could change colour. The gather runs the very function a single machine runs
on the very same array, so ranks and lights are identical by construction. Volumes: 100M
positions are 2.0 GB gathered (1.2 GB for rank-rule venues) and 0.5 GB sent back; the
driver's ranking is a radix sort plus one pass (see README, "Scale-out on Dask", for the
time budget).

Stress on Dask (``stress_distributed``, re-exported here) is gpurisk/distributed_stress.py;
connecting (``connect``), submitting, gathering all-or-nothing and :class:`DistributedRunError`
(with what a run does when workers die) are gpurisk/distributed_cluster.py. Their names stay
importable from this module.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: Polars is imported where frames are built
    import polars as pl

from .adl import adl_queues, queue_group
from .book import Book, BookError, Problem, read_book
from .distributed_cluster import (DistributedRunError, _cancelled_errors, _dask, _Failed, _gather,  # noqa: F401
                                  _n_workers, _raise_failed, _submit, _task_backend, connect)
from .venue import Venue, get_venue

# Sharded books live in gpurisk/shards.py; their names stay importable from here.
from .shards import (FORMAT, MANIFEST, SHARDS_DIR, _in_shard, _layout_problems, _manifest,  # noqa: F401,E402
                     _shard_frames, is_sharded, read_shard, read_sharded_book, shard_bounds, shard_name,
                     shard_paths, slice_book, split_book, write_sharded)

# Stress on Dask lives in gpurisk/distributed_stress.py; its names stay importable from here.
from .distributed_stress import (_WORKER_BOOKS, _book_symbols, _concat, _load_whole_book,  # noqa: F401,E402
                                 _scenario_blocks, _stress_block, stress_distributed)


def _resolved_venue(venue) -> Venue:
    """``venue`` resolved. A pooled venue (README "Multi-asset collateral") needs no more: shards
    hold whole accounts, so every pool (an account's rows of every asset) is in one shard, and
    each shard carries the whole collateral table."""
    return get_venue(venue)


# ------------------------------------------------------------------ workers' side


@dataclass
class _ShardPart:
    """A revalued shard, held on its worker until its global ranks arrive."""

    index: int
    accounts: object  # polars frames; positions with null ADL ranks and lights until phase 3
    positions: object
    group: np.ndarray
    score: np.ndarray
    abs_size: np.ndarray | None
    meta: dict


class _Resident:
    """One shard's Engine, held on its worker between revaluations (DistributedEngine).

    Dask may still move it to another worker or spill it to disk. It then travels as the
    recipe that loads it (shard path or Book, venue, backend), never as arrays, and the
    receiving task reloads the shard (``engine()``): an Engine's backend state (sort buffers,
    a GPU context) does not pickle, and a shard reloaded from its source is the same shard.
    Unpickling itself does no work, so a source gone missing fails the task that needs it,
    with the error, instead of the transfer."""

    def __init__(self, index: int, source, venue: Venue, backend: str, engine=None, meta: dict | None = None):
        self.index, self.source, self.venue, self.backend_name = index, source, venue, backend
        self._engine, self.meta = engine, meta

    def __reduce__(self):
        return (_Resident, (self.index, self.source, self.venue, self.backend_name, None, self.meta))

    def __sizeof__(self) -> int:
        # What Dask weighs before moving it: the shard's arrays.
        if self._engine is None:
            return 1024
        book = self._engine.book
        return sum(int(v.nbytes) for v in vars(book).values() if isinstance(v, np.ndarray))

    def engine(self):
        if self._engine is None:
            loaded = _load_resident(self.index, self.source, self.venue, self.backend_name)
            if isinstance(loaded, _Failed):
                raise BookError(loaded.problems)
            self._engine, self.meta = loaded._engine, loaded.meta
        return self._engine


def _load_resident(index: int, source, venue: Venue, backend: str):
    """Load a shard (a (root, shard path) pair, or a Book) and upload it into an Engine."""
    from .engine import Engine

    t0 = time.perf_counter()
    try:
        if isinstance(source, Book):
            book = source
        else:
            root, shard = source
            book = read_shard(root, Path(shard))
        engine = Engine(book, venue=venue, backend=_task_backend(backend))
    except BookError as exc:
        return _Failed(exc.problems)
    meta = {"index": index, "n_accounts": book.n_accounts, "n_positions": book.n_positions,
            "first_id": int(book.account_id[0]) if book.n_accounts else None,
            "last_id": int(book.account_id[-1]) if book.n_accounts else None,
            "symbols": book.symbols, "backend": engine.backend.name, "load_seconds": time.perf_counter() - t0,
            "worker": os.getpid()}
    return _Resident(index, source, venue, backend, engine, meta)


def _resident_meta(resident):
    return resident if isinstance(resident, _Failed) else resident.meta


def _revalue_resident(resident, marks, need_size: bool, hook):
    """Phase 1 on a worker: revalue a loaded shard at ``marks`` with its Engine."""
    if isinstance(resident, _Failed):
        return resident
    if hook is not None:
        hook(f"revalue-{resident.index}")
    t0 = time.perf_counter()
    try:
        engine = resident.engine()
        book = engine.book
        risk = engine.revalue(marks, rank=False)  # the driver ranks every shard's queues at once
        accounts, positions = risk.accounts, risk.positions
    except BookError as exc:
        return _Failed(exc.problems)
    score = risk.backend.to_host(risk.adl.score)
    meta = dict(resident.meta, backend=risk.backend.name, seconds=time.perf_counter() - t0,
                kernels=risk.timings["kernels"], worker=os.getpid())
    return _ShardPart(resident.index, accounts, positions, queue_group(np, book.pos_symbol, book.size),
                      np.ascontiguousarray(score, dtype=np.float64),
                      np.abs(book.size) if need_size else None, meta)


def _what_if_resident(resident, orders, rows: np.ndarray, marks):
    """A DistributedEngine's what-if on a worker: the orders of this shard's accounts, their
    rows numbered as in the whole table."""
    if isinstance(resident, _Failed):
        return resident
    from .whatif import what_if

    try:
        return what_if(resident.engine(), orders, marks, rows)
    except BookError as exc:
        return _Failed(exc.problems)


def _revalue_shard(index: int, source, venue: Venue, backend: str, marks, need_size: bool, hook):
    """Phase 1 of a one-shot run: load the shard, revalue it with the ordinary Engine."""
    t0 = time.perf_counter()
    part = _revalue_resident(_load_resident(index, source, venue, backend), marks, need_size, hook)
    if isinstance(part, _ShardPart):
        part.meta["seconds"] = time.perf_counter() - t0
    return part


def _adl_inputs(part):
    """Phase 1b: the only per-position data that travels to the driver."""
    if isinstance(part, _Failed):
        return part
    return part.meta, part.group, part.score, part.abs_size


def _finish_shard(part: _ShardPart, rank: np.ndarray, lights: np.ndarray):
    """Phase 3: the shard's positions with their global ADL ranks and lights."""
    import polars as pl

    positions = part.positions.with_columns(pl.Series("adl_rank", rank.astype(np.int64)),
                                            pl.Series("adl_lights", lights.astype(np.int8)))
    return part.accounts, positions


def _write_shard(frames, directory: str):
    """On a worker: write a shard's results into the writer's temporary directory, fsynced;
    returns per file (rows, bytes, sha256) for the driver's manifest."""
    from .output import _fsync_file, sha256_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, df in (("accounts.parquet", frames[0]), ("positions.parquet", frames[1])):
        df.write_parquet(d / name)
        _fsync_file(d / name)
        out[name] = (df.height, (d / name).stat().st_size, sha256_file(d / name))
    return out


# ------------------------------------------------------------------ driver's side


class DistributedRisk:
    """Results of :func:`revalue_distributed`. The tables stay on the workers (one part per
    shard) until asked for: ``.accounts`` / ``.positions`` gather them into one frame each,
    identical to :class:`gpurisk.Risk`'s; ``.write(dir)`` writes them like ``Risk.write``;
    ``.write_shards(dir)`` has each worker write its own shard (a shared filesystem)."""

    def __init__(self, client, futures, metas, venue: Venue, symbols, timings: dict, timeout=None):
        self.client = client
        self._futures = futures
        self.shards = [m["index"] for m in metas]
        self._metas = metas
        self.venue = venue
        backends = sorted({m["backend"] for m in metas})
        self.backend = SimpleNamespace(name="+".join(backends))
        self.n_accounts = sum(m["n_accounts"] for m in metas)
        self.n_positions = sum(m["n_positions"] for m in metas)
        self.book = SimpleNamespace(symbols=tuple(symbols), n_accounts=self.n_accounts, n_positions=self.n_positions)
        self.timings = timings
        self._timeout = timeout
        self._accounts = None
        self._positions = None

    def __repr__(self) -> str:
        return (f"DistributedRisk({len(self.shards)} shards, {self.n_accounts:,} accounts, "
                f"{self.n_positions:,} positions, venue {self.venue.name})")

    def _collect(self):
        import polars as pl

        if self._accounts is None:
            parts = _gather(self.client, self._futures, self._timeout, what="result")
            if len(parts) != len(self.shards):
                raise DistributedRunError(f"{len(parts)} shard results for {len(self.shards)} shards")
            acc = pl.concat([p[0] for p in parts], how="vertical")
            pos = pl.concat([p[1] for p in parts], how="vertical")
            if acc.height != self.n_accounts or pos.height != self.n_positions:
                raise DistributedRunError(f"results do not reconcile: {acc.height:,} accounts and {pos.height:,} "
                                          f"positions, the shards hold {self.n_accounts:,} and {self.n_positions:,}")
            self._accounts, self._positions = acc, pos
        return self._accounts, self._positions

    @property
    def accounts(self):
        """One row per input account (sorted by account_id), as Risk.accounts."""
        return self._collect()[0]

    @property
    def positions(self):
        """One row per input position (storage order), as Risk.positions."""
        return self._collect()[1]

    def summary(self):
        """Accounts, equity and maintenance margin per status."""
        from .engine import status_summary

        return status_summary(self.accounts)

    def write(self, directory: str | Path, inputs=()) -> Path:
        """Write accounts.parquet and positions.parquet into ``directory`` (gathered here),
        atomically, with a manifest (gpurisk.output)."""
        from .output import atomic_dir, check_place, _held

        if not _held(Path(directory)):
            check_place(directory, "revalue", inputs)
        acc, pos = self._collect()
        meta = {"venue": self.venue.name, "backend": self.backend.name}
        with atomic_dir(directory, "revalue", meta, inputs) as out:
            out.write_parquet("accounts.parquet", acc)
            out.write_parquet("positions.parquet", pos)
        return Path(directory)

    def write_shards(self, directory: str | Path, inputs=()) -> Path:
        """Each worker writes its shard's results to ``<dir>/shards/shard-NNNNN/{accounts,
        positions}.parquet`` (the directory must be on a filesystem every worker sees), into a
        temporary directory the driver then seals with a manifest and moves into place."""
        from .output import atomic_dir

        run = uuid.uuid4().hex[:8]
        meta = {"venue": self.venue.name, "backend": self.backend.name, "layout": "sharded"}
        with atomic_dir(directory, "revalue", meta, inputs) as out:
            names = [f"{SHARDS_DIR}/{shard_name(i)}" for i in self.shards]
            futs = [_submit(self.client, _write_shard, f, str(out.path / n), key=f"gpurisk-write-{run}-{i}")
                    for i, n, f in zip(self.shards, names, self._futures)]
            written = _gather(self.client, futs, self._timeout, what="write")
            rows = [0, 0]
            for n, files in zip(names, written):
                for k, (name, (height, size, digest)) in enumerate(files.items()):
                    out.add(f"{n}/{name}", height, sha256=digest, size=size)
                    rows[k] += height
            if tuple(rows) != (self.n_accounts, self.n_positions):
                raise DistributedRunError("written shard results do not reconcile with the book")
        return Path(directory)

    def release(self) -> None:
        """Free the results held on the workers (gathered tables stay)."""
        self._futures = []


def _shard_sources(book, client, n_shards):
    """(sources, names, expected counts) of a book given as a sharded directory, a plain
    directory or a Book."""
    if isinstance(book, (str, Path)) and is_sharded(book):
        root = Path(book).resolve()
        if n_shards is not None:
            raise ValueError("n_shards applies to a Book or a plain book directory; a sharded book has its own")
        paths = shard_paths(root)
        return [(str(root), str(p)) for p in paths], [p.name for p in paths], _manifest(root, verify=False)
    if isinstance(book, (str, Path)):
        book = read_book(book)
    n = n_shards or _n_workers(client)
    sources = split_book(book, min(n, book.n_accounts))
    return sources, [shard_name(k) for k in range(len(sources))], {"accounts": book.n_accounts,
                                                                   "positions": book.n_positions}


def _rank_and_finish(client, parts, names, expected, venue: Venue, rank_backend: str, timeout, run: str,
                     t_start: float, extra_timings: dict | None = None) -> "DistributedRisk":
    """Phases 2 and 3: gather every shard's ADL inputs, rank all queues once on the driver,
    send each shard its global ranks and lights."""
    need_size = venue.lights == "size"
    inputs = [_submit(client, _adl_inputs, f, key=f"gpurisk-adl-inputs-{run}-{k}") for k, f in enumerate(parts)]
    got = _gather(client, inputs, timeout)
    _raise_failed(got)
    t_gathered = time.perf_counter()
    metas = [g[0] for g in got]
    _check_shards(metas, names, expected)
    symbols = metas[0]["symbols"]

    # Global ranking on the driver: the shards in shard order are the global storage order.
    t0 = time.perf_counter()
    be = _task_backend(rank_backend)  # its own sort buffers: callers may run on several threads
    group = be.asarray(np.concatenate([g[1] for g in got]))
    score = be.asarray(np.concatenate([g[2] for g in got]))
    n_groups = 2 * len(symbols)
    size = be.asarray(np.concatenate([g[3] for g in got])) if need_size else be.xp.zeros(0)
    # adl_queues: the backend's one-call ranking where it has one (the cpu backend's), else sort
    # and places in two steps; the same bits either way, as a single engine ranks
    queues = SimpleNamespace(group=group, n_groups=n_groups, group_start=None, size=size)
    ranked = adl_queues(be, queues, score, venue)
    rank, lights = be.to_host(ranked.rank), be.to_host(ranked.lights)
    t_ranked = time.perf_counter()
    wire = np.int32 if rank.size < 2**31 else np.int64
    offsets = np.concatenate([[0], np.cumsum([m["n_positions"] for m in metas])])
    finals = [_submit(client, _finish_shard, f, rank[offsets[k]:offsets[k + 1]].astype(wire),
                      lights[offsets[k]:offsets[k + 1]], key=f"gpurisk-finish-{run}-{k}")
              for k, f in enumerate(parts)]
    _gather(client, finals, timeout, fetch=False)
    timings = {"shards": len(parts), "kernels": max(m["kernels"] for m in metas),
               "shard_seconds": max(m["seconds"] for m in metas), "gather": t_gathered - t_start,
               "ranking": t_ranked - t0, "seconds": time.perf_counter() - t_start,
               "adl_bytes_gathered": int(sum(g[1].nbytes + g[2].nbytes + (g[3].nbytes if need_size else 0)
                                             for g in got))}
    timings.update(extra_timings or {})
    return DistributedRisk(client, finals, metas, venue, symbols, timings, timeout)


def revalue_distributed(book, client, venue: "str | Venue" = "binance", backend: str = "auto", marks=None,
                        n_shards: int | None = None, rank_backend: str = "cpu", timeout: float | None = None,
                        _fault_hook=None) -> DistributedRisk:
    """Revalue a book on a Dask cluster: each worker runs the Engine on its shards, the driver
    ranks every ADL queue globally. Same tables, bit for bit, as ``gpurisk.revalue``.

    book: a sharded book directory (each worker reads its own shards: the path must be
        visible to the workers), a plain book directory (read here, then split), or a Book
        (split into ``n_shards`` shards, default one per worker thread).
    client: a ``distributed.Client``.
    backend: the workers' backend (``"auto"``, ``"cpu"`` or ``"gpu"``), by name.
    rank_backend: where the driver ranks the gathered queues (``"cpu"`` or ``"gpu"``).
    timeout: seconds to wait for each phase before raising DistributedRunError.

    One-shot: every call reads and validates the shards again. To revalue the same book for
    many sets of marks, keep it resident with :class:`DistributedEngine`.
    """
    venue = _resolved_venue(venue)
    if not isinstance(backend, str):
        raise TypeError("backend must be given by name ('auto', 'cpu' or 'gpu') to run on workers")
    t_start = time.perf_counter()
    sources, names, expected = _shard_sources(book, client, n_shards)
    run = uuid.uuid4().hex[:8]
    need_size = venue.lights == "size"
    parts = [_submit(client, _revalue_shard, k, src, venue, backend, marks, need_size, _fault_hook,
                     key=f"gpurisk-revalue-{run}-{k}") for k, src in enumerate(sources)]
    return _rank_and_finish(client, parts, names, expected, venue, rank_backend, timeout, run, t_start)


class DistributedEngine:
    """A book resident on a Dask cluster, revalued for new marks without reading it again:
    the distributed counterpart of :class:`gpurisk.Engine`, for intraday revaluation.

    >>> with DistributedEngine("book-sharded/", client, venue="binance", backend="cpu") as engine:
    ...     risk = engine.revalue({"BTCUSDT": 61_250.0})   # DistributedRisk, as revalue_distributed
    ...     risk = engine.revalue(new_marks)               # no shard is read or validated again

    Construction reads, validates and uploads every shard once, each into an Engine on a
    worker (a sharded directory, a plain directory or a Book, as ``revalue_distributed``
    takes). Each ``revalue`` then sends only the marks to the shards, and gathers the ADL
    inputs for the global ranking as ``revalue_distributed`` does: the same tables, bit for
    bit, as ``gpurisk.revalue`` on one machine.

    Each revalue task runs on the worker holding its shard. If a worker dies, Dask reloads its
    shards on another worker from their source (the path must stay readable; a Book travels
    with the task that loads it), and the
    next ``revalue`` answers in full, or raises DistributedRunError. ``close()`` (or leaving
    the ``with`` block) frees the workers' memory.
    """

    def __init__(self, book, client, venue: "str | Venue" = "binance", backend: str = "auto",
                 n_shards: int | None = None, rank_backend: str = "cpu", timeout: float | None = None):
        if not isinstance(backend, str):
            raise TypeError("backend must be given by name ('auto', 'cpu' or 'gpu') to run on workers")
        self.client = client
        self.venue = _resolved_venue(venue)
        self.rank_backend = rank_backend
        self.timeout = timeout
        t0 = time.perf_counter()
        sources, self._names, self._expected = _shard_sources(book, client, n_shards)
        run = uuid.uuid4().hex[:8]
        self._residents = [_submit(client, _load_resident, k, src, self.venue, backend,
                                   key=f"gpurisk-engine-{run}-{k}") for k, src in enumerate(sources)]
        metas = _gather(client, [_submit(client, _resident_meta, f, key=f"gpurisk-engine-meta-{run}-{k}")
                                 for k, f in enumerate(self._residents)], timeout, what="load")
        try:
            _raise_failed(metas)
            _check_shards(metas, self._names, self._expected)
        except BaseException:
            self.close()
            raise
        self._metas = metas
        self.shards = len(metas)
        self.n_accounts = sum(m["n_accounts"] for m in metas)
        self.n_positions = sum(m["n_positions"] for m in metas)
        self.symbols = tuple(metas[0]["symbols"])
        self.load_seconds = time.perf_counter() - t0

    def __repr__(self) -> str:
        return (f"DistributedEngine({self.shards} shards, {self.n_accounts:,} accounts, "
                f"{self.n_positions:,} positions, venue {self.venue.name})")

    def revalue(self, marks=None, _fault_hook=None) -> DistributedRisk:
        """Every account and position at ``marks`` ({symbol: price}, a frame with symbol and
        mark_price, or an array in symbol order; the book's own marks if None)."""
        if not self._residents:
            raise DistributedRunError("this DistributedEngine is closed")
        t_start = time.perf_counter()
        run = uuid.uuid4().hex[:8]
        need_size = self.venue.lights == "size"
        # Each task goes to the worker holding its shard (a preference: if that worker is gone,
        # Dask runs the task elsewhere and the shard is reloaded there).
        holders = self.client.who_has(self._residents)
        parts = []
        for k, f in enumerate(self._residents):
            # No holder (its worker just died): no preference, Dask places the task.
            where = list(holders.get(f.key, ()))
            placement = dict(workers=where, allow_other_workers=True) if where else {}
            parts.append(_submit(self.client, _revalue_resident, f, marks, need_size, _fault_hook,
                                 key=f"gpurisk-revalue-{run}-{k}", **placement))
        return _rank_and_finish(self.client, parts, self._names, self._expected, self.venue, self.rank_backend,
                                self.timeout, run, t_start, {"resident": True})

    def what_if(self, orders, marks=None) -> "pl.DataFrame":
        """Prospective orders, each applied on its own to the resident book (which does not
        change), as :meth:`gpurisk.Engine.what_if`: the same rows, bit for bit, one per order in
        input order. Each order goes to the shard holding its account (shards hold increasing,
        disjoint account_id ranges), runs on that shard's worker, and the rows come back in
        order. Bad orders raise one BookError naming the rules and the first rows at fault in
        the whole table, as the single engine's does (its problems in per-shard order)."""
        import polars as pl

        from .whatif import checked_columns, merge_problems

        if not self._residents:
            raise DistributedRunError("this DistributedEngine is closed")
        df = checked_columns(orders)
        held = [k for k, m in enumerate(self._metas) if m["n_accounts"]]
        first = np.array([self._metas[k]["first_id"] for k in held], dtype=np.int64)
        ids = df["account_id"].cast(pl.Int64)
        # Null or unknown accounts go to a shard too, whose checks name them with the rest.
        where = np.searchsorted(first, ids.fill_null(first[0]).to_numpy(), side="right") - 1
        shard = np.asarray(held, dtype=np.int64)[np.clip(where, 0, len(held) - 1)]
        run = uuid.uuid4().hex[:8]
        holders = self.client.who_has(self._residents)
        futures = []
        for k in np.unique(shard).tolist():
            rows = np.flatnonzero(shard == k)
            f = self._residents[k]
            placement = dict(workers=list(holders[f.key]), allow_other_workers=True) if holders.get(f.key) else {}
            futures.append(_submit(self.client, _what_if_resident, f, df[rows], rows, marks,
                                   key=f"gpurisk-what-if-{run}-{k}", **placement))
        parts = _gather(self.client, futures, self.timeout, what="what-if")
        failed = [p.problems for p in parts if isinstance(p, _Failed)]
        if failed:
            raise BookError(merge_problems(failed))
        out = pl.concat(parts, how="vertical").sort("order")
        if out.height != df.height or not np.array_equal(out["order"].to_numpy(), np.arange(df.height)):
            raise DistributedRunError("what-if rows do not reconcile with the orders")
        return out

    def close(self) -> None:
        """Free the shards held on the workers (results already returned stay valid)."""
        # Released, not cancelled: cancelling would cancel every result computed from them.
        for f in self._residents:
            f.release()
        self._residents = []

    def __enter__(self) -> "DistributedEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_shards(metas, names, expected) -> None:
    problems = []
    for k, (m, name) in enumerate(zip(metas, names)):
        if m["index"] != k:
            raise DistributedRunError(f"shard {name}: answer of shard {m['index']} in its place")
        if m["symbols"] != metas[0]["symbols"]:
            problems.append(Problem(f"{name}/markets", "symbol", "every shard must see the same markets"))
        if k and m["first_id"] is not None and metas[k - 1]["last_id"] is not None \
                and m["first_id"] <= metas[k - 1]["last_id"]:
            problems.append(Problem(f"{name}/accounts", "account_id",
                                    f"shards must hold increasing, disjoint account_id ranges: starts at "
                                    f"{m['first_id']}, but {names[k - 1]} ends at {metas[k - 1]['last_id']}"))
    if problems:
        raise BookError(problems)
    if expected is not None:
        acc = sum(m["n_accounts"] for m in metas)
        pos = sum(m["n_positions"] for m in metas)
        if (acc, pos) != (expected["accounts"], expected["positions"]):
            raise DistributedRunError(f"shards returned {acc:,} accounts and {pos:,} positions; the book holds "
                                      f"{expected['accounts']:,} and {expected['positions']:,}")
