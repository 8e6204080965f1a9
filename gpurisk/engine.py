"""Revaluation: the book on the device, every account and position revalued and ranked.

``Engine`` uploads the book once and keeps it resident; ``engine.revalue(marks)`` runs the
kernels for a new set of mark prices and re-ranks the ADL queues. ``revalue(book, ...)`` is
the one-shot form. Results stay on the device until a table is asked for.
"""

from __future__ import annotations

import dataclasses
import math
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
from .collateral import DevicePools, PoolMargin, pool_margin, pooled_prices
from .liquidation import PositionRisk, position_risk
from .margin import AccountMargin, PositionMargin, account_margin, position_margin
from .portfolio import (PortfolioDevice, PortfolioMargin, blank_liquidation_prices, portfolio_accounts,
                        portfolio_margin, tiered_view)
from .schema import MARGIN_MODELS, MARGIN_MODES, SIDES, STATUSES
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
        xp = backend.xp
        tiers = padded_tiers(book)
        for name in _DEVICE_FIELDS:
            setattr(self, name, backend.asarray(tiers[name] if name in tiers else getattr(book, name)))
        self.n_accounts = book.n_accounts
        self.n_positions = book.n_positions
        self.n_groups = 2 * book.n_symbols
        self.group = xp.ascontiguousarray(queue_group(xp, self.pos_symbol, self.size))
        self.group_start = queue_starts(backend, self.group, self.n_groups)


def _marks_items(book: Book | None, marks) -> tuple[list, list[str], list[Problem]]:
    """(symbol, price) pairs of ``marks`` in input order, how each row is named in messages,
    and the problems of its shape (columns, types) found without the book."""
    if isinstance(marks, dict) and set(marks) == {"symbol", "mark_price"} and \
            not isinstance(marks["symbol"], str):  # a dict of columns, not {symbol: price}
        marks = pl.DataFrame(marks) if pl is not None else list(zip(marks["symbol"], marks["mark_price"]))
    if isinstance(marks, dict):
        items = list(marks.items())
        return items, [f"{s}={p!r}" for s, p in items], []
    if isinstance(marks, (list, tuple)) and marks and all(isinstance(m, dict) for m in marks):
        marks = pl.DataFrame(marks) if pl is not None else [(m.get("symbol"), m.get("mark_price")) for m in marks]
    if isinstance(marks, (list, tuple)) and marks and all(isinstance(m, (list, tuple)) and len(m) == 2
                                                          and isinstance(m[0], str) for m in marks):
        items = [tuple(m) for m in marks]
        return items, [f"row {i} (symbol={s!r}, mark_price={p!r})" for i, (s, p) in enumerate(items)], []
    if isinstance(marks, (np.ndarray, list, tuple)):
        if book is None:
            raise TypeError("a marks array needs the book's symbol order")
        try:
            arr = np.asarray(marks, dtype=np.float64)
        except (TypeError, ValueError):
            return [], [], [Problem("marks", "mark_price", "a marks array must hold numbers")]
        if arr.shape != book.mark_price.shape:
            raise ValueError(f"marks array has {arr.shape[0] if arr.ndim else 0} prices; the book has "
                             f"{book.mark_price.size} symbols ({', '.join(book.symbols)})")
        items = list(zip(book.symbols, arr.tolist()))
        return items, [f"{s}={p!r}" for s, p in items], []
    df = marks if isinstance(marks, pl.DataFrame) else pl.DataFrame(marks)
    missing = [c for c in ("symbol", "mark_price") if c not in df.columns]
    problems = [Problem("marks", c, f"required column is missing (columns present: {', '.join(df.columns) or 'none'})")
                for c in missing]
    for c, want, ok in (("symbol", "text", lambda t: t in (pl.String, pl.Categorical) or isinstance(t, pl.Enum)),
                        ("mark_price", "a number", lambda t: t.is_numeric())):
        if c in df.columns and df[c].null_count() < df.height and not ok(df.schema[c]):
            problems.append(Problem("marks", c, f"must be {want}, got column type {df.schema[c]}"))
    if problems:
        return [], [], problems
    if df.height == 0:
        return [], [], [Problem("marks", "", "table is empty")]
    items = list(zip(df["symbol"].cast(pl.String).to_list(), df["mark_price"].cast(pl.Float64).to_list()))
    return items, [f"row {i} (symbol={s!r})" for i, (s, _) in enumerate(items)], []


def check_marks(marks, book: Book | None = None) -> list[tuple[str, float]]:
    """``marks`` ({symbol: price}, a frame or dict of columns symbol and mark_price, a list of
    such rows or of (symbol, price) pairs, or an array in the book's symbol order) as checked
    (symbol, price) pairs: one BookError naming every problem at once (columns, types, null or
    unknown symbols, a symbol priced twice, null, non-finite or non-positive prices, prices
    outside the input limits) and nothing silently dropped or overridden. Without ``book``
    the symbols are not checked against it (the CLI checks a marks file before reading the book)."""
    from .schema import PRICE_MAX, PRICE_MIN

    items, names, problems = _marks_items(book, marks)
    if problems:
        raise BookError(problems)

    def rule(column, rule_text, hits):
        if hits:
            problems.append(Problem("marks", column, rule_text, len(hits), tuple(names[i] for i in hits[:5])))

    syms = [s for s, _ in items]
    rule("symbol", "must not be null", [i for i, s in enumerate(syms) if s is None])
    if book is not None:
        unknown = [i for i, s in enumerate(syms) if s is not None and s not in book.symbols]
        if unknown:  # named by the symbol itself, as a book's message would
            problems.append(Problem("marks", "symbol", "must be a symbol of the book", len(unknown),
                                    tuple(repr(syms[i]) for i in unknown[:5])))
    seen: dict = {}
    for s in syms:
        seen[s] = seen.get(s, 0) + 1
    rule("symbol", "one price per symbol; priced more than once",
         [i for i, s in enumerate(syms) if s is not None and seen[s] > 1])

    def number(p):
        try:
            return float(p)
        except (TypeError, ValueError):
            return None

    prices = [number(p) if not isinstance(p, (bool, str)) else None for _, p in items]
    rule("mark_price", "must be finite and > 0",
         [i for i, p in enumerate(prices) if not (p is not None and math.isfinite(p) and p > 0)])
    rule("mark_price", f"must be in [{PRICE_MIN:g}, {PRICE_MAX:g}] (input limits, gpurisk.schema)",
         [i for i, p in enumerate(prices) if p is not None and math.isfinite(p) and p > 0
          and not PRICE_MIN <= p <= PRICE_MAX])
    if problems:
        raise BookError(problems)
    return [(s, p) for s, p in zip(syms, prices)]


def resolve_marks(book: Book, marks) -> np.ndarray:
    """Mark prices per symbol: the book's, overridden by ``marks`` ({symbol: price}, a frame
    with symbol and mark_price, or an array in the book's symbol order); see check_marks."""
    out = book.mark_price.copy()
    if marks is None:
        return out
    for s, p in check_marks(marks, book):
        out[book.symbols.index(s)] = p
    return out


def _enum(categories) -> "tuple[pl.Enum, np.dtype]":
    """The Enum of ``categories`` and the NumPy type of its physical codes (Polars stores an
    Enum's codes as UInt8, UInt16 or UInt32, by the number of categories)."""
    dtype = pl.Enum(list(categories))
    physical = pl.Series(dtype=dtype).to_physical().dtype
    return dtype, pl.Series(dtype=physical).to_numpy().dtype


def _codes(codes: np.ndarray, physical: np.dtype) -> np.ndarray:
    """Integer (or bool) codes in ``physical``, an Enum's unsigned code type: a view when only
    the signedness differs (codes are never negative), else one narrowing pass."""
    codes = np.ascontiguousarray(codes)
    return codes.view(physical) if codes.dtype.itemsize == physical.itemsize else codes.astype(physical)


def _to_enum(column: str, dtype: "pl.Enum") -> "pl.Expr":
    """``column``, codes in the physical type of the Enum ``dtype`` (see _codes), as that
    Enum: Polars checks each code against the categories; no label is looked up or copied."""
    return pl.col(column).cat.to(dtype)


def status_summary(accounts: "pl.DataFrame") -> "pl.DataFrame":
    """Accounts, equity and maintenance margin per status; per (asset, status) when the wallets
    are in several assets (money of different assets is never summed together)."""
    by = ["asset", "status"] if "asset" in accounts.columns and accounts["asset"].n_unique() > 1 else ["status"]
    return (accounts.group_by(by).agg(
        pl.len().alias("accounts"), pl.col("equity").sum(), pl.col("maint_margin").sum()).sort(by))


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
    portfolio: PortfolioMargin | None = None  # per account, where the venue carries a portfolio model
    portfolio_flags: np.ndarray | None = None  # per account, 1 = in portfolio mode
    pool_margin: PoolMargin | None = None  # a pooled venue's (README "Multi-asset collateral")

    def __post_init__(self):
        self._accounts = None
        self._positions = None

    def _h(self, a) -> np.ndarray:
        return self.backend.to_host(a)

    # The tables are built from the result arrays without per-row Python or string work:
    # - float64/int64/int8 arrays are wrapped as they are (Polars takes contiguous NumPy arrays
    #   without a copy; on the cpu backend the frames share the kernels' buffers, so a later
    #   revalue(out=this) rewrites them, as it always did);
    # - the Enum columns (symbol, margin_mode, side, status) come from their integer codes,
    #   which are the Enum's physical representation: `cat.to` checks each code, no label is
    #   looked up (cheaper than gathering from an Enum series: 13 ms against 35-55 ms per 10M
    #   rows; Arrow dictionary import with Polars' Enum field metadata: 14 ms);
    # - liq_price and bankruptcy_price get their nulls as a validity mask over the values
    #   (fill_nan / when), not from a NaN-substituted copy;
    # - the two gathers (account_id, mark_price), the code checks and the masks run as one
    #   Polars select, in parallel on Polars' threads.
    # The frames equal, column for column, the labels-gathered-from-Enum-series builder they
    # replaced (tests/test_engine.py keeps it as the reference).

    @property
    def accounts(self) -> pl.DataFrame:
        """One row per input account row (sorted by account_id, then asset): each (account_id, asset)
        wallet is a margin pool, its money in its asset."""
        if self._accounts is None:
            b, am = self.book, self.account_margin
            status, status_codes = _enum(STATUSES)
            asset, asset_codes = _enum(b.assets)
            raw = pl.DataFrame({
                "account_id": b.account_id,
                "asset": _codes(b.account_asset, asset_codes),
                "wallet_balance": b.wallet,
                "upnl": self._h(am.upnl),
                "equity": self._h(am.equity),
                "maint_margin": self._h(am.maint),
                "close_fee": self._h(am.close_fee),
                "init_margin": self._h(am.init),
                "margin_ratio": self._h(am.ratio),
                "available_balance": self._h(am.available),
                "status": _codes(self._h(am.status), status_codes),
                "n_positions": np.diff(b.pos_start).astype(np.int32),
            })
            if self.pool_margin is not None:  # the pool's figures (schema.POOLED_ACCOUNT_OUTPUT)
                pool = self.pool_margin
                raw = raw.with_columns(**{name: self._h(getattr(pool, field)) for name, field in (
                    ("collateral_value", "collateral_value"), ("pool_equity", "pool_equity"),
                    ("pool_maint_margin", "pool_maint"), ("pool_close_fee", "pool_close_fee"),
                    ("pool_init_margin", "pool_init"))})
            self._accounts = raw.with_columns(_to_enum("asset", asset), _to_enum("status", status))
            if self.portfolio is not None:
                self._accounts = pl.concat([self._accounts, self._portfolio_columns()], how="horizontal")
        return self._accounts

    def _portfolio_columns(self) -> "pl.DataFrame":
        """The portfolio figures of every account (gpurisk/schema.py PORTFOLIO_ACCOUNT_OUTPUT)."""
        pf, model = self.portfolio, self.venue.portfolio
        model_enum, model_codes = _enum(MARGIN_MODELS)
        group_enum = pl.Enum(list(model.groups))
        group = self._h(pf.worst_group)
        return pl.DataFrame({
            "margin_model": _codes(self.portfolio_flags, model_codes),
            "portfolio_margin": self._h(pf.requirement),
            "scenario_loss": self._h(pf.loss),
            "worst_group": pl.Series(np.maximum(group, 0)).cast(pl.UInt32),
            "_no_group": group < 0,
            "worst_shock": self._h(pf.worst_shock),
            "offset_contingency": self._h(pf.offset),
            "liquidity_contingency": self._h(pf.liquidity),
            "tiered_margin": self._h(pf.tiered),
        }).select(
            _to_enum("margin_model", model_enum),
            *(pl.col(c).fill_nan(None) for c in ("portfolio_margin", "scenario_loss")),
            pl.when(~pl.col("_no_group")).then(
                pl.lit(pl.Series(list(model.groups), dtype=group_enum)).gather(pl.col("worst_group"))).alias("worst_group"),
            *(pl.col(c).fill_nan(None) for c in ("worst_shock", "offset_contingency", "liquidity_contingency")),
            "tiered_margin")

    @property
    def positions(self) -> pl.DataFrame:
        """One row per input position, sorted by (account_id, symbol, margin_mode)."""
        if self._positions is None:
            b, pm, pr, q = self.book, self.position_margin, self.position_risk, self.adl
            (symbol, symbol_codes), (status, status_codes) = _enum(b.symbols), _enum(STATUSES)
            (mode, mode_codes), (side, side_codes) = _enum(MARGIN_MODES), _enum(SIDES)
            asset, asset_codes = _enum(b.assets)
            raw = pl.DataFrame({
                "_account": _codes(b.pos_account, np.dtype(np.uint32)),  # row indices, for the gathers
                "_symbol": _codes(b.pos_symbol, np.dtype(np.uint32)),
                "symbol": _codes(b.pos_symbol, symbol_codes),
                "asset": _codes(b.settle_asset[b.pos_symbol], asset_codes),
                "margin_mode": _codes(b.isolated, mode_codes),
                "side": _codes(b.size < 0, side_codes),
                "size": b.size,
                "entry_price": b.entry,
                "notional": self._h(pm.notional),
                "upnl": self._h(pm.upnl),
                "maint_margin": self._h(pm.maint),
                "close_fee": self._h(pm.close_fee),
                "init_margin": self._h(pm.init),
                "margin_ratio": self._h(pr.ratio),
                "status": _codes(self._h(pr.status), status_codes),
                "liq_price": self._h(pr.liq_price),
                "bankruptcy_price": self._h(pr.bankruptcy_price),
                "adl_score": self._h(q.score),
                "adl_rank": self._queue_column(q.rank, pl.Int64),
                "adl_lights": self._queue_column(q.lights, pl.Int8),
            })
            bp = pl.col("bankruptcy_price")
            self._positions = raw.select(
                pl.lit(pl.Series(b.account_id)).gather(pl.col("_account")).alias("account_id"),
                _to_enum("symbol", symbol),
                _to_enum("asset", asset),
                _to_enum("margin_mode", mode),
                _to_enum("side", side),
                "size", "entry_price",
                pl.lit(pl.Series(self.mark)).gather(pl.col("_symbol")).alias("mark_price"),
                "notional", "upnl", "maint_margin", "close_fee", "init_margin", "margin_ratio",
                _to_enum("status", status),
                pl.col("liq_price").fill_nan(None),
                # null unless > 0; Polars orders NaN above every number, so NaN is excluded by name
                pl.when((bp > 0) & bp.is_not_nan()).then(bp).alias("bankruptcy_price"),
                "adl_score", "adl_rank", "adl_lights")
        return self._positions

    def _queue_column(self, values, dtype) -> "pl.Series":
        """A queue place per position, or nulls where the queues were not ranked."""
        if values is None:
            return pl.repeat(None, self.book.n_positions, dtype=dtype, eager=True)
        return pl.Series(self._h(values)).cast(dtype)

    def summary(self) -> pl.DataFrame:
        """Accounts, equity and maintenance margin per status."""
        return status_summary(self.accounts)

    def write(self, directory: str | Path, inputs=(), table: str = "gpurisk") -> Path | str:
        """Write accounts.parquet and positions.parquet into ``directory``, atomically, with a
        manifest (gpurisk.output). ``inputs``: paths the output must not be or be inside (the
        book directory); the place is checked before the tables are built.
        A ``postgresql://`` URI writes tables ``<table>_accounts`` and ``<table>_positions``
        instead, in one transaction, and returns the run id (gpurisk.database)."""
        from .output import atomic_dir, check_place, _held

        database = isinstance(directory, str) and directory.lower().startswith(("postgresql://", "postgres://"))
        if not database and not _held(Path(directory)):
            check_place(directory, "revalue", inputs)
        if self.accounts.height != self.book.n_accounts or self.positions.height != self.book.n_positions:
            raise AssertionError("row counts do not reconcile with the book")  # never drop rows silently
        if database:
            from .database import write_frames

            return write_frames(directory, {"accounts": self.accounts, "positions": self.positions}, table,
                                "revalue", self._manifest_meta())
        with atomic_dir(directory, "revalue", self._manifest_meta(), inputs) as out:
            out.write_parquet("accounts.parquet", self.accounts)
            out.write_parquet("positions.parquet", self.positions)
        return Path(directory)

    def _manifest_meta(self) -> dict:
        from .output import book_hash

        return {"book_hash": book_hash(self.book), "venue": self.venue.name, "backend": self.backend.name,
                **({"margin_currency": self.venue.margin_currency} if self.pool_margin is not None else {}),
                "venue_conventions": dataclasses.asdict(self.venue),  # which ADL rule, fee, tier rule
                "marks": dict(zip(self.book.symbols, np.asarray(self.mark, float).tolist()))}


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
