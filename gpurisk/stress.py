"""Stress tests (DESIGN §5–§7): price-shock scenarios and multi-step liquidation cascades
over every account, with the deleveraging ladder, the insurance fund, ADL policies and an
external liquidity account that takes whatever is sold into the market.

Money is conserved: with a balanced book, Σ(wallet + isolated margin + upnl) over all
accounts, plus the insurance fund, plus the external liquidity account, is the same before
and after every step (checked on every scenario and reported in the summary).

Scenarios are screened in batches by one kernel pass over the positions per batch
(``stress_flags``); only scenarios that liquidate someone are run step by step.

Polars is needed at the edges only, so the engine runs where only NumPy (and CuPy) are
installed: ``scenario_paths`` turns a scenario frame into arrays, ``run_stress`` runs them and
returns ``StressRecords`` (NumPy arrays), and ``StressRecords.to_result`` builds the frames of
``StressResult``. ``stress`` is the three in a row.

Scenarios (gpurisk/scenarios.py), price impact (gpurisk/impact.py), what a run records
(gpurisk/stress_result.py) and the deleveraging steps (gpurisk/deleverage.py) live in modules
of their own; this one is the loop.
"""

from __future__ import annotations

import math
import sys
import time
from types import SimpleNamespace

import numpy as np

from .adl import _splitmix64, adl_score
from .backend import Backend, get_backend
from .book import Book
from .deleverage import fund_cover, haircuts, queue_fills, queue_front
from .engine import DeviceBook
from .funding import funding_steps, settle
from .ladder import Ladder, get_ladder
from .impact import Impact, get_impact
from .liquidation import position_risk
from .margin import account_margin, position_margin
from .scenarios import check_paths, run_ids, scenario_paths
from .stress_result import POLICIES, POLICY_CODE, StressRecords, StressResult, _Records
from .venue import Venue, get_venue

# The stress API in one place: scenarios, records and their codes live in their own modules.
from .scenarios import read_scenarios, shock_grid  # noqa: E402,F401
from .stress_result import (ACTIONS, ADL_FILL_COLUMNS, HAIRCUT_COLUMNS, LIQUIDATION_COLUMNS,  # noqa: E402,F401
                            MARGIN_MODES, PRICE_COLUMNS, SUMMARY_COLUMNS)

LIQUIDATABLE = 2


# ------------------------------------------------------------------ the conservation check

#: a run's summary.conservation_error beyond this (relative) is a failure; in practice ~1e-16
CONSERVATION_TOLERANCE = 1e-9


def conservation_check(summary, tolerance: float = CONSERVATION_TOLERANCE) -> tuple[int, float]:
    """(runs that fail, largest |conservation_error|) of a stress summary (a frame or
    StressRecords.summary). NaN or ±inf never passes: such a run fails, and the largest error
    is then NaN, not the largest of the others (a plain max skips NaN)."""
    err = np.asarray(summary["conservation_error"], dtype=np.float64)
    failed = int(np.count_nonzero(~(np.abs(err) <= tolerance)))
    if err.size == 0:
        return 0, 0.0
    worst = float(np.max(np.abs(err))) if np.all(np.isfinite(err)) else float("nan")
    return failed, worst


# ------------------------------------------------------------------ one scenario


class _State:
    """Mutable copies of the parts of the book a stress run changes (host arrays)."""

    def __init__(self, book: Book):
        self.size = book.size.copy()
        self.wallet = book.wallet.copy()
        self.isolated_margin = book.isolated_margin.copy()
        self.partials = np.zeros(book.n_accounts, dtype=np.int32)
        self.fund = 0.0
        self.x_cash = 0.0  # the external liquidity account
        self.x_size = np.zeros(book.n_symbols)

    def value(self, book: Book, marks: np.ndarray) -> float:
        cs = book.contract_size[book.pos_symbol]
        upnl = self.size * (marks[book.pos_symbol] - book.entry) * cs
        x = self.x_cash + float(np.sum(self.x_size * marks * book.contract_size))
        return float(np.sum(self.wallet) + np.sum(self.isolated_margin) + np.sum(upnl) + self.fund + x)


def _in_limits(marks: np.ndarray) -> np.ndarray:
    """Marks moved by accumulated impact held within the input price limits (a long cascade
    compounds up to 0.99 of a move per step, which would otherwise reach 0 or overflow);
    marks within the limits are returned unchanged, bit for bit."""
    from .schema import PRICE_MAX, PRICE_MIN

    return np.clip(marks, PRICE_MIN, PRICE_MAX)


class _Revaluation:
    """A revaluation's results, each copied to the host on first use: on the gpu backend a
    step that liquidates nobody copies the statuses only. ``dev``: the device tables it ran on."""

    def __init__(self, backend: Backend, dev, **results):
        self._backend, self._results, self.dev = backend, results, dev

    def __getattr__(self, name):
        results = self.__dict__.get("_results", {})
        if name not in results:
            raise AttributeError(name)
        value = self._backend.to_host(results[name])
        setattr(self, name, value)
        return value


class _Runner:
    def __init__(self, book: Book, venue: Venue, backend: Backend, ladder: Ladder, impact: Impact | None,
                 insurance_fund: float):
        self.book, self.venue, self.backend, self.ladder, self.impact = book, venue, backend, ladder, impact
        self.dev = DeviceBook(book, backend)
        self.insurance_fund = float(insurance_fund)
        self.depth = impact.depths(book) if impact else None
        self.cs_pos = book.contract_size[book.pos_symbol]
        self.acc_of = book.pos_account
        self.group = (book.pos_symbol.astype(np.int64) * 2 + (book.size < 0)).astype(np.int64)
        # Members of each queue in storage order (account id order), found once.
        by_group = np.argsort(self.group, kind="stable")
        bounds = np.searchsorted(self.group[by_group], np.arange(2 * book.n_symbols + 1))
        self.members = [by_group[bounds[g]:bounds[g + 1]] for g in range(2 * book.n_symbols)]
        self.start_value = _State(book).value(book, book.mark_price)
        self.entry_notional = float(np.sum(np.abs(book.size) * book.entry * self.cs_pos))  # conservation's scale
        self.net_size = np.bincount(book.pos_symbol, weights=book.size, minlength=book.n_symbols)
        self.symbol_codes = np.arange(book.n_symbols, dtype=np.int32)
        self.funding = None  # rates per (step, symbol) paid before each step's revaluation (funding=)

    # -- device revaluation of a state at marks; host copies of what orchestration needs
    def revalue(self, st: _State, marks: np.ndarray) -> "_Revaluation":
        b = self.backend
        dev = SimpleNamespace(**vars(self.dev))
        dev.size = b.asarray(st.size)
        dev.wallet = b.asarray(st.wallet)
        dev.isolated_margin = b.asarray(st.isolated_margin)
        mark = b.asarray(marks)
        pm = position_margin(b, dev, mark, self.venue)
        am = account_margin(b, dev, pm, self.venue)
        pr = position_risk(b, dev, mark, pm, am, self.venue, liq_price=False)  # not read here
        score = adl_score(b, dev, mark, pm, pr, self.venue)
        return _Revaluation(b, dev, notional=pm.notional, upnl=pm.upnl, maint=pm.maint, equity=am.equity,
                            ratio=am.ratio, status=am.status, n_cross=am.n_cross, pos_equity=pr.equity,
                            pos_ratio=pr.ratio, pos_status=pr.status, bp=pr.bankruptcy_price, score=score)

    # -- money moves (each conserves the total)
    def trade(self, st: _State, i, qty, price, market_price):
        """Positions i close qty (signed like the position) at ``price``; the external account
        buys it at ``market_price``; the insurance fund takes the difference (zero for a sale
        in the market, the takeover's profit or loss at the bankruptcy price)."""
        cs = self.cs_pos[i]
        self._credit(st, i, qty * (price - self.book.entry[i]) * cs)
        st.size[i] -= qty
        np.add.at(st.x_size, self.book.pos_symbol[i], qty)
        st.x_cash -= float(np.sum(qty * market_price * cs))
        st.fund += float(np.sum(qty * (market_price - price) * cs))

    def close_to_market(self, st: _State, i, qty, price):
        self.trade(st, i, qty, price, price)

    def take_over(self, st: _State, i, qty, bp, market_price):
        self.trade(st, i, qty, bp, market_price)

    def pay_funding(self, st: _State, marks: np.ndarray, t: int):
        """Funding of step t at its marks (gpurisk/funding.py): wallets and isolated margins pay,
        the external account takes the net (it holds the other side of any net size)."""
        if t >= self.funding.shape[0] or not np.any(self.funding[t]):
            return
        s = settle(self.backend, self.dev, st.size, st.wallet, st.isolated_margin, marks, self.funding[t])
        st.wallet, st.isolated_margin = s.wallet, s.isolated_margin
        st.x_cash += float(np.sum(s.payment))

    def release_isolated(self, st: _State, i):
        """Margin left on closed isolated positions goes back to the wallet."""
        closed = i[(self.book.isolated[i] == 1) & (st.size[i] == 0.0)]
        np.add.at(st.wallet, self.acc_of[closed], st.isolated_margin[closed])
        st.isolated_margin[closed] = 0.0

    # -- the run
    def run(self, scenario, shocks: np.ndarray, policy: str, rec: _Records, steps: int) -> dict:
        book, lad = self.book, self.ladder
        st = _State(book)
        st.fund = self.insurance_fund
        base = book.mark_price
        start_value = self.start_value + st.fund
        impact_factor = np.ones(book.n_symbols)
        n_path = shocks.shape[0]
        totals = dict(accounts_liquidated=np.zeros(book.n_accounts, bool), notional_liquidated=0.0, deficit=0.0,
                      insurance_used=0.0, adl_notional=0.0, adl_accounts=np.zeros(book.n_accounts, bool), socialized_loss=0.0, haircut_total=0.0,
                      max_haircut=0.0, steps=0)  # steps: those that liquidated someone
        marks = base * (1 + shocks[0])
        rec.extend(rec.prices, book.n_symbols, scenario=scenario, policy=POLICY_CODE[policy], step=0,
                   symbol=self.symbol_codes, mark_price=marks)
        last_t = 0
        for t in range(max(steps, n_path)):
            marks = _in_limits(base * (1 + shocks[min(t, n_path - 1)]) * impact_factor)
            if self.funding is not None:
                self.pay_funding(st, marks, t)
            r = self.revalue(st, marks)
            unit_cross = (r.status >= LIQUIDATABLE) & (r.n_cross > 0)
            pos_open = st.size != 0.0
            pos_iso_liq = (book.isolated == 1) & pos_open & (r.pos_status >= LIQUIDATABLE)
            in_unit = pos_open & ((unit_cross[self.acc_of] & (book.isolated == 0)) | pos_iso_liq)
            last_t = t
            if not in_unit.any():
                if t + 1 >= n_path:
                    break
                continue
            totals["steps"] += 1
            idx = np.nonzero(in_unit)[0]
            acc = self.acc_of[idx]
            iso = book.isolated[idx] == 1
            ratio = np.where(iso, r.pos_ratio[idx], r.ratio[acc])
            equity = np.where(iso, r.pos_equity[idx], r.equity[acc])
            # Ladder: what each unit (an account's cross book, or one isolated position) gets.
            action = np.full(idx.size, 1, dtype=np.int8)  # 0 reduce, 1 liquidate, 2 backstop/takeover
            if lad.backstop_ratio is not None:
                action[ratio >= lad.backstop_ratio] = 2
            action[equity <= 0] = 2
            qty = st.size[idx].copy()
            may_partial = (action == 1) & (lad.partial != "none")
            if lad.max_partial_steps is not None:
                may_partial &= st.partials[acc] < lad.max_partial_steps
            if lad.partial == "target":
                solve = np.zeros(book.n_accounts, dtype=np.int8)
                solve[acc[may_partial & ~iso]] = 1
                if solve.any():
                    keep = self.restoring_fraction(st, r, solve, marks)
                    k = keep[acc]
                    part = may_partial & ~iso & np.isfinite(k) & (k > 0)
                    qty[part] = st.size[idx][part] * (1.0 - k[part])
                    action[part] = 0
            elif lad.partial == "slices":
                big = may_partial & (r.notional[idx] > lad.slice_min_notional)
                qty[big] = st.size[idx][big] * lad.slice_fraction
                action[big] = 0
            # Execution price: the mark moved by the impact of everything sold this step.
            if self.impact is not None:
                flow = np.bincount(book.pos_symbol[idx], weights=qty * marks[book.pos_symbol[idx]]
                                   * self.cs_pos[idx], minlength=book.n_symbols)
                impact_factor = impact_factor * (1 + self.impact.move(flow, self.depth))
            exec_marks = _in_limits(base * (1 + shocks[min(t, n_path - 1)]) * impact_factor)
            rx = self.revalue(st, exec_marks) if self.impact is not None else r
            eq_exec = np.where(iso, rx.pos_equity[idx], rx.equity[acc])
            bust = (action == 2) | (eq_exec <= 0)
            # A unit bankrupt at execution is taken over whole.
            unit_key = np.where(iso, -1 - idx, acc)  # cross units by account, isolated by position
            bust_account = np.zeros(book.n_accounts, dtype=bool)
            bust_account[acc[bust & ~iso]] = True
            bust = np.where(iso, bust, bust_account[acc])
            action[bust] = 2
            qty[bust] = st.size[idx][bust]
            p_exec = exec_marks[book.pos_symbol[idx]]
            trigger_ratio = ratio.copy()
            # Market closes (reductions and liquidations of solvent units).
            m = ~bust
            if m.any():
                self.close_to_market(st, idx[m], qty[m], p_exec[m])
                st.partials[np.unique(acc[m & (action == 0)])] += 1
            # Takeovers: insurance fund first (most underwater first), then ADL.
            self.settle_bankrupt(st, rx, idx[bust], unit_key[bust], exec_marks, policy, scenario, t, rec, totals,
                                 in_unit)
            self.release_isolated(st, idx)
            notional = np.abs(qty) * p_exec * self.cs_pos[idx]
            totals["notional_liquidated"] += float(notional.sum())
            totals["accounts_liquidated"][acc] = True
            if rec.detail:
                rec.extend(rec.liq, idx.size, scenario=scenario, policy=POLICY_CODE[policy], step=t,
                           account_id=book.account_id[acc], symbol=book.pos_symbol[idx].astype(np.int32),
                           margin_mode=iso.astype(np.int8),
                           action=np.where(bust & (eq_exec > 0), 2, np.where(bust, 3, action)).astype(np.int8),
                           margin_ratio=trigger_ratio, qty=np.abs(qty),
                           price=np.where(bust, rx.bp[idx], p_exec))
            rec.extend(rec.prices, book.n_symbols, scenario=scenario, policy=POLICY_CODE[policy], step=t + 1,
                       symbol=self.symbol_codes, mark_price=exec_marks)
        final_marks = _in_limits(base * (1 + shocks[min(last_t, n_path - 1)]) * impact_factor)
        end_value = st.value(book, final_marks)
        scale = max(abs(start_value), self.entry_notional, 1.0)
        return dict(
            scenario=scenario, policy=policy, steps=totals["steps"],
            accounts_liquidated=int(totals["accounts_liquidated"].sum()),
            notional_liquidated=totals["notional_liquidated"], deficit=totals["deficit"],
            insurance_used=totals["insurance_used"], insurance_left=st.fund,
            # What the fund paid beyond what it had: no counterparty or haircut could cover it.
            unfunded=max(0.0, -st.fund),
            adl_notional=totals["adl_notional"], adl_accounts=int(totals["adl_accounts"].sum()),
            socialized_loss=totals["socialized_loss"],
            overshoot=max(0.0, totals["haircut_total"] - totals["socialized_loss"]),
            max_haircut_share=(totals["max_haircut"] / totals["haircut_total"]) if totals["haircut_total"] > 0 else 0.0,
            external_value=st.x_cash + float(np.sum(st.x_size * final_marks * book.contract_size)),
            conservation_error=(end_value - start_value) / scale,
        )

    def restoring_fraction(self, st: _State, r, solve: np.ndarray, marks: np.ndarray) -> np.ndarray:
        b = self.backend
        book = self.book
        if self.venue.mm_base == "entry":
            mm_notional = np.abs(st.size) * book.entry * self.cs_pos
        else:
            mm_notional = np.abs(st.size) * marks[book.pos_symbol] * self.cs_pos
        keep = b.xp.empty(book.n_accounts, dtype=b.xp.float64)
        d = r.dev
        b.launch("restoring_fraction", book.n_accounts, b.asarray(solve), d.pos_start, d.pos_symbol, d.size,
                 d.isolated, b.asarray(mm_notional), b.asarray(r.equity), d.tier_start, d.tier_floor,
                 d.tier_mmr, d.tier_cum, float(self.ladder.target_ratio), keep)
        return b.to_host(keep)

    def settle_bankrupt(self, st, rx, pos, unit_key, exec_marks, policy, scenario, step, rec, totals, in_unit):
        """Take bankrupt units over at their bankruptcy prices: the insurance fund pays the
        deficits of the most underwater first; what it cannot pay is deleveraged."""
        if pos.size == 0:
            return
        book = self.book
        bp = rx.bp[pos]
        p_mkt = exec_marks[book.pos_symbol[pos]]
        qty = st.size[pos].copy()
        loss = qty * (bp - p_mkt) * self.cs_pos[pos]  # what the taker loses selling at market
        units, inv = np.unique(unit_key, return_inverse=True)
        unit_deficit = np.bincount(inv, weights=loss, minlength=units.size)
        unit_acc = np.where(units >= 0, units, self.acc_of[np.maximum(-1 - units, 0)])
        unit_acc_id = book.account_id[unit_acc]
        # Most underwater first; ties by account id, then cross before isolated positions.
        order = np.lexsort((units < 0, unit_acc_id, -unit_deficit))
        deficits = np.maximum(unit_deficit[order], 0.0)
        totals["deficit"] += float(deficits.sum())
        covered = fund_cover(deficits, st.fund)
        frac_unit = np.ones(units.size)
        frac_unit[order] = np.where(deficits > 0, covered / np.where(deficits > 0, deficits, 1.0), 1.0)
        frac = frac_unit[inv]  # share of each position the fund takes
        fund_qty = np.where(frac >= 1.0, qty, qty * frac)
        self.take_over(st, pos, fund_qty, bp, p_mkt)
        totals["insurance_used"] += float(covered.sum())  # backstop gains are not netted in
        rest = qty - fund_qty
        rest[st.size[pos] == 0.0] = 0.0
        if not np.any(rest != 0.0):
            return
        # Deleverage what is left, symbol and side at a time, in the unit order above. A
        # queue's counterparties are its open positions not being liquidated; one queue's
        # fills never open or close another queue's counterparties, so they are found once.
        counterparty = (st.size != 0.0) & ~in_unit
        rank_of_unit = np.empty(units.size, dtype=np.int64)
        rank_of_unit[order] = np.arange(units.size)
        demand_order = np.lexsort((pos, rank_of_unit[inv]))
        live = demand_order[rest[demand_order] != 0.0]
        live = live[np.argsort(self.group[pos[live]], kind="stable")]  # queue by queue, order kept
        groups = self.group[pos[live]]
        bounds = np.flatnonzero(np.diff(groups)) + 1
        for part in np.split(live, bounds):
            self.deleverage(st, rx, pos[part], rest[part], bp[part], int(self.group[pos[part[0]]]), exec_marks,
                            policy, scenario, step, rec, totals, counterparty)

    def deleverage(self, st, rx, pos, rest, bp, g, exec_marks, policy, scenario, step, rec, totals, counterparty):
        book = self.book
        opposite = g ^ 1
        s = g // 2
        p = exec_marks[s]
        cs = book.contract_size[s]
        uncovered = rest * (bp - p) * cs  # per bankrupt position, what is socialized
        if policy == "queue":
            demand = np.abs(rest)
            if self.venue.adl_score == "random":
                cand = self.members[opposite]
                cand = cand[counterparty[cand]]
                m = cand.size
                off = (_splitmix64(self.venue.adl_seed * 1_000_003 + opposite) % m) if m else 0
                q_order = np.roll(cand, -off)
            else:
                q_order = queue_front(self.members[opposite], rx.score, counterparty, st.size, np.cumsum(demand)[-1])
            di, si, seg, demand_closed, supply_closed = queue_fills(demand, np.abs(st.size[q_order]))
            sign = np.sign(rest[0])
            # Fills: bankrupt position pos[di] closes seg at bp[di]; counterparty q_order[si] closes seg.
            b_i, c_i, f_px = pos[di], q_order[si], bp[di]
            n_cp = int(si.max()) + 1 if si.size else 0
            cps = q_order[:n_cp]
            filled = np.bincount(di, weights=seg, minlength=pos.size)
            taken = np.bincount(si, weights=seg, minlength=n_cp)
            # Realised PnL per position, summed over its fills (a position's fills are contiguous).
            self._credit(st, pos, sign * np.bincount(di, weights=seg * (f_px - book.entry[b_i]), minlength=pos.size) * cs)
            self._credit(st, cps, -sign * np.bincount(si, weights=seg * (f_px - book.entry[c_i]), minlength=n_cp) * cs)
            st.size[pos] -= sign * filled
            st.size[cps] += sign * taken
            # Fully consumed positions close exactly.
            st.size[pos[demand_closed]] = 0.0
            st.size[q_order[supply_closed]] = 0.0
            socialized = float(np.sum(filled * np.abs(bp - p) * cs * np.sign((bp - p) * sign)))
            totals["socialized_loss"] += socialized
            totals["haircut_total"] += socialized
            if seg.size:  # each counterparty's loss against the market price
                haircut_cp = np.bincount(si, weights=seg * (bp[di] - p) * sign * cs, minlength=q_order.size)
                totals["max_haircut"] = max(totals["max_haircut"], float(haircut_cp.max(initial=0.0)))
            totals["adl_notional"] += float(np.sum(seg * p * cs))
            totals["adl_accounts"][self.acc_of[cps]] = True
            if rec.detail:
                rec.extend(rec.fills, seg.size, scenario=scenario, policy=POLICY_CODE[policy], step=step,
                           symbol=np.full(seg.size, s, np.int32),
                           bankrupt_account_id=book.account_id[self.acc_of[b_i]],
                           counterparty_account_id=book.account_id[self.acc_of[c_i]], qty=seg, price=f_px)
            self.release_isolated(st, np.concatenate([pos, cps]))
            # Demand the queue could not meet: the fund takes it (and may go below zero).
            left = np.abs(rest) - filled
            left_i = np.nonzero(left > 1e-12 * np.maximum(np.abs(rest), 1e-300))[0]
            if left_i.size:
                left_qty = st.size[pos[left_i]]
                totals["insurance_used"] += float(np.sum(left_qty * (bp[left_i] - p) * cs))
                self.take_over(st, pos[left_i], left_qty, bp[left_i], np.full(left_i.size, p))
            return
        # Haircut policies: the fund takes the positions over and recovers the loss from the
        # opposite side's positive PnL.
        self.take_over(st, pos, rest, bp, np.full(pos.size, p))
        need = float(uncovered.sum())
        cand = self.members[opposite]
        cand = cand[counterparty[cand]]
        pnl = np.maximum(rx.upnl[cand], 0.0)
        win = pnl > 0
        cand, pnl = cand[win], pnl[win]
        cut = haircuts(policy, need, pnl, rx.notional[cand], rx.pos_equity[cand])
        iso = book.isolated[cand] == 1
        np.add.at(st.wallet, self.acc_of[cand[~iso]], -cut[~iso])
        np.add.at(st.isolated_margin, cand[iso], -cut[iso])
        st.fund += float(cut.sum())
        recovered = float(cut.sum())
        totals["socialized_loss"] += recovered
        totals["insurance_used"] += need - recovered  # what the haircuts did not recover
        totals["haircut_total"] += recovered
        totals["max_haircut"] = max(totals["max_haircut"], float(cut.max(initial=0.0)))
        hit = cut > 0
        totals["adl_accounts"][self.acc_of[cand[hit]]] = True
        if rec.detail:
            rec.extend(rec.cuts, int(hit.sum()), scenario=scenario, policy=POLICY_CODE[policy], step=step,
                       symbol=np.full(int(hit.sum()), s, np.int32),
                       account_id=book.account_id[self.acc_of[cand[hit]]], amount=cut[hit])

    def _credit(self, st, i, amount):
        """Realised PnL of positions i: to the wallet (cross) or the position's margin (isolated)."""
        iso = self.book.isolated[i] == 1
        np.add.at(st.wallet, self.acc_of[i[~iso]], amount[~iso])
        np.add.at(st.isolated_margin, i[iso], amount[iso])


# ------------------------------------------------------------------ public entry point


def stress(book: Book, scenarios, venue: "str | Venue" = "binance", backend: "str | Backend" = "auto",
           insurance_fund: float = 0.0, policy="queue", steps: int = 1, impact=None,
           ladder: "str | Ladder | None" = None, batch: int = 64, progress: bool | None = None,
           detail: bool = True, funding=None) -> StressResult:
    """Run every scenario through the deleveraging sequence; see the module docstring.
    ``scenario_paths``, then ``run_stress``, then the frames.

    scenarios: a (scenario, symbol, shock[, step]) frame of relative mark moves, e.g.
        ``shock_grid(-0.5, 0.5, 1000)``; a ``step`` column gives multi-step price paths.
    policy: ``"queue"`` (the venue's ADL ranking), ``"pro_rata"``, ``"capped_pro_rata"``,
        ``"rap"``, or a list of them (each scenario is run once per policy).
    steps: cascade steps (liquidations move prices through ``impact``); stops early when a
        step liquidates nobody.
    ladder: a Ladder or preset name; default the venue's.
    detail: keep every liquidation, ADL fill and haircut (False: the summary and price paths
        only, for grids of thousands of scenarios whose fills would run to hundreds of millions
        of rows; rerun the scenarios of interest with detail).
    funding: rates paid before each step's revaluation, at that step's marks (gpurisk/funding.py):
        {symbol: rate} or a (symbol, funding_rate) frame at every step, a frame with a ``step``
        column at the steps it lists, or an array (steps, symbols). None: no funding.
    """
    venue, be, lad, imp, policies = _options(venue, backend, ladder, impact, policy, steps, insurance_fund)
    labels, shocks = scenario_paths(book, scenarios)
    records = run_stress(book, run_ids(labels), shocks, venue=venue, backend=be, insurance_fund=insurance_fund,
                         policy=policies, steps=steps, impact=imp, ladder=lad, batch=batch, progress=progress,
                         detail=detail, funding=funding)
    return records.to_result(scenario_labels=labels)


def run_stress(book: Book, scenario_ids, shocks, venue: "str | Venue" = "binance",
               backend: "str | Backend" = "auto", insurance_fund: float = 0.0, policy="queue", steps: int = 1,
               impact=None, ladder: "str | Ladder | None" = None, batch: int = 64, progress: bool | None = None,
               detail: bool = True, funding=None) -> StressRecords:
    """``stress`` on arrays, without Polars: the same options and the same numbers, as
    StressRecords.

    scenario_ids: 1-D integer array (int64), one distinct id per scenario.
    shocks: float64 array (scenario, step, symbol) of relative moves of the book's marks, one
        row per id, each finite and > -1 (what ``scenario_paths`` returns). Bad arrays raise a
        BookError naming each problem before anything is computed.
    """
    venue, be, lad, imp, policies = _options(venue, backend, ladder, impact, policy, steps, insurance_fund)
    steps = int(steps)
    ids, shocks = check_paths(book, scenario_ids, shocks)
    funding_rates = funding_steps(book, funding, max(steps, shocks.shape[1]))
    if imp is not None:
        imp.depths(book)  # a depth dict naming a symbol the book lacks: refused before any compute
    batch = _whole(batch, "batch", 1, 1 << 20)
    t0 = time.perf_counter()
    runner = _Runner(book, venue, be, lad, imp, insurance_fund)
    runner.funding = funding_rates
    rec = _Records(detail)
    # Screen: one kernel pass over the positions per batch of scenarios finds those where
    # somebody is liquidatable at the first step's marks.
    live = _screen(runner, shocks[:, 0, :], batch)
    multi = shocks.shape[1] > 1
    show = sys.stderr.isatty() if progress is None else progress
    n_total = len(ids) * len(policies)
    done = 0
    for k, sid in enumerate(ids):
        for pol in policies:
            if live[k] or multi or funding_rates is not None:  # funding moves wallets: run every step
                row = runner.run(sid, shocks[k], pol, rec, steps)
            else:
                row = _quiet_row(runner, sid, pol, shocks[k, 0], rec)
            rec.add_summary(row)
            done += 1
            if show and (done % max(1, n_total // 100) == 0 or done == n_total):
                print(f"\r  stress: {done:,}/{n_total:,} scenario runs", end="", file=sys.stderr, flush=True)
    if show:
        print(file=sys.stderr)
    elapsed = time.perf_counter() - t0
    return rec.finish(book.symbols, {"seconds": elapsed, "scenarios": len(ids), "screened_quiet": int((~live).sum())})


def _whole(value, name: str, lo: int, hi: int) -> int:
    """An integer option in [lo, hi]; ValueError otherwise (a fraction, text, bool, NaN)."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok and isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        ok, value = True, int(value)
    if not ok or not lo <= int(value) <= hi:
        raise ValueError(f"{name} must be a whole number in [{lo:,}, {hi:,}], got {value!r}")
    return int(value)


def _options(venue, backend, ladder, impact, policy, steps, insurance_fund):
    """The run's venue, backend, ladder, impact and policy list; ValueError on a bad option."""
    from .schema import BALANCE_MAX, MAX_STEPS

    venue = get_venue(venue)
    be = get_backend(backend)
    lad = get_ladder(ladder, venue.name)
    imp = get_impact(impact)
    policies = [policy] if isinstance(policy, str) else list(policy)
    if not policies:
        raise ValueError(f"policy needs at least one of {', '.join(POLICIES)}")
    for p in policies:
        if p not in POLICIES:
            raise ValueError(f"unknown policy {p!r}; choose from {', '.join(POLICIES)}")
    twice = sorted({p for p in policies if policies.count(p) > 1})
    if twice:
        raise ValueError(f"policy lists {', '.join(map(repr, twice))} more than once; each policy runs once "
                         "per scenario")
    _whole(steps, "steps", 1, MAX_STEPS)
    try:
        fund = float(insurance_fund)
    except (TypeError, ValueError):
        raise ValueError(f"insurance_fund must be a number, got {insurance_fund!r}") from None
    if not math.isfinite(fund) or fund < 0 or fund > BALANCE_MAX:
        raise ValueError(f"insurance_fund must be finite and in [0, {BALANCE_MAX:g}] (input limits, "
                         f"gpurisk.schema), got {insurance_fund!r}")
    return venue, be, lad, imp, policies


def _screen(runner: _Runner, first_shocks: np.ndarray, batch: int) -> np.ndarray:
    book, b = runner.book, runner.backend
    d = runner.dev
    live = np.zeros(first_shocks.shape[0], dtype=bool)
    for lo in range(0, first_shocks.shape[0], batch):
        sh = first_shocks[lo:lo + batch]
        marks = np.ascontiguousarray(book.mark_price[None, :] * (1 + sh))
        flags = b.xp.empty(sh.shape[0] * book.n_accounts, dtype=b.xp.int8)
        b.launch("stress_flags", book.n_accounts, sh.shape[0], book.n_symbols, d.pos_start, d.pos_symbol, d.size,
                 d.entry, d.isolated, d.isolated_margin, d.wallet, b.asarray(marks.ravel()), d.contract_size,
                 d.tier_start, d.tier_floor, d.tier_mmr, d.tier_cum, int(runner.venue.mm_base == "entry"),
                 float(runner.venue.margin_call_ratio), float(runner.venue.liquidation_ratio), flags)
        live[lo:lo + sh.shape[0]] = b.to_host(flags.reshape(sh.shape[0], book.n_accounts).any(axis=1))
    return live


def _quiet_row(runner: _Runner, sid, pol, shock, rec: _Records) -> dict:
    book = runner.book
    marks = book.mark_price * (1 + shock)
    rec.extend(rec.prices, book.n_symbols, scenario=sid, policy=POLICY_CODE[pol], step=0, symbol=runner.symbol_codes,
               mark_price=marks)
    # Nobody trades: the book's value moves by each symbol's net size times its price move,
    # from per-symbol totals rather than a pass over every position.
    moved = float(np.sum(runner.net_size * book.contract_size * (marks - book.mark_price)))
    return dict(scenario=sid, policy=pol, steps=0, accounts_liquidated=0, notional_liquidated=0.0, deficit=0.0,
                insurance_used=0.0, insurance_left=runner.insurance_fund, unfunded=0.0, adl_notional=0.0, adl_accounts=0,
                socialized_loss=0.0, overshoot=0.0, max_haircut_share=0.0, external_value=0.0,
                conservation_error=moved / max(1.0, abs(runner.start_value)))


