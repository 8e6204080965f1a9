"""Risk-based portfolio margin (README "Portfolio margin"; kernels/portfolio.cu).

An account in ``portfolio`` mode needs, as maintenance margin, the largest loss its cross
positions can suffer over a grid of relative price moves of each risk group (a set of symbols
that move together), plus contingency add-ons: a share of the offsetting notional of each group
(long one contract, short another: Deribit's futures contingency) and a share of the group's
gross notional above a size threshold (a liquidity contingency). Groups move independently (the
worst losses of the groups are summed) or jointly (one common move; the worst total). Initial
margin is a configurable multiple of it.

A :class:`PortfolioModel` holds the parameters, read from a table with one row per symbol
(gpurisk/schema.py PORTFOLIO_TABLE); a :class:`gpurisk.Venue` carries it
(``Venue(margin_model="portfolio", portfolio=model)``, or ``margin_model="tiered"`` with a model
for the accounts whose ``accounts.margin_model`` says ``portfolio``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .schema import MARGIN_MODELS, PORTFOLIO_GROUPS_MAX, PORTFOLIO_SHOCKS_MAX, PORTFOLIO_TABLE

GROUPS_MOVE = ("independent", "joint")


@dataclass(frozen=True)
class PortfolioModel:
    """Portfolio-margin parameters: per symbol its risk group, per group the shock grid and the
    contingency rates (tuples, so that a Venue holding the model stays hashable and its
    conventions serialise into the output manifest). Build it with :meth:`from_frame` or
    :meth:`read`, which validate.

    groups_move: ``"independent"`` (requirement = Σ over groups of each group's worst loss) or
        ``"joint"`` (every group moves by the same relative shock; requirement = the worst total;
        the groups must then share one grid).
    im_multiple: initial margin = im_multiple × the portfolio maintenance requirement (>= 1).
    """

    symbols: tuple[str, ...]
    symbol_group: tuple[int, ...]  # index into groups, per symbol
    groups: tuple[str, ...]
    price_range: tuple[float, ...]
    shocks: tuple[int, ...]
    offset_rate: tuple[float, ...]
    liquidity_threshold: tuple[float | None, ...]  # None: no liquidity contingency
    liquidity_rate: tuple[float, ...]
    groups_move: str = "independent"
    im_multiple: float = 1.0

    def __post_init__(self):
        if self.groups_move not in GROUPS_MOVE:
            raise ValueError(f"PortfolioModel.groups_move must be one of {GROUPS_MOVE}, got {self.groups_move!r}")
        if not (isinstance(self.im_multiple, (int, float)) and 1.0 <= self.im_multiple <= 100.0):
            raise ValueError(f"PortfolioModel.im_multiple must be a number in [1, 100], got {self.im_multiple!r}")
        if self.groups_move == "joint" and len(set(zip(self.price_range, self.shocks))) > 1:
            bad = [f"{g} (±{r:g}, {n} shocks)" for g, r, n in zip(self.groups, self.price_range, self.shocks)]
            raise ValueError("PortfolioModel: groups moving jointly take one common shock, so every group needs the "
                             f"same price_range and shocks; got {', '.join(bad[:5])}")

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_frame(cls, table, groups_move: str = "independent", im_multiple: float = 1.0) -> "PortfolioModel":
        """Validate a parameters table (polars, pandas or Arrow; columns of
        gpurisk.schema.PORTFOLIO_TABLE, one row per symbol) and build the model. Problems are
        raised together as a BookError naming table ``portfolio``, the column, the rule and the
        first offending rows."""
        import polars as pl

        from .validate import ROW, BookError, Checker, Problem, check_columns, to_frame

        df = to_frame(table, "portfolio")
        chk = Checker("portfolio", df)
        if df.height == 0:
            chk.add("", "table is empty")
        chk.df = check_columns(chk, PORTFOLIO_TABLE)
        if chk.problems:
            raise BookError(chk.problems)
        ok = lambda c: c not in chk.bad_columns  # noqa: E731
        col = pl.col
        for c in ("symbol", "risk_group", "price_range", "shocks"):
            if ok(c):
                chk.rule(c, col(c).is_null(), "must not be null")
        if ok("symbol"):
            chk.rule("symbol", col("symbol").is_duplicated() & col("symbol").is_not_null(),
                     "must be unique (a symbol belongs to one risk group)")
        if ok("price_range"):
            chk.rule("price_range", col("price_range").is_not_null() & ~((col("price_range") > 0) & (col("price_range") < 1)),
                     "must be in (0, 1) (a relative price move)")
        if ok("shocks"):
            chk.rule("shocks", col("shocks").is_not_null() & ~col("shocks").is_between(2, PORTFOLIO_SHOCKS_MAX),
                     f"must be in 2..{PORTFOLIO_SHOCKS_MAX}")
        for c in ("offset_rate", "liquidity_rate"):
            if ok(c):
                chk.rule(c, ~((col(c) >= 0) & (col(c) < 1)), "must be in [0, 1)")
        if ok("liquidity_threshold"):
            t = col("liquidity_threshold")
            chk.rule("liquidity_threshold", t.is_not_null() & ~(t.is_finite() & (t >= 0)),
                     "must be finite and >= 0 (or null: no liquidity contingency)")
        if chk.problems:
            raise BookError(chk.problems)
        df = chk.df.drop(ROW)
        params = ["price_range", "shocks", "offset_rate", "liquidity_threshold", "liquidity_rate"]
        # A group's parameters repeat on each of its rows: they must agree.
        per_group = df.group_by("risk_group", maintain_order=True).agg(
            [col(c).n_unique().alias(c) for c in params])
        problems = []
        for c in params:
            split = per_group.filter(col(c) > 1)["risk_group"]
            if split.len():
                problems.append(Problem("portfolio", c, "must be the same on every row of a risk group; differs in",
                                        split.len(), tuple(repr(g) for g in split.head(5))))
        groups = df.group_by("risk_group", maintain_order=True).agg(
            [col(c).first() for c in params]).sort("risk_group")
        if groups.height > PORTFOLIO_GROUPS_MAX:
            problems.append(Problem("portfolio", "risk_group",
                                    f"at most {PORTFOLIO_GROUPS_MAX} risk groups; got", groups.height))
        if problems:
            raise BookError(problems)
        names = groups["risk_group"].to_list()
        index = {g: i for i, g in enumerate(names)}
        return cls(
            symbols=tuple(df["symbol"].to_list()),
            symbol_group=tuple(index[g] for g in df["risk_group"].to_list()),
            groups=tuple(names),
            price_range=tuple(float(x) for x in groups["price_range"].to_list()),
            shocks=tuple(int(x) for x in groups["shocks"].to_list()),
            offset_rate=tuple(float(x) for x in groups["offset_rate"].to_list()),
            liquidity_threshold=tuple(None if x is None else float(x) for x in groups["liquidity_threshold"].to_list()),
            liquidity_rate=tuple(float(x) for x in groups["liquidity_rate"].to_list()),
            groups_move=groups_move, im_multiple=float(im_multiple))

    @classmethod
    def read(cls, path: str | Path, groups_move: str = "independent", im_multiple: float = 1.0) -> "PortfolioModel":
        """Read the parameters table from a .csv, .parquet or Arrow file and validate it."""
        from .book import BookError, Problem, _READERS

        path = Path(path)
        reader = _READERS.get(path.suffix.lower())
        if reader is None:
            raise ValueError(f"{path}: the portfolio parameters must be a {', '.join(_READERS)} file")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such portfolio parameters file")
        try:
            df = reader(path)
        except Exception as exc:  # a broken file: say which
            raise BookError([Problem("portfolio", "", f"cannot read {path}: {exc}")]) from exc
        return cls.from_frame(df, groups_move=groups_move, im_multiple=im_multiple)

    def frame(self):
        """The parameters table (one row per symbol), as from_frame reads it."""
        import polars as pl

        g = list(self.symbol_group)
        return pl.DataFrame({
            "symbol": list(self.symbols),
            "risk_group": [self.groups[k] for k in g],
            "price_range": [self.price_range[k] for k in g],
            "shocks": pl.Series([self.shocks[k] for k in g], dtype=pl.Int64),
            "offset_rate": [self.offset_rate[k] for k in g],
            "liquidity_threshold": pl.Series([self.liquidity_threshold[k] for k in g], dtype=pl.Float64),
            "liquidity_rate": [self.liquidity_rate[k] for k in g],
        })

    # ------------------------------------------------------------------ the grid

    def shock_grid(self, group: int) -> np.ndarray:
        """The relative moves of one group: ``shocks`` evenly spaced over ±price_range (both ends exact)."""
        r = self.price_range[group]
        return np.linspace(-r, r, self.shocks[group])

    def group_of(self, symbols) -> np.ndarray:
        """Risk-group index per symbol of ``symbols`` (-1: not in the model)."""
        index = dict(zip(self.symbols, self.symbol_group))
        return np.array([index.get(s, -1) for s in symbols], dtype=np.int32)


# ---------------------------------------------------------------------- accounts' models


def portfolio_accounts(book, venue) -> np.ndarray | None:
    """Per account 1 when its requirement comes from the portfolio model, else 0 (int8); None
    when the venue has no portfolio model and no account asks for one. Raises ValueError naming
    the accounts when an account needs the portfolio model and the venue carries none, and when
    a portfolio account holds a symbol without a risk group."""
    default = MARGIN_MODELS.index(venue.margin_model)
    codes = book.margin_model
    flags = (np.full(book.n_accounts, default, dtype=np.int8) if codes is None
             else np.where(codes < 0, default, codes).astype(np.int8))
    model = venue.portfolio
    if model is None:
        if flags.any():
            ids = book.account_id[flags == 1]
            raise ValueError(f"{ids.size} account(s) use the portfolio margin model (accounts.margin_model) but venue "
                             f"{venue.name!r} has no portfolio parameters (e.g. account_id "
                             f"{', '.join(map(str, ids[:5].tolist()))}); pass "
                             "venue=gpurisk.get_venue(...).with_(portfolio=PortfolioModel.read(FILE)) or, on the "
                             "command line, --portfolio FILE")
        return None
    held = flags[book.pos_account].astype(bool) & (book.size != 0)
    inverse = held & (book.inverse[book.pos_symbol] != 0)
    if inverse.any():
        syms = sorted({book.symbols[s] for s in np.unique(book.pos_symbol[inverse]).tolist()})
        ids = np.unique(book.account_id[book.pos_account[inverse]])
        raise ValueError(f"portfolio margin models linear contracts only: accounts in portfolio mode hold the inverse "
                         f"market(s) {', '.join(map(repr, syms[:5]))} (account_id "
                         f"{', '.join(map(str, ids[:5].tolist()))}); margin those accounts by tiers "
                         "(accounts.margin_model = 'tiered')")
    group = model_groups(model, book)
    unmapped = held & (group[book.pos_symbol] < 0)
    if unmapped.any():
        syms = sorted({book.symbols[s] for s in np.unique(book.pos_symbol[unmapped]).tolist()})
        ids = np.unique(book.account_id[book.pos_account[unmapped]])
        raise ValueError(f"portfolio: {len(syms)} symbol(s) held by accounts in portfolio mode have no risk group in "
                         f"the portfolio parameters: {', '.join(map(repr, syms[:5]))} (held by account_id "
                         f"{', '.join(map(str, ids[:5].tolist()))}{' and more' if ids.size > 5 else ''}); add a row "
                         "(symbol, risk_group, ...) for each")
    return flags


def model_groups(model: PortfolioModel, book) -> np.ndarray:
    """Risk group per symbol of ``book`` (int32; -1: not in the model, or an inverse market,
    which the model does not value: accounts holding one get null portfolio figures)."""
    group = model.group_of(book.symbols)
    group[book.inverse != 0] = -1
    return group


def refuse_portfolio(book, venue, what: str) -> None:
    """Raise a ValueError when ``book`` has accounts in portfolio mode under ``venue``: ``what``
    (stress, what-if, ...) applies the tiered model only."""
    flags = portfolio_accounts(book, venue)
    if flags is not None and flags.any():
        ids = book.account_id[flags == 1]
        raise ValueError(f"{what} does not model portfolio margin yet: {ids.size} account(s) are in portfolio mode "
                         f"(e.g. account_id {', '.join(map(str, ids[:5].tolist()))}); run it under a tiered venue "
                         "(Venue.margin_model='tiered' and no accounts.margin_model='portfolio')")


# ---------------------------------------------------------------------- on the device


@dataclass
class PortfolioMargin:
    """Per-account portfolio figures (device arrays): see gpurisk/schema.py PORTFOLIO_ACCOUNT_OUTPUT."""

    requirement: object
    loss: object
    worst_group: object  # int32 group index, -1: none (or joint)
    worst_shock: object
    offset: object
    liquidity: object
    tiered: object


class PortfolioDevice:
    """A model's tables for one book on one backend: group per symbol, the shock grids
    (concatenated, group by group), the contingency rates, and which accounts use the model."""

    def __init__(self, book, venue, backend, flags: np.ndarray):
        model = venue.portfolio
        self.model = model
        grids = [model.shock_grid(g) for g in range(len(model.groups))]
        start = np.zeros(len(grids) + 1, dtype=np.int32)
        np.cumsum([g.size for g in grids], out=start[1:])
        a = backend.asarray
        self.sym_group = a(model_groups(model, book))
        self.shock_start = a(start)
        self.shock = a(np.concatenate(grids))
        self.offset_rate = a(np.array(model.offset_rate, dtype=np.float64))
        self.liquidity_threshold = a(np.array([np.inf if t is None else t for t in model.liquidity_threshold],
                                              dtype=np.float64))
        self.liquidity_rate = a(np.array(model.liquidity_rate, dtype=np.float64))
        self.use = a(flags.astype(np.int8))
        # positions whose liquidation price is not solved (their requirement is the portfolio's)
        self.position_use = a(flags[book.pos_account].astype(bool))
        self.any = bool(flags.any())


def portfolio_margin(backend, dev, pf: PortfolioDevice, mark, pm, am, venue,
                     out: PortfolioMargin | None = None) -> PortfolioMargin:
    """Portfolio figures of every account; for the accounts in portfolio mode, their maintenance
    and initial margin, margin ratio, available balance and status in ``am``, and their isolated
    positions' maintenance and initial margin in ``pm``, replaced (the tiered sum stays in
    ``.tiered``). Runs after account_margin and before position_risk."""
    from .venue import AVAILABLE_RULES

    xp = backend.xp
    n = dev.n_accounts
    if out is None:
        f64 = lambda: xp.empty(n, dtype=xp.float64)  # noqa: E731
        out = PortfolioMargin(f64(), f64(), xp.empty(n, dtype=xp.int32), f64(), f64(), f64(), f64())
    backend.launch("portfolio_margin", n, dev.pos_start, dev.isolated, dev.size, dev.pos_symbol, mark,
                   dev.contract_size, pf.sym_group, pf.shock_start, pf.shock, pf.offset_rate,
                   pf.liquidity_threshold, pf.liquidity_rate, int(pf.model.groups_move == "joint"),
                   float(pf.model.im_multiple), pf.use, dev.wallet, am.upnl, am.equity, am.close_fee, am.n_cross,
                   float(venue.margin_call_ratio), float(venue.liquidation_ratio),
                   AVAILABLE_RULES.index(venue.available_upnl),
                   am.maint, am.init, am.ratio, am.available, am.status, pm.maint, pm.init,
                   out.requirement, out.loss, out.worst_group, out.worst_shock, out.offset, out.liquidity, out.tiered)
    return out


def tiered_view(am, pf_margin: PortfolioMargin):
    """``am`` with the tiered maintenance sums in place of the portfolio requirement: the
    bankruptcy prices share an account's equity out in proportion to its positions' tiered
    maintenance margin, which sums to that (gpurisk/liquidation.py)."""
    from dataclasses import replace

    return replace(am, maint=pf_margin.tiered)


def blank_liquidation_prices(backend, pf: PortfolioDevice, pr) -> None:
    """No liquidation price for positions of portfolio accounts: their requirement depends on the
    whole portfolio, not on one position's tier (documented in README "Portfolio margin")."""
    if pf.any:
        pr.liq_price[pf.position_use] = backend.xp.nan
