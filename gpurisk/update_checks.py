"""Update batches checked before anything is written (gpurisk/book_updates.py): each
update's fields read as numbers and ids, and the rows a batch would write judged by the book
loader's own rules and messages (gpurisk/validate.py), first in NumPy (a good batch needs no
frames), then, where a row may break a rule, by the loader's checks, to word the message and
name the rows at fault. ``live``: the LiveBook the batch goes to (its book and wallet lookups).
"""

from __future__ import annotations

import numpy as np

from . import schema as lim
from .schema import CONTRACT_TYPES, MARGIN_MODES
from .validate import ROW, Checker, Problem, check_columns, validate_accounts, validate_positions


class UpdateError(ValueError):
    """An update that cannot be applied (its message says why); the book is unchanged by it."""


def _number(update: dict, name: str, required: bool = True, default=None):
    value = update.get(name, default)
    if value is None:
        if required:
            raise UpdateError(f"{name} is missing")
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UpdateError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise UpdateError(f"{name} must be a number, got {value!r}") from None


def _account_id(update: dict) -> int:
    value = update.get("account_id")
    if isinstance(value, bool) or not isinstance(value, int) or not -2**63 <= value < 2**63:
        raise UpdateError(f"account_id must be a signed 64-bit integer, got {value!r}")
    return value


def describe(update: dict) -> str:
    """How an update is named in messages: its source line where known, and its key."""
    where = update.get("_source", "update")
    key = ", ".join(f"{k}={update[k]!r}" for k in ("account_id", "symbol", "margin_mode") if k in update)
    return f"{where} ({update.get('type', '?')}{': ' + key if key else ''})"


class _RowsChecker(Checker):
    """The book's checker, also keeping every row that breaks a rule (not only the examples)."""

    def __init__(self, table, df):
        super().__init__(table, df)
        self._bad_rows: set[int] = set()

    @property
    def bad_rows(self) -> set[int]:
        self._flush()
        return self._bad_rows

    def _report(self, column, hits, rule):  # Checker._report, keeping the rows of its filter
        self._bad_rows.update(hits[ROW].to_list())
        super()._report(column, hits, rule)


def _rule_masks(live, positions: dict, wallets: dict, opened) -> tuple[list, dict, list, dict]:
    """The pending rows and, per (table, column, rule), a NumPy mask of the rows that break it:
    (wallet pools, their masks, position rows, their masks). The rules that the rows hold by
    construction (ids are integers, keys unique, symbols and margin modes of the book) are
    not judged again."""
    pools, wallet_masks = list(wallets), {}
    if pools:
        w = np.fromiter(wallets.values(), dtype=np.float64, count=len(pools))
        aw = np.abs(w)
        wallet_masks[("wallet_balance", f"must be finite, and 0 or in [{lim.BALANCE_MIN:g}, {lim.BALANCE_MAX:g}]")] = \
            ~(np.isfinite(w) & ((aw == 0) | ((aw >= lim.BALANCE_MIN) & (aw <= lim.BALANCE_MAX))))
    rows = [(k, v) for k, v in positions.items() if v is not None]
    if not rows:
        return pools, wallet_masks, rows, {}
    known = np.array([(p := live._pool(k)) in wallets or p in opened or live._account_index(p) >= 0 for k, _ in rows])
    size = np.array([v["size"] for _, v in rows], dtype=np.float64)
    entry = np.array([v["entry_price"] for _, v in rows], dtype=np.float64)
    margin = np.array([v["isolated_margin"] for _, v in rows], dtype=np.float64)
    lev = np.array([np.nan if v["leverage"] is None else v["leverage"] for _, v in rows], dtype=np.float64)
    null_lev = np.array([v["leverage"] is None for _, v in rows])
    iso = np.array([k[2] == 1 for k, _ in rows])
    symbols = [k[1] for k, _ in rows]
    cs = live.book.contract_size[symbols]
    inverse = live.book.inverse[symbols] == 1
    a_size = np.abs(size)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        masks = {
            ("account_id", "must be an account of the book (a wallet in the market's settle asset)"): ~known,
            ("size", f"|size| must be finite and in [{lim.SIZE_MIN:g}, {lim.SIZE_MAX:g}]"):
                ~(np.isfinite(size) & (a_size >= lim.SIZE_MIN) & (a_size <= lim.SIZE_MAX)),
            ("entry_price", f"must be finite and in [{lim.PRICE_MIN:g}, {lim.PRICE_MAX:g}]"):
                ~(np.isfinite(entry) & (entry >= lim.PRICE_MIN) & (entry <= lim.PRICE_MAX)),
            # the entry notional; an inverse market's in the coin
            ("entry_price", f"|size|·entry_price·contract_size must be at most {lim.NOTIONAL_MAX:g}"):
                ~(np.where(inverse, a_size * cs / entry, a_size * entry * cs) <= lim.NOTIONAL_MAX),
            ("isolated_margin", f"must be in [{lim.BALANCE_MIN:g}, {lim.BALANCE_MAX:g}] for an isolated "
                                "position and 0 for a cross one"):
                ~(np.isfinite(margin) & np.where(iso, (margin >= lim.BALANCE_MIN) & (margin <= lim.BALANCE_MAX),
                                                 margin == 0)),
            ("leverage", f"must be null or in [1, {lim.LEVERAGE_MAX:g}]"):
                ~(null_lev | (np.isfinite(lev) & (lev >= 1) & (lev <= lim.LEVERAGE_MAX))),
        }
    return pools, wallet_masks, rows, masks


def rows_pass(live, positions: dict, wallets: dict, opened) -> bool:
    """Whether the pending rows pass every rule of problems_of, judged in NumPy (the common
    case: no Polars frames for a good batch). Only True is trusted: where it says False,
    problems_of judges the rows with the book's own rules and messages."""
    _, wallet_masks, _, masks = _rule_masks(live, positions, wallets, opened)
    return not any(m.any() for m in (*wallet_masks.values(), *masks.values()))


def _problems_numpy(live, positions: dict, wallets: dict, opened) -> tuple[list, set]:
    """problems_of where Polars is not installed (a GPU machine may carry only NumPy and
    CuPy): the same rules judged by _rule_masks, each broken one named with its column, its
    limits and the rows at fault."""
    pools, wallet_masks, rows, masks = _rule_masks(live, positions, wallets, opened)
    problems, bad = [], set()
    for table, keys, by_rule in (("accounts", [("a", p) for p in pools], wallet_masks),
                                 ("positions", [("p", k) for k, _ in rows], masks)):
        for (column, rule), mask in by_rule.items():
            at = np.flatnonzero(mask)
            if at.size:
                shown = tuple(f"account_id {keys[r][1][0]}" + (f", symbol {live.book.symbols[keys[r][1][1]]}"
                                                               if table == "positions" else "") for r in at[:3])
                problems.append(Problem(table, column, rule, int(at.size), shown))
                bad |= {keys[r] for r in at}
    return problems, bad


def problems_of(live, positions: dict, wallets: dict, opened: set = frozenset(),
                fast: bool = True) -> tuple[list, set]:
    """The book loader's rules over the pending rows (closed positions need none), and the
    rows at fault (("a", account id) or ("p", position key)); ``opened``: accounts opened
    by earlier updates of the batch; ``fast=False``: judged by the book's rules even where
    the NumPy check passes them (tests compare the two)."""
    if fast and rows_pass(live, positions, wallets, opened):
        return [], set()
    try:
        import polars as pl  # here only: a good batch never reaches it
    except ImportError:  # the monitor runs where only NumPy (and CuPy) are installed
        return _problems_numpy(live, positions, wallets, opened)
    b = live.book
    problems, bad = [], set()
    if wallets:
        pools = list(wallets)
        columns = {"account_id": [p[0] for p in pools], "wallet_balance": list(wallets.values())}
        schema = {"account_id": pl.Int64, "wallet_balance": pl.Float64}
        if len(b.assets) > 1:  # the wallet's asset, as the accounts table names it
            columns["asset"], schema["asset"] = [b.assets[p[1]] for p in pools], pl.String
        acc = _RowsChecker("accounts", pl.DataFrame(columns, schema=schema))
        acc.df = check_columns(acc)
        validate_accounts(acc)
        problems += acc.problems
        bad |= {("a", pools[r]) for r in acc.bad_rows}
    rows = [(k, v) for k, v in positions.items() if v is not None]
    if rows:
        frame = pl.DataFrame({
            "account_id": [k[0] for k, _ in rows],
            "symbol": [b.symbols[k[1]] for k, _ in rows],
            "size": [v["size"] for _, v in rows],
            "entry_price": [v["entry_price"] for _, v in rows],
            "margin_mode": [MARGIN_MODES[k[2]] for k, _ in rows],
            "isolated_margin": [v["isolated_margin"] for _, v in rows],
            "leverage": [v["leverage"] for _, v in rows],
        }, schema={"account_id": pl.Int64, "symbol": pl.String, "size": pl.Float64, "entry_price": pl.Float64,
                   "margin_mode": pl.String, "isolated_margin": pl.Float64, "leverage": pl.Float64})
        known = [k[0] for k, _ in rows if (p := live._pool(k)) in wallets or p in opened
                 or live._account_index(p) >= 0]
        chk = _RowsChecker("positions", frame)
        chk.df = check_columns(chk)
        validate_positions(chk, pl.Series(known, dtype=pl.Int64), pl.Series(b.symbols, dtype=pl.String),
                            pl.DataFrame({"symbol": list(b.symbols), "contract_size": b.contract_size,
                                          "contract_type": np.array(CONTRACT_TYPES)[b.inverse]}))
        problems += chk.problems
        bad |= {("p", rows[r][0]) for r in chk.bad_rows}
    return problems, bad


def check_update_fields(update) -> dict:
    """A JSON value as an update dict (raises UpdateError for anything else)."""
    if not isinstance(update, dict):
        raise UpdateError(f"an update must be a JSON object, got {type(update).__name__}")
    return update
