"""Auto-deleveraging priority: score per venue, queue rank within (symbol, side), and the
1–5 indicator lights (DESIGN §5). Scores and lights are kernels (kernels/adl.cu); the
ranking is orchestration on ``xp``: two stable sorts give a total order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import Backend
from .scan import BLOCK as SCAN_BLOCK, segmented_cumsum
from .venue import ADL_SCORES, Venue


@dataclass
class AdlQueues:
    score: object  # float64 per position, higher = deleveraged first
    rank: object  # int64 per position, 1 = front of its (symbol, side) queue
    lights: object  # int8 per position, 5 = front
    order: object  # int64: positions in queue order, queue after queue
    group_start: object  # int64, n_groups + 1: queue g is order[group_start[g]:group_start[g+1]]


def queue_group(xp, pos_symbol, size):
    """Queue of each position: 2·symbol for longs, 2·symbol + 1 for shorts."""
    return xp.add(pos_symbol.astype(xp.int32, copy=False) * 2, size < 0, dtype=xp.int32)


def adl_score(backend: Backend, dev, mark, pm, pr, venue: Venue, out=None):
    xp = backend.xp
    out = xp.empty(dev.n_positions, dtype=xp.float64) if out is None else out
    backend.launch("adl_score", dev.n_positions, ADL_SCORES[venue.adl_score], dev.pos_account,
                   dev.pos_symbol, dev.size, dev.entry, dev.isolated, dev.isolated_margin, mark,
                   pm.notional, pm.upnl, pr.bankruptcy_price, dev.wallet, pr.equity, pr.ratio, dev.inverse, out)
    return out


def queue_starts(backend: Backend, group, n_groups: int):
    """First place of each queue in queue order (int64, n_groups + 1): counts of positions
    per queue, which do not depend on scores."""
    xp = backend.xp
    starts = xp.zeros(n_groups + 1, dtype=xp.int64)
    xp.cumsum(xp.bincount(group, minlength=n_groups), out=starts[1:])
    return starts


def rank_queues(backend: Backend, group, score, n_groups: int, group_start=None, out=None):
    """Order positions by (queue, score descending, storage index).

    Storage index order is (account id, symbol, margin mode), so ties in score are broken
    by account id. Returns (order, group_start).
    """
    order = backend.queue_order(group, score, n_groups, out=out)
    if group_start is None:
        group_start = queue_starts(backend, group, n_groups)
    return order, group_start


def rotate_queues(backend: Backend, group, order, group_start, seed: int):
    """dYdX-style queues: storage order started at a seeded pseudo-random offset, cyclic."""
    xp = backend.xp
    counts = backend.to_host(group_start[1:] - group_start[:-1])
    offsets = xp.asarray(rotation_offsets(counts, seed), dtype=xp.int64)
    count = xp.asarray(counts, dtype=xp.int64)
    place = xp.arange(order.size, dtype=xp.int64)
    g = group[order].astype(xp.int64)
    c = xp.maximum(count[g], 1)
    new_place = group_start[g] + (place - group_start[g] - offsets[g]) % c
    new_order = xp.empty_like(order)
    new_order[new_place] = order
    return new_order


def rotation_offsets(counts, seed: int) -> list:
    """The places each queue (of ``counts`` positions) is turned by: seeded, in [0, count)."""
    return [(_splitmix64(seed * 1_000_003 + g) % int(c)) if c else 0 for g, c in enumerate(counts)]


def _splitmix64(x: int) -> int:
    mask = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def queue_places(backend: Backend, group, order, group_start, size, rule: str, rank=None, lights=None):
    """Rank (1 = front) and lights 1..5 of every position from the queue order: lights by
    the size-weighted share of the queue up to and including the position (BitMEX) or by
    rank / count (Binance)."""
    xp = backend.xp
    n = int(order.size)
    if rule == "size":
        cum = segmented_cumsum(backend, xp.abs(size[order]), group_start)
    elif rule == "rank":
        cum = xp.zeros(1, dtype=xp.float64)  # unused
    else:
        raise ValueError(f"lights rule must be 'size' or 'rank', got {rule!r}")
    rank = xp.empty(n, dtype=xp.int64) if rank is None else rank
    lights = xp.empty(n, dtype=xp.int8) if lights is None else lights
    backend.launch("queue_places", n, int(group_start.size - 1), order, group_start, cum, int(rule == "size"),
                   rank, lights)
    return rank, lights


def adl_queues(backend: Backend, dev, score, venue: Venue, out: AdlQueues | None = None) -> AdlQueues:
    """Rank every queue from the positions' scores (dev: group, n_groups, group_start, size);
    ``out``: a previous result whose arrays are reused. Backends with a one-call ranking
    (Backend.queue_ranking: the cpu backend's) sort and place at once, the same bits."""
    if venue.lights not in ("size", "rank"):
        raise ValueError(f"lights rule must be 'size' or 'rank', got {venue.lights!r}")
    group_start = dev.group_start if dev.group_start is not None else queue_starts(backend, dev.group, dev.n_groups)
    rotation = None
    if venue.adl_score == "random":
        rotation = rotation_offsets(backend.to_host(group_start[1:] - group_start[:-1]), venue.adl_seed)
    ranked = backend.queue_ranking(dev.group, score, dev.n_groups, dev.size, venue.lights == "size", SCAN_BLOCK,
                                   rotation, (out.order, out.rank, out.lights) if out is not None else None)
    if ranked is not None:
        order, rank, lights = ranked
        return AdlQueues(score, rank, lights, order, group_start)
    order, group_start = rank_queues(backend, dev.group, score, dev.n_groups, dev.group_start,
                                     out=out.order if out is not None else None)
    if venue.adl_score == "random":
        order = rotate_queues(backend, dev.group, order, group_start, venue.adl_seed)
    rank, lights = queue_places(backend, dev.group, order, group_start, dev.size, venue.lights,
                                *((out.rank, out.lights) if out is not None else (None, None)))
    return AdlQueues(score, rank, lights, order, group_start)


@dataclass
class QueueHeads:
    heads: list  # per queue (2·symbol + side): the positions of its first places, in queue order
    count: object  # int64 per queue: its positions
    abs_size: object  # float64 per queue: Σ|size| of its positions, block by block in block order


#: queue_heads cuts the positions into about this many blocks (each at least HEAD_BLOCK_MIN),
#: the same on every backend: the |size| totals are summed block by block, so the blocks fix
#: the order of the additions (the same bits everywhere); few blocks, few candidates to merge
HEAD_BLOCKS = 128
HEAD_BLOCK_MIN = 1024


def queue_heads(backend: Backend, pos_symbol, size, score, n_groups: int, top: int) -> QueueHeads:
    """The first ``top`` places of every queue, the same positions as rank_queues puts there
    (score descending, NaN last, ties by index), without ranking whole queues: one pass over
    the positions in blocks (kernels/adl.cu queue_head_candidates), then a merge of each
    block's candidates (queue_head_merge). Positions of size 0 belong to no queue."""
    xp = backend.xp
    n = int(size.size)
    block = max(HEAD_BLOCK_MIN, -(-n // HEAD_BLOCKS))
    n_blocks = max(1, -(-n // block))
    candidate = xp.empty(n_blocks * n_groups * top, dtype=xp.int64)
    count = xp.empty(n_blocks * n_groups, dtype=xp.int64)
    abs_size = xp.empty(n_blocks * n_groups, dtype=xp.float64)
    threshold = xp.empty(n_blocks * n_groups, dtype=xp.float64)
    backend.launch("queue_head_candidates", n_blocks, n, block, n_groups, top, pos_symbol, size, score,
                   candidate, count, abs_size, threshold)
    head = xp.empty(n_groups * top, dtype=xp.int64)
    count_total = xp.empty(n_groups, dtype=xp.int64)
    abs_total = xp.empty(n_groups, dtype=xp.float64)
    backend.launch("queue_head_merge", n_groups, n_blocks, top, score, candidate, count, abs_size, head,
                   count_total, abs_total)
    heads = [tuple(row[row >= 0].tolist()) for row in backend.to_host(head).reshape(n_groups, top)]
    count_h, abs_total = backend.to_host(count_total), backend.to_host(abs_total)
    return QueueHeads(heads, count_h, abs_total)


#: accounts or positions per block of uncovered_deficit (fixed: the order of its additions)
DEFICIT_BLOCK = 16384


def uncovered_deficit(backend: Backend, account_equity, n_cross, position_equity, isolated) -> float:
    """−equity summed over cross accounts (with open cross positions) and isolated positions
    whose equity is < 0: in fixed blocks (kernels/adl.cu uncovered_blocks), the blocks added in
    block order, so the same bits on every backend and thread count."""
    xp = backend.xp
    n_acc, n_pos = int(account_equity.size), int(position_equity.size)
    account_blocks = -(-n_acc // DEFICIT_BLOCK)
    n_blocks = account_blocks + -(-n_pos // DEFICIT_BLOCK)
    totals = xp.zeros(max(n_blocks, 1), dtype=xp.float64)
    if n_blocks:
        backend.launch("uncovered_blocks", n_blocks, account_blocks, DEFICIT_BLOCK, n_acc, account_equity, n_cross,
                       n_pos, position_equity, isolated, totals)
    total = 0.0
    for x in backend.to_host(totals[:n_blocks]).tolist():  # block order
        total += x
    return total
