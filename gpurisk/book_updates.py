"""Position and balance updates applied to a resident book without reloading it.

A venue's live book changes as trades happen: fills, position snapshots, deposits,
withdrawals, funding. ``LiveBook.apply(updates)`` takes a batch of them in arrival order and

- works out each update's resulting rows (a position's size, entry, margin; an account's
  wallet), later updates seeing earlier ones;
- validates those rows by the book loader's own rules (gpurisk.book: the same checks, limits
  and messages); an update that breaks one is refused with its message and changes nothing,
  the others still apply;
- writes the result into the book's arrays in place where the layout stays (sizes, prices,
  balances; with slack, positions opening and closing too: a few rows move, see
  gpurisk/live_layout.py), or builds the new layout in one O(n) merge where positions open or
  close without slack, the slack nearby has run out, or accounts appear.

Updates (dicts, as JSON lines carry them; ``type`` says which):

- ``position``: the position's state as the venue reports it: ``account_id``, ``symbol``,
  ``size`` (0 closes it), ``entry_price``, optional ``margin_mode`` (cross),
  ``isolated_margin``, ``leverage``.
- ``fill``: a trade: ``account_id``, ``symbol``, signed ``qty``, ``price``, optional
  ``margin_mode``, ``fee`` (paid from the wallet) and ``isolated_margin`` (the new value, for
  isolated positions). Adding to a position averages its entry price (an inverse contract's
  harmonically, contracts over Σ contracts/price: the coin value is kept); reducing it realises
  PnL into the wallet (in the coin for an inverse contract); crossing zero opens the rest at
  ``price``. A fill that leaves only the
  binary rounding of decimal sizes (|size| <= DUST × the sizes added) closes the position.
- ``balance``: ``account_id``, ``delta`` (a deposit > 0, a withdrawal < 0, a funding payment
  either way), optional ``reason``.
- ``account``: ``account_id``, ``wallet_balance``: opens an account (or sets its balance).

A book with wallets in several assets (inverse contracts, README "Inverse contracts") keeps a
wallet per (account, asset): ``balance`` and ``account`` updates name theirs with an optional
``asset`` (default: USDT when the book has USDT wallets or markets, the book's one asset when
it has one; required otherwise); a position or fill moves the wallet of its market's settle
asset (an ``asset`` given with it must be that one).

A book with a collateral table (pooled venues, README "Multi-asset collateral") keeps it through
every update; its index prices do not move (ticks move marks only), and a new wallet needs its
asset in the table.
"""

from __future__ import annotations

import dataclasses
import math
from collections import ChainMap
from dataclasses import dataclass, field

import numpy as np

from .book import Book
from .live_layout import Slack, close_row, compact, open_row, pad
from .schema import DEFAULT_SETTLE_ASSET, MARGIN_MODES
# The checks of a batch live in gpurisk/update_checks.py; their names stay importable from here.
from .update_checks import (UpdateError, _account_id, _number, check_update_fields, describe,  # noqa: F401
                            problems_of, rows_pass)
from .validate import BookError  # noqa: F401 (part of this module's API: __all__)

UPDATE_TYPES = ("position", "fill", "balance", "account")
#: a fill leaving |size| at most this fraction of the sizes it adds closes the position
DUST = 1e-9
#: account rows remembered between batches (found again when forgotten): bounded memory
LOOKUPS_KEPT = 1 << 16


@dataclass
class Applied:
    """What a batch changed. ``rebuilt``: the layout changed (a new Book; remap the arrays kept
    per position or account with remap_positions / remap_accounts). ``accounts``: indices (in
    the new layout) of the accounts whose positions or balance changed. ``positions``: indices
    of positions changed in place. ``flipped``: a position changed side (its ADL queue)."""

    book: Book
    rebuilt: bool = False
    accounts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    positions: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    flipped: bool = False
    applied: int = 0
    rejected: list = field(default_factory=list)  # (update, message)
    moves: list = field(default_factory=list)  # rows moved in place (live_layout.Move), in order, before any rebuild
    _deletes: np.ndarray | None = None  # old positions removed, when rebuilt
    _before: np.ndarray | None = None  # per new position, the old position it goes before
    _account_insert_at: np.ndarray | None = None
    _kept: np.ndarray | None = None  # a padded book rebuilt: the old live rows, compacted first
    _rows: np.ndarray | None = None  # ... and each new compact row's place in the new padded book

    def remap_positions(self, old: np.ndarray, fill) -> np.ndarray:
        """A per-position array of the old layout in the new one (new positions get ``fill``):
        rows moved in place, then the rebuild's splice (compacted and padded around it for a
        layout with slack). Moves are applied to ``old`` itself."""
        for move in self.moves:
            move.apply(old, fill)
        if not self.rebuilt:
            return old
        if self._kept is not None:
            old = old[self._kept]
        out = _splice(old, self._deletes, self._before, np.full(self._before.size, fill, dtype=old.dtype))
        if self._rows is not None:
            padded = np.full(self.book.n_positions, fill, dtype=old.dtype)
            padded[self._rows] = out
            out = padded
        return out

    def moved_rows(self) -> np.ndarray:
        """Rows whose content moved in place (the layout kept), for copies to a device."""
        if not self.moves:
            return np.empty(0, np.int64)
        return np.unique(np.concatenate([np.arange(*m.rows, dtype=np.int64) for m in self.moves]))

    def remap_accounts(self, old: np.ndarray, fill) -> np.ndarray:
        if not self.rebuilt:
            return old
        return np.insert(old, self._account_insert_at, fill)


_UPDATED_ARRAYS = ("mark_price", "account_id", "wallet", "size", "entry", "isolated_margin", "leverage")


def writable(book: Book) -> bool:
    """Whether updates can be written into ``book``'s arrays (Polars shares some read-only)."""
    return all(getattr(book, k).flags.writeable for k in _UPDATED_ARRAYS)


def writable_copy(book: Book) -> Book:
    return dataclasses.replace(book, **{k: np.array(getattr(book, k)) for k in _UPDATED_ARRAYS},
                               meta={k: v for k, v in book.meta.items() if k != "hash"})


def _pool_row(ids: np.ndarray, assets: np.ndarray, pool: tuple) -> tuple[int, bool]:
    """(row, held) of the wallet ``pool`` = (account_id, asset code) among rows sorted by
    (account_id, asset): its row, or where it would be inserted (held False)."""
    account_id, code = pool
    a = int(np.searchsorted(ids, account_id))
    while a < ids.size and ids[a] == account_id and assets[a] < code:
        a += 1
    return a, bool(a < ids.size and ids[a] == account_id and assets[a] == code)


def _keys(update: dict, symbols: dict, pool: tuple) -> set:
    """The rows an update can write: its wallet (``pool``: account_id, asset code) and, for a
    position, its key."""
    out = {("a", pool)}
    if update.get("symbol") in symbols and update.get("margin_mode", "cross") in MARGIN_MODES:
        out.add(("p", (update.get("account_id"), symbols[update["symbol"]],
                       MARGIN_MODES.index(update.get("margin_mode", "cross")))))
    return out


class LiveBook:
    """A Book that takes updates (see the module doc). ``book`` is always the current one; its
    arrays are updated in place (a book with read-only arrays is copied first). ``slack``:
    free rows reserved (gpurisk/live_layout.py) in a copy of the book, so that positions open
    and close in place; ``book`` then holds them, ``compact()`` is the book without them."""

    def __init__(self, book: Book, slack: Slack | None = None):
        self.slack = slack
        if slack is not None:  # free rows reserved: positions open and close in place, in arrays of its own
            self.book, _ = pad(writable_copy(book), slack)
        else:
            self.book = book if writable(book) else writable_copy(book)
        self._symbol_index = {s: i for i, s in enumerate(book.symbols)}
        assets = book.assets
        # the wallet a balance or account update without ``asset`` names
        self._default_asset = 0 if len(assets) == 1 else \
            assets.index(DEFAULT_SETTLE_ASSET) if DEFAULT_SETTLE_ASSET in assets else None
        # a batch's lookups: each account id's first row (one vectorised search per batch) and
        # each wallet's row, for the accounts arrays they were found in (never written in place)
        self._found_in: tuple | None = None
        self._first_row: dict = {}
        self._wallet_row: dict = {}

    def compact(self) -> Book:
        """The book without free rows (the book itself where none are reserved)."""
        return self.book if self.slack is None else compact(self.book)[0]

    # ------------------------------------------------------------------ lookups

    def _lookups(self) -> tuple[dict, dict]:
        """(first row per account id, row per wallet) found in the current accounts arrays."""
        b = self.book
        if self._found_in is None or self._found_in[0] is not b.account_id or self._found_in[1] is not b.account_asset:
            self._found_in, self._first_row, self._wallet_row = (b.account_id, b.account_asset), {}, {}
        return self._first_row, self._wallet_row

    def _find_accounts(self, updates: list) -> None:
        """The first rows of the accounts a batch names, in one search (the lookups after it
        are dict reads)."""
        first_row, wallet_row = self._lookups()
        if len(first_row) + len(wallet_row) > LOOKUPS_KEPT:
            first_row.clear()
            wallet_row.clear()
        ids = {v for u in updates if isinstance(u, dict) and type(v := u.get("account_id")) is int
               and -2**63 <= v < 2**63 and v not in first_row}
        if ids:
            ids = list(ids)
            first_row.update(zip(ids, np.searchsorted(self.book.account_id, np.array(ids, dtype=np.int64)).tolist()))

    def _account_index(self, pool: tuple) -> int:
        """The row of the wallet (account_id, asset code), -1 when the book has none."""
        first_row, wallet_row = self._lookups()
        a = wallet_row.get(pool)
        if a is None:
            b = self.book
            account_id, code = pool
            a = first_row.get(account_id)
            if a is None:
                a = first_row[account_id] = int(np.searchsorted(b.account_id, account_id))
            ids, assets = b.account_id, b.account_asset
            while a < ids.size and ids[a] == account_id and assets[a] < code:
                a += 1
            held = a < ids.size and ids[a] == account_id and assets[a] == code
            a = wallet_row[pool] = a if held else -1
        return a

    def _pool(self, key: tuple) -> tuple:
        """The wallet (account_id, asset code) of a position key (account_id, symbol, mode)."""
        return key[0], int(self.book.settle_asset[key[1]])

    def _asset_code(self, update: dict, symbol: int | None = None) -> int:
        """The asset code of the wallet an update moves: its market's settle asset for a
        position or fill (symbol given), else its ``asset`` (or the default)."""
        assets, asset = self.book.assets, update.get("asset")
        if symbol is not None:
            code = int(self.book.settle_asset[symbol])
            if asset is not None and asset != assets[code]:
                raise UpdateError(f"asset must be {assets[code]!r}, the settle asset of {self.book.symbols[symbol]} "
                                  f"(its PnL and margin move that wallet), got {asset!r}")
            return code
        if asset is None:
            if self._default_asset is None:
                raise UpdateError(f"asset is missing: the book's wallets are in {', '.join(assets)}; name the one "
                                  "this update moves")
            return self._default_asset
        if asset not in assets:
            raise UpdateError(f"asset must be one of the book's assets ({', '.join(assets)}), got {asset!r}")
        return assets.index(asset)

    def _check_collateral(self, account_id: int, code: int) -> None:
        """A book with a collateral table (pooled venues) values every wallet through it: a new
        wallet needs its asset's rows there (else no revaluation could value it)."""
        coll = self.book.collateral
        asset = self.book.assets[code]
        if coll is not None and asset not in coll["asset"].to_list() and self._account_index((account_id, code)) < 0:
            raise UpdateError(f"account_id {account_id} cannot open a {asset} wallet: the collateral table has no "
                              f"rows for {asset} (README \"Multi-asset collateral\")")

    def _has_account(self, wallets: dict, account_id: int) -> bool:
        """Whether the account holds a wallet in any asset (in the book or pending)."""
        ids = self.book.account_id
        first_row, _ = self._lookups()
        a = first_row.get(account_id)
        if a is None:
            a = first_row[account_id] = int(np.searchsorted(ids, account_id))
        return (a < ids.size and ids[a] == account_id) or any((account_id, c) in wallets
                                                              for c in range(len(self.book.assets)))

    def _position_index(self, a: int, symbol: int, iso: int) -> int:
        b = self.book
        first, end = int(b.pos_start[a]), int(b.pos_start[a + 1])
        for k, (s, i, q) in enumerate(zip(b.pos_symbol[first:end].tolist(), b.isolated[first:end].tolist(),
                                          b.size[first:end].tolist())):
            if s == symbol and i == iso and q != 0:  # free rows hold none
                return first + k
        return -1

    def _place(self, a: int, symbol: int, iso: int) -> int:
        """Where a new position (symbol, iso) of account a sorts among its live rows."""
        b = self.book
        k, end = int(b.pos_start[a]), int(b.pos_start[a + 1])
        while k < end and b.size[k] != 0 and (b.pos_symbol[k], b.isolated[k]) < (symbol, iso):
            k += 1
        return k

    def _position_now(self, pending: dict, key: tuple) -> dict | None:
        if key in pending:
            return pending[key]
        account_id, symbol, iso = key
        a = self._account_index(self._pool(key))
        i = self._position_index(a, symbol, iso) if a >= 0 else -1
        if i < 0:
            return None
        b = self.book
        return {"size": float(b.size[i]), "entry_price": float(b.entry[i]),
                "isolated_margin": float(b.isolated_margin[i]),
                "leverage": float(b.leverage[i]) if b.leverage[i] > 0 else None}

    def _wallet_now(self, wallets: dict, pool: tuple) -> float | None:
        if pool in wallets:
            return wallets[pool]
        a = self._account_index(pool)
        return float(self.book.wallet[a]) if a >= 0 else None

    def _no_wallet(self, account_id: int, code: int, wallets: dict) -> UpdateError:
        if len(self.book.assets) == 1 or not self._has_account(wallets, account_id):
            return UpdateError(f"account_id {account_id} is not an account of the book "
                               "(open it first with an account update)")
        asset = self.book.assets[code]
        return UpdateError(f"account_id {account_id} has no {asset} wallet (open it first with an account update "
                           f"with asset {asset})")

    # ------------------------------------------------------------------ one update's rows

    def _resolve(self, update: dict, positions: dict, wallets: dict) -> None:
        """Work ``update`` into the pending rows (positions by key, wallets by (account id,
        asset code)); raises UpdateError for an update that cannot be understood at all."""
        kind = update.get("type")
        if kind not in UPDATE_TYPES:
            raise UpdateError(f"type must be one of {', '.join(UPDATE_TYPES)}, got {kind!r}")
        account_id = _account_id(update)
        if kind == "account":
            code = self._asset_code(update)
            self._check_collateral(account_id, code)
            wallets[(account_id, code)] = _number(update, "wallet_balance")
            return
        if kind == "balance":
            pool = (account_id, self._asset_code(update))
            wallet = self._wallet_now(wallets, pool)
            if wallet is None:
                raise self._no_wallet(account_id, pool[1], wallets)
            wallets[pool] = wallet + _number(update, "delta")
            return
        if not self._has_account(wallets, account_id):
            raise self._no_wallet(account_id, 0, wallets)
        symbol = update.get("symbol")
        if symbol not in self._symbol_index:
            raise UpdateError(f"symbol must be a symbol of the book ({', '.join(self.book.symbols)}), got {symbol!r}")
        pool = (account_id, self._asset_code(update, self._symbol_index[symbol]))
        wallet = self._wallet_now(wallets, pool)
        if wallet is None:
            raise self._no_wallet(account_id, pool[1], wallets)
        mode = update.get("margin_mode", "cross")
        if mode not in MARGIN_MODES:
            raise UpdateError(f"margin_mode must be 'cross' or 'isolated', got {mode!r}")
        key = (account_id, self._symbol_index[symbol], MARGIN_MODES.index(mode))
        now = self._position_now(positions, key)
        if kind == "position":
            size = _number(update, "size")
            if size == 0:
                if now is None:
                    raise UpdateError("size 0 closes a position, but the account holds none in this symbol and mode")
                positions[key] = None
                return
            positions[key] = {"size": size, "entry_price": _number(update, "entry_price"),
                              "isolated_margin": _number(update, "isolated_margin", False,
                                                         now["isolated_margin"] if now else 0.0),
                              "leverage": _number(update, "leverage", False, now["leverage"] if now else None)}
            return
        qty, price = _number(update, "qty"), _number(update, "price")
        if not (math.isfinite(qty) and qty != 0 and math.isfinite(price) and price > 0):
            raise UpdateError(f"a fill needs a finite, non-zero qty and a finite price > 0, got qty={qty!r}, price={price!r}")
        fee = _number(update, "fee", False, 0.0)
        cs = float(self.book.contract_size[key[1]])
        old = now["size"] if now else 0.0
        entry = now["entry_price"] if now else price
        new = old + qty
        if abs(new) <= DUST * max(abs(old), abs(qty)):
            new = 0.0  # closed: what is left is the rounding of decimal lot sizes in binary (0.3 - 0.1 - 0.2)
        realised = 0.0
        inverse = bool(self.book.inverse[key[1]])
        if old != 0 and (old > 0) != (qty > 0):  # reduces (and maybe crosses zero)
            closed = math.copysign(min(abs(qty), abs(old)), old)
            # inverse (coin-margined): the PnL in the coin, q·cs·(1/E − 1/P)
            realised = closed * cs * (1 / entry - 1 / price) if inverse else closed * (price - entry) * cs
            new_entry = price if abs(qty) > abs(old) else entry
        elif inverse:  # the entry that keeps the coin value: contracts over Σ contracts/price
            new_entry = new / (old / entry + qty / price) if old else price
        else:
            new_entry = (old * entry + qty * price) / new if old else price
        margin = _number(update, "isolated_margin", False, now["isolated_margin"] if now else 0.0)
        leverage = now["leverage"] if now else _number(update, "leverage", False)
        # every field read (an unreadable one raises before anything is pending)
        wallets[pool] = wallet + realised - fee
        positions[key] = None if new == 0 else {"size": new, "entry_price": new_entry, "isolated_margin": margin,
                                                "leverage": leverage}

    # ------------------------------------------------------------------ validation

    def _rows_pass(self, positions: dict, wallets: dict, opened) -> bool:
        return rows_pass(self, positions, wallets, opened)

    def _problems(self, positions: dict, wallets: dict, opened: set = frozenset(),
                  fast: bool = True) -> tuple[list, set]:
        return problems_of(self, positions, wallets, opened, fast)

    # ------------------------------------------------------------------ a batch

    def apply(self, updates: list[dict]) -> Applied:
        """Apply ``updates`` in order (see the module doc); returns what changed."""
        positions: dict = {}
        wallets: dict = {}
        rejected = []
        self._find_accounts(updates)
        for u in updates:  # understood one by one; validated together (the common case: all good)
            try:
                self._resolve(u, positions, wallets)
            except UpdateError as exc:
                rejected.append((u, f"{describe(u)} refused: {exc}"))
        refused = {id(u) for u, _ in rejected}
        good = [u for u in updates if id(u) not in refused]
        problems, bad = self._problems(positions, wallets)
        if problems:
            result = self._sequential(good, rejected, bad)  # only updates writing a bad row are checked alone
            if result is None:
                result = self._sequential(good, rejected, None)  # an interplay of updates: check each alone
            positions, wallets = result
        applied = self._commit(positions, wallets)
        applied.rejected = rejected
        applied.applied = len(updates) - len(rejected)
        return applied

    def _sequential(self, updates, rejected: list, suspects: set | None):
        """The batch again in order, each update that writes a row in ``suspects`` (every update
        where None) validated on its own rows on top of the accepted ones before it. Returns the
        pending rows, or None when the result still breaks a rule (the caller then checks every
        update); refusals are appended to ``rejected``."""
        positions, wallets, refused = {}, {}, []
        for u in updates:
            p, w = ChainMap({}, positions), ChainMap({}, wallets)  # this update's rows over the accepted ones
            try:
                self._resolve(u, p, w)
            except UpdateError as exc:
                refused.append((u, f"{describe(u)} refused: {exc}"))
                continue
            if suspects is None or _keys(u, self._symbol_index, self._update_pool(u)) & suspects:
                problems, _ = self._problems(p.maps[0], w.maps[0], w)
                if problems:
                    refused.append((u, f"{describe(u)} refused: " + "; ".join(
                        f"{q.table}.{q.column}: {q.rule}" for q in problems)))
                    continue
            positions.update(p.maps[0])
            wallets.update(w.maps[0])
        if suspects is not None and self._problems(positions, wallets)[0]:
            return None
        rejected += refused
        return positions, wallets

    def _update_pool(self, update: dict) -> tuple:
        """The wallet (account_id, asset code) of an update that resolved."""
        symbol = self._symbol_index.get(update.get("symbol")) if update.get("type") in ("position", "fill") else None
        return update.get("account_id"), self._asset_code(update, symbol)

    def _commit(self, positions: dict, wallets: dict) -> Applied:
        b = self.book
        b.meta.pop("hash", None)  # written in place: a cached hash no longer holds
        new_accounts = sorted(a for a in wallets if self._account_index(a) < 0)
        changed_pos, inserts, deletes, flipped, moves = [], [], [], False, []
        for key, state in positions.items():
            a = self._account_index(self._pool(key))
            i = self._position_index(a, key[1], key[2]) if a >= 0 else -1
            if i < 0 and state is not None and self.slack is not None and a >= 0:
                move = open_row(b, a, self._place(a, key[1], key[2]), self.slack.search_rows)
                if move is not None:  # opened in place: the row is written below
                    moves.append(move)
                    i = move.row
                    b.pos_symbol[i], b.isolated[i] = key[1], key[2]
            if i >= 0 and state is not None:
                changed_pos.append(i)
                flipped |= (b.size[i] < 0) != (state["size"] < 0)
                b.size[i], b.entry[i] = state["size"], state["entry_price"]
                b.isolated_margin[i] = state["isolated_margin"]
                b.leverage[i] = state["leverage"] or 0.0
            elif i >= 0 and self.slack is not None:
                moves.append(close_row(b, i))
            elif i >= 0:
                deletes.append(i)
            elif state is not None:
                inserts.append((key, state))
        if moves:  # the wallets whose rows moved are revalued too
            flipped = True
            rows = np.unique(np.concatenate([b.pos_account[slice(*m.rows)] for m in moves]))
            touched_ids = set(zip(b.account_id[rows].tolist(), b.account_asset[rows].tolist()))
        else:
            touched_ids = set()
        for pool, w in wallets.items():
            a = self._account_index(pool)
            if a >= 0:
                b.wallet[a] = w
        touched_ids |= set(wallets) | {self._pool(k) for k in positions}  # wallets: (account_id, asset code)
        if not (new_accounts or inserts or deletes):
            accounts = np.array(sorted(self._account_index(a) for a in touched_ids), dtype=np.int64)
            return Applied(b, False, accounts, np.array(sorted(changed_pos), dtype=np.int64), flipped, moves=moves)
        if self.slack is None:
            return self._rebuild(new_accounts, wallets, inserts, deletes, touched_ids, changed_pos, flipped)
        # slack ran out (or accounts appear): the live rows compacted, spliced, padded anew
        self.book, kept = compact(b)
        applied = self._rebuild(new_accounts, wallets, inserts, [], touched_ids, changed_pos, flipped)
        self.book, rows = pad(self.book, self.slack)
        applied.book, applied.moves, applied._kept, applied._rows = self.book, moves, kept, rows
        return applied

    def _rebuild(self, new_accounts, wallets, inserts, deletes, touched_ids, changed_pos, flipped) -> Applied:
        """The new layout in one splice: old positions kept, new ones inserted at their sorted
        places (wallets by (account id, asset), positions by (account, symbol, margin mode));
        slices of the old arrays are copied whole, so a batch costs about one copy of the book.
        ``new_accounts`` and ``touched_ids``: wallets as (account id, asset code)."""
        b = self.book
        account_insert_at = np.array([_pool_row(b.account_id, b.account_asset, p)[0] for p in new_accounts],
                                     dtype=np.int64)
        account_id = np.insert(b.account_id, account_insert_at, np.array([p[0] for p in new_accounts], np.int64))
        account_asset = np.insert(b.account_asset, account_insert_at,
                                  np.array([p[1] for p in new_accounts], np.int32)).astype(np.int32)
        wallet = np.insert(b.wallet, account_insert_at, [wallets[a] for a in new_accounts])
        dels = np.array(sorted(deletes), dtype=np.int64)
        inserts.sort(key=lambda kv: kv[0])  # (account id, symbol, mode): the layout's order
        before = []  # per insert: the old position it goes before
        for key, _ in inserts:
            (_, sym, iso), pool = key, self._pool(key)
            a, held = _pool_row(b.account_id, b.account_asset, pool)  # else a new wallet: before row a's positions
            k, end = int(b.pos_start[a]), int(b.pos_start[a + 1] if held else b.pos_start[a])
            while k < end and (b.pos_symbol[k], b.isolated[k]) < (sym, iso):
                k += 1
            before.append(k)
        before = np.array(before, dtype=np.int64)
        ins_account = np.array([_pool_row(account_id, account_asset, self._pool(k))[0] for k, _ in inserts],
                               dtype=np.int64)
        ins_symbol = np.array([k[1] for k, _ in inserts], dtype=np.int32)
        ins_iso = np.array([k[2] for k, _ in inserts], dtype=np.int8)

        def spliced(old, values, dtype):
            return _splice(old, dels, before, np.asarray(values, dtype=dtype))

        old_account = b.pos_account
        if new_accounts:  # an old wallet's new index: its old index plus the new wallets inserted before it
            shift = np.searchsorted(account_insert_at, np.arange(b.n_accounts), side="right").astype(np.int32)
            old_account = old_account + shift[old_account]
        pos_account = spliced(old_account, ins_account, np.int32)
        pos_start = np.zeros(account_id.size + 1, dtype=np.int64)
        np.cumsum(np.bincount(pos_account, minlength=account_id.size), out=pos_start[1:])
        book = Book(
            symbols=b.symbols, mark_price=b.mark_price, contract_size=b.contract_size, tier_start=b.tier_start,
            tier_floor=b.tier_floor, tier_mmr=b.tier_mmr, tier_cum=b.tier_cum, tier_max_leverage=b.tier_max_leverage,
            account_id=account_id, wallet=wallet, pos_start=pos_start, pos_account=pos_account,
            pos_symbol=spliced(b.pos_symbol, ins_symbol, np.int32),
            size=spliced(b.size, [s["size"] for _, s in inserts], np.float64),
            entry=spliced(b.entry, [s["entry_price"] for _, s in inserts], np.float64),
            isolated=spliced(b.isolated, ins_iso, np.int8),
            isolated_margin=spliced(b.isolated_margin, [s["isolated_margin"] for _, s in inserts], np.float64),
            leverage=spliced(b.leverage, [s["leverage"] or 0.0 for _, s in inserts], np.float64),
            tick_size=b.tick_size, meta={k: v for k, v in b.meta.items() if k != "hash"}, **b.contract_fields(),
            account_asset=account_asset,
            # new accounts take the venue's margin model (-1), as a null accounts.margin_model does
            margin_model=None if b.margin_model is None else np.insert(b.margin_model, account_insert_at,
                                                                       np.int8(-1)))
        self.book = book
        accounts = np.array(sorted(_pool_row(account_id, account_asset, p)[0] for p in touched_ids), dtype=np.int64)
        return Applied(book, True, accounts, np.empty(0, np.int64), True,
                       _deletes=dels, _before=before, _account_insert_at=account_insert_at)


def _splice(old: np.ndarray, deletes: np.ndarray, before: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``old`` without the (sorted) indices ``deletes``, with ``values[j]`` inserted before old
    index ``before[j]`` (sorted; equal places keep their order): whole slices copied."""
    out = np.empty(old.size - deletes.size + values.size, dtype=old.dtype)
    n, src, dst, d, j = old.size, 0, 0, 0, 0
    while True:
        nxt = min(int(deletes[d]) if d < deletes.size else n, int(before[j]) if j < before.size else n)
        out[dst:dst + nxt - src] = old[src:nxt]
        dst, src = dst + nxt - src, nxt
        if j < before.size and before[j] == src:
            out[dst] = values[j]
            dst, j = dst + 1, j + 1
        elif d < deletes.size and deletes[d] == src:
            src, d = src + 1, d + 1
        else:
            return out


__all__ = ["LiveBook", "Applied", "UpdateError", "UPDATE_TYPES", "BookError"]
