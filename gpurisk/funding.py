"""Funding: per symbol a rate r, each open position pays r × its notional at the mark
(kernels/funding.cu). With r > 0 longs pay and shorts receive; with r < 0 the reverse.
Cross positions settle against the account's wallet, isolated ones against their margin.

Money is conserved and every unit has a holder:

* per symbol, what the longs pay minus what the shorts receive (zero in a balanced book, up
  to the rounding of each payment) goes to the external counterparty, the stress engine's
  external liquidity account (``net_to_external``): it holds the other side of any net size;
* the float64 additions that book payments into wallets and margins round; each account's
  rounding is measured exactly (TwoSum, in the kernel) and booked on an explicit rounding
  line (``rounding``, positive = money the additions lost), so that, exactly up to the
  rounding of those tiny error terms themselves,
  Σ before = Σ after + Σ payments + Σ rounding (tests/test_funding.py checks it in Decimal).

``apply_funding(book, rates)`` returns the funded book and the report;
``Engine.apply_funding(rates)`` funds the resident book in place; ``stress(..., funding=...)``
pays funding at each step of a price path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

try:
    import polars as pl
except ImportError:  # pragma: no cover
    pl = None

from .book import EXAMPLES_SHOWN, Book, BookError, Problem

#: a rate of 100% of notional per funding interval or more is refused as a mistake
RATE_MAX = 1.0


def check_rates(book: Book, rates) -> np.ndarray:
    """Funding rate per symbol of ``book`` (0 where not given) from ``rates``: {symbol: rate},
    a frame (or dict of columns) with symbol and funding_rate, or an array in the book's
    symbol order. One BookError names every problem (unknown or repeated symbols, nulls,
    non-finite rates, |rate| >= RATE_MAX) before anything is computed."""
    if isinstance(rates, np.ndarray) or (isinstance(rates, (list, tuple)) and rates
                                         and not isinstance(rates[0], (dict, tuple, list))):
        arr = np.asarray(rates, dtype=np.float64)
        if arr.shape != (book.n_symbols,):
            raise ValueError(f"a funding rate array needs one rate per symbol of the book ({book.n_symbols}: "
                             f"{', '.join(book.symbols)}), got shape {arr.shape}")
        items = list(zip(book.symbols, arr.tolist()))
    elif isinstance(rates, dict) and not ({"symbol", "funding_rate"} <= set(rates)):
        items = list(rates.items())
    else:
        df = rates if isinstance(rates, pl.DataFrame) else pl.DataFrame(rates)
        missing = [c for c in ("symbol", "funding_rate") if c not in df.columns]
        if missing:
            raise BookError([Problem("funding", c, "required column is missing (columns present: "
                                     f"{', '.join(df.columns) or 'none'})") for c in missing])
        if not df.schema["funding_rate"].is_numeric() and df["funding_rate"].null_count() < df.height:
            raise BookError([Problem("funding", "funding_rate",
                                     f"must be a number, got column type {df.schema['funding_rate']}")])
        items = list(zip(df["symbol"].cast(pl.String).to_list(), df["funding_rate"].cast(pl.Float64).to_list()))
    problems: list[Problem] = []

    def rule(column, text, hits):
        if hits:
            problems.append(Problem("funding", column, text, len(hits),
                                    tuple(f"symbol={items[i][0]!r} (rate {items[i][1]!r})" for i in hits[:EXAMPLES_SHOWN])))

    syms = [s for s, _ in items]
    rule("symbol", "must be a symbol of the book", [i for i, s in enumerate(syms) if s not in book.symbols])
    rule("symbol", "one rate per symbol; given more than once", [i for i, s in enumerate(syms) if syms.count(s) > 1])

    def number(x):
        if isinstance(x, (bool, str)) or x is None:
            return None
        try:
            return float(x)
        except (TypeError, ValueError):
            return None

    values = [number(r) for _, r in items]
    rule("funding_rate", f"must be a finite number with |rate| < {RATE_MAX:g}",
         [i for i, v in enumerate(values) if v is None or not math.isfinite(v) or abs(v) >= RATE_MAX])
    if problems:
        raise BookError(problems)
    out = np.zeros(book.n_symbols)
    for s, v in zip(syms, values):
        out[book.symbols.index(s)] = v
    return out


@dataclass
class Settlement:
    """One funding settlement as host arrays: per position ``payment`` (+ paid, − received)
    and ``isolated_margin`` after; per account ``wallet`` after, ``paid`` and ``rounding``."""

    payment: np.ndarray
    wallet: np.ndarray
    isolated_margin: np.ndarray
    paid: np.ndarray
    rounding: np.ndarray


def settle(backend, dev, size, wallet, isolated_margin, mark: np.ndarray, rates: np.ndarray) -> Settlement:
    """Run the funding kernels on ``backend`` for the device tables ``dev`` (pos_start,
    pos_symbol, isolated, contract_size) with the given sizes, wallets and isolated margins
    (device arrays or host arrays, uploaded here)."""
    b = backend
    xp = b.xp
    n, m = int(size.size), int(wallet.size)
    size, wallet, iso_margin = b.asarray(size), b.asarray(wallet), b.asarray(isolated_margin)
    payment = xp.empty(n, dtype=xp.float64)
    b.launch("funding_payments", n, dev.pos_symbol, size, b.asarray(mark), dev.contract_size,
             b.asarray(np.asarray(rates, dtype=np.float64)), dev.inverse, payment)
    out = [xp.empty(m, dtype=xp.float64), xp.empty(n, dtype=xp.float64), xp.empty(m, dtype=xp.float64),
           xp.empty(m, dtype=xp.float64)]
    b.launch("settle_funding", m, dev.pos_start, dev.isolated, payment, wallet, iso_margin, *out)
    b.synchronize()
    w, im, paid, rounding = (b.to_host(a) for a in out)
    return Settlement(b.to_host(payment), w, im, paid, rounding)


@dataclass
class FundingResult:
    """A funding settlement: the funded ``book`` and what moved.

    ``payments``: per position of the book (storage order), + paid, − received.
    ``by_symbol``: symbol, asset (the market's settle asset: the money columns are in it),
    funding_rate, mark_price, long_paid, short_received, net_to_external (long_paid −
    short_received: what the external counterparty receives).
    ``accounts``: account_id, asset (the wallet's), funding_paid (+ paid), wallet_balance after,
    rounding.
    ``rounding_residual``: Σ rounding over accounts, the money the additions lost (+); with
    wallets in several assets, per asset in ``rounding_by_asset``.
    """

    book: Book
    rates: np.ndarray
    mark: np.ndarray
    payments: np.ndarray
    account_paid: np.ndarray
    rounding: np.ndarray

    @property
    def rounding_residual(self) -> float:
        return float(np.sum(self.rounding))

    @property
    def rounding_by_asset(self) -> dict[str, float]:
        """Σ rounding over the accounts of each asset (money of different assets is not added)."""
        b = self.book
        sums = np.bincount(b.account_asset, weights=self.rounding, minlength=len(b.assets))
        return {a: float(v) for a, v in zip(b.assets, sums) if np.any(b.account_asset == b.assets.index(a))}

    def symbol_totals(self) -> dict[str, np.ndarray]:
        """long_paid, short_received and net_to_external per symbol, summed in storage order
        on the host (the same bits on every backend)."""
        b = self.book
        long = self.book.size > 0
        k = b.n_symbols
        long_paid = np.bincount(b.pos_symbol[long], weights=self.payments[long], minlength=k)
        short_received = 0.0 - np.bincount(b.pos_symbol[~long], weights=self.payments[~long], minlength=k)
        return {"long_paid": long_paid, "short_received": short_received,
                "net_to_external": np.bincount(b.pos_symbol, weights=self.payments, minlength=k)}

    @property
    def by_symbol(self) -> "pl.DataFrame":
        b = self.book
        return pl.DataFrame({"symbol": list(b.symbols),
                             "asset": pl.Series([b.assets[k] for k in b.settle_asset], dtype=pl.String),
                             "funding_rate": self.rates,
                             "mark_price": self.mark, **self.symbol_totals()})

    @property
    def accounts(self) -> "pl.DataFrame":
        b = self.book
        return pl.DataFrame({"account_id": b.account_id,
                             "asset": pl.Series(np.array(b.assets)[b.account_asset], dtype=pl.String),
                             "funding_paid": self.account_paid,
                             "wallet_balance": self.book.wallet, "rounding": self.rounding})

    def write(self, directory: "str | Path", inputs=()) -> Path:
        """The funded book as a book directory (``read_book`` reads it back) with the report
        beside its tables (funding_by_symbol.parquet, funding_accounts.parquet), atomically,
        with a manifest (gpurisk.output) recording the rates, marks and rounding residual."""
        from .output import atomic_dir, book_hash

        meta = {"book_hash": book_hash(self.book), "marks": dict(zip(self.book.symbols, self.mark.tolist())),
                "accounts": self.book.n_accounts, "positions": self.book.n_positions,
                "funding_rates": dict(zip(self.book.symbols, self.rates.tolist())),
                "funding_rounding_residual": self.rounding_residual,
                **({"funding_rounding_by_asset": self.rounding_by_asset} if len(self.book.assets) > 1 else {})}
        with atomic_dir(directory, "book", meta, inputs) as out:
            for name, df in self.book.frames().items():
                out.write_parquet(f"{name}.parquet", df)
            if self.book.collateral is not None:  # a pooled venue's book stays one
                out.write_parquet("collateral.parquet", self.book.collateral)
            out.write_parquet("funding_by_symbol.parquet", self.by_symbol)
            out.write_parquet("funding_accounts.parquet", self.accounts)
        return Path(directory)


def _funded(book: Book, s: Settlement) -> Book:
    meta = {k: v for k, v in book.meta.items() if k != "hash"}  # the wallets changed
    return replace(book, wallet=s.wallet, isolated_margin=s.isolated_margin, meta=meta)


def apply_funding(book: Book, rates, marks=None, backend="auto") -> FundingResult:
    """Pay funding on ``book`` at ``rates`` (see check_rates) and ``marks`` (the book's where
    None); returns the funded book (``.book``, a new Book; ``book`` is unchanged) and the report."""
    from .backend import get_backend
    from .engine import DeviceBook, resolve_marks

    rate = check_rates(book, rates)
    mark = resolve_marks(book, marks)
    b = get_backend(backend)
    s = settle(b, DeviceBook(book, b), book.size, book.wallet, book.isolated_margin, mark, rate)
    return FundingResult(_funded(book, s), rate, mark, s.payment, s.paid, s.rounding)


def apply_funding_to_engine(engine, rates, marks=None) -> FundingResult:
    """``Engine.apply_funding``: the resident book's wallets and isolated margins are replaced
    by the funded ones (on the device and in ``engine.book``)."""
    from .engine import resolve_marks

    # Each wallet is paid in its own asset (the settle asset of the positions' markets) under a
    # pooled venue too: pools value the funded wallets at the next revaluation.
    book = engine.book
    rate = check_rates(book, rates)
    mark = resolve_marks(book, marks)
    if engine.device is not None:
        b, dev = engine.backend, engine.device
    else:  # a chunked engine keeps the whole book on the host
        from .backend import get_backend

        b, dev = get_backend("cpu"), engine.host
    s = settle(b, dev, dev.size, dev.wallet, dev.isolated_margin, mark, rate)
    dev.wallet, dev.isolated_margin = b.asarray(s.wallet), b.asarray(s.isolated_margin)
    engine.book = _funded(book, s)
    return FundingResult(engine.book, rate, mark, s.payment, s.paid, s.rounding)


def funding_steps(book: Book, funding, n_steps: int) -> np.ndarray | None:
    """Rates per (step, symbol) for a stress run of ``n_steps`` steps: {symbol: rate} or a
    (symbol, funding_rate) frame pays the same rates at every step; a frame with a ``step``
    column pays at the steps it lists (0-based) only; an array (steps, symbols) as given,
    0 beyond its rows. None: no funding."""
    if funding is None:
        return None
    out = np.zeros((n_steps, book.n_symbols))
    if isinstance(funding, np.ndarray) and funding.ndim == 2:
        if funding.shape[1] != book.n_symbols:
            raise ValueError(f"funding array needs one column per symbol ({book.n_symbols}), got {funding.shape}")
        for t in range(min(n_steps, funding.shape[0])):
            out[t] = check_rates(book, funding[t])
        return out
    df = None
    if not isinstance(funding, (dict, np.ndarray)) or ("step" in funding if isinstance(funding, dict) else False):
        df = funding if isinstance(funding, pl.DataFrame) else pl.DataFrame(funding)
    if df is None or "step" not in df.columns:
        out[:] = check_rates(book, funding)
        return out
    steps = df["step"]
    if not steps.dtype.is_integer() or steps.null_count() or (steps < 0).any():
        raise BookError([Problem("funding", "step", "must be whole numbers >= 0")])
    for (t,), part in df.group_by("step", maintain_order=True):
        if t < n_steps:
            out[t] = check_rates(book, part.drop("step"))
    return out
