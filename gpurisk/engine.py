"""Revaluation: the book on the device, every account and position revalued and ranked.

``Engine`` uploads the book once and keeps it resident; ``engine.revalue(marks)`` runs the
kernels for a new set of mark prices and re-ranks the ADL queues. ``revalue(book, ...)`` is
the one-shot form. Results stay on the device until a table is asked for.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:  # result tables need Polars; the device arrays do not
    import polars as pl
except ImportError:  # pragma: no cover
    pl = None

from .adl import AdlQueues, adl_queues, adl_score, queue_group, queue_starts
from .backend import Backend, get_backend
from .book import Book, BookError, Problem
from .liquidation import PositionRisk, position_risk
from .margin import AccountMargin, PositionMargin, account_margin, position_margin
from .schema import MARGIN_MODES, SIDES, STATUSES
from .venue import Venue, get_venue

_DEVICE_FIELDS = ("mark_price", "contract_size", "tier_start", "tier_floor", "tier_mmr", "tier_cum",
                  "tier_root_bound", "tier_max_leverage", "wallet", "pos_start", "pos_account", "pos_symbol", "size",
                  "entry", "isolated", "isolated_margin", "leverage", "tick_size")


# The kernels count the first TIER_LOOKAHEAD tier boundaries without branches and need no
# bounds check for them (kernels/common.cuh): every ladder is padded to at least this + 1.
TIER_LOOKAHEAD = 3


def padded_tiers(book: Book) -> dict[str, np.ndarray]:
    """Tier tables with every symbol padded to the same number of tiers, at least
    ``TIER_LOOKAHEAD + 1``, with floors of +inf that no notional reaches: the kernels read
    the first boundaries of any symbol with no bounds check and no branch, and never select
    a padding tier. ``tier_root_bound``: see liquidation_root_bounds."""
    counts = np.diff(book.tier_start)
    width = max(int(counts.max()) if counts.size else 1, TIER_LOOKAHEAD + 1)
    n = book.n_symbols
    slot = np.repeat(np.arange(n) * width, counts) + (np.arange(book.tier_floor.size) - np.repeat(book.tier_start[:-1], counts))
    last = np.maximum(book.tier_start[1:] - 1, 0)
    out = {}
    for name, pad in (("tier_floor", None), ("tier_mmr", "last"), ("tier_cum", "last"), ("tier_max_leverage", "last")):
        src = getattr(book, name)
        arr = np.repeat(src[last] if src.size else np.zeros(n), width) if pad else np.full(n * width, np.inf)
        arr[slot] = src
        out[name] = arr
    out["tier_start"] = (np.arange(n + 1) * width).astype(np.int32)
    out["tier_root_bound"] = liquidation_root_bounds(out["tier_floor"], out["tier_mmr"], out["tier_cum"])
    return out


def liquidation_root_bounds(tier_floor, tier_mmr, tier_cum) -> np.ndarray:
    """Per tier t, for longs then shorts (interleaved: [2t] long, [2t+1] short), the bound
    the liquidation kernel compares side·(W' − MM' − q·E·cs) with: below it, the root lies
    past floor_t. With M_t = floor_t·mmr_t − cum_t (the MM at the floor), equity − MM at the
    boundary is base + floor_t − M_t for a long and base − floor_t − M_t for a short, so the
    bounds are M_t − floor_t and −(floor_t + M_t). Per tier, not per position: the kernel's
    test is one comparison. Padding tiers get −inf (never passed)."""
    with np.errstate(invalid="ignore"):
        at_floor = tier_floor * tier_mmr - tier_cum
        bounds = np.stack([at_floor - tier_floor, -(tier_floor + at_floor)], axis=1).ravel()
    bounds[np.repeat(~np.isfinite(tier_floor), 2)] = -np.inf
    return bounds


#: device bytes per position a chunk needs: inputs, results and temporaries
BYTES_PER_POSITION = 320
#: the share of free device memory a chunk may take (CuPy's and the sort's own buffers)
CHUNK_MEMORY_SHARE = 0.7


def auto_chunk_positions(n_positions: int, free_bytes: int, workers_per_gpu: int = 1) -> int | None:
    """Positions per chunk for a book on a device with ``free_bytes`` free (counting what the
    array pool holds unused), shared by ``workers_per_gpu`` processes: None when the whole
    book fits in one pass."""
    if workers_per_gpu < 1:
        raise ValueError(f"workers_per_gpu must be >= 1, got {workers_per_gpu}")
    fits = int(free_bytes * CHUNK_MEMORY_SHARE / workers_per_gpu) // BYTES_PER_POSITION
    return None if n_positions <= fits else max(fits, 1)


def _workers_per_gpu(given: int | None) -> int:
    if given is not None:
        return int(given)
    text = os.environ.get("GPURISK_WORKERS_PER_GPU", "1")
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"GPURISK_WORKERS_PER_GPU must be a whole number >= 1, got {text!r}")
    return value


class DeviceBook:
    """The arrays of a Book on one backend (uploaded once)."""

    def __init__(self, book: Book, backend: Backend):
        xp = backend.xp
        tiers = padded_tiers(book)
        for name in _DEVICE_FIELDS:
            setattr(self, name, backend.asarray(tiers[name] if name in tiers else getattr(book, name)))
        self.n_accounts = book.n_accounts
        self.n_positions = book.n_positions
        self.n_groups = 2 * book.n_symbols
        self.group = xp.ascontiguousarray(queue_group(xp, self.pos_symbol, self.size))
        self.group_start = queue_starts(backend, self.group, self.n_groups)


def resolve_marks(book: Book, marks) -> np.ndarray:
    """Mark prices per symbol: the book's, overridden by ``marks`` ({symbol: price}, a frame
    with symbol and mark_price, or an array in the book's symbol order)."""
    out = book.mark_price.copy()
    if marks is None:
        return out
    if isinstance(marks, dict):
        items = list(marks.items())
    elif isinstance(marks, (np.ndarray, list, tuple)) and not isinstance(marks, dict):
        arr = np.asarray(marks, dtype=np.float64)
        if arr.shape != out.shape:
            raise ValueError(f"marks array has {arr.shape[0] if arr.ndim else 0} prices; the book has "
                             f"{out.size} symbols ({', '.join(book.symbols)})")
        items = list(zip(book.symbols, arr.tolist()))
    else:
        df = marks if pl is not None and isinstance(marks, pl.DataFrame) else pl.DataFrame(marks)
        if not {"symbol", "mark_price"} <= set(df.columns):
            raise ValueError("a marks frame needs columns symbol and mark_price")
        items = list(zip(df["symbol"].to_list(), df["mark_price"].to_list()))
    unknown = [s for s, _ in items if s not in book.symbols]
    if unknown:
        raise BookError([Problem("marks", "symbol", "must be a symbol of the book", len(unknown),
                                 tuple(repr(s) for s in unknown[:5]))])
    bad = [f"{s}={p!r}" for s, p in items if not (p is not None and np.isfinite(p) and p > 0)]
    if bad:
        raise BookError([Problem("marks", "mark_price", "must be finite and > 0", len(bad), tuple(bad[:5]))])
    for s, p in items:
        out[book.symbols.index(s)] = float(p)
    return out


def _enum(categories) -> "pl.Series":
    """The categories as a Polars Enum series, to gather codes from (codes -> labels)."""
    return pl.Series(list(categories), dtype=pl.Enum(list(categories)))


def status_summary(accounts: "pl.DataFrame") -> "pl.DataFrame":
    """Accounts, equity and maintenance margin per status."""
    return (accounts.group_by("status").agg(
        pl.len().alias("accounts"), pl.col("equity").sum(), pl.col("maint_margin").sum()).sort("status"))


@dataclass
class Risk:
    """Revaluation results. Tables are built (and copied from the device) on first access."""

    book: Book
    venue: Venue
    backend: Backend
    mark: np.ndarray
    position_margin: PositionMargin
    account_margin: AccountMargin
    position_risk: PositionRisk
    adl: AdlQueues
    timings: dict

    def __post_init__(self):
        self._accounts = None
        self._positions = None

    def _h(self, a) -> np.ndarray:
        return self.backend.to_host(a)

    @property
    def accounts(self) -> pl.DataFrame:
        """One row per input account (sorted by account_id)."""
        if self._accounts is None:
            b, am = self.book, self.account_margin
            status = _enum(STATUSES)
            self._accounts = pl.DataFrame({
                "account_id": b.account_id,
                "wallet_balance": b.wallet,
                "upnl": self._h(am.upnl),
                "equity": self._h(am.equity),
                "maint_margin": self._h(am.maint),
                "init_margin": self._h(am.init),
                "margin_ratio": self._h(am.ratio),
                "available_balance": self._h(am.available),
                "status": status.gather(self._h(am.status)),
                "n_positions": np.diff(b.pos_start).astype(np.int32),
            })
        return self._accounts

    @property
    def positions(self) -> pl.DataFrame:
        """One row per input position, sorted by (account_id, symbol, margin_mode)."""
        if self._positions is None:
            b, pm, pr, q = self.book, self.position_margin, self.position_risk, self.adl
            symbols = _enum(b.symbols)
            status = _enum(STATUSES)
            liq = self._h(pr.liq_price)
            bp = self._h(pr.bankruptcy_price)
            self._positions = pl.DataFrame({
                "account_id": b.account_id[b.pos_account],
                "symbol": symbols.gather(b.pos_symbol),
                "margin_mode": _enum(MARGIN_MODES).gather(b.isolated),
                "side": _enum(SIDES).gather((b.size < 0).astype(np.int8)),
                "size": b.size,
                "entry_price": b.entry,
                "mark_price": self.mark[b.pos_symbol],
                "notional": self._h(pm.notional),
                "upnl": self._h(pm.upnl),
                "maint_margin": self._h(pm.maint),
                "init_margin": self._h(pm.init),
                "margin_ratio": self._h(pr.ratio),
                "status": status.gather(self._h(pr.status)),
                "liq_price": pl.Series(liq).fill_nan(None),
                "bankruptcy_price": pl.Series(np.where(bp > 0, bp, np.nan)).fill_nan(None),
                "adl_score": self._h(q.score),
                "adl_rank": self._queue_column(q.rank, pl.Int64),
                "adl_lights": self._queue_column(q.lights, pl.Int8),
            })
        return self._positions

    def _queue_column(self, values, dtype) -> "pl.Series":
        """A queue place per position, or nulls where the queues were not ranked."""
        if values is None:
            return pl.repeat(None, self.book.n_positions, dtype=dtype, eager=True)
        return pl.Series(self._h(values)).cast(dtype)

    def summary(self) -> pl.DataFrame:
        """Accounts, equity and maintenance margin per status."""
        return status_summary(self.accounts)

    def write(self, directory: str | Path) -> Path:
        """Write accounts.parquet and positions.parquet into ``directory``."""
        if self.accounts.height != self.book.n_accounts or self.positions.height != self.book.n_positions:
            raise AssertionError("row counts do not reconcile with the book")  # never drop rows silently
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.accounts.write_parquet(directory / "accounts.parquet")
        self.positions.write_parquet(directory / "positions.parquet")
        return directory


class Engine:
    """A book resident on a backend, revalued for new mark prices without re-uploading.

    >>> engine = Engine(book, venue="binance", backend="auto")
    >>> risk = engine.revalue({"BTCUSDT": 61_000.0})

    ``chunk_positions``: process the book in chunks of whole accounts holding at most this
    many positions (for books larger than GPU memory; on the gpu backend the default is
    sized from free device memory, see auto_chunk_positions). The per-account figures do not
    depend on the chunking and the ADL ranking stays global, so the results are identical
    to one pass.
    ``workers_per_gpu``: how many processes (e.g. Dask workers) share this GPU; each sizes
    its chunks from its share of the free memory. Default: $GPURISK_WORKERS_PER_GPU, else 1.
    """

    BYTES_PER_POSITION = BYTES_PER_POSITION

    def __init__(self, book: Book, venue: "str | Venue" = "binance", backend: "str | Backend" = "auto",
                 chunk_positions: int | None = None, workers_per_gpu: int | None = None):
        self.book = book
        self.venue = get_venue(venue)
        self.backend = get_backend(backend)
        memory = self.backend.device_memory()
        if chunk_positions is None and memory is not None:
            chunk_positions = auto_chunk_positions(book.n_positions, memory[0], _workers_per_gpu(workers_per_gpu))
        self.chunks = book.account_chunks(chunk_positions) if chunk_positions else [(0, book.n_accounts)]
        t = time.perf_counter()
        if len(self.chunks) == 1:
            self.device = DeviceBook(book, self.backend)
        else:  # streamed chunk by chunk; the queues are ranked on the host
            self.device = None
            self.host = DeviceBook(book, get_backend("cpu"))
        self.backend.synchronize()
        self.upload_seconds = time.perf_counter() - t

    def revalue(self, marks=None, out: Risk | None = None, rank: bool = True) -> Risk:
        """Revalue every account and position at ``marks`` (the book's marks where not given).

        ``out``: a previous Risk of this engine whose buffers are reused (its tables are then
        replaced); saves allocations when revaluing in a loop.
        ``rank=False``: scores only, no ADL queues (adl_rank and adl_lights come out null),
        for callers that rank elsewhere, as the Dask driver ranks every shard's queues at once.
        """
        b, venue = self.backend, self.venue
        mark_host = resolve_marks(self.book, marks)
        t0 = time.perf_counter()
        mark = b.asarray(mark_host)
        if self.device is not None:
            dev = self.device
            pm = position_margin(b, dev, mark, venue, out.position_margin if out else None)
            am = account_margin(b, dev, pm, venue, out.account_margin if out else None)
            pr = position_risk(b, dev, mark, pm, am, venue, out.position_risk if out else None)
            score = adl_score(b, dev, mark, pm, pr, venue, out.adl.score if out else None)
            ranker, queues = b, dev
        else:
            pm, am, pr, score = self._revalue_chunks(mark, out)
            ranker, queues = get_backend("cpu"), self.host
        b.synchronize()
        t1 = time.perf_counter()
        if rank:
            adl = adl_queues(ranker, queues, score, venue, out.adl if out else None)
        else:
            adl = AdlQueues(score, None, None, None, None)
        ranker.synchronize()
        t2 = time.perf_counter()
        return Risk(self.book, venue, b, mark_host, pm, am, pr, adl, {"kernels": t1 - t0, "ranking": t2 - t1})

    def _revalue_chunks(self, mark, out):
        """Chunk by chunk of whole accounts: upload, run the kernels, copy results to host."""
        b, venue, book = self.backend, self.venue, self.book
        n, m = book.n_positions, book.n_accounts
        if out is None:
            f64 = lambda k: np.empty(k, dtype=np.float64)  # noqa: E731
            pm = PositionMargin(f64(n), f64(n), f64(n), f64(n))
            am = AccountMargin(*(f64(m) for _ in range(6)), np.empty(m, np.int8), np.empty(m, np.int32))
            pr = PositionRisk(f64(n), f64(n), np.empty(n, np.int8), f64(n), f64(n))
            score = f64(n)
        else:
            pm, am, pr, score = out.position_margin, out.account_margin, out.position_risk, out.adl.score
        for first, end in self.chunks:
            part = book.slice_accounts(first, end)
            p0, p1 = int(book.pos_start[first]), int(book.pos_start[end])
            dev = DeviceBook(part, b)
            cpm = position_margin(b, dev, mark, venue)
            cam = account_margin(b, dev, cpm, venue)
            cpr = position_risk(b, dev, mark, cpm, cam, venue)
            csc = adl_score(b, dev, mark, cpm, cpr, venue)
            for whole, piece in ((pm, cpm), (pr, cpr)):
                for k in vars(whole):
                    getattr(whole, k)[p0:p1] = b.to_host(getattr(piece, k))
            for k in vars(am):
                getattr(am, k)[first:end] = b.to_host(getattr(cam, k))
            score[p0:p1] = b.to_host(csc)
        return pm, am, pr, score


def revalue(book: Book, venue: "str | Venue" = "binance", backend: "str | Backend" = "auto", marks=None,
            chunk_positions: int | None = None) -> Risk:
    """Revalue every account and position of ``book`` (one shot; see Engine to stay resident)."""
    return Engine(book, venue=venue, backend=backend, chunk_positions=chunk_positions).revalue(marks)
