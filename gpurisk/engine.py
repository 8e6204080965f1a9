"""Revaluation: the book on the device, every account and position revalued and ranked.

``Engine`` uploads the book once and keeps it resident; ``engine.revalue(marks)`` runs the
kernels for a new set of mark prices and re-ranks the ADL queues. ``revalue(book, ...)`` is
the one-shot form. Results stay on the device until a table is asked for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:  # result tables need Polars; the device arrays do not
    import polars as pl
except ImportError:  # pragma: no cover
    pl = None

from .adl import AdlQueues, adl_queues, queue_group, queue_starts
from .backend import Backend, get_backend
from .book import Book, BookError, Problem
from .liquidation import PositionRisk, position_risk
from .margin import AccountMargin, PositionMargin, account_margin, position_margin
from .schema import MARGIN_MODES, SIDES, STATUSES
from .venue import Venue, get_venue

_DEVICE_FIELDS = ("mark_price", "contract_size", "tier_start", "tier_floor", "tier_mmr", "tier_cum",
                  "tier_max_leverage", "wallet", "pos_start", "pos_account", "pos_symbol", "size",
                  "entry", "isolated", "isolated_margin", "leverage")


class DeviceBook:
    """The arrays of a Book on one backend (uploaded once)."""

    def __init__(self, book: Book, backend: Backend):
        xp = backend.xp
        for name in _DEVICE_FIELDS:
            setattr(self, name, backend.asarray(getattr(book, name)))
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
                "adl_rank": self._h(q.rank),
                "adl_lights": self._h(q.lights),
            })
        return self._positions

    def summary(self) -> pl.DataFrame:
        """Accounts, equity and maintenance margin per status."""
        return (self.accounts.group_by("status").agg(
            pl.len().alias("accounts"), pl.col("equity").sum(), pl.col("maint_margin").sum())
            .sort("status"))

    def write(self, directory: str | Path) -> Path:
        """Write accounts.parquet and positions.parquet into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.accounts.write_parquet(directory / "accounts.parquet")
        self.positions.write_parquet(directory / "positions.parquet")
        if self.accounts.height != self.book.n_accounts or self.positions.height != self.book.n_positions:
            raise AssertionError("row counts do not reconcile with the book")  # never silently drop rows
        return directory


class Engine:
    """A book resident on a backend, revalued for new mark prices without re-uploading.

    >>> engine = Engine(book, venue="binance", backend="auto")
    >>> risk = engine.revalue({"BTCUSDT": 61_000.0})
    """

    def __init__(self, book: Book, venue: "str | Venue" = "binance", backend: "str | Backend" = "auto"):
        self.book = book
        self.venue = get_venue(venue)
        self.backend = get_backend(backend)
        t = time.perf_counter()
        self.device = DeviceBook(book, self.backend)
        self.backend.synchronize()
        self.upload_seconds = time.perf_counter() - t

    def revalue(self, marks=None, out: Risk | None = None) -> Risk:
        """Revalue every account and position at ``marks`` (the book's marks where not given).

        ``out``: a previous Risk of this engine whose device buffers are reused (its tables
        are then replaced); saves allocations when revaluing in a loop.
        """
        b, xp, dev, venue = self.backend, self.backend.xp, self.device, self.venue
        mark_host = resolve_marks(self.book, marks)
        timings = {}
        t0 = time.perf_counter()
        mark = b.asarray(mark_host)
        pm = position_margin(b, dev, mark, venue, out.position_margin if out else None)
        am = account_margin(b, dev, pm, venue, out.account_margin if out else None)
        pr = position_risk(b, dev, mark, pm, am, venue, out.position_risk if out else None)
        b.synchronize()
        t1 = time.perf_counter()
        adl = adl_queues(b, dev, mark, pm, pr, venue)
        b.synchronize()
        t2 = time.perf_counter()
        timings.update(kernels=t1 - t0, ranking=t2 - t1)
        return Risk(self.book, venue, b, mark_host, pm, am, pr, adl, timings)


def revalue(book: Book, venue: "str | Venue" = "binance", backend: "str | Backend" = "auto", marks=None) -> Risk:
    """Revalue every account and position of ``book`` (one shot; see Engine to stay resident)."""
    return Engine(book, venue=venue, backend=backend).revalue(marks)
