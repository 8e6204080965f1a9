"""Revaluation: the book on the device, every account and position revalued and ranked
(the results: gpurisk/risk.py; marks given by a caller: gpurisk/marks.py).

``Engine`` uploads the book once and keeps it resident; ``engine.revalue(marks)`` runs the
kernels for a new set of mark prices and re-ranks the ADL queues. ``revalue(book, ...)`` is
the one-shot form. Results stay on the device until a table is asked for.
"""

from __future__ import annotations

import os
import time

import numpy as np

from .adl import AdlQueues, adl_queues, adl_score
from .backend import Backend, get_backend
from .book import Book
from .collateral import DevicePools, PoolMargin, pool_margin, pooled_prices
from .liquidation import PositionRisk, position_risk
from .margin import AccountMargin, PositionMargin, account_margin, position_margin
from .marks import check_marks, resolve_marks  # noqa: F401 (callers import them from here too)
from .portfolio import (PortfolioDevice, PortfolioMargin, blank_liquidation_prices, portfolio_accounts,
                        portfolio_margin, tiered_view)
from .risk import Risk, status_summary  # noqa: F401 (callers import them from here too)
from .venue import Venue, get_venue

_DEVICE_FIELDS = ("mark_price", "contract_size", "tier_start", "tier_floor", "tier_mmr", "tier_cum",
                  "tier_root_bound", "tier_max_leverage", "wallet", "pos_start", "pos_account", "pos_symbol", "size",
                  "entry", "isolated", "isolated_margin", "leverage", "tick_size", "inverse")


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
        tiers = padded_tiers(book)
        for name in _DEVICE_FIELDS:
            setattr(self, name, backend.asarray(tiers[name] if name in tiers else getattr(book, name)))
        self.n_accounts = book.n_accounts
        self.n_positions = book.n_positions
        self.n_groups = 2 * book.n_symbols
        self.group, self.group_start = backend.queue_groups(self.pos_symbol, self.size, self.n_groups)


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
        self._token = object()  # marks the Risks this engine returns (out= is checked against it)
        self.venue = get_venue(venue)
        self.backend = get_backend(backend)
        memory = self.backend.device_memory()
        if chunk_positions is None and memory is not None:
            chunk_positions = auto_chunk_positions(book.n_positions, memory[0], _workers_per_gpu(workers_per_gpu))
        self.pooled = self.venue.collateral == "pooled"
        if self.pooled:  # every wallet asset valued through the collateral table (clear error before upload)
            book.collateral_arrays()
        self.chunks = book.account_chunks(chunk_positions) if chunk_positions else [(0, book.n_accounts)]
        # Which accounts the portfolio model margins (None: no model); checked before any compute.
        self.portfolio_flags = portfolio_accounts(book, self.venue)
        if self.portfolio_flags is not None and self.pooled:
            raise ValueError("portfolio margin over pooled multi-asset collateral is not modelled yet: use a "
                             "per-asset venue for portfolio accounts, or tiered margin with pooled collateral")
        self.portfolio = None
        t = time.perf_counter()
        self.pools = None
        if len(self.chunks) == 1:
            self.device = DeviceBook(book, self.backend)
            if self.portfolio_flags is not None:
                self.portfolio = PortfolioDevice(book, self.venue, self.backend, self.portfolio_flags)
            if self.pooled:
                self.pools = DevicePools(book, self.backend)
        else:  # streamed chunk by chunk; the queues are ranked on the host
            self.device = None
            self.host = DeviceBook(book, get_backend("cpu"))
        self.backend.synchronize()
        self.upload_seconds = time.perf_counter() - t

    def revalue(self, marks=None, out: Risk | None = None, rank: bool = True, liq_price: bool = True) -> Risk:
        """Revalue every account and position at ``marks`` (the book's marks where not given).

        ``out``: a previous Risk of this engine whose buffers are reused (its tables are then
        replaced); saves allocations when revaluing in a loop.
        ``rank=False``: scores only, no ADL queues (adl_rank and adl_lights come out null),
        for callers that rank elsewhere, as the Dask driver ranks every shard's queues at once.
        ``liq_price=False``: no liquidation prices (NaN; liquidation.liquidation_prices fills
        them in for chosen positions), for callers that need a few, as the monitor does.
        """
        b, venue = self.backend, self.venue
        if out is not None:
            self._check_out(out)
        mark_host = resolve_marks(self.book, marks)
        t0 = time.perf_counter()
        mark = b.asarray(mark_host)
        if self.device is not None:
            dev = self.device
            pm = position_margin(b, dev, mark, venue, out.position_margin if out else None)
            am = account_margin(b, dev, pm, venue, out.account_margin if out else None)
            pf = None
            if self.portfolio is not None:
                pf = portfolio_margin(b, dev, self.portfolio, mark, pm, am, venue, out.portfolio if out else None)
            pool = pool_margin(b, self.pools, am, venue, out.pool_margin if out else None) if self.pooled else None
            pr = position_risk(b, dev, mark, pm, am if pf is None else tiered_view(am, pf), venue,
                               out.position_risk if out else None, liq_price)
            if pf is not None:
                blank_liquidation_prices(b, self.portfolio, pr)
            if pool is not None:
                pooled_prices(b, dev, self.pools, mark, pm, am, pool, pr, venue, liq_price)
            score = adl_score(b, dev, mark, pm, pr, venue, out.adl.score if out else None)
            ranker, queues = b, dev
        else:
            pm, am, pr, score, pf, pool = self._revalue_chunks(mark, out, liq_price)
            ranker, queues = get_backend("cpu"), self.host
        b.synchronize()
        t1 = time.perf_counter()
        if rank:
            adl = adl_queues(ranker, queues, score, venue, out.adl if out else None)
        else:
            adl = AdlQueues(score, None, None, None, None)
        ranker.synchronize()
        t2 = time.perf_counter()
        risk = Risk(self.book, venue, b, mark_host, pm, am, pr, adl, {"kernels": t1 - t0, "ranking": t2 - t1},
                    pf, self.portfolio_flags, pool)
        risk._owner = self._token
        return risk

    def what_if(self, orders, marks=None):
        """Prospective orders (account_id, symbol, signed size, price[, margin_mode,
        isolated_margin, leverage]), each applied on its own to the resident book, which does
        not change: one row per order with the position, the account's margin ratio, available
        balance, status and the liquidation price after it, and whether it passes the
        initial-margin check. See gpurisk/whatif.py and README "What-if orders"."""
        from .whatif import what_if

        return what_if(self, orders, marks)

    def apply_funding(self, rates, marks=None):
        """Pay funding at ``rates`` ({symbol: rate}, a frame of symbol and funding_rate, or an
        array in symbol order) and the marks: the resident wallets and isolated margins change.
        Returns a FundingResult. See gpurisk/funding.py and README "Funding"."""
        from .funding import apply_funding_to_engine

        return apply_funding_to_engine(self, rates, marks)

    def _check_out(self, out) -> None:
        """``out=`` must be a Risk this engine returned: its buffers were sized and placed for
        this book on this backend. Another engine's (another book, size or device) would be
        written out of bounds by the kernels or silently overwritten, so it is refused."""
        if not isinstance(out, Risk):
            raise ValueError(f"out= must be a Risk returned by this engine's revalue, got {type(out).__name__}")
        if getattr(out, "_owner", None) is not self._token:
            raise ValueError("out= is a Risk of another engine (another book or backend): its buffers cannot "
                             "be reused here; pass a Risk this engine returned, or leave out= out")
        sizes = (out.position_margin.notional, out.account_margin.equity, out.position_risk.liq_price, out.adl.score)
        want = (self.book.n_positions, self.book.n_accounts, self.book.n_positions, self.book.n_positions)
        if any(int(a.size) != n for a, n in zip(sizes, want)):  # belt and braces: never out of bounds
            raise ValueError("out= buffers do not match this engine's book")

    def _revalue_chunks(self, mark, out, liq_price: bool = True):
        """Chunk by chunk of whole accounts: upload, run the kernels, copy results to host."""
        b, venue, book = self.backend, self.venue, self.book
        n, m = book.n_positions, book.n_accounts
        if out is None:
            f64 = lambda k: np.empty(k, dtype=np.float64)  # noqa: E731
            pm = PositionMargin(f64(n), f64(n), f64(n), f64(n), f64(n))
            am = AccountMargin(*(f64(m) for _ in range(6)), np.empty(m, np.int8), np.empty(m, np.int32), f64(m))
            pr = PositionRisk(f64(n), f64(n), np.empty(n, np.int8), f64(n), f64(n))
            score = f64(n)
            pf = None
            if self.portfolio_flags is not None:
                pf = PortfolioMargin(f64(m), f64(m), np.empty(m, np.int32), f64(m), f64(m), f64(m), f64(m))
            pool = PoolMargin(*(f64(m) for _ in range(5))) if self.pooled else None
        else:
            pm, am, pr, score = out.position_margin, out.account_margin, out.position_risk, out.adl.score
            pf = out.portfolio
            pool = out.pool_margin
        for first, end in self.chunks:
            part = book.slice_accounts(first, end)
            p0, p1 = int(book.pos_start[first]), int(book.pos_start[end])
            dev = DeviceBook(part, b)
            cpm = position_margin(b, dev, mark, venue)
            cam = account_margin(b, dev, cpm, venue)
            cam_risk = cam
            if pf is not None:
                cpf_dev = PortfolioDevice(part, venue, b, self.portfolio_flags[first:end])
                cpf = portfolio_margin(b, dev, cpf_dev, mark, cpm, cam, venue)
                cam_risk = tiered_view(cam, cpf)
                for k in vars(pf):
                    getattr(pf, k)[first:end] = b.to_host(getattr(cpf, k))
            if pool is not None:  # chunks hold whole account_ids (Book.account_chunks): whole pools
                pools = DevicePools(part, b)
                cpool = pool_margin(b, pools, cam, venue)
                for k in vars(pool):
                    getattr(pool, k)[first:end] = b.to_host(getattr(cpool, k))
            cpr = position_risk(b, dev, mark, cpm, cam_risk, venue, liq_price=liq_price)
            if pf is not None:
                blank_liquidation_prices(b, cpf_dev, cpr)
            if pool is not None:
                pooled_prices(b, dev, pools, mark, cpm, cam, cpool, cpr, venue, liq_price)
            csc = adl_score(b, dev, mark, cpm, cpr, venue)
            for whole, piece in ((pm, cpm), (pr, cpr)):
                for k in vars(whole):
                    getattr(whole, k)[p0:p1] = b.to_host(getattr(piece, k))
            for k in vars(am):
                getattr(am, k)[first:end] = b.to_host(getattr(cam, k))
            score[p0:p1] = b.to_host(csc)
        return pm, am, pr, score, pf, pool


def revalue(book: Book, venue: "str | Venue" = "binance", backend: "str | Backend" = "auto", marks=None,
            chunk_positions: int | None = None) -> Risk:
    """Revalue every account and position of ``book`` (one shot; see Engine to stay resident)."""
    return Engine(book, venue=venue, backend=backend, chunk_positions=chunk_positions).revalue(marks)
