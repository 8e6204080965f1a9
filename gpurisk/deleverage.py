"""Deleveraging steps as functions over arrays (DESIGN §5): the front of an ADL queue, the
merge of bankrupt demand with it, the insurance fund's cover, and the haircut policies'
water-fill. The stress engine runs them; so can any other caller (a replay of a real
event's ADL waves, a what-if on one bankrupt position).
"""

from __future__ import annotations

import numpy as np


def queue_front(members: np.ndarray, score: np.ndarray, keep: np.ndarray, size: np.ndarray, need: float,
                first: int = 256) -> np.ndarray:
    """The front of an ADL queue in queue order, as deep as it must go: the members (storage
    indices, ascending) where ``keep`` holds, ordered by score descending (-0.0 equal to 0.0,
    NaN after every number), ties by storage index — the first places of a full sort of the
    queue, enough of them for the running sum of ``|size|`` to reach ``need`` (the whole
    queue if it never does).

    Only what must be ordered is ordered: the ``first`` best scores are selected in linear
    time (every tie of the last one included), sorted, and the selection grows (by the
    supply still missing) until its supply suffices; past half the queue, the queue is
    sorted whole.
    """
    n = members.size
    with np.errstate(invalid="ignore"):  # a signalling NaN warns
        key = -(score[members] + 0.0)  # ascending key; NaN stays NaN and is selected last
    k = first
    while k < n // 2:
        part = np.argpartition(key, k - 1)[:k]
        bound = key[part].max()
        if np.isnan(bound):  # fewer than k numbers: the NaNs are needed too
            break
        picked = np.flatnonzero(key <= bound)  # every tie of the bound, in storage order
        front = members[picked[np.argsort(key[picked], kind="stable")]]
        front = front[keep[front]]
        running = np.cumsum(np.abs(size[front]))
        if running.size and running[-1] >= need:
            # Supplies are sizes of open positions (> 0), so the running sum rises strictly
            # past the cut: no later member can share the cut's sum.
            return front
        have = running[-1] if running.size else 0.0
        k = max(2 * k, int(k * 1.5 * need / have) if have > 0 else n)
    nan = np.isnan(key)
    order = np.argsort(np.where(nan, np.inf, key), kind="stable")  # ties, NaN among them, by storage index
    inf = np.flatnonzero(np.isinf(key[order]) & (key[order] > 0) | nan[order])
    if inf.size:  # scores of -inf before NaN: both map to +inf above
        tail = order[inf]
        order[inf] = tail[np.argsort(nan[tail], kind="stable")]
    order = members[order]
    return order[keep[order]]


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
    seg = np.where(np.abs(seg - demand[di]) <= noise, demand[di], seg)
    seg = np.where(np.abs(seg - supply[si]) <= noise, supply[si], seg)
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


def queue_fronts(backend, members_group: np.ndarray, score: np.ndarray, keep: np.ndarray, queues: np.ndarray,
                 n_queues: int):
    """Every queue in ``queues`` in queue order at once, for a step that deleverages into
    several: the positions where ``keep`` holds and whose queue (``members_group``) is one of
    ``queues``, by (queue, score descending, storage index) with -0.0 equal to 0.0 and NaN
    after every number — the order ``queue_front`` gives each queue. One segmented radix sort
    (the backend's ``queue_order``) instead of a selection per queue. Returns (order, start):
    queue q's members are ``order[start[q]:start[q + 1]]``."""
    wanted = np.zeros(n_queues, dtype=bool)
    wanted[queues] = True
    cand = np.flatnonzero(keep & wanted[members_group])
    group = members_group[cand].astype(np.int32)
    order = cand[backend.to_host(backend.queue_order(backend.asarray(group), backend.asarray(score[cand]),
                                                     n_queues))]
    start = np.zeros(n_queues + 1, dtype=np.int64)
    np.cumsum(np.bincount(group, minlength=n_queues), out=start[1:])
    return order, start


def queue_merges(backend, demand: np.ndarray, demand_bounds: np.ndarray, supply: np.ndarray,
                 supply_bounds: np.ndarray) -> list:
    """``queue_fills`` for several queues at once, by one kernel (``adl_merge``, a thread per
    queue) with the same bits. Queue k's demand is ``demand[demand_bounds[k, 0]:demand_bounds[k, 1]]``
    — bounds are (begin, end) rows — and its ranked supply ``supply[supply_bounds[k, 0]:
    supply_bounds[k, 1]]``, whole: it is used as deep as the demand. Returns, per queue,
    (di, si, qty, demand_closed, supply_closed) as ``queue_fills`` gives them for the used
    depth of the supply (``supply_closed``'s length)."""
    b = backend
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
    n_fills, n_used, f_d, f_s, f_q = (b.to_host(a) for a in (n_fills, n_used, f_d, f_s, f_q))
    d_closed, s_closed = b.to_host(d_closed).view(bool), b.to_host(s_closed).view(bool)
    out = []
    for k in range(n):
        fills = slice(base[k], base[k] + n_fills[k])
        (d0, d1), s0 = demand_bounds[k], supply_bounds[k, 0]
        out.append((f_d[fills], f_s[fills], f_q[fills], d_closed[d0:d1], s_closed[s0:s0 + n_used[k]]))
    return out


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
