"""What-if orders: a table of prospective orders, each applied hypothetically to the
resident book (kernels/whatif.cu), with the account's margin, available balance, the
resulting position's liquidation price and the initial-margin check after it.

Each order is evaluated on its own against the resident book, never cumulatively (two
orders of one account are two separate hypotheses), and the book is not changed. An order
trades in the margin pool of its account and its market's settle asset (README "Inverse
contracts"): linear and inverse (coin-margined) markets, wallets in several assets; its money
columns are in that asset (the ``asset`` column). A venue that pools collateral across assets
re-values the order's row in the account's pool (POOLED_WHAT_IF_OUTPUT): margin ratio, status,
available balance, the initial-margin check and a cross liquidation price are the pool's. Every
venue's conventions apply as in a revaluation, whose figures for the book with the order applied
the results equal bit for bit (tests/test_whatif.py, test_whatif_inverse.py, test_collateral.py).

``Engine.what_if(orders)`` is the entry point (a frame in, a frame out, one row per order in
input order); ``what_if_arrays`` is the same on arrays (no Polars), for callers that hold
orders as indices, such as an order-entry gateway or the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

try:
    import polars as pl
except ImportError:  # pragma: no cover
    pl = None

from . import schema as _lim
from .book import EXAMPLES_SHOWN, BookError, Problem
from .collateral import DevicePools
from .margin import account_margin, position_margin
from .schema import MARGIN_MODES, STATUSES
from .tier_rules import venue_tiers
from .venue import AVAILABLE_RULES

#: orders table: (name, kind, required, doc)
ORDER_COLUMNS = (
    ("account_id", "int", True, "an account of the book"),
    ("symbol", "str", True, "a symbol of the book"),
    ("size", "float", True, "signed order size: + buy, - sell; finite, != 0"),
    ("price", "float", True, "execution price; finite, > 0"),
    ("margin_mode", "str", False, "cross (default) or isolated: which position of the account it trades"),
    ("isolated_margin", "float", False, "isolated only: margin added from the wallet; null = the initial margin "
                                        "of the size the order opens, at its price"),
    ("leverage", "float", False, "optional, >= 1: leverage of a new position (null: the held position's, else "
                                 "the tier's max)"),
)

#: what-if output columns, one row per order in input order
WHAT_IF_OUTPUT = {
    "order": "0-based row of the order in the input",
    "account_id": "the order's account",
    "symbol": "the order's market",
    "asset": "the market's settle asset: the order trades in the margin pool (account_id, asset), and every "
             "money column (PnL, margins, wallet, equity, balances) is in it (the coin for an inverse market)",
    "margin_mode": "cross | isolated",
    "order_size": "the order's signed size",
    "order_price": "the order's price",
    "size": "the position's size after the order (0: closed)",
    "entry_price": "entry after the order: averaged on increase (harmonically for an inverse market), kept on "
                   "reduce, the order's price after a flip; null when closed",
    "realised_pnl": "PnL realised by the part of the position the order closes, at the order's price",
    "isolated_margin": "the isolated position's margin after the order (0 for cross)",
    "notional": "|size| * mark * contract_size of the resulting position (inverse: |size| * contract_size / mark, "
                "in the coin)",
    "upnl": "unrealised PnL of the resulting position at the mark",
    "maint_margin": "maintenance margin of the resulting position",
    "close_fee": "the venue's fee to close the resulting position at the mark (close_fee_rate · notional), counted "
                 "in the requirement beside maint_margin; 0 for a venue without one",
    "init_margin": "initial margin of the resulting position",
    "wallet_balance": "the account's wallet after the order (realised PnL, isolated margin moved)",
    "equity": "the account's cross equity after the order",
    "account_maint_margin": "the account's cross maintenance margin after the order",
    "account_close_fee": "the account's cross close fees after the order (its margin ratio is "
                         "(account_maint_margin + account_close_fee) / equity)",
    "account_init_margin": "the account's cross initial margin after the order",
    "margin_ratio": "the account's cross margin ratio after the order (a pooled venue: the pool's)",
    "available_balance": "the account's available balance after the order, by the venue's rule (equity - "
                         "initial margin; or wallet + unrealised losses - initial margin; a pooled venue: pool "
                         "equity - pool initial margin)",
    "status": "the account's status after the order",
    "position_margin_ratio": "the resulting position's unit: its own (isolated) or the account's (cross); null "
                             "when closed",
    "position_status": "likewise; null when closed",
    "liq_price": "liquidation price of the resulting position, others at their marks, as a revaluation reports it "
                 "(on the trigger side of the root, rounded to the tick where the market has one); null when closed "
                 "or no positive price liquidates",
    "im_check": "True when the order passes the initial-margin check (see README)",
}

#: a pooled venue's extra columns (README "Multi-asset collateral"): the order's row and its pool
#: after the order, in the venue's margin currency
POOLED_WHAT_IF_OUTPUT = {
    "collateral_value": "the order's row (account_id, asset) after the order, valued through the collateral table",
    "pool_equity": "the account's pool equity after the order: Σ collateral values of its rows",
    "pool_maint_margin": "Σ row maintenance margin × index price over the pool, after the order",
    "pool_close_fee": "Σ row close fee × index price over the pool, after the order",
    "pool_init_margin": "Σ row initial margin × index price over the pool, after the order",
}
_POOL_F64 = ("collateral_value", "pool_equity", "pool_maint", "pool_close_fee", "pool_init")

_OUT_F64 = ("new_size", "new_entry", "realised", "new_isolated_margin", "pos_notional", "pos_upnl", "pos_maint",
            "pos_init", "pos_fee", "wallet", "equity", "maint", "init", "fee", "ratio", "available")


@dataclass
class WhatIfArrays:
    """Per-order results as arrays (host NumPy), in the order given. ``position_index``: the
    held position's storage index in the book, -1 where the order opens a new one;
    ``pos_status`` -1 where the order closes the position; ``im_ok`` 1 = passes."""

    position_index: np.ndarray
    new_size: np.ndarray
    new_entry: np.ndarray
    realised: np.ndarray
    new_isolated_margin: np.ndarray
    pos_notional: np.ndarray
    pos_upnl: np.ndarray
    pos_maint: np.ndarray
    pos_init: np.ndarray
    pos_fee: np.ndarray
    wallet: np.ndarray
    equity: np.ndarray
    maint: np.ndarray
    init: np.ndarray
    fee: np.ndarray
    ratio: np.ndarray
    available: np.ndarray
    status: np.ndarray
    pos_equity: np.ndarray
    pos_ratio: np.ndarray
    pos_status: np.ndarray
    liq_price: np.ndarray
    im_ok: np.ndarray
    # a pooled venue's (POOLED_WHAT_IF_OUTPUT), one per order; empty for a per-asset venue
    collateral_value: np.ndarray = field(default_factory=lambda: np.empty(0))
    pool_equity: np.ndarray = field(default_factory=lambda: np.empty(0))
    pool_maint: np.ndarray = field(default_factory=lambda: np.empty(0))
    pool_close_fee: np.ndarray = field(default_factory=lambda: np.empty(0))
    pool_init: np.ndarray = field(default_factory=lambda: np.empty(0))


class BaseFigures:
    """The resident book's per-position figures at some marks, as the what-if kernel reads
    them (upnl, MM, IM, close fee of the positions the order does not trade; the kernel sums
    the account again around the traded one). They do not depend on wallets or isolated
    margins, so funding leaves them valid."""

    def __init__(self, engine, mark_host: np.ndarray):
        self.backend, self.dev = _where(engine)
        self.mark_host = mark_host
        self.mark = self.backend.asarray(mark_host)
        self.pm = position_margin(self.backend, self.dev, self.mark, engine.venue)
        # A pooled venue's pool layout (the rows' figures depend on the wallets: _pool_args).
        self.pools = None
        if engine.venue.collateral == "pooled":
            self.pools = engine.pools if engine.device is not None and engine.pools is not None \
                else DevicePools(engine.book, self.backend)


def _where(engine):
    """(backend, device tables) the what-if runs on: the engine's, or for a book processed in
    chunks (larger than device memory) the host copy on the cpu backend."""
    from .backend import get_backend

    if engine.device is not None:
        return engine.backend, engine.device
    return get_backend("cpu"), engine.host


def base_figures(engine, marks=None) -> BaseFigures:
    """The engine's revaluation figures at ``marks`` (the book's where None), computed once per
    set of marks and kept on the engine while the marks stay the same."""
    from .engine import resolve_marks

    mark_host = resolve_marks(engine.book, marks)
    cached = getattr(engine, "_what_if_base", None)
    if cached is not None and np.array_equal(cached.mark_host, mark_host):
        return cached
    engine._what_if_base = None  # free the previous figures before computing new ones
    engine._what_if_base = BaseFigures(engine, mark_host)
    return engine._what_if_base


def _portfolio_tables(engine, backend):
    """The portfolio model's device tables for the what-if's backend, or None when no account
    of the book is in portfolio mode."""
    flags = getattr(engine, "portfolio_flags", None)
    if flags is None or not flags.any():
        return None
    if engine.device is not None and engine.portfolio is not None:
        return engine.portfolio
    cached = getattr(engine, "_what_if_portfolio", None)
    if cached is None:  # a chunked engine: its host copy, on the cpu backend
        from .portfolio import PortfolioDevice

        cached = engine._what_if_portfolio = PortfolioDevice(engine.book, engine.venue, backend, flags)
    return cached


def what_if_arrays(engine, account_index, symbol_index, size, price, isolated=None, margin=None,
                   leverage=None, marks=None) -> WhatIfArrays:
    """What-if on arrays: ``account_index`` (int32, row of the book's sorted account rows: the
    margin pool, whose asset must be the symbol's settle asset),
    ``symbol_index`` (int32, index into ``book.symbols``), signed ``size`` and ``price``
    (float64); optional ``isolated`` (int8, 1 = isolated), ``margin`` (float64, NaN = default)
    and ``leverage`` (float64, 0 = default). The arrays are checked (shapes, index ranges,
    finite values) and a BookError names the first bad rows; see ``Engine.what_if``."""
    book = engine.book
    n = int(np.asarray(size).size)
    acc = np.ascontiguousarray(account_index, dtype=np.int32)
    sym = np.ascontiguousarray(symbol_index, dtype=np.int32)
    q = np.ascontiguousarray(size, dtype=np.float64)
    px = np.ascontiguousarray(price, dtype=np.float64)
    iso = np.zeros(n, np.int8) if isolated is None else np.ascontiguousarray(isolated, dtype=np.int8)
    mg = np.full(n, np.nan) if margin is None else np.ascontiguousarray(margin, dtype=np.float64)
    lev = np.zeros(n) if leverage is None else np.ascontiguousarray(leverage, dtype=np.float64)
    _check_order_arrays(book, acc, sym, q, px, iso, mg, lev, getattr(engine, "portfolio_flags", None))
    base = base_figures(engine, marks)
    return _launch(engine, base, acc, sym, q, px, iso, mg, lev)


def _check_order_arrays(book, acc, sym, q, px, iso, mg, lev, portfolio=None) -> None:
    n = q.size
    problems = []
    for name, arr in (("account_index", acc), ("symbol_index", sym), ("price", px), ("margin_mode", iso),
                      ("isolated_margin", mg), ("leverage", lev)):
        if arr.shape != (n,):
            problems.append(Problem("orders", name, f"must have one value per order ({n}), got shape {arr.shape}"))
    if problems:
        raise BookError(problems)

    def rule(column, bad, text):
        rows = np.flatnonzero(bad)
        if rows.size:
            problems.append(Problem("orders", column, text, int(rows.size),
                                    tuple(f"row {r}" for r in rows[:EXAMPLES_SHOWN].tolist())))

    rule("account_index", (acc < 0) | (acc >= book.n_accounts), f"must be in [0, {book.n_accounts})")
    rule("symbol_index", (sym < 0) | (sym >= book.n_symbols), f"must be in [0, {book.n_symbols})")
    known = (acc >= 0) & (acc < book.n_accounts) & (sym >= 0) & (sym < book.n_symbols)
    if len(book.assets) > 1:
        a, s = np.where(known, acc, 0), np.where(known, sym, 0)
        rule("account_index", known & (book.account_asset[a] != book.settle_asset[s]),
             "must be a row (margin pool) in the symbol's settle asset: book.account_asset[row] == "
             "book.settle_asset[symbol]")
    _portfolio_rule(rule, "symbol_index", book, portfolio, known, acc, sym)
    _value_rules(rule, q, px, iso, mg, lev)
    _notional_rule(rule, book, sym, q, px)
    if problems:
        raise BookError(problems)


def _portfolio_rule(rule, column, book, portfolio, known, acc, sym) -> None:
    """Orders of accounts in portfolio mode on inverse markets: the portfolio model values
    linear contracts only (a revaluation refuses such a position, gpurisk/portfolio.py)."""
    if portfolio is None or not portfolio.any() or not book.inverse.any():
        return
    a, s = np.where(known, acc, 0), np.where(known, sym, 0)
    rule(column, known & (portfolio[a] != 0) & (book.inverse[s] != 0),
         "accounts in portfolio mode trade linear markets only (the portfolio model values no inverse "
         "contract); margin the account by tiers (accounts.margin_model = 'tiered')")


def _notional_rule(rule, book, sym, q, px) -> None:
    """The order's notional within the book's per-position limit: |size|·price·contract_size,
    or |size|·contract_size/price in the coin for an inverse market (rows with an unknown
    symbol or a bad size or price are other rules' business)."""
    known = (sym >= 0) & (sym < book.n_symbols)
    s = np.where(known, sym, 0)
    cs = book.contract_size[s] if book.n_symbols else np.ones(q.size)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        notional = np.abs(q) * px * cs
        if book.inverse.any():
            notional = np.where(book.inverse[s] != 0, np.abs(q) * cs / px, notional)
        rule("size", known & np.isfinite(q) & np.isfinite(px) & (px > 0) & (notional > _lim.NOTIONAL_MAX),
             f"order notional |size|·price·contract_size (inverse: |size|·contract_size/price, in the coin) must "
             f"be <= {_lim.NOTIONAL_MAX:g} (input limits, gpurisk.schema)")


def _value_rules(rule, q, px, iso, mg, lev) -> None:
    """The value rules shared by the frame and array entry points (README "What-if orders")."""
    with np.errstate(invalid="ignore"):
        rule("size", ~(np.isfinite(q) & (q != 0)), "must be finite and non-zero")
        rule("size", np.isfinite(q) & (q != 0) & ((np.abs(q) < _lim.SIZE_MIN) | (np.abs(q) > _lim.SIZE_MAX)),
             f"|size| must be in [{_lim.SIZE_MIN:g}, {_lim.SIZE_MAX:g}] (input limits, gpurisk.schema)")
        rule("price", ~(np.isfinite(px) & (px > 0)), "must be finite and > 0")
        rule("price", np.isfinite(px) & (px > 0) & ((px < _lim.PRICE_MIN) | (px > _lim.PRICE_MAX)),
             f"must be in [{_lim.PRICE_MIN:g}, {_lim.PRICE_MAX:g}] (input limits, gpurisk.schema)")
        rule("margin_mode", (iso != 0) & (iso != 1), "must be 'cross' or 'isolated' (0 or 1)")
        given = ~np.isnan(mg)
        rule("isolated_margin", given & ~(np.isfinite(mg) & (mg >= 0) & (mg <= _lim.BALANCE_MAX)),
             f"must be finite and in [0, {_lim.BALANCE_MAX:g}] (or null)")
        rule("isolated_margin", given & (iso == 0), "cross orders carry no isolated_margin (leave it null)")
        rule("leverage", (lev != 0) & ~(np.isfinite(lev) & (lev >= 1) & (lev <= _lim.LEVERAGE_MAX)),
             f"must be finite and in [1, {_lim.LEVERAGE_MAX:g}] (or null)")


def _launch(engine, base: BaseFigures, acc, sym, q, px, iso, mg, lev) -> WhatIfArrays:
    b, dev, venue = base.backend, base.dev, engine.venue
    xp = b.xp
    n = q.size
    f64 = {k: xp.empty(n, dtype=xp.float64) for k in _OUT_F64}
    out = dict(position_index=xp.empty(n, dtype=xp.int64), status=xp.empty(n, dtype=xp.int8),
               pos_equity=xp.empty(n, dtype=xp.float64), pos_ratio=xp.empty(n, dtype=xp.float64),
               pos_status=xp.empty(n, dtype=xp.int8), liq_price=xp.empty(n, dtype=xp.float64),
               im_ok=xp.empty(n, dtype=xp.int8), **f64)
    pm = base.pm
    tiers = venue_tiers(b, dev, venue)
    b.launch("what_if", n, b.asarray(acc), b.asarray(sym), b.asarray(q), b.asarray(px), b.asarray(iso),
             b.asarray(mg), b.asarray(lev),
             dev.pos_start, dev.pos_symbol, dev.size, dev.entry, dev.isolated, dev.isolated_margin, dev.leverage,
             base.mark, dev.contract_size, dev.tick_size, dev.tier_start, dev.tier_floor, dev.tier_mmr, tiers.cum,
             tiers.req_mmr, tiers.root_bound, dev.tier_max_leverage, int(venue.mm_base == "entry"),
             int(venue.tier_basis == "contracts"), int(venue.tier_rate == "whole"), int(venue.im_base == "entry"),
             float(venue.close_fee_rate), AVAILABLE_RULES.index(venue.available_upnl),
             float(venue.margin_call_ratio), float(venue.liquidation_ratio), dev.inverse,
             pm.upnl, pm.maint, pm.init, pm.close_fee, dev.wallet, *_pool_args(b, base, venue, out, n),
             out["position_index"], out["new_size"], out["new_entry"], out["realised"], out["new_isolated_margin"],
             out["pos_notional"], out["pos_upnl"], out["pos_maint"], out["pos_init"], out["pos_fee"], out["wallet"],
             out["equity"], out["maint"], out["init"], out["fee"], out["ratio"], out["available"], out["status"],
             out["pos_equity"], out["pos_ratio"], out["pos_status"], out["liq_price"], out["im_ok"])
    pf = _portfolio_tables(engine, b)
    if pf is not None:  # orders of portfolio accounts: the requirement after the order
        b.launch("portfolio_what_if", n, b.asarray(acc), b.asarray(sym), b.asarray(iso), out["position_index"],
                 out["new_size"], dev.pos_start, dev.pos_symbol, dev.size, dev.isolated, base.mark, dev.contract_size,
                 pm.upnl, pf.sym_group, pf.shock_start, pf.shock, pf.offset_rate, pf.liquidity_threshold,
                 pf.liquidity_rate, int(pf.model.groups_move == "joint"), float(pf.model.im_multiple), pf.use,
                 AVAILABLE_RULES.index(venue.available_upnl), float(venue.margin_call_ratio),
                 float(venue.liquidation_ratio), out["pos_upnl"], out["pos_fee"], out["wallet"], out["equity"],
                 out["fee"], out["pos_equity"], out["maint"], out["init"], out["ratio"], out["available"],
                 out["status"], out["pos_maint"], out["pos_init"], out["pos_ratio"], out["pos_status"],
                 out["liq_price"], out["im_ok"])
    b.synchronize()
    return WhatIfArrays(**{k: b.to_host(v) for k, v in out.items()})


def _pool_args(b, base: BaseFigures, venue, out: dict, n: int) -> tuple:
    """The what_if kernel's pool arguments: a pooled venue's layout, the revaluation's row
    figures (summed afresh: funding moves the wallets) and five more outputs (added to
    ``out``); else one-element placeholders the kernel does not touch."""
    xp = b.xp
    if base.pools is None:
        f, i32, i64 = xp.zeros(1, dtype=xp.float64), xp.zeros(1, dtype=xp.int32), xp.zeros(2, dtype=xp.int64)
        return (0, 0, i64, i32, f, f, f, f, i32, f, i32, f, f, f, f, f, f, f)
    for k in _POOL_F64:
        out[k] = xp.empty(n, dtype=xp.float64)
    p, am = base.pools, account_margin(b, base.dev, base.pm, venue)
    return (1, p.n_pools, p.pool_start, p.row_asset, am.equity, am.maint, am.close_fee, am.init, am.n_cross,
            p.index_price, p.coll_start, p.coll_floor, p.coll_ratio, *(out[k] for k in _POOL_F64))


# ------------------------------------------------------------------ the frame entry point


def _orders_frame(orders) -> "pl.DataFrame":
    from .validate import to_frame

    return to_frame(orders, "orders")


def checked_columns(orders) -> "pl.DataFrame":
    """The orders table as a frame, its columns present and of the right kinds, not empty
    (the rules that do not need the book); a BookError otherwise."""
    df = _orders_frame(orders)
    problems: list[Problem] = []
    kinds = {"str": lambda t: t in (pl.String, pl.Categorical) or isinstance(t, pl.Enum),
             "float": lambda t: t.is_numeric(), "int": lambda t: t.is_integer()}
    want = {"str": "text", "float": "a number", "int": "an integer"}
    for name, kind, required, _ in ORDER_COLUMNS:
        if name not in df.columns:
            if required:
                problems.append(Problem("orders", name, "required column is missing (columns present: "
                                        f"{', '.join(df.columns) or 'none'})"))
            continue
        all_null = df[name].null_count() == df.height
        if not all_null and not kinds[kind](df.schema[name]):
            problems.append(Problem("orders", name, f"must be {want[kind]}, got column type {df.schema[name]}"))
    if problems:
        raise BookError(problems)
    if df.height == 0:
        raise BookError([Problem("orders", "", "table is empty")])
    return df


def check_orders(book, orders, rows: np.ndarray | None = None,
                 portfolio: np.ndarray | None = None) -> tuple["pl.DataFrame", tuple]:
    """Validate an orders table against ``book``; return it (defaults filled in) and its
    arrays (account row: the margin pool of the account in the market's settle asset; symbol
    index, size, price, isolated, margin, leverage). ``portfolio``: the engine's per-account-row
    portfolio flags (orders of those accounts on inverse markets are refused), or None. One
    BookError names every broken rule with the first rows at fault (row number, account_id,
    symbol) before anything is computed. ``rows``: the row numbers to name (the orders' rows
    in a larger table, as a shard of a DistributedEngine sees its part); default 0, 1, ..."""
    df = checked_columns(orders)
    problems: list[Problem] = []
    n = df.height
    acc_id = df["account_id"].cast(pl.Int64)
    sym_text = df["symbol"].cast(pl.String)

    def describe(hits: np.ndarray) -> tuple[str, ...]:
        pick = hits[:EXAMPLES_SHOWN]
        a = acc_id.gather(pick).to_list()
        s = sym_text.gather(pick).to_list()
        named = pick if rows is None else rows[pick]
        return tuple(f"row {r} (account_id={x!r}, symbol={y!r})" for r, x, y in zip(named.tolist(), a, s))

    def rule(column, bad, text):
        hits = np.flatnonzero(bad)
        if hits.size:
            problems.append(Problem("orders", column, text, int(hits.size), describe(hits)))

    ids = acc_id.to_numpy()
    acc_null = acc_id.is_null().to_numpy()
    rule("account_id", acc_null, "must not be null")
    ids_filled = np.where(acc_null, 0, ids).astype(np.int64)
    acc, by_id = account_index(book, ids_filled, with_order=True)
    found = (acc < book.n_accounts) & (book.account_id[np.minimum(acc, book.n_accounts - 1)] == ids_filled)
    rule("account_id", ~acc_null & ~found, "must be an account of the book")
    sym_null = sym_text.is_null().to_numpy()
    rule("symbol", sym_null, "must not be null")
    sym_codes = sym_text.replace_strict(list(book.symbols), list(range(book.n_symbols)), default=-1,
                                        return_dtype=pl.Int32).fill_null(-1).to_numpy()
    rule("symbol", ~sym_null & (sym_codes < 0), "must be a symbol of the book")
    if len(book.assets) > 1:  # the account's wallet (margin pool) in the market's settle asset
        sym_ok = sym_codes >= 0
        acc, in_pool = pool_index(book, acc, ids_filled, book.settle_asset[np.where(sym_ok, sym_codes, 0)], by_id)
        rule("account_id", ~acc_null & found & sym_ok & ~in_pool,
             "needs a wallet in its market's settle asset (an accounts row with that account_id and asset = "
             "markets.settle_asset: each is a margin pool); none for")
        found &= in_pool
    _portfolio_rule(rule, "symbol", book, portfolio, ~acc_null & found & (sym_codes >= 0), acc, sym_codes)

    def floats(name, fill):
        if name not in df.columns:
            return np.full(n, fill, dtype=np.float64), np.zeros(n, bool)
        col = df[name].cast(pl.Float64)
        return col.fill_null(fill).to_numpy().astype(np.float64), col.is_null().to_numpy()

    q, q_null = floats("size", np.nan)
    px, px_null = floats("price", np.nan)
    rule("size", q_null, "must not be null")
    rule("price", px_null, "must not be null")
    mode = df["margin_mode"].cast(pl.String) if "margin_mode" in df.columns else pl.Series([None] * n, dtype=pl.String)
    mode = mode.fill_null("cross")
    rule("margin_mode", ~mode.is_in(list(MARGIN_MODES)).to_numpy(), "must be 'cross' or 'isolated'")
    iso = (mode == "isolated").to_numpy().astype(np.int8)
    mg, _ = floats("isolated_margin", np.nan)
    lev, _ = floats("leverage", 0.0)
    nonnull = ~(q_null | px_null)
    _value_rules(lambda c, bad, t: rule(c, bad & nonnull if c in ("size", "price") else bad, t),
                 q, px, iso, mg, lev)
    _notional_rule(rule, book, sym_codes, q, px)
    if problems:
        raise BookError(problems)
    frame = pl.DataFrame({"account_id": acc_id, "symbol": sym_text, "margin_mode": mode,
                          "order_size": q, "order_price": px})
    return frame, (acc.astype(np.int32), sym_codes.astype(np.int32), q, px, iso, mg, lev)


def pool_index(book, first: np.ndarray, ids: np.ndarray, asset: np.ndarray,
               by_id: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The account row of each (id, asset): from ``first`` (the id's first row, account_index)
    on over the id's rows, which are sorted by asset; and whether that row is the id's wallet in
    ``asset`` (where not, the row is any of the id's). ``by_id``: the orders sorted by id
    (account_index's order): the steps then read the book in order, not at random."""
    n = book.n_accounts
    if n == 0:
        return np.minimum(first, 0), np.zeros(ids.size, bool)
    perm = np.arange(ids.size) if by_id is None else by_id
    first_s, ids_s, asset_s = first[perm], ids[perm], asset[perm]
    row = np.minimum(first_s, n - 1)
    # An account holds a few assets: a few steps at most, each over the orders still short of
    # their asset.
    active = np.flatnonzero((row + 1 < n) & (book.account_asset[row] < asset_s))
    while active.size:
        active = active[book.account_id[row[active] + 1] == ids_s[active]]
        row[active] += 1
        active = active[(row[active] + 1 < n) & (book.account_asset[row[active]] < asset_s[active])]
    found = (first_s < n) & (book.account_id[row] == ids_s) & (book.account_asset[row] == asset_s)
    rows, ok = np.empty_like(row), np.empty_like(found)
    rows[perm], ok[perm] = row, found
    return rows, ok


def account_index(book, ids: np.ndarray, with_order: bool = False):
    """First row of each id in the book's sorted account ids (book.n_accounts where absent, or
    any row whose id differs: the caller compares). The ids are sorted first: a search of sorted
    needles walks the table in order, about 4x faster than random look-ups at 1M ids in 3.8M
    accounts (which miss the cache at every step). ``with_order``: also return that order."""
    order = np.argsort(ids, kind="stable")
    out = np.empty(ids.size, dtype=np.int64)
    out[order] = np.searchsorted(book.account_id, ids[order])
    return (out, order) if with_order else out


def what_if(engine, orders, marks=None, rows: np.ndarray | None = None) -> "pl.DataFrame":
    """``engine.what_if(orders, marks)``: see ``Engine.what_if`` and README "What-if orders".
    ``rows``: the orders' row numbers in a larger table (the ``order`` column and the rows
    errors name), for a DistributedEngine's shard."""
    frame, arrays = check_orders(engine.book, orders, rows, getattr(engine, "portfolio_flags", None))
    base = base_figures(engine, marks)
    r = _launch(engine, base, *arrays)
    return _frame(frame, r, rows, engine.book, arrays[1])


def _frame(frame: "pl.DataFrame", r: WhatIfArrays, rows: np.ndarray | None, book, sym: np.ndarray) -> "pl.DataFrame":
    from .risk import _codes, _enum, _to_enum

    status, st_codes = _enum(STATUSES)
    mode, mode_codes = _enum(MARGIN_MODES)
    asset, asset_codes = _enum(book.assets)
    closed = r.pos_status < 0
    raw = frame.with_columns(pl.Series("asset", _codes(book.settle_asset[sym], asset_codes)),
        pl.Series("size", r.new_size), pl.Series("entry_price", r.new_entry),
        pl.Series("realised_pnl", r.realised), pl.Series("isolated_margin", r.new_isolated_margin),
        pl.Series("notional", r.pos_notional), pl.Series("upnl", r.pos_upnl),
        pl.Series("maint_margin", r.pos_maint), pl.Series("close_fee", r.pos_fee), pl.Series("init_margin", r.pos_init),
        pl.Series("wallet_balance", r.wallet), pl.Series("equity", r.equity),
        pl.Series("account_maint_margin", r.maint), pl.Series("account_close_fee", r.fee),
        pl.Series("account_init_margin", r.init),
        pl.Series("margin_ratio", r.ratio), pl.Series("available_balance", r.available),
        pl.Series("status", _codes(r.status, st_codes)),
        pl.Series("position_margin_ratio", r.pos_ratio),
        pl.Series("position_status", _codes(np.where(closed, 0, r.pos_status).astype(np.int8), st_codes)),
        pl.Series("_closed", closed), pl.Series("liq_price", r.liq_price),
        pl.Series("im_check", r.im_ok.astype(bool)),
        pl.Series("_order", np.arange(frame.height, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)),
        pl.Series("margin_mode", _codes(frame["margin_mode"].eq("isolated").to_numpy().astype(np.int8), mode_codes)))
    pooled = ()  # a pooled venue's pool after the order (POOLED_WHAT_IF_OUTPUT)
    if r.pool_equity.size == frame.height:
        pooled = tuple(POOLED_WHAT_IF_OUTPUT)
        raw = raw.with_columns(*(pl.Series(name, getattr(r, field)) for name, field in zip(pooled, _POOL_F64)))
    out = raw.select(
        pl.col("_order").alias("order"), "account_id", "symbol", _to_enum("asset", asset),
        _to_enum("margin_mode", mode),
        "order_size", "order_price", "size", pl.col("entry_price").fill_nan(None), "realised_pnl",
        "isolated_margin", "notional", "upnl", "maint_margin", "close_fee", "init_margin", "wallet_balance", "equity",
        "account_maint_margin", "account_close_fee", "account_init_margin", *pooled, "margin_ratio",
        "available_balance", _to_enum("status", status), pl.col("position_margin_ratio").fill_nan(None),
        pl.when(~pl.col("_closed")).then(_to_enum("position_status", status)).alias("position_status"),
        pl.col("liq_price").fill_nan(None), "im_check")
    if out.height != frame.height:  # one row per order, none dropped
        raise AssertionError("what-if rows do not reconcile with the orders")
    return out


def merge_problems(parts: list[list[Problem]]) -> list[Problem]:
    """One list of problems from the checks of several parts of one orders table (each naming
    rows by their number in the whole table): a rule broken in several parts is one problem,
    its rows counted together and the first rows of the whole table shown."""
    merged: dict[tuple, list] = {}
    for problems in parts:
        for p in problems:
            entry = merged.setdefault((p.table, p.column, p.rule), [0, []])
            entry[0] += p.count
            entry[1].extend(p.examples)

    def row_of(example: str) -> int:  # "row 12 (account_id=..., symbol=...)"
        return int(example.split(" ", 2)[1])

    return [Problem(table, column, rule, count, tuple(sorted(examples, key=row_of)[:EXAMPLES_SHOWN]))
            for (table, column, rule), (count, examples) in merged.items()]
