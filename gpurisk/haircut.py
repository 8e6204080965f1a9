"""The haircut policies as kernels (DESIGN §7, kernels/haircut.cu): the fund takes a step's
bankrupt positions over and recovers the loss from the opposite side's positive PnL, every
queue of the step in one launch (``settle_haircuts``), and the water-fill the policies share,
over segments of arrays, for any caller (``water_fills``).

The NumPy definitions (``deleverage.haircut_adl``, ``haircuts``, ``water_fill``) stay as the
reference: the kernels give their bits (tests/test_haircut.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

#: the policies' codes in kernels/haircut.cu
HAIRCUT_POLICIES = {"pro_rata": 0, "capped_pro_rata": 1, "rap": 2}


@dataclass
class HaircutSettlements:
    """The haircuts of several queues (``settle_haircuts``): per queue (in the order given)
    the loss to recover (``need``), what the cuts recovered, the largest cut; and the winners
    cut, queue by queue (``positions``, ``amount``; queue k's are the ``n_cut[k]`` after
    those of the queues before it)."""

    need: np.ndarray
    recovered: np.ndarray
    max_cut: np.ndarray
    n_cut: np.ndarray
    positions: np.ndarray
    amount: np.ndarray


def settle_haircuts(backend, ledger, policy: str, pos, rest, bp, demand_bounds, members, member_bounds,
                    counterparty, upnl, notional, pos_equity, price, cs) -> HaircutSettlements:
    """``deleverage.haircut_adl`` for several queues at once, in order, with the same bits:
    one kernel (``haircut_settle``, a thread per queue). Queue k's bankrupt positions are
    ``pos[demand_bounds[k, 0]:demand_bounds[k, 1]]`` (``rest``: what is left of each,
    signed; ``bp``: bankruptcy prices), taken over by the fund and sold at ``price[k]``
    (contract size ``cs[k]``); its winners are the members
    ``members[member_bounds[k, 0]:member_bounds[k, 1]]`` of the opposite queue (storage
    order) where ``counterparty`` holds and ``upnl`` > 0, cut by ``policy`` (rap reads their
    ``notional`` and ``pos_equity``). ``upnl``, ``notional``, ``pos_equity``: per position,
    host or device arrays (a revaluation's). Queues must not share positions or member
    ranges."""
    if policy not in HAIRCUT_POLICIES:
        raise ValueError(f"unknown haircut policy {policy!r}; choose from {', '.join(HAIRCUT_POLICIES)}")
    b, xp = backend, backend.xp
    demand_bounds = np.ascontiguousarray(demand_bounds, dtype=np.int64).reshape(-1, 2)
    member_bounds = np.ascontiguousarray(member_bounds, dtype=np.int64).reshape(-1, 2)
    n = demand_bounds.shape[0]
    if member_bounds.shape[0] != n:
        raise ValueError(f"{n} queues of demand but {member_bounds.shape[0]} of members")
    if n == 0:
        z = np.zeros(0)
        return HaircutSettlements(z, z, z, np.zeros(0, np.int64), np.zeros(0, np.int64), z)
    pos = np.ascontiguousarray(pos, dtype=np.int64)
    rest = np.ascontiguousarray(rest, dtype=np.float64)
    members = b.asarray(members, np.int64)  # the context's, on the device already
    _check_bounds("demand_bounds", demand_bounds, pos.size)
    _check_bounds("member_bounds", member_bounds, members.size)
    # Money prices (gpurisk/ledger.py: the price itself for a linear contract).
    money_bp = np.ascontiguousarray(ledger.money(pos, np.asarray(bp, dtype=np.float64)), dtype=np.float64)
    money_price = ledger.money(pos[demand_bounds[:, 0]], np.asarray(price, dtype=np.float64))
    nd = demand_bounds[:, 1] - demand_bounds[:, 0]
    nm = member_bounds[:, 1] - member_bounds[:, 0]
    w_base = _starts(nd + nm)
    scratch = _Scratch.of(b)
    m_len = max(members.size, 1)
    w = {name: scratch.get(name, m_len, dt) for name, dt in
         (("pos", np.int64), ("pnl", np.float64), ("weight", np.float64), ("cut", np.float64),
          ("code", np.int64), ("idx", np.int64), ("code_tmp", np.int64), ("idx_tmp", np.int64),
          ("free", np.float64))}
    d_work = scratch.get("d_work", max(pos.size, 1), np.float64)
    wallet_account = scratch.get("wallet_account", max(int(w_base[-1]), 1), np.int64)
    wallet_amount = scratch.get("wallet_amount", max(int(w_base[-1]), 1), np.float64)

    def dev(a, dtype=None):
        return b.asarray(np.ascontiguousarray(a, dtype=dtype))

    # The ledger's arrays, in place (copied to the device and back only for a host ledger on the gpu).
    size, margin = b.asarray(ledger.size), b.asarray(ledger.isolated_margin)
    fixed = ledger.fixed_on(b)
    n_wallet, n_hit = xp.empty(n, dtype=xp.int64), xp.empty(n, dtype=xp.int64)
    sums = [xp.empty(n, dtype=xp.float64) for _ in range(5)]
    b.launch("haircut_settle", n, HAIRCUT_POLICIES[policy], dev(demand_bounds[:, 0]), dev(demand_bounds[:, 1]),
             dev(member_bounds[:, 0]), dev(member_bounds[:, 1]), dev(money_price, np.float64),
             dev(cs, np.float64), dev(pos), dev(rest), dev(money_bp), members,
             b.asarray(counterparty, xp.bool_).view(xp.int8),
             b.asarray(upnl), b.asarray(notional), b.asarray(pos_equity),
             fixed.entry, fixed.cs_pos, fixed.isolated, fixed.account, size, margin, dev(w_base[:-1]), wallet_account,
             wallet_amount, n_wallet, n_hit,
             w["pos"], w["pnl"], w["weight"], w["cut"], w["code"], w["idx"], w["code_tmp"], w["idx_tmp"], w["free"],
             d_work, *sums)
    need, recovered, max_cut, x_cash, fund_gain = (b.to_host(a) for a in sums)
    n_wallet, n_hit = b.to_host(n_wallet), b.to_host(n_hit)
    for moved, kept in ((size, ledger.size), (margin, ledger.isolated_margin)):
        if moved is not kept:  # a device copy: back to the host's ledger
            kept[:] = b.to_host(moved)
    # Wallet credits, the external account's sizes, its cash and the fund, added in the order
    # haircut_adl makes them queue by queue (the bits of each sum depend on it).
    credits = [slice(w_base[k], w_base[k] + n_wallet[k]) for k in range(n)]
    if ledger.on_device:  # the credits stay where the wallets are
        ledger.credit_accounts(_joined(wallet_account, credits, xp), _joined(wallet_amount, credits, xp))
    else:
        ledger.credit_accounts(b.to_host(_joined(wallet_account, credits, xp)),
                               b.to_host(_joined(wallet_amount, credits, xp)))
    owed = [slice(d0, d1) for d0, d1 in demand_bounds]
    np.add.at(ledger.x_size, ledger._symbol[_joined(pos, owed)], _joined(rest, owed))
    for k in range(n):
        ledger.x_cash -= float(x_cash[k])
        ledger.fund += float(fund_gain[k])
        ledger.fund += float(recovered[k])
    hits = [slice(m0, m0 + n_hit[k]) for k, m0 in enumerate(member_bounds[:, 0])]
    return HaircutSettlements(need, recovered, max_cut, n_hit, b.to_host(_joined(w["pos"], hits, xp)),
                              b.to_host(_joined(w["cut"], hits, xp)))


def water_fills(backend, need, caps, weights, bounds) -> np.ndarray:
    """``deleverage.water_fill`` over several segments at once, with the same bits (kernel
    ``water_fill_segments``, a thread per segment): segment k is ``caps``/``weights``
    ``[bounds[k, 0]:bounds[k, 1]]`` with its ``need[k]``. Returns the cuts, aligned with
    ``caps`` (zero outside every segment)."""
    b, xp = backend, backend.xp
    caps = np.ascontiguousarray(caps, dtype=np.float64)
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    if caps.shape != weights.shape or caps.ndim != 1:
        raise ValueError(f"caps and weights must be 1-D and aligned, got shapes {caps.shape} and {weights.shape}")
    bounds = np.ascontiguousarray(bounds, dtype=np.int64).reshape(-1, 2)
    need = np.ascontiguousarray(need, dtype=np.float64).reshape(-1)
    if need.size != bounds.shape[0]:
        raise ValueError(f"{bounds.shape[0]} segments but {need.size} needs")
    _check_bounds("bounds", bounds, caps.size)
    cut = np.zeros(caps.size)
    if caps.size == 0 or need.size == 0:
        return cut
    m = caps.size
    out = b.asarray(cut)
    scratch = [xp.empty(m, dtype=xp.int64) for _ in range(4)] + [xp.empty(m, dtype=xp.float64)]
    b.launch("water_fill_segments", bounds.shape[0], b.asarray(bounds[:, 0].copy()), b.asarray(bounds[:, 1].copy()),
             b.asarray(need), b.asarray(caps), b.asarray(weights), out, *scratch)
    return b.to_host(out)


class _Scratch:
    """Work arrays of the haircut kernel, kept between calls per thread and backend (fresh
    memory of a million-position book costs page faults on every step) and grown when a
    call needs more: about 72 bytes per member of the queues a step cuts (the whole book in
    a crash on every symbol), plus 16 per wallet credit."""

    _local = threading.local()

    def __init__(self, backend):
        self.backend, self.arrays = backend, {}

    @classmethod
    def of(cls, backend) -> "_Scratch":
        by_backend = getattr(cls._local, "by_backend", None)
        if by_backend is None:
            by_backend = cls._local.by_backend = {}
        key = id(backend)
        if key not in by_backend or by_backend[key].backend is not backend:
            by_backend[key] = cls(backend)
        return by_backend[key]

    def get(self, name: str, n: int, dtype):
        a = self.arrays.get(name)
        if a is None or a.size < n:
            a = self.arrays[name] = self.backend.xp.empty(max(n, 2 * a.size if a is not None else n), dtype=dtype)
        return a


def _joined(a, slices: list, xp=np):
    """The slices of ``a``, one after another (on ``a``'s device: only they cross to the host)."""
    return xp.concatenate([a[s] for s in slices]) if slices else a[:0]


def _check_bounds(name: str, bounds: np.ndarray, length: int) -> None:
    """(begin, end) rows within [0, length], none reversed, no two overlapping (queues own
    their slots); ValueError naming the rows otherwise."""
    bad = np.flatnonzero((bounds[:, 0] < 0) | (bounds[:, 1] < bounds[:, 0]) | (bounds[:, 1] > length))
    if bad.size:
        raise ValueError(f"{name} out of [0, {length}] or reversed at rows {bad[:10].tolist()}")
    order = np.argsort(bounds[:, 0], kind="stable")
    nonempty = order[bounds[order, 1] > bounds[order, 0]]
    clash = np.flatnonzero(bounds[nonempty[1:], 0] < bounds[nonempty[:-1], 1])
    if clash.size:
        rows = sorted({int(r) for k in clash[:10] for r in (nonempty[k], nonempty[k + 1])})
        raise ValueError(f"{name} overlap at rows {rows}: each queue owns its slots")


def _starts(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out
