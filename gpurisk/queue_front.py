"""The front of an ADL queue (DESIGN §5): the positions a bankrupt demand reaches, in queue order
(score descending, ties by storage index = account id, NaN last), ordered only as deep as the
demand; and the order the demand itself is settled in. The deleveraging steps
(gpurisk/deleverage.py) merge the two.
"""

from __future__ import annotations

import ctypes
import functools
import threading

import numpy as np

from .adl import _splitmix64
from .kernels import KernelBuildError, native_library


def queue_front(members: np.ndarray, score: np.ndarray, keep: np.ndarray, size: np.ndarray, need: float,
                first: int = 256) -> np.ndarray:
    """The front of an ADL queue in queue order, as deep as it must go (see
    ``queue_front_numpy``, the same function in NumPy): one native pass
    (gpurisk/native/radix_sort.cpp), without a NumPy call per selection round. Falls back to
    ``queue_front_numpy`` where no C++ compiler is found (a gpu machine without one)."""
    lib = _native()
    if lib is None:
        return queue_front_numpy(members, score, keep, size, need, first)
    members = np.ascontiguousarray(members, dtype=np.int64)
    score = np.ascontiguousarray(score, dtype=np.float64)
    keep = np.ascontiguousarray(keep, dtype=np.bool_)
    size = np.ascontiguousarray(size, dtype=np.float64)
    n = members.size
    work = [np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.int64), np.empty(n, dtype=np.uint64),
            np.empty(n, dtype=np.int64)]
    out = np.empty(n, dtype=np.int64)
    ptr = ctypes.c_void_p
    m = lib.queue_front(ctypes.c_longlong(n), ptr(members.ctypes.data), ptr(score.ctypes.data),
                        ptr(keep.ctypes.data), ptr(size.ctypes.data), ctypes.c_double(need),
                        ctypes.c_longlong(first), *(ptr(w.ctypes.data) for w in work), ptr(out.ctypes.data))
    return out[:m]


@functools.lru_cache(maxsize=None)
def _native():
    try:
        lib = native_library("radix_sort.cpp")
    except KernelBuildError:
        return None
    lib.queue_front.restype = ctypes.c_longlong
    lib.queue_fronts_to_demand.restype = None
    lib.order_by_group_rank.restype = None
    return lib


def queue_front_numpy(members: np.ndarray, score: np.ndarray, keep: np.ndarray, size: np.ndarray, need: float,
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


#: queue_fronts_to_demand reads a queue's score buckets until their sums reach its demand
#: times (1 + BUCKET_MARGIN): the buckets' sums run in another order than the front's running
#: sum, and should a front still fall short after rounding, every bucket is read once more
#: (the same front, later); a test sets it negative to take that road
BUCKET_MARGIN = 1e-9


def queue_fronts_to_demand(group: np.ndarray, queues: np.ndarray, n_queues: int, demand: np.ndarray,
                           demand_bounds: np.ndarray, score: np.ndarray, keep: np.ndarray,
                           size: np.ndarray) -> tuple[list, list]:
    """The fronts of several ADL queues, each exactly as deep as its demand. Position i is in
    queue ``group[i]`` (of ``n_queues``); queue ``queues[k]`` (distinct)'s demand is
    ``demand[demand_bounds[k, 0]:demand_bounds[k, 1]]`` (sizes, summed in that order). Returns
    (fronts, supplies): fronts[k] holds the queue's positions where ``keep`` holds in queue
    order (score descending, -0.0 equal to 0.0, NaN after every number, ties by storage index)
    up to and including the first whose running sum of ``|size|`` reaches the demand's sum
    (every kept position if none does): the first places of ``queue_front``'s order, as deep as
    ``adl_merge`` reads them; supplies[k] their ``|size|``.

    Natively (gpurisk/native/radix_sort.cpp): two sequential passes over the positions split
    every queue by its scores' sign and exponent, and only the buckets a demand reaches are
    sorted. Where no C++ compiler is found, ``queue_front_numpy`` per queue, cut to the same
    depth."""
    queues = np.asarray(queues, dtype=np.int64)
    demand_bounds = np.ascontiguousarray(demand_bounds, dtype=np.int64).reshape(-1, 2)
    n = queues.size
    if np.unique(queues).size != n or demand_bounds.shape[0] != n:
        raise ValueError(f"queue_fronts_to_demand: queues must be distinct, one demand range each; got queues "
                         f"{queues.tolist()} and {demand_bounds.shape[0]} demand ranges")
    lib = _native()
    if lib is None:
        fronts, supplies = [], []
        for k in range(n):
            d = demand[demand_bounds[k, 0]:demand_bounds[k, 1]]
            need = float(np.cumsum(d)[-1]) if d.size else 0.0
            front = queue_front_numpy(np.flatnonzero(group == queues[k]), score, keep, size, need)
            supply = np.abs(size[front])
            reach = np.flatnonzero(np.cumsum(supply) >= need)
            depth = int(reach[0]) + 1 if reach.size else front.size
            fronts.append(front[:depth])
            supplies.append(supply[:depth])
        return fronts, supplies
    group = np.ascontiguousarray(group, dtype=np.int32)
    slot = np.full(n_queues, -1, dtype=np.int64)
    slot[queues] = np.arange(n)
    out_begin = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(group, minlength=n_queues)[queues], out=out_begin[1:])  # room for the whole queue
    total = int(out_begin[-1])
    work = _front_work(total)
    out, supply = work[4][:total], work[5][:total]
    n_out = np.empty(n, dtype=np.int64)
    demand = np.ascontiguousarray(demand, dtype=np.float64)
    score = np.ascontiguousarray(score, dtype=np.float64)
    keep = np.ascontiguousarray(keep, dtype=np.bool_)
    size = np.ascontiguousarray(size, dtype=np.float64)
    d_begin, d_end = np.ascontiguousarray(demand_bounds[:, 0]), np.ascontiguousarray(demand_bounds[:, 1])
    ptr = ctypes.c_void_p
    lib.queue_fronts_to_demand(ctypes.c_longlong(group.size), ptr(group.ctypes.data), ptr(slot.ctypes.data),
                               ctypes.c_longlong(n), *(ptr(a.ctypes.data) for a in (
                                   d_begin, d_end, demand, score, keep, size, out_begin, out, supply, n_out,
                                   *work[:4], work[6])), ctypes.c_double(BUCKET_MARGIN),
                               ctypes.c_int(1 if total < 65536 else 0))
    fronts = [out[out_begin[k]:out_begin[k] + n_out[k]].copy() for k in range(n)]
    supplies = [supply[out_begin[k]:out_begin[k] + n_out[k]].copy() for k in range(n)]
    return fronts, supplies


_front_local = threading.local()


def _front_work(n: int) -> tuple:
    """queue_fronts_to_demand's work and output buffers, kept per thread between calls (fresh memory
    costs a page fault per 4 KiB, more than the pass that uses it)."""
    work = getattr(_front_local, "work", None)
    if work is None or work[0].size < n:
        work = _front_local.work = (np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.int64),
                                    np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.int64),
                                    np.empty(n, dtype=np.int64), np.empty(n), np.empty(n))
    return work


def queue_fronts(backend, members_group: np.ndarray, score: np.ndarray, keep: np.ndarray, queues: np.ndarray,
                 n_queues: int):
    """Every queue in ``queues`` in queue order at once, for a step that deleverages into
    several: the positions where ``keep`` holds and whose queue (``members_group``) is one of
    ``queues``, by (queue, score descending, storage index) with -0.0 equal to 0.0 and NaN
    after every number — the order ``queue_front`` gives each queue. One segmented radix sort
    (the backend's ``queue_order``) instead of a selection per queue. Returns (order, start):
    queue q's members are ``order[start[q]:start[q + 1]]``. ``members_group``, ``score`` and
    ``keep`` live where the backend's arrays do, and so does ``order`` (on a device, only the
    queues' bounds cross to the host)."""
    xp = backend.xp
    wanted = xp.zeros(n_queues, dtype=xp.bool_)
    wanted[backend.asarray(queues, np.int64)] = True
    cand = xp.flatnonzero(keep & wanted[members_group])
    group = xp.ascontiguousarray(members_group[cand].astype(xp.int32))
    order = cand[backend.queue_order(group, xp.ascontiguousarray(score[cand]), n_queues)]
    start = np.zeros(n_queues + 1, dtype=np.int64)
    np.cumsum(backend.to_host(xp.bincount(group, minlength=n_queues)), out=start[1:])
    return order, start


def demand_by_queue(order, queue: np.ndarray, rest: np.ndarray, unit_rank: np.ndarray):
    """What is left to deleverage, queue by queue (ascending); within a queue in settlement
    order, a unit's positions by index. Returns (queues, parts): parts[k] indexes the
    bankrupt positions owed to queue queues[k], in that order (both empty if none is owed)."""
    owed = np.flatnonzero(rest != 0.0)
    if owed.size == 0:
        return np.zeros(0, dtype=np.int64), []
    lib = _native()
    if lib is None:
        live = owed[order(queue[owed], -unit_rank[owed].astype(np.float64))]
    else:  # the same total order by two counting sorts: both keys are small integers
        q = np.ascontiguousarray(queue[owed], dtype=np.int64)
        rank = np.ascontiguousarray(unit_rank[owed], dtype=np.int64)
        n_groups, n_ranks = int(q.max()) + 1, int(rank.max()) + 1
        by, tmp = np.empty(owed.size, dtype=np.int64), np.empty(owed.size, dtype=np.int64)
        count = np.empty(max(n_groups, n_ranks) + 1, dtype=np.int64)
        ptr = ctypes.c_void_p
        lib.order_by_group_rank(ctypes.c_longlong(owed.size), ptr(q.ctypes.data), ptr(rank.ctypes.data),
                                ctypes.c_longlong(n_groups), ctypes.c_longlong(n_ranks), ptr(by.ctypes.data),
                                ptr(tmp.ctypes.data), ptr(count.ctypes.data))
        live = owed[by]
    groups = queue[live]
    bounds = np.flatnonzero(np.diff(groups)) + 1
    return groups[np.concatenate([[0], bounds])], np.split(live, bounds)


def rotated_queue(members: np.ndarray, keep: np.ndarray, seed: int, queue: int) -> np.ndarray:
    """dYdX-style queue: the members kept, in storage order, from a seeded offset."""
    cand = members[keep[members]]
    off = (_splitmix64(seed * 1_000_003 + queue) % cand.size) if cand.size else 0
    return np.roll(cand, -off)
