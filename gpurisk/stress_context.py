"""What every run of a stress shares (:class:`StressContext`): the book on the device, the
options and arrays derived from the book once; its methods are the device work of a step
(revaluation, funding, the ladder's units and restoring fractions, the book's value for the
conservation check). A step's revaluation (:class:`Revaluation`) copies each result to the
host only when asked. The loop over steps is gpurisk/stress.py."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np

from .adl import adl_score, queue_group
from .backend import Backend
from .book import Book
from .engine import DeviceBook
from .funding import settle
from .impact import Impact
from .ladder import Ladder
from .ledger import Ledger
from .liquidation import position_risk
from .margin import account_margin, position_margin
from .portfolio import PortfolioDevice, portfolio_accounts, portfolio_margin, tiered_view
from .tier_rules import venue_tiers
from .venue import Venue


class Revaluation:
    """A revaluation's results, each copied to the host on first use: on the gpu backend a
    step that liquidates nobody copies the statuses only. A result given as a function is
    computed on first use (the ADL scores: only queue ADL reads them). ``dev``: the device
    tables it ran on."""

    def __init__(self, backend: Backend, dev, **results):
        self._backend, self._results, self.dev = backend, results, dev

    def device(self, name: str):
        """A result on the device."""
        value = self._results[name]
        if callable(value):
            value = self._results[name] = value()
        return value

    def take(self, name: str, idx: np.ndarray) -> np.ndarray:
        """result[name][idx] on the host, gathered where the result lives: only the rows
        asked for cross to the host."""
        if name in self.__dict__ or self._backend.name == "cpu":
            return getattr(self, name)[idx]
        b = self._backend
        return b.to_host(self.device(name)[b.asarray(idx)])

    def __getattr__(self, name):
        results = self.__dict__.get("_results", {})
        if name not in results:
            raise AttributeError(name)
        value = self._backend.to_host(self.device(name))
        setattr(self, name, value)
        return value


class StressContext:
    """What every run of a stress shares: the book on the device, the options, and arrays
    derived from the book once. Its methods are the device work of a step."""

    def __init__(self, book: Book, venue: Venue, backend: Backend, ladder: Ladder, impact: Impact | None,
                 insurance_fund: float):
        self.book, self.venue, self.backend, self.ladder, self.impact = book, venue, backend, ladder, impact
        self.dev = DeviceBook(book, backend)
        # Accounts in portfolio mode take their requirement from the portfolio model at every
        # step (README "Portfolio margin"); None when the venue carries no model.
        flags = portfolio_accounts(book, venue)
        self.portfolio = PortfolioDevice(book, venue, backend, flags) if flags is not None and flags.any() else None
        self.insurance_fund = float(insurance_fund)
        self.depth = impact.depths(book) if impact else None
        self.cs_pos = book.contract_size[book.pos_symbol]
        self.inverse_pos = book.inverse[book.pos_symbol] == 1
        self.any_inverse = bool(self.inverse_pos.any())
        self.group32 = queue_group(np, book.pos_symbol, book.size)  # as the native queue front reads it
        self.group = self.group32.astype(np.int64)
        # Members of each queue in storage order (account id order), found once.
        by_group = np.argsort(self.group, kind="stable")
        bounds = np.searchsorted(self.group[by_group], np.arange(2 * book.n_symbols + 1))
        self.members = [by_group[bounds[g]:bounds[g + 1]] for g in range(2 * book.n_symbols)]
        self.queue_members, self.queue_start = by_group, bounds  # the same, flat: queue g's from queue_start[g]
        ledger = Ledger(book, 0.0, self.cs_pos)
        self.money_marks = ledger.money_marks  # money prices per symbol (gpurisk/ledger.py)
        self.position_records = ledger.position_records()  # fixed per position: shared by every run
        self.ledger_fixed = ledger.fixed_on(backend)  # the same, on the device
        self.device_queue_members = backend.asarray(self.queue_members)
        self.start_value = self.value(ledger, book.mark_price)
        self.entry_notional = float(np.sum(self.notional(book.size, book.entry)))  # conservation's scale
        self.net_size = np.bincount(book.pos_symbol, weights=book.size, minlength=book.n_symbols)
        # Open size per ADL queue in the book as given: how deep a demand reaches, roughly.
        self.queue_size = np.bincount(self.group, weights=np.abs(book.size), minlength=2 * book.n_symbols)
        self.symbol_codes = np.arange(book.n_symbols, dtype=np.int32)
        self.funding = None  # rates per (step, symbol) paid before each step's revaluation (funding=)
        self._local = threading.local()  # per scenario thread: buffers reused run after run
        self._position_account_id = None

    @property
    def position_account_id(self) -> np.ndarray:
        """Each position's account id (int64), gathered once per context when detail rows
        first need it: a fill names two accounts, and one gather from this replaces two
        chained scattered gathers (position -> account row -> id)."""
        if self._position_account_id is None:
            self._position_account_id = self.book.account_id[self.book.pos_account]
        return self._position_account_id

    def balances(self) -> tuple:
        """This thread's arrays for a run's ledger balances (size, wallet, isolated margin),
        on the backend's device, reused run after run: a thread runs one scenario at a time,
        and a run's records copy what they keep."""
        held = getattr(self._local, "balances", None)
        if held is None:
            xp, d = self.backend.xp, self.dev
            held = self._local.balances = (xp.empty_like(d.size), xp.empty_like(d.wallet),
                                           xp.empty_like(d.isolated_margin))
        return held

    def ledger(self) -> Ledger:
        """A run's ledger: the book's balances copied into this thread's arrays, on the device
        (gpurisk/ledger.py), with the fixed columns and records every run shares."""
        d = self.dev
        return Ledger(self.book, self.insurance_fund, self.cs_pos, self.inverse_pos, self.balances(),
                      self.position_records, self.ledger_fixed, backend=self.backend,
                      initial=(d.size, d.wallet, d.isolated_margin))

    def revalue(self, ledger: Ledger, marks: np.ndarray) -> Revaluation:
        """The ledger's book revalued at marks on the device (the liquidation-price search
        skipped: a stress step does not read it)."""
        b = self.backend
        dev = SimpleNamespace(**vars(self.dev))
        dev.size = b.asarray(ledger.size)
        dev.wallet = b.asarray(ledger.wallet)
        dev.isolated_margin = b.asarray(ledger.isolated_margin)
        mark = b.asarray(marks)
        pm = position_margin(b, dev, mark, self.venue)
        am = account_margin(b, dev, pm, self.venue)
        am_risk = am
        if self.portfolio is not None:
            am_risk = tiered_view(am, portfolio_margin(b, dev, self.portfolio, mark, pm, am, self.venue))
        pr = position_risk(b, dev, mark, pm, am_risk, self.venue, liq_price=False)
        return Revaluation(b, dev, notional=pm.notional, upnl=pm.upnl, maint=pm.maint, equity=am.equity,
                            ratio=am.ratio, status=am.status, n_cross=am.n_cross, pos_equity=pr.equity,
                            pos_ratio=pr.ratio, pos_status=pr.status, bp=pr.bankruptcy_price,
                            score=lambda: adl_score(b, dev, mark, pm, pr, self.venue))

    def pay_funding(self, ledger: Ledger, marks: np.ndarray, t: int) -> None:
        """Funding of step t at its marks (gpurisk/funding.py): wallets and isolated margins pay,
        the external account takes the net (it holds the other side of any net size)."""
        if t >= self.funding.shape[0] or not np.any(self.funding[t]):
            return
        b = self.backend
        paid = settle(b, self.dev, ledger.size, ledger.wallet, ledger.isolated_margin, marks, self.funding[t])
        if ledger.on_device:  # back into the ledger's own arrays, where its balances live
            b.xp.copyto(ledger.wallet, b.asarray(paid.wallet))
            b.xp.copyto(ledger.isolated_margin, b.asarray(paid.isolated_margin))
        else:
            ledger.wallet, ledger.isolated_margin = paid.wallet, paid.isolated_margin
        ledger.x_cash += float(np.sum(paid.payment))

    def units(self, r: Revaluation) -> np.ndarray:
        """Positions the ladder acts on at a revaluation (bool, host): open positions of
        accounts whose cross book is liquidatable, and liquidatable isolated positions."""
        return self.backend.to_host(self.unit_flags(r)).view(bool)

    def unit_flags(self, r: Revaluation):
        """``units`` on the device (int8, 1 where the ladder acts)."""
        b = self.backend
        flags = b.xp.empty(self.book.n_positions, dtype=b.xp.int8)
        b.launch("stress_units", self.book.n_positions, r.dev.pos_account, r.dev.size, r.dev.isolated,
                 r.device("status"), r.device("n_cross"), r.device("pos_status"), flags)
        return flags

    def value(self, ledger: Ledger, marks: np.ndarray) -> float:
        """The book's whole value at marks: balances, unrealised PnL, the insurance fund and
        the external liquidity account (what conservation compares)."""
        b, book, d = self.backend, self.book, self.dev
        upnl = b.xp.empty(book.n_positions, dtype=b.xp.float64)
        b.launch("stress_upnl", book.n_positions, d.pos_symbol, b.asarray(ledger.size), d.entry, b.asarray(marks),
                 d.contract_size, d.inverse, upnl)
        wallet, margin, upnl = (b.numpy_sum(a) for a in (b.asarray(ledger.wallet), b.asarray(ledger.isolated_margin),
                                                          upnl))  # np.sum's bits, where the arrays are
        return float(wallet + margin + upnl + ledger.fund + ledger.external_value(marks))

    def restoring_fraction(self, ledger: Ledger, r: Revaluation, solve: np.ndarray, marks: np.ndarray) -> np.ndarray:
        """Per account (solve = 1), the share of its cross book to keep that brings its margin
        ratio down to the ladder's target (kernel ``restoring_fraction``)."""
        b, book = self.backend, self.book
        if ledger.on_device:  # the same arithmetic on the device, where the sizes are
            d, fixed = self.dev, ledger.fixed_on(b)
            price = d.entry if self.venue.mm_base == "entry" else b.asarray(marks)[d.pos_symbol]
            mm_notional = b.xp.abs(ledger.size) * price * fixed.cs_pos
            if self.any_inverse:
                mm_notional = b.xp.where(fixed.inverse.view(b.xp.bool_),
                                         b.xp.abs(ledger.size) * fixed.cs_pos / price, mm_notional)
        elif self.venue.mm_base == "entry":
            mm_notional = self.notional(ledger.size, book.entry)
        else:
            mm_notional = self.notional(ledger.size, marks[book.pos_symbol])
        keep = b.xp.empty(book.n_accounts, dtype=b.xp.float64)
        d = r.dev
        # The requirement's rate per tier counts the close fee (MM rate + fee rate); the MM
        # notional and the fee's are then the same, which holds where MM is on the mark.
        tiers = venue_tiers(b, self.dev, self.venue)
        b.launch("restoring_fraction", book.n_accounts, b.asarray(solve), d.pos_start, d.pos_symbol, d.size,
                 d.isolated, b.asarray(mm_notional), r.device("equity"), d.tier_start, d.tier_floor,
                 tiers.req_mmr, tiers.cum, float(self.ladder.target_ratio), keep)
        pf = self.portfolio
        if pf is not None:  # portfolio accounts: the share that brings their requirement to the target
            b.launch("portfolio_restoring_fraction", book.n_accounts, b.asarray(solve), pf.use, d.pos_start,
                     d.pos_symbol, d.size, d.isolated, b.asarray(marks), d.contract_size, pf.sym_group,
                     pf.shock_start, pf.shock, pf.offset_rate, pf.liquidity_threshold, pf.liquidity_rate,
                     int(pf.model.groups_move == "joint"), float(self.venue.close_fee_rate), r.device("equity"),
                     float(self.ladder.target_ratio), keep)
        return b.to_host(keep)

    def notional(self, size: np.ndarray, price: np.ndarray, idx=slice(None)) -> np.ndarray:
        """|size|·price·cs of positions idx (size and price aligned with idx); inverse:
        |size|·cs/price, in the coin (kernels/common.cuh notional_at)."""
        n = np.abs(size) * price * self.cs_pos[idx]
        if not self.any_inverse:
            return n
        return np.where(self.inverse_pos[idx], np.abs(size) * self.cs_pos[idx] / price, n)

    def order(self, group: np.ndarray, score: np.ndarray) -> np.ndarray:
        """Indices by (group, score descending, index): the backend's queue sort, on the host."""
        b = self.backend
        return b.to_host(b.queue_order(b.asarray(np.ascontiguousarray(group, dtype=np.int32)),
                                       b.asarray(np.ascontiguousarray(score, dtype=np.float64)),
                                       int(group.max()) + 1 if group.size else 1))
