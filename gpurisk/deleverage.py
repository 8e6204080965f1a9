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
    cuts = np.union1d(d_cum[d_cum <= total], s_cum[s_cum <= total])
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
