"""The book: markets, tier tables, accounts and positions, read, validated
(gpurisk/validate.py) and laid out as arrays.

Polars at the edge (read, validate), contiguous NumPy arrays inside. Every rule of
DESIGN §3 is checked before any compute; a bad input raises one :class:`BookError` that
lists each broken rule with its table, column, the first offending rows (row number and
key) and how many rows break it. Nothing is dropped or silently repaired.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:  # Polars is needed at the edges (read, validate, write), not by the array core.
    import polars as pl
except ImportError:  # pragma: no cover - exercised on GPU machines without Polars
    pl = None

from .pools import pool_rows, validate_wallets
from .schema import CONTRACT_TYPES, DEFAULT_SETTLE_ASSET, INPUT_TABLES, MARGIN_MODELS, MARGIN_MODES
from .tier_rules import derived_maint_amount  # noqa: F401 (callers import it from here too)
from .validate import (EXAMPLES_SHOWN, ROW, BookError, Checker, Problem,  # noqa: F401 (Problem, BookError: here too)
                       check_columns, to_frame, validate_accounts, validate_collateral, validate_markets,
                       validate_positions, validate_tiers)

# ------------------------------------------------------------------ the book


@dataclass(eq=False)
class Book:
    """A validated book as contiguous arrays (host memory).

    Symbols are sorted by name (``symbol`` index = position in ``symbols``); accounts are
    sorted by id; positions are sorted by (account, symbol, margin mode) and the positions
    of account ``a`` are ``pos_start[a]:pos_start[a+1]``.
    """

    symbols: tuple[str, ...]
    mark_price: np.ndarray
    contract_size: np.ndarray
    tier_start: np.ndarray  # int32, len n_symbols + 1
    tier_floor: np.ndarray
    tier_mmr: np.ndarray
    tier_cum: np.ndarray
    tier_max_leverage: np.ndarray
    account_id: np.ndarray  # int64, sorted
    wallet: np.ndarray
    pos_start: np.ndarray  # int64, len n_accounts + 1
    pos_account: np.ndarray  # int32 account index
    pos_symbol: np.ndarray  # int32 symbol index
    size: np.ndarray
    entry: np.ndarray
    isolated: np.ndarray  # int8
    isolated_margin: np.ndarray
    leverage: np.ndarray  # 0 = the tier's max leverage
    meta: dict = field(default_factory=dict)
    tick_size: np.ndarray | None = None  # per symbol; 0 = no tick (liq_price not rounded)
    # Contract types and margin pools (README "Inverse contracts"). An account row is one
    # (account_id, asset) wallet: account_id may repeat, once per asset, rows sorted by
    # (account_id, asset), and a position belongs to the row of its market's settle asset.
    inverse: np.ndarray | None = None  # int8 per symbol: 1 = inverse (coin-margined)
    assets: tuple[str, ...] = (DEFAULT_SETTLE_ASSET,)  # sorted names; codes below index it
    settle_asset: np.ndarray | None = None  # int32 per symbol
    account_asset: np.ndarray | None = None  # int32 per account row
    # per account: -1 = the venue's margin model, else an index of MARGIN_MODELS; None = all -1
    margin_model: np.ndarray | None = None
    # The collateral table of a pooled venue (README "Multi-asset collateral"), validated and
    # sorted by (asset, amount_floor); None without one.
    collateral: "pl.DataFrame | None" = None

    def __post_init__(self):
        if self.tick_size is None:
            self.tick_size = np.zeros(len(self.symbols), dtype=np.float64)
        if self.inverse is None:
            self.inverse = np.zeros(len(self.symbols), dtype=np.int8)
        if self.settle_asset is None:
            self.settle_asset = np.zeros(len(self.symbols), dtype=np.int32)
        if self.account_asset is None:
            self.account_asset = np.zeros(self.account_id.size, dtype=np.int32)

    @property
    def default_assets(self) -> bool:
        """Linear markets and wallets all in the default asset (USDT): the tables need no asset columns."""
        return self.assets == (DEFAULT_SETTLE_ASSET,) and not self.inverse.any()

    @property
    def single_pool(self) -> bool:
        """Linear contracts only, every wallet and market in one asset."""
        return len(self.assets) == 1 and not self.inverse.any()

    def require_per_asset(self, what: str, venue=None) -> None:
        """Raise a BookError when ``what`` (a feature that values each wallet in its own asset)
        is asked of pooled collateral: a collateral table, or a pooled ``venue``."""
        if venue is not None:
            from .venue import get_venue

            venue = get_venue(venue)
            if venue.collateral == "pooled":
                raise BookError([Problem("venue", "collateral", f"{what} values each wallet in its own asset, for "
                                         f"now; venue {venue.name!r} pools collateral across assets "
                                         "(README \"Multi-asset collateral\")")])
        if self.collateral is not None:
            raise BookError([Problem("collateral", "", f"{what} values each wallet in its own asset, for now, and "
                                     "does not pool collateral across assets: use a book without a collateral table "
                                     "(README \"Multi-asset collateral\")")])

    def require_single_asset(self, what: str, venue=None) -> None:
        """Raise a BookError when the book's wallets or markets are in several assets: ``what``
        keeps one fund and one conservation sum (inverse contracts in one coin are fine); or
        with pooled collateral (require_per_asset)."""
        self.require_per_asset(what, venue)
        if len(self.assets) > 1:
            raise BookError([Problem("accounts", "asset", f"{what} keeps its money in one asset; run it per asset "
                                     "(book.for_asset(asset): that asset's wallets and markets; gpurisk stress "
                                     "--asset ASSET); the book has wallets or markets in", len(self.assets),
                                     tuple(repr(a) for a in self.assets[:EXAMPLES_SHOWN]))])

    def for_asset(self, asset: str) -> "Book":
        """The margin pools of one asset: its wallets (account rows) with their positions, and
        the markets settled in it (others are dropped with their tiers). Pools never share
        money, so a book's figures are those of its assets' books side by side."""
        if asset not in self.assets:
            raise KeyError(f"no wallet or market in {asset!r}; the book's assets are {', '.join(self.assets)}")
        code = self.assets.index(asset)
        rows = np.flatnonzero(self.account_asset == code)
        keep_sym = np.flatnonzero(self.settle_asset == code)
        sym_map = np.full(self.n_symbols, -1, dtype=np.int32)
        sym_map[keep_sym] = np.arange(keep_sym.size, dtype=np.int32)
        counts = np.diff(self.pos_start)[rows]
        pos = np.concatenate([np.arange(self.pos_start[r], self.pos_start[r + 1]) for r in rows]) if rows.size \
            else np.zeros(0, np.int64)
        pos = pos.astype(np.int64)
        pos_start = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(counts, out=pos_start[1:])
        tier_counts = np.diff(self.tier_start)[keep_sym]
        tiers = np.concatenate([np.arange(self.tier_start[s], self.tier_start[s + 1]) for s in keep_sym]) \
            if keep_sym.size else np.zeros(0, np.int64)
        tier_start = np.zeros(keep_sym.size + 1, dtype=np.int32)
        np.cumsum(tier_counts, out=tier_start[1:])
        return Book(
            symbols=tuple(self.symbols[s] for s in keep_sym), mark_price=self.mark_price[keep_sym],
            contract_size=self.contract_size[keep_sym], tier_start=tier_start, tier_floor=self.tier_floor[tiers],
            tier_mmr=self.tier_mmr[tiers], tier_cum=self.tier_cum[tiers],
            tier_max_leverage=self.tier_max_leverage[tiers], account_id=self.account_id[rows],
            wallet=self.wallet[rows], pos_start=pos_start,
            pos_account=np.repeat(np.arange(rows.size, dtype=np.int32), counts),
            pos_symbol=sym_map[self.pos_symbol[pos]], size=self.size[pos], entry=self.entry[pos],
            isolated=self.isolated[pos], isolated_margin=self.isolated_margin[pos], leverage=self.leverage[pos],
            tick_size=self.tick_size[keep_sym], inverse=self.inverse[keep_sym], assets=(asset,),
            settle_asset=np.zeros(keep_sym.size, np.int32), account_asset=np.zeros(rows.size, np.int32),
            meta={k: v for k, v in self.meta.items() if k != "hash"} | {"asset": asset})

    def contract_fields(self) -> dict:
        """The per-symbol contract fields and the asset list, for a Book built from this one's
        markets (a shard, a snapshot, an updated book)."""
        return {"inverse": self.inverse, "assets": self.assets, "settle_asset": self.settle_asset,
                "collateral": self.collateral}

    def collateral_arrays(self) -> dict[str, np.ndarray]:
        """The collateral table as arrays over the book's assets (codes of ``assets``):
        ``index_price`` per asset, and each asset's bands ``coll_start[a]:coll_start[a+1]`` of
        ``coll_floor`` and ``coll_ratio``. Raises a BookError without a table or for an asset
        it does not name."""
        if self.collateral is None:
            raise BookError([Problem("collateral", "", "table is missing: a pooled venue values every wallet "
                                     "through it (README \"Multi-asset collateral\")")])
        table = self.collateral.filter(pl.col("asset").is_in(list(self.assets)))
        held = {self.assets[k] for k in np.unique(self.account_asset)}
        missing = sorted(held - set(table["asset"].to_list()))
        if missing:
            raise BookError([Problem("collateral", "asset", "needs rows for every wallet asset of the book; none for",
                                     len(missing), tuple(repr(a) for a in missing[:EXAMPLES_SHOWN]))])
        code = np.searchsorted(np.array(self.assets), table["asset"].to_numpy()).astype(np.int64)
        start = np.zeros(len(self.assets) + 1, dtype=np.int32)
        np.cumsum(np.bincount(code, minlength=len(self.assets)), out=start[1:])
        price = np.full(len(self.assets), np.nan)  # a market's settle asset no wallet holds: never read
        price[code] = table["index_price"].to_numpy()
        return {"index_price": price, "coll_start": start,
                "coll_floor": np.ascontiguousarray(table["amount_floor"].to_numpy(), dtype=np.float64),
                "coll_ratio": np.ascontiguousarray(table["collateral_ratio"].to_numpy(), dtype=np.float64)}

    @property
    def n_accounts(self) -> int:
        return int(self.account_id.size)

    @property
    def n_positions(self) -> int:
        return int(self.size.size)

    @property
    def n_symbols(self) -> int:
        return len(self.symbols)

    def __repr__(self) -> str:
        return (f"Book({self.n_accounts:,} accounts, {self.n_positions:,} positions, "
                f"{self.n_symbols} symbols)")

    # -------------------------------------------------------------- constructors

    @classmethod
    def from_frames(cls, markets, tiers, accounts, positions, collateral=None) -> "Book":
        """Validate polars / pandas / Arrow tables and build a book (raises BookError).
        ``collateral``: the optional collateral table of a pooled venue (schema.COLLATERAL_TABLE)."""
        frames = {"markets": markets, "tiers": tiers, "accounts": accounts, "positions": positions}
        if collateral is not None:
            frames["collateral"] = collateral
        problems: list[Problem] = []
        checkers: dict[str, Checker] = {}
        for name, obj in frames.items():
            try:
                df = to_frame(obj, name)
            except BookError as exc:
                problems += exc.problems
                continue
            chk = Checker(name, df)
            if df.height == 0 and name != "positions":
                chk.add("", "table is empty")
            chk.df = check_columns(chk)
            checkers[name] = chk
        if problems:
            raise BookError(problems)

        m, t, a, p = (checkers[n] for n in ("markets", "tiers", "accounts", "positions"))
        validate_markets(m)
        validate_accounts(a)
        symbols = m.df["symbol"].drop_nulls() if "symbol" not in m.bad_columns else None
        ids = a.df["account_id"].drop_nulls() if "account_id" not in a.bad_columns else None
        cs = None
        if not ({"symbol", "contract_size"} & m.bad_columns):
            kinds = ["contract_type"] if "contract_type" in m.df.columns and "contract_type" not in m.bad_columns else []
            cs = (m.df.select("symbol", "contract_size", *kinds).drop_nulls("symbol")
                  .unique("symbol", keep="first", maintain_order=True))
        validate_positions(p, ids, symbols, cs)
        validate_wallets(p, a, m)
        traded = p.df["symbol"].drop_nulls().unique().sort() if "symbol" not in p.bad_columns else None
        validate_tiers(t, symbols, traded)
        c = checkers.get("collateral")
        if c is not None:
            validate_collateral(c, a)
        problems = m.problems + t.problems + a.problems + p.problems + (c.problems if c is not None else [])
        if problems:
            raise BookError(problems)
        book = cls._from_valid(m.df.drop(ROW), t.df.drop(ROW), a.df.drop(ROW), p.df.drop(ROW))
        if c is not None:
            book.collateral = c.df.drop(ROW).select([col.name for col in INPUT_TABLES["collateral"]]) \
                .sort("asset", "amount_floor")
        return book

    @classmethod
    def _from_valid(cls, markets: pl.DataFrame, tiers: pl.DataFrame, accounts: pl.DataFrame,
                    positions: pl.DataFrame) -> "Book":
        markets = markets.sort("symbol")
        symbols = tuple(markets["symbol"].to_list())
        sym_enum = pl.Enum(symbols)

        tiers = tiers.with_columns(pl.col("symbol").cast(sym_enum).to_physical().alias("__s")).sort(["__s", "notional_floor"])
        tier_counts = np.bincount(tiers["__s"].to_numpy(), minlength=len(symbols))
        tier_start = np.zeros(len(symbols) + 1, dtype=np.int32)
        np.cumsum(tier_counts, out=tier_start[1:])
        if "maint_amount" in tiers.columns and tiers["maint_amount"].null_count() == 0:
            cum = tiers["maint_amount"].to_numpy().astype(np.float64)
        else:
            cum = derived_maint_amount(tier_start, tiers["notional_floor"].to_numpy().astype(np.float64),
                                       tiers["maint_margin_rate"].to_numpy().astype(np.float64))

        inverse = (markets["contract_type"] == "inverse").to_numpy().astype(np.int8)
        assets = tuple(sorted(set(markets["settle_asset"].to_list()) | set(accounts["asset"].unique().to_list())))
        settle_asset = np.searchsorted(np.array(assets), markets["settle_asset"].to_numpy()).astype(np.int32)
        accounts = accounts.with_columns(
            pl.Series("__asset", np.searchsorted(np.array(assets), accounts["asset"].to_numpy()).astype(np.int32)))
        accounts = accounts.sort(["account_id", "__asset"])
        account_id = np.ascontiguousarray(accounts["account_id"].to_numpy(), dtype=np.int64)
        account_asset = np.ascontiguousarray(accounts["__asset"].to_numpy())

        sym_idx = positions["symbol"].cast(sym_enum).to_physical().to_numpy().astype(np.int32)
        acc_idx = pool_rows(account_id, account_asset, positions["account_id"].to_numpy(), settle_asset[sym_idx])
        iso = (positions["margin_mode"] == "isolated").to_numpy().astype(np.int8)
        key = (acc_idx.astype(np.int64) * len(symbols) + sym_idx) * 2 + iso
        order = None if np.all(key[1:] > key[:-1]) else np.argsort(key, kind="stable")

        def col(name, dtype):
            arr = positions[name].to_numpy().astype(dtype, copy=False)
            return np.ascontiguousarray(arr if order is None else arr[order])

        positions = positions.with_columns(pl.col("leverage").fill_null(0.0))
        pos_account = acc_idx if order is None else acc_idx[order]
        pos_start = np.zeros(account_id.size + 1, dtype=np.int64)
        np.cumsum(np.bincount(pos_account, minlength=account_id.size), out=pos_start[1:])
        return cls(
            symbols=symbols,
            mark_price=np.ascontiguousarray(markets["mark_price"].to_numpy(), dtype=np.float64),
            contract_size=np.ascontiguousarray(markets["contract_size"].to_numpy(), dtype=np.float64),
            tier_start=tier_start,
            tier_floor=np.ascontiguousarray(tiers["notional_floor"].to_numpy(), dtype=np.float64),
            tier_mmr=np.ascontiguousarray(tiers["maint_margin_rate"].to_numpy(), dtype=np.float64),
            tier_cum=np.ascontiguousarray(cum),
            tier_max_leverage=np.ascontiguousarray(tiers["max_leverage"].to_numpy(), dtype=np.float64),
            account_id=account_id,
            wallet=np.ascontiguousarray(accounts["wallet_balance"].to_numpy(), dtype=np.float64),
            pos_start=pos_start,
            pos_account=np.ascontiguousarray(pos_account, dtype=np.int32),
            pos_symbol=np.ascontiguousarray(sym_idx if order is None else sym_idx[order]),
            size=col("size", np.float64),
            entry=col("entry_price", np.float64),
            isolated=np.ascontiguousarray(iso if order is None else iso[order]),
            isolated_margin=col("isolated_margin", np.float64),
            leverage=col("leverage", np.float64),
            tick_size=np.ascontiguousarray(markets["tick_size"].fill_null(0.0).to_numpy(), dtype=np.float64),
            inverse=inverse, assets=assets, settle_asset=settle_asset, account_asset=account_asset,
            margin_model=_margin_model_codes(accounts),
        )

    def slice_accounts(self, first: int, end: int) -> "Book":
        """Accounts first..end-1 (by index) with their positions, sharing markets and tiers:
        a chunk or shard of whole accounts (views, no copies)."""
        p0, p1 = int(self.pos_start[first]), int(self.pos_start[end])
        return Book(
            symbols=self.symbols, mark_price=self.mark_price, contract_size=self.contract_size,
            tier_start=self.tier_start, tier_floor=self.tier_floor, tier_mmr=self.tier_mmr,
            tier_cum=self.tier_cum, tier_max_leverage=self.tier_max_leverage,
            account_id=self.account_id[first:end], wallet=self.wallet[first:end],
            pos_start=self.pos_start[first:end + 1] - p0,
            pos_account=self.pos_account[p0:p1] - np.int32(first),
            pos_symbol=self.pos_symbol[p0:p1], size=self.size[p0:p1], entry=self.entry[p0:p1],
            isolated=self.isolated[p0:p1], isolated_margin=self.isolated_margin[p0:p1],
            leverage=self.leverage[p0:p1], tick_size=self.tick_size, **self.contract_fields(),
            account_asset=self.account_asset[first:end],
            margin_model=None if self.margin_model is None else self.margin_model[first:end],
            meta={**{k: v for k, v in self.meta.items() if k != "hash"}, "slice": (first, end)})

    def account_chunks(self, max_positions: int) -> list[tuple[int, int]]:
        """Split the accounts into consecutive ranges of at most ``max_positions`` positions
        each (an account with more positions than that gets a range of its own)."""
        if max_positions < 1:
            raise ValueError("max_positions must be >= 1")
        out, first = [], 0
        while first < self.n_accounts:
            limit = self.pos_start[first] + max_positions
            end = int(np.searchsorted(self.pos_start, limit, side="right")) - 1
            end = min(max(end, first + 1), self.n_accounts)
            ids = self.account_id
            while end < self.n_accounts and ids[end] == ids[end - 1]:
                end += 1  # an account's rows of every asset stay together (a pooled venue's pool)
            out.append((first, end))
            first = end
        return out or [(0, 0)]

    # -------------------------------------------------------------- views back to tables

    def frames(self) -> dict[str, pl.DataFrame]:
        """The book as the four input tables (markets, tiers, accounts, positions)."""
        sym = pl.Series("symbol", self.symbols, dtype=pl.String)
        tier_sym = np.repeat(np.arange(self.n_symbols), np.diff(self.tier_start))
        return {
            "markets": pl.DataFrame({"symbol": sym, "mark_price": self.mark_price,
                                     "contract_size": self.contract_size,
                                     **({"tick_size": pl.Series(np.where(self.tick_size > 0, self.tick_size, np.nan))
                                         .fill_nan(None)} if np.any(self.tick_size > 0) else {}),
                                     **({"contract_type": pl.Series(np.array(CONTRACT_TYPES)[self.inverse], dtype=pl.String),
                                         "settle_asset": pl.Series(np.array(self.assets)[self.settle_asset], dtype=pl.String)}
                                        if not self.default_assets else {})}),
            "tiers": pl.DataFrame({"symbol": sym.gather(tier_sym), "notional_floor": self.tier_floor,
                                   "maint_margin_rate": self.tier_mmr, "maint_amount": self.tier_cum,
                                   "max_leverage": self.tier_max_leverage}),
            "accounts": pl.DataFrame({"account_id": self.account_id, "wallet_balance": self.wallet,
                                      **({"asset": pl.Series(np.array(self.assets)[self.account_asset], dtype=pl.String)}
                                         if not self.default_assets else {}),
                                      **({"margin_model": pl.Series(
                                          [None if c < 0 else MARGIN_MODELS[c] for c in self.margin_model.tolist()],
                                          dtype=pl.String)} if self.margin_model is not None else {})}),
            "positions": pl.DataFrame({
                "account_id": self.account_id[self.pos_account],
                "symbol": sym.gather(self.pos_symbol),
                "size": self.size,
                "entry_price": self.entry,
                "margin_mode": pl.Series(np.array(MARGIN_MODES)[self.isolated], dtype=pl.String),
                "isolated_margin": self.isolated_margin,
                "leverage": pl.Series(np.where(self.leverage > 0, self.leverage, np.nan)).fill_nan(None),
            }),
        }

    def write(self, directory: str | Path, format: str = "parquet", inputs=()) -> Path:
        """Write the four tables as ``<dir>/<table>.parquet`` (or ``.csv``), atomically, with a
        manifest (gpurisk.output)."""
        from .output import atomic_dir, book_hash

        if format not in ("parquet", "csv"):
            raise ValueError(f"format must be 'parquet' or 'csv', got {format!r}")
        meta = {"book_hash": book_hash(self), "marks": dict(zip(self.symbols, self.mark_price.tolist())),
                "accounts": self.n_accounts, "positions": self.n_positions}
        with atomic_dir(directory, "book", meta, inputs) as out:
            for name, df in self.frames().items():
                out.write_frame(f"{name}.{format}", df, format)
            if self.collateral is not None:
                out.write_frame(f"collateral.{format}", self.collateral, format)
        return Path(directory)

    def symbol_index(self, symbol: str) -> int:
        try:
            return self.symbols.index(symbol)
        except ValueError:
            raise KeyError(f"unknown symbol {symbol!r}; the book has {', '.join(self.symbols)}") from None


_READERS = {
    ".parquet": lambda p: pl.read_parquet(p),
    ".csv": lambda p: pl.read_csv(p, infer_schema_length=None),
    ".arrow": lambda p: pl.read_ipc(p),
    ".feather": lambda p: pl.read_ipc(p),
    ".ipc": lambda p: pl.read_ipc(p),
}


def read_table(directory: Path, name: str) -> pl.DataFrame:
    for ext, reader in _READERS.items():
        path = directory / f"{name}{ext}"
        if path.exists():
            try:
                return reader(path)
            except Exception as exc:  # a broken file: say which
                raise BookError([Problem(name, "", f"cannot read {path}: {exc}")]) from exc
    raise FileNotFoundError(f"{directory}: no {name} table (looked for "
                            f"{', '.join(name + e for e in _READERS)})")


def _margin_model_codes(accounts: pl.DataFrame) -> np.ndarray | None:
    """accounts.margin_model as codes (-1: the venue's model), or None when no account names one."""
    if "margin_model" not in accounts.columns or accounts["margin_model"].null_count() == accounts.height:
        return None
    codes = accounts["margin_model"].replace_strict(list(MARGIN_MODELS), list(range(len(MARGIN_MODELS))),
                                                   default=-1, return_dtype=pl.Int8)
    return np.ascontiguousarray(codes.to_numpy(), dtype=np.int8)


def read_book(directory: str | Path, **database) -> Book:
    """Read ``markets``, ``tiers``, ``accounts``, ``positions`` (.parquet, .csv or .arrow) and validate.
    A ``postgresql://`` URI reads them from the database instead (gpurisk.database.read_book;
    ``tables=`` / ``queries=`` name them there)."""
    from .output import _missing_message, manifest_or_none

    if isinstance(directory, str) and directory.lower().startswith(("postgresql://", "postgres://")):
        from .database import read_book as read_database_book

        return read_database_book(directory, **database)
    if database:
        raise TypeError(f"tables= and queries= are for a postgresql:// URI, not the directory {directory}")
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"book directory {_missing_message(directory)}")
    manifest = manifest_or_none(directory, kind="book")  # a user's own directory may have none
    frames = {n: read_table(directory, n) for n in ("markets", "tiers", "accounts", "positions")}
    if any((directory / f"collateral{ext}").is_file() for ext in _READERS):  # optional (pooled venues)
        frames["collateral"] = read_table(directory, "collateral")
    del manifest  # verified above; the book's hash is recomputed from its arrays when needed
    return Book.from_frames(**frames)
