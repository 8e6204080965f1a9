"""Deterministic segmented prefix sums (orchestration of kernels/scan.cu).

Segments are cut into fixed blocks of ``BLOCK`` indices; the order of additions depends
only on that layout, so the cpu and gpu backends (and any thread count) agree bit for bit.
"""

from __future__ import annotations

from .backend import Backend

BLOCK = 4096


def segmented_cumsum(backend: Backend, values, segment_start, block: int = BLOCK):
    """Inclusive prefix sum of ``values`` restarting at each segment.

    ``segment_start`` (int64, length n_segments + 1) holds the first index of each segment
    and ends with ``len(values)``; segments are contiguous and may be empty.
    """
    xp = backend.xp
    n = int(values.size)
    out = xp.empty(n, dtype=xp.float64)
    if n == 0:
        return out
    segment_start = xp.asarray(segment_start, dtype=xp.int64)
    counts = segment_start[1:] - segment_start[:-1]
    n_segments = int(counts.size)
    blocks_per_segment = (counts + block - 1) // block
    segment_block_start = xp.zeros(n_segments + 1, dtype=xp.int64)
    xp.cumsum(blocks_per_segment, out=segment_block_start[1:])
    n_blocks = int(segment_block_start[-1])
    # Segment of each block (CuPy's repeat takes no array of counts, so search instead).
    block_segment = xp.searchsorted(segment_block_start, xp.arange(n_blocks, dtype=xp.int64), side="right") - 1
    block_start = xp.empty(n_blocks + 1, dtype=xp.int64)
    block_start[:-1] = segment_start[block_segment] + (
        xp.arange(n_blocks, dtype=xp.int64) - segment_block_start[block_segment]) * block
    block_start[-1] = n
    totals = xp.empty(n_blocks, dtype=xp.float64)
    offsets = xp.empty(n_blocks, dtype=xp.float64)
    values = xp.ascontiguousarray(values, dtype=xp.float64)
    backend.launch("block_sum", n_blocks, block_start, values, totals)
    backend.launch("segment_block_offsets", n_segments, segment_block_start, totals, offsets)
    backend.launch("block_scan", n_blocks, block_start, offsets, values, out)
    return out
