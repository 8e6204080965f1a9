"""Auto-deleveraging priority: score per venue, queue rank within (symbol, side), and the
1–5 indicator lights (DESIGN §5). Scores and lights are kernels (kernels/adl.cu); the
ranking is orchestration on ``xp``: two stable sorts give a total order."""

from __future__ import annotations

from dataclasses import dataclass

from .backend import Backend
from .scan import segmented_cumsum
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
    return (pos_symbol.astype(xp.int32) * 2 + (size < 0).astype(xp.int32)).astype(xp.int32)


def adl_score(backend: Backend, dev, mark, pm, pr, venue: Venue, out=None):
    xp = backend.xp
    out = xp.empty(dev.n_positions, dtype=xp.float64) if out is None else out
    backend.launch("adl_score", dev.n_positions, ADL_SCORES[venue.adl_score], dev.pos_account,
                   dev.pos_symbol, dev.size, dev.entry, dev.isolated, dev.isolated_margin, mark,
                   pm.notional, pm.upnl, pr.bankruptcy_price, dev.wallet, pr.equity, pr.ratio, out)
    return out


def rank_queues(backend: Backend, group, score, n_groups: int):
    """Order positions by (queue, score descending, storage index).

    Storage index order is (account id, symbol, margin mode), so ties in score are broken
    by account id. Returns (order, rank, group_start).
    """
    xp = backend.xp
    n = int(score.size)
    order = backend.queue_order(group, score, n_groups)
    group_start = xp.searchsorted(group[order], xp.arange(n_groups + 1, dtype=group.dtype)).astype(xp.int64)
    rank = xp.empty(n, dtype=xp.int64)
    rank[order] = xp.arange(n, dtype=xp.int64) - group_start[group[order]] + 1
    return order, rank, group_start


def rotate_queues(backend: Backend, group, order, rank, group_start, seed: int):
    """dYdX-style queues: storage order started at a seeded pseudo-random offset, cyclic."""
    xp = backend.xp
    counts = backend.to_host(group_start[1:] - group_start[:-1])
    offsets = [(_splitmix64(seed * 1_000_003 + g) % int(c)) if c else 0 for g, c in enumerate(counts)]
    offsets = xp.asarray(offsets, dtype=xp.int64)
    count = xp.asarray(counts, dtype=xp.int64)
    g = group.astype(xp.int64)
    c = xp.maximum(count[g], 1)
    new_rank = (rank - 1 - offsets[g]) % c + 1
    new_order = xp.empty_like(order)
    new_order[group_start[g] + new_rank - 1] = xp.arange(rank.size, dtype=xp.int64)
    return new_order, new_rank


def _splitmix64(x: int) -> int:
    mask = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def queue_lights(backend: Backend, group, order, group_start, size, rule: str):
    """Lights 1..5 from the cumulative share of each queue up to and including a position:
    by size (BitMEX) or by rank/count (Binance)."""
    xp = backend.xp
    n = int(order.size)
    sorted_group = xp.ascontiguousarray(group[order])
    counts = group_start[1:] - group_start[:-1]
    if rule == "size":
        cum = segmented_cumsum(backend, xp.abs(size[order]), group_start)
        last = xp.maximum(group_start[1:] - 1, 0)
        total = xp.where(counts > 0, cum[last] if n else 0.0, 1.0).astype(xp.float64)
    elif rule == "rank":
        cum = (xp.arange(n, dtype=xp.int64) - group_start[sorted_group] + 1).astype(xp.float64)
        total = xp.maximum(counts, 1).astype(xp.float64)
    else:
        raise ValueError(f"lights rule must be 'size' or 'rank', got {rule!r}")
    lights_sorted = xp.empty(n, dtype=xp.int8)
    backend.launch("adl_lights", n, sorted_group, xp.ascontiguousarray(cum), xp.ascontiguousarray(total),
                   lights_sorted)
    lights = xp.empty(n, dtype=xp.int8)
    lights[order] = lights_sorted
    return lights


def adl_queues(backend: Backend, dev, mark, pm, pr, venue: Venue) -> AdlQueues:
    score = adl_score(backend, dev, mark, pm, pr, venue)
    order, rank, group_start = rank_queues(backend, dev.group, score, dev.n_groups)
    if venue.adl_score == "random":
        order, rank = rotate_queues(backend, dev.group, order, rank, group_start, venue.adl_seed)
    lights = queue_lights(backend, dev.group, order, group_start, dev.size, venue.lights)
    return AdlQueues(score, rank, lights, order, group_start)
