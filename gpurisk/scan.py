"""Deterministic segmented prefix sums (orchestration of kernels/scan.cu).

The layout is hierarchical. Each segment is cut into blocks of ``block`` indices (the last
one shorter; blocks never cross a segment) and each block is summed left to right from 0.0.
The block totals form a shorter segmented sequence (segment g's blocks are segment g one
level up) whose *inclusive* scan is computed by this same function, recursively, until every
segment fits in one block (whose offset is 0.0). A block's offset is the inclusive scan of
the previous block of its segment (0.0 for a segment's first block), gathered, not obtained
by a subtraction; each block is then rescanned left to right from its offset.

The order of every floating-point addition is therefore a function of the segment lengths
and ``block`` alone, never of the backend, the hardware or the thread count: the cpu and gpu
backends (any thread count) agree bit for bit. Each kernel is one thread per block, so a
level launches about n / block threads.
"""

from __future__ import annotations

import numpy as np

from .backend import Backend

# 128: at 30M positions the first level runs 234k threads, about one per resident thread of
# a 132-SM GPU (132 × 2048 = 270k), where the former 4096 ran 7k; each thread's serial chain
# is 128 additions; three levels cover 128³ = 2M positions per queue and four 268M; and on the
# CPU the per-block overhead is still small next to 128 elements (measured: bench/RESULTS.md).
BLOCK = 128


def blocks_per_segment(counts, block: int = BLOCK):
    """Blocks of each segment of ``counts`` elements (0 for an empty segment); works on
    NumPy and CuPy arrays."""
    return (counts + (block - 1)) // block


def level_threads(counts, block: int = BLOCK) -> list[int]:
    """Threads (= blocks) launched by the element passes of each recursion level for
    segments of the given lengths, computed from the lengths alone (nothing is allocated
    beyond one integer per segment): level 0 scans the values, level k+1 the block totals of
    level k; the last level's segments each fit in one block."""
    counts = np.asarray(counts, dtype=np.int64)
    sizes = []
    while True:
        blocks = blocks_per_segment(counts, block)
        sizes.append(int(blocks.sum()))
        if counts.size == 0 or int(counts.max()) <= block:
            return sizes
        counts = blocks


def segmented_cumsum(backend: Backend, values, segment_start, block: int = BLOCK):
    """Inclusive prefix sum of ``values`` restarting at each segment.

    ``segment_start`` (int64, length n_segments + 1) holds the first index of each segment
    and ends with ``len(values)``; segments are contiguous and may be empty. ``block`` (≥ 2)
    is the layout constant: results are a function of the input, the segments and ``block``.
    """
    if block < 2:
        raise ValueError(f"block must be at least 2 (the recursion shrinks by it), got {block}")
    xp = backend.xp
    n = int(values.size)
    out = xp.empty(n, dtype=xp.float64)
    if n == 0:
        return out
    values = xp.ascontiguousarray(values, dtype=xp.float64)
    segment_start = xp.ascontiguousarray(xp.asarray(segment_start, dtype=xp.int64))
    counts = segment_start[1:] - segment_start[:-1]
    per_segment = blocks_per_segment(counts, block)
    segment_block_start = xp.zeros(counts.size + 1, dtype=xp.int64)
    xp.cumsum(per_segment, out=segment_block_start[1:])
    n_blocks, longest = (int(v) for v in backend.to_host(xp.stack([segment_block_start[-1], counts.max()])))
    # Segment of each block (CuPy's repeat takes no array of counts, so search instead).
    block_index = xp.arange(n_blocks, dtype=xp.int64)
    block_segment = xp.searchsorted(segment_block_start, block_index, side="right") - 1
    block_start = xp.empty(n_blocks + 1, dtype=xp.int64)
    block_start[:-1] = segment_start[block_segment] + (block_index - segment_block_start[block_segment]) * block
    block_start[-1] = n
    if longest <= block:  # every segment is one block: a plain left-to-right scan from 0.0
        offsets = xp.zeros(n_blocks, dtype=xp.float64)
    else:
        totals = xp.empty(n_blocks, dtype=xp.float64)
        backend.launch("block_sum", n_blocks, block_start, values, totals)
        inclusive = segmented_cumsum(backend, totals, segment_block_start, block)
        offsets = xp.empty(n_blocks, dtype=xp.float64)
        backend.launch("segment_block_offsets", n_blocks, block_segment, segment_block_start, inclusive,
                       offsets)
    backend.launch("block_scan", n_blocks, block_start, offsets, values, out)
    return out
