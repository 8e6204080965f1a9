"""Validation of input tables: every rule of DESIGN §3 and the input limits of gpurisk.schema,
checked before any compute. A bad input raises one :class:`BookError` that lists each broken
rule with its table, column, the first offending rows (row number and key) and how many rows
break it; nothing is dropped or silently repaired. The book (gpurisk/book.py), update
batches (book_updates.py), what-if orders, scenarios, marks and database rows share these
checks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

try:  # Polars is needed at the edges (read, validate, write), not by the array core.
    import polars as pl
except ImportError:  # pragma: no cover - exercised on GPU machines without Polars
    pl = None

from . import schema as _lim
from .pools import settle_asset_expr
from .schema import CONTRACT_TYPES, INPUT_TABLES, MARGIN_MODELS, MARGIN_MODES, TABLE_KEYS, Column
from .tier_rules import derived_maint_amount

EXAMPLES_SHOWN = 5
ROW = "__row"


@dataclass(frozen=True)
class Problem:
    """One broken rule: ``table.column`` breaks ``rule`` on ``count`` rows."""

    table: str
    column: str
    rule: str
    count: int = 0
    examples: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        if not self.count:
            return f"{where}: {self.rule}"
        more = f" (and {self.count - len(self.examples)} more)" if self.count > len(self.examples) else ""
        rows = "row" if self.count == 1 else "rows"
        return f"{where}: {self.rule} — {self.count} {rows}: {'; '.join(self.examples)}{more}"


class BookError(ValueError):
    """The input book breaks one or more rules; ``.problems`` lists them."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        tables = {p.table for p in self.problems}
        what = tables.pop() if len(tables) == 1 and tables <= {"scenarios", "marks"} else "book"
        super().__init__(f"invalid {what} ({len(self.problems)} problem(s)):\n{lines}")

    def __reduce__(self):  # survives pickling (process pools, Dask workers) with its problems
        return (type(self), (self.problems,))


# ------------------------------------------------------------------ input conversion


def to_frame(obj, table: str) -> pl.DataFrame:
    if obj is None:
        raise BookError([Problem(table, "", "table is missing")])
    if isinstance(obj, pl.LazyFrame):
        return obj.collect()
    if isinstance(obj, pl.DataFrame):
        return obj
    if isinstance(obj, dict):
        return pl.DataFrame(obj)
    mod = type(obj).__module__
    if mod.startswith("pandas"):
        return pl.from_pandas(obj)
    if mod.startswith("pyarrow"):
        return pl.from_arrow(obj)
    raise TypeError(f"{table}: expected a polars, pandas or Arrow table (or a dict of columns), "
                    f"got {type(obj).__name__}")


def describe_rows(df: pl.DataFrame, keys: tuple[str, ...]) -> list[str]:
    present = [k for k in keys if k in df.columns]
    out = []
    for row in df.select([ROW, *present]).iter_rows(named=True):
        key = ", ".join(f"{k}={row[k]!r}" for k in present)
        out.append(f"row {row[ROW]} ({key})" if key else f"row {row[ROW]}")
    return out


class Checker:
    """Collects problems for one table; rows are reported by number and key.

    Rules are judged together: ``rule`` records a rule, and the pending ones are evaluated
    in one Polars pass (whether any row breaks each) when the problems are read, a problem
    is added directly, or the frame is replaced. Only a broken rule costs a second pass,
    for its rows. (One pass per rule cost a small batch more than its rows: the monitor
    validates every step's updates with these rules.) Problems keep the order of the rules."""

    def __init__(self, table: str, df: pl.DataFrame):
        self.table = table
        self._pending: list[tuple[str, pl.Expr, str]] = []
        self._df = df.with_row_index(ROW)
        self.keys = TABLE_KEYS[table]
        self._problems: list[Problem] = []
        self.bad_columns: set[str] = set()

    @property
    def df(self) -> pl.DataFrame:
        return self._df

    @df.setter
    def df(self, df: pl.DataFrame) -> None:
        self._flush()  # pending rules were written against the frame they are judged on
        self._df = df

    @property
    def problems(self) -> list[Problem]:
        self._flush()
        return self._problems

    def rule(self, column: str, bad: pl.Expr, rule: str) -> None:
        self._pending.append((column, bad.fill_null(True), rule))

    def add(self, column: str, rule: str) -> None:
        self._flush()
        self._problems.append(Problem(self.table, column, rule))

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        broken = self._df.select([bad.any().alias(f"r{k}") for k, (_, bad, _) in enumerate(pending)]).row(0)
        for (column, bad, rule), hit in zip(pending, broken):
            if hit:
                self._report(column, self._df.filter(bad), rule)

    def _report(self, column: str, hits: pl.DataFrame, rule: str) -> None:
        self._problems.append(Problem(self.table, column, rule, hits.height,
                                      tuple(describe_rows(hits.head(EXAMPLES_SHOWN), self.keys))))


def check_columns(chk: Checker, columns: tuple[Column, ...] | None = None) -> pl.DataFrame:
    """Presence and types of every column (``columns``: the table's, from INPUT_TABLES, unless
    given); returns the frame with defaults filled in."""
    df = chk.df
    fills = []
    for col in INPUT_TABLES[chk.table] if columns is None else columns:
        if col.name not in df.columns:
            if col.required:
                chk.add(col.name, f"required column is missing (columns present: {', '.join(df.columns[1:]) or 'none'})")
                chk.bad_columns.add(col.name)
            else:
                fills.append(pl.lit(col.default, dtype=_polars_type(col)).alias(col.name))
            continue
        dtype = df.schema[col.name]
        all_null = df[col.name].null_count() == df.height  # e.g. an empty CSV column reads as text
        ok = all_null or {
            "str": dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum),
            "float": dtype.is_numeric(),
            "int": dtype.is_integer(),
        }[col.kind]
        if not ok:
            want = {"str": "text", "float": "a number", "int": "an integer"}[col.kind]
            chk.add(col.name, f"must be {want}, got column type {dtype}")
            chk.bad_columns.add(col.name)
            continue
        lossy = pl.col(col.name).is_not_null() & pl.col(col.name).cast(_polars_type(col), strict=False).is_null()
        if col.kind == "int" and df.select(lossy.any()).item():
            chk.rule(col.name, lossy, "must fit a signed 64-bit integer (-2^63 .. 2^63 - 1)")
            chk.bad_columns.add(col.name)
            continue
        cast = pl.col(col.name).cast(_polars_type(col))
        if col.default is not None and not col.required:
            cast = cast.fill_null(col.default)  # optional column given with gaps: gaps take the default
        fills.append(cast.alias(col.name))
    return df.with_columns(fills) if fills else df


def _polars_type(col: Column):
    return {"str": pl.String, "float": pl.Float64, "int": pl.Int64}[col.kind]


def _finite(c: str) -> pl.Expr:
    return pl.col(c).is_finite()


def _num(x: float) -> str:
    return f"{x:g}"


def _outside(x: pl.Expr, lo: float, hi: float) -> pl.Expr:
    """Finite values outside [lo, hi] (nulls and non-finite values are other rules' business)."""
    return (x.is_finite() & ((x < lo) | (x > hi))).fill_null(False)


def _range_rule(chk: "Checker", column: str, x: pl.Expr, lo: float, hi: float, what: str = "",
                zero_ok: bool = False, within: pl.Expr | None = None) -> None:
    """The input limits of gpurisk.schema (see there and README "Input limits"): finite values
    of ``x`` must lie in [lo, hi] (or be 0 when ``zero_ok``). Only rows that pass the column's
    basic rule (``within``; default x > 0) are judged, so no row is reported twice."""
    bad = _outside(x, lo, hi) & (x > 0 if within is None else within).fill_null(False)
    if zero_ok:
        bad = bad & (x != 0).fill_null(False)
    rule = f"{what or 'must be'} in [{_num(lo)}, {_num(hi)}]" + (" or 0" if zero_ok else "") + \
        " (input limits, gpurisk.schema)"
    chk.rule(column, bad, rule)


# ------------------------------------------------------------------ validation per table


def validate_markets(chk: Checker) -> None:
    ok = lambda c: c not in chk.bad_columns  # noqa: E731
    if ok("symbol"):
        chk.rule("symbol", pl.col("symbol").is_null(), "must not be null")
        chk.rule("symbol", pl.col("symbol").is_duplicated() & pl.col("symbol").is_not_null(), "must be unique")
    if ok("mark_price"):
        chk.rule("mark_price", ~(_finite("mark_price") & (pl.col("mark_price") > 0)), "must be finite and > 0")
        _range_rule(chk, "mark_price", pl.col("mark_price"), _lim.PRICE_MIN, _lim.PRICE_MAX)
    if ok("contract_size"):
        chk.rule("contract_size", ~(_finite("contract_size") & (pl.col("contract_size") > 0)),
                 "must be finite and > 0")
        _range_rule(chk, "contract_size", pl.col("contract_size"), _lim.CONTRACT_SIZE_MIN, _lim.CONTRACT_SIZE_MAX)
    if ok("tick_size"):
        tick = pl.col("tick_size")
        chk.rule("tick_size", tick.is_not_null() & ~(tick.is_finite() & (tick > 0)), "must be finite and > 0 (or null)")
    if ok("contract_type"):
        chk.rule("contract_type", ~pl.col("contract_type").is_in(list(CONTRACT_TYPES)),
                 "must be 'linear' or 'inverse'")
        if ok("settle_asset") and ok("symbol"):
            chk.df = chk.df.with_columns(settle_asset_expr())
            chk.rule("settle_asset", pl.col("settle_asset").is_null() | (pl.col("settle_asset") == ""),
                     "an inverse market needs its settle asset (the coin): give settle_asset, or name the "
                     "market BASEUSD..., BASE-PERPETUAL")


def validate_tiers(chk: Checker, symbols: pl.Series | None, traded: pl.Series | None) -> None:
    ok = lambda c: c not in chk.bad_columns  # noqa: E731
    if ok("symbol"):
        chk.rule("symbol", pl.col("symbol").is_null(), "must not be null")
        if symbols is not None:
            chk.rule("symbol", pl.col("symbol").is_not_null() & ~pl.col("symbol").is_in(symbols.implode()),
                     "must be a symbol of markets")
    for c in ("notional_floor", "maint_margin_rate", "max_leverage"):
        if ok(c):
            chk.rule(c, ~_finite(c), "must be finite")
    if ok("maint_margin_rate"):
        chk.rule("maint_margin_rate", ~((pl.col("maint_margin_rate") > 0) & (pl.col("maint_margin_rate") < 1)),
                 "must be in (0, 1)")
        mmr = pl.col("maint_margin_rate")
        _range_rule(chk, "maint_margin_rate", mmr, _lim.MAINT_RATE_MIN, _lim.MAINT_RATE_MAX, within=(mmr > 0) & (mmr < 1))
    if ok("max_leverage"):
        chk.rule("max_leverage", ~(pl.col("max_leverage") >= 1), "must be >= 1")
        _range_rule(chk, "max_leverage", pl.col("max_leverage"), 1.0, _lim.LEVERAGE_MAX, within=pl.col("max_leverage") >= 1)
    if ok("notional_floor"):
        _range_rule(chk, "notional_floor", pl.col("notional_floor"), 0.0, _lim.NOTIONAL_MAX, within=pl.lit(True))
    if chk.problems or not ok("symbol"):
        return
    # Per-symbol ladder rules, on tiers sorted by floor.
    by = pl.col("symbol")
    df = chk.df.sort(["symbol", "notional_floor"])
    chk.df = df
    first = pl.col("notional_floor").cum_count().over(by) == 1
    chk.rule("notional_floor", first & (pl.col("notional_floor") != 0), "first tier of each symbol must start at 0")
    chk.rule("notional_floor", pl.col("notional_floor").is_duplicated().over(by),
             "must be strictly increasing within a symbol (duplicate floor)")
    prev_mmr = pl.col("maint_margin_rate").shift(1).over(by)
    chk.rule("maint_margin_rate", prev_mmr.is_not_null() & (pl.col("maint_margin_rate") < prev_mmr),
             "must be non-decreasing with notional within a symbol")
    if "maint_amount" in chk.df.columns and chk.df["maint_amount"].null_count() < chk.df.height:
        runs = chk.df["symbol"].rle().struct.field("len").to_numpy()
        tier_start = np.concatenate([[0], np.cumsum(runs)]).astype(np.int64)
        derived = derived_maint_amount(tier_start, chk.df["notional_floor"].to_numpy().astype(np.float64),
                                       chk.df["maint_margin_rate"].to_numpy().astype(np.float64))
        given = pl.col("maint_amount")
        tol = 1e-9 * pl.max_horizontal(pl.lit(1.0), pl.col("notional_floor") * pl.col("maint_margin_rate"))
        chk.df = chk.df.with_columns(pl.Series("__cum", derived))
        chk.rule("maint_amount", given.is_null() | ~given.is_finite() | ((given - pl.col("__cum")).abs() > tol),
                 "must keep maintenance margin continuous across tiers: "
                 "amount_k = amount_(k-1) + floor_k * (rate_k - rate_(k-1)), first 0 (leave the column "
                 "out to have it derived)")
        chk.df = chk.df.drop("__cum")
    if traded is not None:
        missing = traded.filter(~traded.is_in(chk.df["symbol"].unique().implode()))
        if missing.len():
            chk.problems.append(Problem("tiers", "symbol", "every traded symbol needs at least one tier; none for",
                                        missing.len(), tuple(repr(s) for s in missing.head(EXAMPLES_SHOWN)))) 


def validate_accounts(chk: Checker) -> None:
    ok = lambda c: c not in chk.bad_columns  # noqa: E731
    if ok("asset"):
        chk.rule("asset", pl.col("asset").is_null() | (pl.col("asset") == ""), "must not be null or empty")
    if ok("account_id"):
        chk.rule("account_id", pl.col("account_id").is_null(), "must not be null")
        if ok("asset"):  # one wallet per (account, asset): a margin pool
            chk.rule("account_id", pl.struct("account_id", "asset").is_duplicated() & pl.col("account_id").is_not_null(),
                     "must be unique (one row per account_id and asset)"
                     if chk.df["asset"].n_unique() > 1 else "must be unique")
    if ok("wallet_balance"):
        chk.rule("wallet_balance", ~_finite("wallet_balance"), "must be finite")
        _range_rule(chk, "wallet_balance", pl.col("wallet_balance").abs(), _lim.BALANCE_MIN, _lim.BALANCE_MAX,
                    "|wallet_balance| must be", zero_ok=True)
    if ok("margin_model"):
        model = pl.col("margin_model")
        chk.rule("margin_model", model.is_not_null() & ~model.is_in(list(MARGIN_MODELS)),
                 f"must be one of {', '.join(MARGIN_MODELS)} (or null: the venue's margin model)")


def validate_positions(chk: Checker, account_ids: pl.Series | None, symbols: pl.Series | None,
                        contract_sizes: pl.DataFrame | None = None) -> None:
    ok = lambda c: c not in chk.bad_columns  # noqa: E731
    if ok("account_id"):
        chk.rule("account_id", pl.col("account_id").is_null(), "must not be null")
        if account_ids is not None:
            chk.rule("account_id", pl.col("account_id").is_not_null() & ~pl.col("account_id").is_in(account_ids.implode()),
                     "must be an account of accounts")
    if ok("symbol"):
        chk.rule("symbol", pl.col("symbol").is_null(), "must not be null")
        if symbols is not None:
            chk.rule("symbol", pl.col("symbol").is_not_null() & ~pl.col("symbol").is_in(symbols.implode()),
                     "must be a symbol of markets")
    if ok("size"):
        chk.rule("size", ~(_finite("size") & (pl.col("size") != 0)), "must be finite and non-zero")
        _range_rule(chk, "size", pl.col("size").abs(), _lim.SIZE_MIN, _lim.SIZE_MAX, "|size| must be")
    if ok("entry_price"):
        chk.rule("entry_price", ~(_finite("entry_price") & (pl.col("entry_price") > 0)), "must be finite and > 0")
        _range_rule(chk, "entry_price", pl.col("entry_price"), _lim.PRICE_MIN, _lim.PRICE_MAX)
    if ok("size") and ok("entry_price") and ok("symbol") and contract_sizes is not None:
        # The entry notional per position (NOTIONAL_MAX): |size|·entry_price·contract_size, or in
        # the coin |size|·contract_size/entry_price for an inverse market (contract_sizes'
        # optional contract_type column).
        cs = pl.col("symbol").replace_strict(contract_sizes["symbol"], contract_sizes["contract_size"],
                                             default=1.0, return_dtype=pl.Float64)
        notional = pl.col("size").abs() * pl.col("entry_price") * cs
        if "contract_type" in contract_sizes.columns and (contract_sizes["contract_type"] == "inverse").any():
            inverse = pl.col("symbol").is_in(contract_sizes.filter(pl.col("contract_type") == "inverse")["symbol"]
                                             .implode())
            notional = pl.when(inverse).then(pl.col("size").abs() * cs / pl.col("entry_price")).otherwise(notional)
        chk.rule("size", (notional > _lim.NOTIONAL_MAX).fill_null(False) | (
            notional.is_nan() & pl.col("size").is_finite() & pl.col("entry_price").is_finite()).fill_null(False),
                 f"entry notional |size|·entry_price·contract_size (inverse: |size|·contract_size/entry_price, in "
                 f"the coin) must be <= {_num(_lim.NOTIONAL_MAX)} (input limits, gpurisk.schema)")
    if ok("margin_mode"):
        chk.rule("margin_mode", ~pl.col("margin_mode").is_in(list(MARGIN_MODES)), "must be 'cross' or 'isolated'")
    if ok("isolated_margin"):
        chk.rule("isolated_margin", ~(_finite("isolated_margin") & (pl.col("isolated_margin") >= 0)),
                 "must be finite and >= 0")
        _range_rule(chk, "isolated_margin", pl.col("isolated_margin"), _lim.BALANCE_MIN, _lim.BALANCE_MAX,
                    zero_ok=True)
        if ok("margin_mode"):
            iso = pl.col("margin_mode") == "isolated"
            chk.rule("isolated_margin", iso & (pl.col("isolated_margin") <= 0),
                     "isolated positions need isolated_margin > 0")
            chk.rule("isolated_margin", (pl.col("margin_mode") == "cross") & (pl.col("isolated_margin") != 0),
                     "cross positions carry no isolated_margin (must be 0)")
    if ok("leverage"):
        lev = pl.col("leverage")
        chk.rule("leverage", lev.is_not_null() & ~(lev.is_finite() & (lev >= 1)), "must be finite and >= 1 (or null)")
        _range_rule(chk, "leverage", lev, 1.0, _lim.LEVERAGE_MAX, within=lev >= 1)
    keys = ["account_id", "symbol", "margin_mode"]
    if all(ok(k) for k in keys):
        chk.rule("account_id", pl.struct(keys).is_duplicated(),
                 "one position per (account_id, symbol, margin_mode) in one-way mode; duplicates")


def validate_collateral(chk: Checker, acc: Checker) -> None:
    """The collateral table (README "Multi-asset collateral"): per asset, bands from floor 0,
    strictly increasing, ratios in [0, 1], one index price; and rows for every wallet asset."""
    ok = lambda c: c not in chk.bad_columns  # noqa: E731
    if ok("asset"):
        chk.rule("asset", pl.col("asset").is_null() | (pl.col("asset") == ""), "must not be null or empty")
    if ok("index_price"):
        price = pl.col("index_price")
        chk.rule("index_price", ~(price.is_finite() & (price > 0)), "must be finite and > 0")
        _range_rule(chk, "index_price", price, _lim.PRICE_MIN, _lim.PRICE_MAX)
        if ok("asset"):
            chk.rule("index_price", price.n_unique().over("asset") > 1, "must be the same on every row of an asset")
    if ok("collateral_ratio"):
        ratio = pl.col("collateral_ratio")
        chk.rule("collateral_ratio", ~(ratio.is_finite() & (ratio >= 0) & (ratio <= 1)), "must be in [0, 1]")
    if ok("amount_floor") and ok("asset"):
        floor = pl.col("amount_floor")
        chk.rule("amount_floor", ~(floor.is_finite() & (floor >= 0)), "must be finite and >= 0")
        _range_rule(chk, "amount_floor", floor, 0.0, _lim.BALANCE_MAX, zero_ok=True)
        chk.rule("amount_floor", (floor.min().over("asset") != 0) & (floor == floor.min().over("asset")),
                 "an asset's first band must start at 0")
        chk.rule("amount_floor", pl.struct("asset", "amount_floor").is_duplicated(),
                 "must be strictly increasing within an asset (a floor given twice)")
    if ok("asset") and not ({"asset", "account_id"} & acc.bad_columns):
        held = chk.df["asset"].drop_nulls().implode()
        acc.rule("asset", pl.col("asset").is_not_null() & ~pl.col("asset").is_in(held),
                 "needs collateral rows (the collateral table names no such asset)")
