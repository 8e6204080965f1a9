"""The balances a stress run changes, and the money moves between them (DESIGN §5–§7).

Every move conserves the total: Σ(wallet + isolated margin + unrealised PnL) over all
accounts, plus the insurance fund, plus the external liquidity account (which takes whatever
is sold into the market), is the same before and after it.

Additions to one balance run in the order the positions are given (``np.add.at``, or the
backend's ``add_at`` where the balances live on a device), so the same moves in the same
order give the same bits on every backend and thread count.

On a device (``backend`` given, not the cpu backend), the balances (sizes, wallets, isolated
margins) live there for the whole run: the kernels move them in place, and a move made on the
host (a step's market closes, released margin) sends only its own rows over. The fund, the
external account and the per-account partial-reduction counts stay on the host.

Inverse (coin-margined) positions: with the money price m(P) = −1/P (m(P) = P for linear
contracts), an inverse position's PnL q·cs·(1/E − 1/P) is q·(m(P) − m(E))·cs, the linear form;
m increases with P, so every move below keeps its linear formula on money prices. The book
holds one settle asset (stress refuses several): all money is in it.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .book import Book


class Ledger:
    """Mutable copies of a book's sizes and balances, and the moves of one stress run."""

    def __init__(self, book: Book, fund: float = 0.0, cs_pos: np.ndarray | None = None,
                 inverse_pos: np.ndarray | None = None, balances: tuple | None = None,
                 records: np.ndarray | None = None, fixed: SimpleNamespace | None = None, backend=None,
                 initial: tuple | None = None):
        """cs_pos, inverse_pos: the positions' contract sizes and inverse flags (bool), where the
        caller holds them (derived from the book otherwise). balances: (size, wallet,
        isolated_margin) arrays of the book's shapes to copy the book's balances into and use
        (a caller running one ledger after another reuses its memory: fresh memory costs a
        page fault per 4 KiB). records: ``position_records()`` of a ledger of the same book.
        fixed: ``fixed_on(backend)`` of a ledger of the same book, shared.
        backend: where the balances live (None: the host, NumPy); on a device, ``balances``
        are device arrays and ``initial`` the book's (size, wallet, isolated margin) there."""
        self._backend = backend
        self.on_device = backend is not None and backend.xp is not np
        xp = backend.xp if self.on_device else np
        given = initial if initial is not None else (book.size, book.wallet, book.isolated_margin)
        if balances is None:
            self.size, self.wallet, self.isolated_margin = (xp.array(a, copy=True) for a in given)
        else:
            self.size, self.wallet, self.isolated_margin = balances
            for mine, source in zip(balances, given):
                xp.copyto(mine, source)
        self.partials = np.zeros(book.n_accounts, dtype=np.int32)  # partial reductions per account
        self.fund = float(fund)  # the insurance fund
        self.x_cash = 0.0  # the external liquidity account: cash and a position per symbol
        self.x_size = np.zeros(book.n_symbols)
        self._isolated, self._account = book.isolated, book.pos_account
        self._symbol, self._contract_size = book.pos_symbol, book.contract_size
        self._cs_pos = book.contract_size[book.pos_symbol] if cs_pos is None else cs_pos
        self._inverse_symbol = book.inverse == 1
        self._inverse = self._inverse_symbol[book.pos_symbol] if inverse_pos is None else inverse_pos
        self._any_inverse = bool(self._inverse_symbol.any())
        self._entry = self.money(slice(None), book.entry)  # money prices of the entries
        self._records = records
        self._fixed = (backend, fixed) if fixed is not None else None  # (backend, its columns)

    def fixed_on(self, backend) -> SimpleNamespace:
        """The positions' fixed columns the kernels read, on the backend's device: entry
        (money price), cs_pos, inverse (int8), isolated, account, symbol and records
        (``position_records``). Uploaded once per ledger, or shared: a stress context gives
        every run's ledger its own (so a run on the gpu copies none of them)."""
        if self._fixed is None or self._fixed[0] is not backend:
            b = backend
            self._fixed = (b, SimpleNamespace(
                entry=b.asarray(self._entry, np.float64), cs_pos=b.asarray(self._cs_pos, np.float64),
                inverse=b.asarray(np.asarray(self._inverse, dtype=np.bool_).view(np.int8)),
                isolated=b.asarray(self._isolated), account=b.asarray(self._account),
                symbol=b.asarray(self._symbol), records=b.asarray(self.position_records())))
        return self._fixed[1]

    def position_records(self) -> np.ndarray:
        """Each position's fixed columns side by side, as the ADL kernel reads them (kernels/
        deleverage.cu, record_*): float64 pairs (entry's money price, account * 2 + isolated),
        flat. Built once per ledger (or given: they depend on the book only)."""
        if self._records is None:
            rec = np.empty((self.size.size, 2))
            rec[:, 0] = self._entry
            rec[:, 1] = self._account.astype(np.int64) * 2 + (self._isolated == 1)
            self._records = rec.reshape(-1)
        return self._records

    def money(self, i, price):
        """The money prices m(price) of positions i (price aligned with i): price for linear
        contracts, −1/price for inverse ones (a linear book: price itself, same bits)."""
        if not self._any_inverse:
            return price
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self._inverse[i], -1.0 / price, price)

    def money_marks(self, marks: np.ndarray) -> np.ndarray:
        """Money prices per symbol."""
        if not self._any_inverse:
            return marks
        return np.where(self._inverse_symbol, -1.0 / marks, marks)

    def _add_at(self, balance, index: np.ndarray, amount: np.ndarray) -> None:
        """balance[index[k]] += amount[k] in order: np.add.at, or the backend's on a device."""
        if self.on_device:
            self._backend.add_at(balance, index, amount)
        else:
            np.add.at(balance, index, amount)

    def take(self, balance, i: np.ndarray) -> np.ndarray:
        """balance[i] on the host (only those rows cross from a device)."""
        if not self.on_device:
            return balance[i]
        b = self._backend
        return b.to_host(balance[b.asarray(i, np.int64)])

    def credit(self, i: np.ndarray, amount: np.ndarray) -> None:
        """Realised PnL of positions i: to the wallet (cross) or the position's margin (isolated)."""
        iso = self._isolated[i] == 1
        self._add_at(self.wallet, self._account[i[~iso]], amount[~iso])
        self._add_at(self.isolated_margin, i[iso], amount[iso])

    def credit_accounts(self, account: np.ndarray, amount: np.ndarray) -> None:
        """Credits to accounts' wallets, added in the order given (a kernel's credits, written
        in the order its moves made them)."""
        self._add_at(self.wallet, account, amount)

    def trade(self, i: np.ndarray, qty: np.ndarray, price, market_price) -> None:
        """Positions i close qty (signed like the position) at ``price``; the external account
        buys it at ``market_price``; the insurance fund takes the difference (zero for a sale
        in the market, the takeover's profit or loss at the bankruptcy price)."""
        cs = self._cs_pos[i]
        price, market_price = self.money(i, price), self.money(i, market_price)
        self.credit(i, qty * (price - self._entry[i]) * cs)
        if self.on_device:  # positions i are distinct: a gather, a subtraction, a scatter
            b = self._backend
            at = b.asarray(i, np.int64)
            self.size[at] = self.size[at] - b.asarray(qty, np.float64)
        else:
            self.size[i] -= qty
        np.add.at(self.x_size, self._symbol[i], qty)
        self.x_cash -= float(np.sum(qty * market_price * cs))
        self.fund += float(np.sum(qty * (market_price - price) * cs))

    def close_to_market(self, i, qty, price) -> None:
        self.trade(i, qty, price, price)

    def take_over(self, i, qty, bankruptcy_price, market_price) -> None:
        """The backstop (the insurance fund) takes qty of positions i at their bankruptcy
        prices and sells it at the market price."""
        self.trade(i, qty, bankruptcy_price, market_price)

    def release_isolated(self, i: np.ndarray) -> None:
        """Margin left on closed isolated positions goes back to the wallet."""
        iso = i[self._isolated[i] == 1]
        closed = iso[self.take(self.size, iso) == 0.0]
        self._add_at(self.wallet, self._account[closed], self.take(self.isolated_margin, closed))
        if self.on_device:
            self.isolated_margin[self._backend.asarray(closed, np.int64)] = 0.0
        else:
            self.isolated_margin[closed] = 0.0

    def cut(self, i: np.ndarray, amount: np.ndarray) -> None:
        """Haircuts: amount taken from positions i's balances, to the insurance fund."""
        iso = self._isolated[i] == 1
        self._add_at(self.wallet, self._account[i[~iso]], -amount[~iso])
        self._add_at(self.isolated_margin, i[iso], -amount[iso])
        self.fund += float(amount.sum())

    def external_value(self, marks: np.ndarray) -> float:
        """The external liquidity account's value at marks."""
        return self.x_cash + float(np.sum(self.x_size * self.money_marks(marks) * self._contract_size))
