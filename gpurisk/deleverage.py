"""Deleveraging steps as functions over arrays (DESIGN §5): the merge of bankrupt demand with
the front of an ADL queue (gpurisk/queue_front.py), the insurance fund's cover, and the
haircut policies' water-fill. The stress engine runs them; so can any other caller (a replay of a real
event's ADL waves, a what-if on one bankrupt position).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .queue_front import (demand_by_queue, queue_front, queue_front_numpy, queue_fronts,  # noqa: F401
                          queue_fronts_to_demand, rotated_queue)  # (callers import them from here too)


def queue_fills(demand: np.ndarray, supply: np.ndarray):
    """Bankrupt demand (sizes, in settlement order) against a queue's supply (sizes, in queue
    order): the merge of their running sums. Returns (di, si, qty, demand_closed,
    supply_closed): fill j closes ``qty[j]`` of demand ``di[j]`` against supply ``si[j]``;
    the masks mark the demands and supplies consumed whole. A fill that is a whole position
    is that position's size exactly (differences of running sums carry rounding)."""
    d_cum, s_cum = np.cumsum(demand), np.cumsum(supply)
    total = min(d_cum[-1], s_cum[-1]) if s_cum.size else 0.0
    cuts = _sorted_union(d_cum[:np.searchsorted(d_cum, total, side="right")],
                         s_cum[:np.searchsorted(s_cum, total, side="right")])
    starts = np.concatenate([[0.0], cuts[:-1]])
    seg = cuts - starts
    keep = seg > 0
    starts, seg = starts[keep], seg[keep]
    di = np.searchsorted(d_cum, starts, side="right")
    si = np.searchsorted(s_cum, starts, side="right")
    noise = 1e-12 * np.maximum(d_cum[di], s_cum[si])
    # Within noise of a whole size, the fill is that size; of both, the smaller (a fill never
    # exceeds either side).
    d_whole = np.abs(seg - demand[di]) <= noise
    s_whole = np.abs(seg - supply[si]) <= noise
    seg = np.where(d_whole & s_whole, np.minimum(demand[di], supply[si]),
                   np.where(d_whole, demand[di], np.where(s_whole, supply[si], seg)))
    return di, si, seg, d_cum <= total, s_cum <= total


def _sorted_union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The sorted distinct values of two ascending arrays (``np.union1d``), by a merge rather
    than a sort: running sums arrive sorted."""
    merged = np.empty(a.size + b.size)
    merged[np.arange(a.size) + np.searchsorted(b, a, side="left")] = a
    merged[np.arange(b.size) + np.searchsorted(a, b, side="right")] = b
    if merged.size < 2:
        return merged
    distinct = np.empty(merged.size, dtype=bool)
    distinct[0] = True
    np.not_equal(merged[1:], merged[:-1], out=distinct[1:])
    return merged[distinct]


def queue_merges(backend, demand: np.ndarray, demand_bounds: np.ndarray, supply: np.ndarray,
                 supply_bounds: np.ndarray) -> list:
    """``queue_fills`` for several queues at once, by one kernel (``adl_merge``, a thread per
    queue) with the same bits. Queue k's demand is ``demand[demand_bounds[k, 0]:demand_bounds[k, 1]]``
    — bounds are (begin, end) rows — and its ranked supply ``supply[supply_bounds[k, 0]:
    supply_bounds[k, 1]]``, whole: it is used as deep as the demand. Returns, per queue,
    (di, si, qty, demand_closed, supply_closed) as ``queue_fills`` gives them for the used
    depth of the supply (``supply_closed``'s length)."""
    b = backend
    m = _merge(b, demand, demand_bounds, supply, supply_bounds)
    n_fills, n_used, f_d, f_s, f_q = (b.to_host(a) for a in (m.n_fills, m.n_used, m.fill_demand, m.fill_supply,
                                                             m.fill_qty))
    d_closed, s_closed = b.to_host(m.demand_closed).view(bool), b.to_host(m.supply_closed).view(bool)
    out = []
    for k in range(m.n_queues):
        fills = slice(m.base[k], m.base[k] + n_fills[k])
        (d0, d1), s0 = m.demand_bounds[k], m.supply_bounds[k, 0]
        out.append((f_d[fills], f_s[fills], f_q[fills], d_closed[d0:d1], s_closed[s0:s0 + n_used[k]]))
    return out


@dataclass
class _Merge:
    """adl_merge's output, on the backend's device: fill k of queue q at slot base[q] + k."""

    n_queues: int
    demand_bounds: np.ndarray
    supply_bounds: np.ndarray
    base: np.ndarray
    n_fills: object
    n_used: object
    fill_demand: object
    fill_supply: object
    fill_qty: object
    demand_closed: object
    supply_closed: object


def _merge(b, demand, demand_bounds, supply, supply_bounds) -> _Merge:
    demand_bounds = np.ascontiguousarray(demand_bounds, dtype=np.int64).reshape(-1, 2)
    supply_bounds = np.ascontiguousarray(supply_bounds, dtype=np.int64).reshape(-1, 2)
    n = demand_bounds.shape[0]
    cap = (demand_bounds[:, 1] - demand_bounds[:, 0]) + (supply_bounds[:, 1] - supply_bounds[:, 0])
    base = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(cap, out=base[1:])
    slots = int(base[-1])
    dev = [b.asarray(np.ascontiguousarray(a)) for a in
           (demand_bounds[:, 0], demand_bounds[:, 1], demand, supply_bounds[:, 0], supply_bounds[:, 1], supply, base)]
    xp = b.xp
    d_cum, s_cum = xp.empty(demand.size, dtype=xp.float64), xp.empty(supply.size, dtype=xp.float64)
    n_fills, n_used = xp.empty(n, dtype=xp.int64), xp.empty(n, dtype=xp.int64)
    f_d, f_s = xp.empty(slots, dtype=xp.int64), xp.empty(slots, dtype=xp.int64)
    f_q = xp.empty(slots, dtype=xp.float64)
    d_closed, s_closed = xp.empty(demand.size, dtype=xp.int8), xp.empty(supply.size, dtype=xp.int8)
    b.launch("adl_merge", n, *dev[:6], dev[6], d_cum, s_cum, n_fills, n_used, f_d, f_s, f_q, d_closed, s_closed)
    return _Merge(n, demand_bounds, supply_bounds, base, n_fills, n_used, f_d, f_s, f_q, d_closed, s_closed)


def fund_cover(deficits: np.ndarray, fund: float) -> np.ndarray:
    """What the insurance fund pays of each deficit, in the order given (most underwater
    first): each in full while the fund lasts, then the remainder of the fund, then nothing."""
    before = np.concatenate([[0.0], np.cumsum(deficits)[:-1]])
    return np.clip(max(fund, 0.0) - before, 0.0, deficits)


def water_fill(need: float, caps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """cut_i = min(cap_i, λ·w_i) with Σ cut = need (all caps if they do not reach it)."""
    if need <= 0 or caps.size == 0:
        return np.zeros_like(caps)
    if caps.sum() <= need:
        return caps.copy()
    t = caps / weights  # λ at which each position is capped
    o = np.argsort(t, kind="stable")
    t_s, c_s, w_s = t[o], caps[o], weights[o]
    capped_sum = np.concatenate([[0.0], np.cumsum(c_s)])  # caps of the first k
    free_w = np.concatenate([np.cumsum(w_s[::-1])[::-1], [0.0]])  # weights from k on
    # Find k: the first k positions are capped, λ = (need − Σcaps_<k) / Σw_≥k, λ <= t_s[k].
    lam = (need - capped_sum[:-1]) / free_w[:-1]
    k = int(np.argmax(lam <= t_s))
    return np.minimum(caps, lam[k] * weights)


def haircuts(policy: str, need: float, pnl: np.ndarray, notional: np.ndarray, equity: np.ndarray) -> np.ndarray:
    """Each winner's cut under a haircut policy, to recover ``need`` from positive PnL ``pnl``:
    ``pro_rata`` one rate for all; ``capped_pro_rata`` a water-fill capped at each PnL;
    ``rap`` a water-fill weighted by PnL × leverage (at least 1), after Chitra (2025)."""
    if policy == "pro_rata":
        rate = min(1.0, need / pnl.sum()) if pnl.sum() > 0 else 0.0
        return pnl * rate
    if policy == "capped_pro_rata":
        return water_fill(need, caps=pnl, weights=np.ones_like(pnl))
    if policy == "rap":
        leverage = notional / np.maximum(equity, 1e-12)
        return water_fill(need, caps=pnl, weights=pnl * np.maximum(leverage, 1.0))
    raise ValueError(f"unknown policy {policy!r}")


# ------------------------------------------------------------------ the steps, on a ledger
#
# Each step moves money on a gpurisk.ledger.Ledger and returns what it did; the stress loop
# adds it to the run's totals and records. ``order(group, score)`` is the backend's queue
# sort on host arrays: indices by (group, score descending, index).


@dataclass
class Takeover:
    """The backstop's takeover of bankrupt positions: deficits, the fund's share, and what is
    left to deleverage (``rest``, signed, per position; ``unit_rank``: settlement order of
    each position's unit, most underwater first; on the backend's device when the kernels
    computed them)."""

    deficit: float
    covered: float
    rest: np.ndarray
    unit_rank: np.ndarray


def take_over_bankrupt(backend, ledger, pos, bp, market) -> Takeover:
    """``take_over_bankrupt_numpy`` as kernels (kernels/deleverage.cu, ``takeover_*``), with
    the same bits: the losses per position, the units and their deficits per account (``pos``
    ascending keeps an account's positions together), the settlement order by the backend's
    queue sort, the fund's cover in one sequential pass (its running total in a fixed order),
    and the takeover applied to the ledger per account (wallet credits in position order).
    Contract sizes are the ledger's (the NumPy definition's ``cs_pos``). ``pos``, ``bp`` and
    ``market`` may be host or device arrays; ``rest`` and ``unit_rank`` come back on the
    backend's device. The ledger's arrays are used in place where they live (a stress run's
    ledger lives on the backend's device; a host ledger on a gpu is copied there and back); of
    the takeover itself, only the totals (four numbers) and the unit count cross to the host."""
    b, xp = backend, backend.xp
    n = int(pos.size)
    if n == 0:
        empty = xp.zeros(0, dtype=xp.float64)
        return Takeover(0.0, 0.0, empty, xp.zeros(0, dtype=xp.int64))
    pos, bp, market = b.asarray(pos, xp.int64), b.asarray(bp, xp.float64), b.asarray(market, xp.float64)
    if n > 1 and not bool(xp.all(pos[1:] > pos[:-1])):  # the kernels find an account's positions side by side
        at = int(xp.flatnonzero(pos[1:] <= pos[:-1])[0]) + 1
        raise ValueError(f"take_over_bankrupt: positions must be ascending and distinct; pos[{at}] = {int(pos[at])} "
                         f"follows {int(pos[at - 1])}")
    fixed = ledger.fixed_on(b)
    inverse, isolated, account = fixed.inverse, fixed.isolated, fixed.account
    size, wallet, margin, x_size = (b.asarray(a) for a in (ledger.size, ledger.wallet, ledger.isolated_margin,
                                                           ledger.x_size))
    loss, money_bp, money_market, cs = (xp.empty(n, dtype=xp.float64) for _ in range(4))
    d_account, d_isolated, run_units = xp.empty(n, dtype=xp.int32), xp.empty(n, dtype=xp.int8), xp.empty(n, xp.int64)
    b.launch("takeover_loss", n, pos, bp, market, size, fixed.cs_pos, inverse, isolated, account,
             loss, money_bp, money_market, cs, d_account, d_isolated, run_units)
    units_through = xp.cumsum(run_units)
    n_units = int(units_through[-1])  # the one count the host needs: the sort's length
    unit, unit_deficit = xp.empty(n, dtype=xp.int64), xp.empty(n_units, dtype=xp.float64)
    b.launch("takeover_unit_deficits", n, d_account, d_isolated, loss, run_units, units_through, unit, unit_deficit)
    # Most underwater first; ties by unit number (account id, then cross before isolated).
    settle = b.asarray(b.queue_order(xp.zeros(n_units, dtype=xp.int32), unit_deficit, 1), xp.int64)
    deficits, covered = xp.empty(n_units, dtype=xp.float64), xp.empty(n_units, dtype=xp.float64)
    unit_share, unit_rank = xp.empty(n_units, dtype=xp.float64), xp.empty(n_units, dtype=xp.int64)
    totals = xp.zeros(4, dtype=xp.float64)
    b.launch("takeover_fund_cover", 1, n_units, settle, unit_deficit, max(ledger.fund, 0.0), deficits, covered,
             unit_share, unit_rank, totals)
    fund_qty, rest, rank = xp.empty(n, dtype=xp.float64), xp.empty(n, dtype=xp.float64), xp.empty(n, dtype=xp.int64)
    cash, gain = xp.empty(n, dtype=xp.float64), xp.empty(n, dtype=xp.float64)
    b.launch("takeover_apply", n, pos, money_bp, money_market, cs, d_account, d_isolated, unit, unit_share, unit_rank,
             fixed.entry, size, wallet, margin, fund_qty, rest, rank, cash, gain)
    b.launch("takeover_totals", 1, n, pos, fixed.symbol, fund_qty, cash, gain, x_size, totals)
    for moved, kept in ((size, ledger.size), (wallet, ledger.wallet), (margin, ledger.isolated_margin),
                        (x_size, ledger.x_size)):
        if moved is not kept:  # a device copy: back to the host's ledger
            kept[:] = b.to_host(moved)
    deficit, cover, x_cash, fund_gain = (float(v) for v in b.to_host(totals))
    ledger.x_cash -= x_cash
    ledger.fund += fund_gain
    return Takeover(deficit, cover, rest, rank)


def take_over_bankrupt_numpy(ledger, order, pos: np.ndarray, bp: np.ndarray, market: np.ndarray,
                             pos_start: np.ndarray, cs_pos: np.ndarray) -> Takeover:
    """Bankrupt positions ``pos`` (ascending) are taken over at their bankruptcy prices
    ``bp``: the insurance fund pays whole deficits of the most underwater units first (a
    unit: an account's cross book, or one isolated position) while it lasts, and takes that
    share of each unit's positions; the rest is left to ADL. The definition in NumPy, kept as
    the reference ``take_over_bankrupt`` (the kernels) keeps to the bit; ``order(group,
    score)`` is the backend's queue sort on host arrays."""
    qty = ledger.size[pos].copy()
    # what the taker loses selling at market (money prices: gpurisk/ledger.py)
    loss = qty * (ledger.money(pos, bp) - ledger.money(pos, market)) * cs_pos[pos]
    # Units numbered in the order that breaks ties: by account (storage order is account
    # id order), the cross unit first, then isolated positions by index descending.
    acc = ledger._account[pos]
    first = pos_start[acc]
    tie = np.where(ledger._isolated[pos] == 1, 2 * first + 1 + 2 * (pos_start[acc + 1] - 1 - pos), 2 * first)
    by_tie = order(np.zeros(pos.size, np.int32), -tie.astype(np.float64))  # keys < 2^53: exact
    new_unit = np.empty(pos.size, dtype=bool)
    new_unit[:1] = True
    np.not_equal(tie[by_tie[1:]], tie[by_tie[:-1]], out=new_unit[1:])
    unit = np.empty(pos.size, dtype=np.int64)
    unit[by_tie] = np.cumsum(new_unit) - 1
    n_units = int(unit.max()) + 1
    unit_deficit = np.bincount(unit, weights=loss, minlength=n_units)
    # Most underwater first; ties by account id, then cross before isolated positions.
    settle = order(np.zeros(n_units, np.int32), unit_deficit)
    deficits = np.maximum(unit_deficit[settle], 0.0)
    deficit = float(deficits.sum())
    covered = fund_cover(deficits, ledger.fund)
    frac_unit = np.ones(n_units)
    frac_unit[settle] = np.where(deficits > 0, covered / np.where(deficits > 0, deficits, 1.0), 1.0)
    frac = frac_unit[unit]  # share of each position the fund takes
    fund_qty = np.where(frac >= 1.0, qty, qty * frac)
    ledger.take_over(pos, fund_qty, bp, market)
    rest = qty - fund_qty
    rest[ledger.size[pos] == 0.0] = 0.0
    rank = np.empty(n_units, dtype=np.int64)
    rank[settle] = np.arange(n_units)
    return Takeover(deficit, float(covered.sum()), rest, rank[unit])


@dataclass
class QueueFills:
    """One queue's ADL: fills (bankrupt position, counterparty, qty, price), the loss
    socialized on the counterparties, their largest loss against the market, the notional,
    the counterparties touched, and what the fund took of demand the queue could not meet."""

    bankrupt: np.ndarray
    counterparty: np.ndarray
    qty: np.ndarray
    price: np.ndarray
    socialized: float
    max_loss: float | None
    notional: float
    counterparties: np.ndarray
    fund_took: float | None


def queue_adl(ledger, pos, rest, bp, market: float, cs: float, q_order, merged) -> QueueFills:
    """Bankrupt positions ``pos`` of one queue (``rest``: what is left of each, signed; all
    one side) against the opposite queue in ADL order ``q_order``, at their bankruptcy
    prices; ``merged``: ``queue_fills`` of the two (di, si, qty, demand_closed,
    supply_closed). ``market``: the market price; ``cs``: the contract size. One queue in
    NumPy: the definition ``settle_queues`` (what the stress step runs, every queue in one
    kernel) keeps to the bit."""
    di, si, seg, demand_closed, supply_closed = merged
    entry = ledger._entry
    sign = np.sign(rest[0])
    # Money prices (gpurisk/ledger.py: the price itself for a linear contract): the moves below
    # are written once for both contract types; the fills record the prices themselves.
    real_bp = bp
    bp = ledger.money(pos, bp)
    price = float(ledger.money(pos[:1], np.array([market]))[0])
    # Fills: bankrupt position pos[di] closes seg at bp[di]; counterparty q_order[si] closes seg.
    b_i, c_i, f_px = pos[di], q_order[si], bp[di]
    n_cp = int(si.max()) + 1 if si.size else 0
    cps = q_order[:n_cp]
    filled = np.bincount(di, weights=seg, minlength=pos.size)
    taken = np.bincount(si, weights=seg, minlength=n_cp)
    # Realised PnL per position, summed over its fills (a position's fills are contiguous).
    ledger.credit(pos, sign * np.bincount(di, weights=seg * (f_px - entry[b_i]), minlength=pos.size) * cs)
    ledger.credit(cps, -sign * np.bincount(si, weights=seg * (f_px - entry[c_i]), minlength=n_cp) * cs)
    ledger.size[pos] -= sign * filled
    ledger.size[cps] += sign * taken
    # Fully consumed positions close exactly.
    ledger.size[pos[demand_closed]] = 0.0
    ledger.size[q_order[supply_closed]] = 0.0
    socialized = float(np.sum(filled * np.abs(bp - price) * cs * np.sign((bp - price) * sign)))
    max_loss = None
    if seg.size:  # each counterparty's loss against the market price
        loss_cp = np.bincount(si, weights=seg * (bp[di] - price) * sign * cs, minlength=q_order.size)
        max_loss = float(loss_cp.max(initial=0.0))
    notional = float(np.sum(seg * abs(price) * cs))  # in the coin for an inverse contract: |q|·cs/P
    ledger.release_isolated(np.concatenate([pos, cps]))
    # Demand the queue could not meet: the fund takes it (and may go below zero).
    left = np.abs(rest) - filled
    left_i = np.nonzero(left > 1e-12 * np.maximum(np.abs(rest), 1e-300))[0]
    fund_took = None
    if left_i.size:
        left_qty = ledger.size[pos[left_i]]
        fund_took = float(np.sum(left_qty * (bp[left_i] - price) * cs))
        ledger.take_over(pos[left_i], left_qty, real_bp[left_i], np.full(left_i.size, market))
    return QueueFills(b_i, c_i, seg, real_bp[di], socialized, max_loss, notional, cps, fund_took)


@dataclass
class QueueSettlements:
    """The queue ADL of several queues (``settle_queues``): per queue (in the order given) the
    loss socialized, the counterparties' largest loss (where ``filled``: the queue had a fill),
    the notional, and what the fund took of unmet demand (where ``fund_takes``); the
    counterparties touched; and, by ``fills()``, every fill."""

    socialized: np.ndarray
    max_loss: np.ndarray
    filled: np.ndarray
    notional: np.ndarray
    fund_took: np.ndarray
    fund_takes: np.ndarray
    counterparties: np.ndarray
    _fills: tuple

    def fills(self):
        """Every fill in queue order: (queue's place, bankrupt position, counterparty, qty,
        price); gathered only when asked (a run without detail never is)."""
        b, fill_demand, fill_supply, fill_qty, base, n_fills, demand_begin, supply_begin, pos, s_pos, bp = self._fills
        fill_demand, fill_supply, fill_qty = (b.to_host(a) for a in (fill_demand, fill_supply, fill_qty))
        at = [slice(base[k], base[k] + n_fills[k]) for k in range(n_fills.size)]
        queue = np.repeat(np.arange(n_fills.size), n_fills)
        d_at = demand_begin[queue] + _joined(fill_demand, at)
        return (queue, pos[d_at], s_pos[supply_begin[queue] + _joined(fill_supply, at)], _joined(fill_qty, at),
                bp[d_at])


def _joined(a: np.ndarray, slices: list, xp=np) -> np.ndarray:
    return xp.concatenate([a[s] for s in slices]) if slices else a[:0]


def settle_queues(backend, ledger, pos, rest, bp, demand_bounds, fronts: list, price, cs,
                  supplies: list | None = None) -> QueueSettlements:
    """``queue_adl`` for several queues at once, in order, with the same bits: two kernels
    (``adl_merge``, ``adl_settle``, a thread per queue) over flat arrays. Queue k's bankrupt
    positions are ``pos[demand_bounds[k, 0]:demand_bounds[k, 1]]`` (``rest``: what is left of
    each, signed; ``bp``: bankruptcy prices), its opposite queue in ADL order ``fronts[k]``
    (used as deep as the demand), ``price[k]`` the market price, ``cs[k]`` the contract size.
    Queues must not share positions (a queue's fills never touch another's counterparties).
    ``supplies``: the fronts' ``|size|``, where the caller has them (``queue_fronts_to_demand``)."""
    b, xp = backend, backend.xp
    demand_bounds = np.ascontiguousarray(demand_bounds, dtype=np.int64).reshape(-1, 2)
    n = demand_bounds.shape[0]
    demand = np.abs(rest)
    # Money prices (gpurisk/ledger.py: the price itself for a linear contract) for the moves;
    # the fills record the prices themselves.
    real_bp = bp
    bp = ledger.money(pos, bp)
    price = ledger.money(pos[demand_bounds[:, 0]], np.asarray(price, dtype=np.float64)) if n else np.zeros(0)
    if supplies is None:
        supplies = [_usable_supply(ledger, f, demand[d0:d1]) for f, (d0, d1) in zip(fronts, demand_bounds)]
    front_size = np.array([a.size for a in supplies], dtype=np.int64)
    front_end = np.cumsum(front_size)
    m = _merge(b, demand, demand_bounds, np.concatenate(supplies) if n else np.zeros(0),
               np.stack([front_end - front_size, front_end], axis=1))
    n_used, n_fills = b.to_host(m.n_used), b.to_host(m.n_fills)
    s_pos = _joined_list([b.to_host(f[:u]) for f, u in zip(fronts, n_used)])  # fronts may live on the device
    nd = demand_bounds[:, 1] - demand_bounds[:, 0]
    s_begin, w_base, work_base = (_starts(c) for c in (n_used, 3 * nd + 2 * n_used, np.maximum(nd, n_fills)))

    def dev(*arrays):
        return [b.asarray(np.ascontiguousarray(a)) for a in arrays]

    # The ledger's arrays, in place (copied to the device and back only for a host ledger on the gpu).
    size, margin = b.asarray(ledger.size), b.asarray(ledger.isolated_margin)
    w_account, w_amount = xp.empty(int(w_base[-1]), dtype=xp.int64), xp.empty(int(w_base[-1]), dtype=xp.float64)
    d_left, d_left_qty = xp.empty(pos.size, dtype=xp.int8), xp.empty(pos.size, dtype=xp.float64)
    work = xp.empty(int(work_base[-1]), dtype=xp.float64)
    n_wallet, n_cp, n_left = (xp.empty(n, dtype=xp.int64) for _ in range(3))
    sums = [xp.empty(n, dtype=xp.float64) for _ in range(6)]
    b.launch("adl_settle", n, *dev(demand_bounds[:, 0], demand_bounds[:, 1], s_begin[:-1], n_used,
                                   m.supply_bounds[:, 0], m.base[:-1]),
             m.n_fills, m.fill_demand, m.fill_supply, m.fill_qty, m.demand_closed, m.supply_closed,
             *dev(np.asarray(price, dtype=np.float64), np.asarray(cs, dtype=np.float64),
                  pos.astype(np.int64, copy=False), rest, bp, s_pos),
             ledger.fixed_on(b).records, ledger.fixed_on(b).cs_pos,
             size, margin, b.asarray(w_base[:-1]), w_account, w_amount, n_wallet, d_left, d_left_qty,
             xp.empty(s_pos.size, dtype=xp.int8),
             b.asarray(work_base[:-1]), work, n_cp, *sums, n_left)
    socialized, max_loss, notional, fund_took, x_cash, fund_gain = (b.to_host(a) for a in sums)
    n_wallet, n_cp, n_left = (b.to_host(a) for a in (n_wallet, n_cp, n_left))
    for moved, kept in ((size, ledger.size), (margin, ledger.isolated_margin)):
        if moved is not kept:  # a device copy: back to the host's ledger
            kept[:] = b.to_host(moved)
    # Wallet credits and the external account's sizes, added in the order the moves made them.
    credits = [slice(w_base[k], w_base[k] + n_wallet[k]) for k in range(n)]
    if ledger.on_device:  # the credits stay where the wallets are
        ledger.credit_accounts(_joined(w_account, credits, xp), _joined(w_amount, credits, xp))
    else:
        ledger.credit_accounts(_joined(b.to_host(w_account), credits), _joined(b.to_host(w_amount), credits))
    left = (b.to_host(d_left) & 1).view(bool)  # GR_OWED
    np.add.at(ledger.x_size, ledger._symbol[pos[left]], b.to_host(d_left_qty)[left])
    for k in np.flatnonzero(n_left):  # the fund's takeovers, queue by queue
        ledger.x_cash -= float(x_cash[k])
        ledger.fund += float(fund_gain[k])
    counterparties = _joined(s_pos, [slice(s_begin[k], s_begin[k] + n_cp[k]) for k in range(n)])
    fills = (b, m.fill_demand, m.fill_supply, m.fill_qty, m.base, n_fills,  # copied to the host if asked
             demand_bounds[:, 0], s_begin, pos, s_pos, real_bp)
    return QueueSettlements(socialized, max_loss, n_fills > 0, notional, fund_took, n_left > 0, counterparties, fills)


def _usable_supply(ledger, front: np.ndarray, demand: np.ndarray, first: int = 1024) -> np.ndarray:
    """|size| of a queue's front as deep as the merge can use it: up to the first member whose
    running sum reaches the total demand (both sums sequential, as adl_merge runs them), or
    the whole front. Deep fronts are whole sorted queues; gathering them whole would cost
    more than the merge (and, on a device, copying them)."""
    need = np.cumsum(demand)[-1] if demand.size else 0.0
    k = min(front.size, first)
    while True:
        supply = np.abs(ledger.take(ledger.size, front[:k]))
        if k == front.size or np.cumsum(supply)[-1] >= need:
            return supply
        k = min(front.size, 4 * k)


def _joined_list(parts: list) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _starts(counts: np.ndarray) -> np.ndarray:
    """Where each of consecutive segments of these lengths begins, and the end."""
    out = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


@dataclass
class Haircuts:
    """One queue's haircut: the loss to recover, what the cuts recovered, and each winner's
    cut (``positions``, ``amount``; only those cut)."""

    need: float
    recovered: float
    max_cut: float
    positions: np.ndarray
    amount: np.ndarray


def haircut_adl(ledger, policy: str, pos, rest, bp, price: float, cs: float, winners, pnl, notional,
                equity) -> Haircuts:
    """The fund takes bankrupt positions ``pos`` of one queue over (``rest`` of each) and
    recovers the loss against the market price from the opposite side's positive PnL:
    ``winners`` (positions), their ``pnl`` (> 0), notional and equity, cut by ``policy``.
    One queue in NumPy: the definition ``haircut.settle_haircuts`` (what the stress step runs,
    every queue in one kernel) keeps to the bit."""
    # per bankrupt position, what is socialized (money prices: gpurisk/ledger.py)
    uncovered = rest * (ledger.money(pos, bp) - ledger.money(pos, np.full(pos.size, price))) * cs
    ledger.take_over(pos, rest, bp, np.full(pos.size, price))
    need = float(uncovered.sum())
    cut = haircuts(policy, need, pnl, notional, equity)
    ledger.cut(winners, cut)
    hit = cut > 0
    return Haircuts(need, float(cut.sum()), float(cut.max(initial=0.0)), winners[hit], cut[hit])
