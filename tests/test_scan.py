"""The deterministic segmented scan (gpurisk/scan.py, kernels/scan.cu): exact bits against an
independent pure-Python model of its layout, thread-count independence, accuracy, and the
parallelism of the layout at production sizes."""

import math
import random

import numpy as np
import pytest

from gpurisk.backend import CpuBackend
from gpurisk.scan import BLOCK, level_threads, segmented_cumsum
from tests.conftest import requires_gpu


# ----------------------------------------------------------------- the reference model


def _serial_scan(xs, start=0.0):
    out, s = [], start
    for x in xs:
        s += x
        out.append(s)
    return out


def reference_segment(seg, block):
    """Inclusive scan of one segment: blocks of ``block`` summed left to right from 0.0, the
    block totals scanned the same way (recursively), each block rescanned from the inclusive
    scan of the block before it (0.0 for the first)."""
    if len(seg) <= block:
        return _serial_scan(seg)
    blocks = [seg[i:i + block] for i in range(0, len(seg), block)]
    totals = [_serial_scan(b)[-1] for b in blocks]
    inclusive = reference_segment(totals, block)
    out = []
    for k, b in enumerate(blocks):
        out.extend(_serial_scan(b, 0.0 if k == 0 else inclusive[k - 1]))
    return out


def reference(values, starts, block):
    values = [float(v) for v in values]
    out = []
    for a, b in zip(starts[:-1], starts[1:]):
        out.extend(reference_segment(values[a:b], block))
    return np.array(out, dtype=np.float64)


def _bits(a):
    return np.asarray(a, dtype=np.float64).view(np.uint64)


def _values(rng, n):
    """Mixed signs and 12 decades of magnitude: the order of additions shows in the bits."""
    return rng.normal(size=n) * 10.0 ** rng.integers(-6, 7, n)


def _starts(lengths):
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    return starts


# ----------------------------------------------------------------- exact bits


@pytest.mark.parametrize("block", [2, 3, 4])
def test_bits_match_the_reference_through_three_or_more_levels(block):
    rng = np.random.default_rng(block)
    long = block ** 3 * 3 + 1  # > block³: at least three levels of block totals
    lengths = [long, 0, 1, block, block + 1, 0, long // 2, block ** 2 + 1, 0]
    starts = _starts(lengths)
    values = _values(rng, int(starts[-1]))
    assert len(level_threads(lengths, block)) >= 4  # values + three levels of totals
    got = segmented_cumsum(CpuBackend(), values, starts, block=block)
    want = reference(values, starts, block)
    assert got.dtype == np.float64 and got.shape == values.shape
    np.testing.assert_array_equal(_bits(got), _bits(want))
    # The blocked association is not the plain left-to-right one on this data, so the
    # comparison above does check the layout, not just the sum.
    assert not np.array_equal(_bits(got), _bits(reference(values, starts, 1 << 30)))


def test_bits_match_the_reference_with_many_segments_and_empty_ones():
    rng = np.random.default_rng(11)
    lengths = rng.integers(0, 40, 700)
    lengths[rng.random(700) < 0.3] = 0
    lengths[[0, -1]] = 0  # empty first and last segments
    starts = _starts(lengths)
    values = _values(rng, int(starts[-1]))
    for block in (2, 3, 5, BLOCK):
        got = segmented_cumsum(CpuBackend(), values, starts, block=block)
        np.testing.assert_array_equal(_bits(got), _bits(reference(values, starts, block)))


def test_single_segment_with_the_default_block():
    rng = np.random.default_rng(5)
    n = BLOCK ** 2 * 2 + 17  # three levels at the production block length
    values = _values(rng, n)
    starts = np.array([0, n], dtype=np.int64)
    got = segmented_cumsum(CpuBackend(), values, starts)
    np.testing.assert_array_equal(_bits(got), _bits(reference(values, starts, BLOCK)))


def test_a_segment_within_one_block_is_the_plain_left_to_right_scan():
    rng = np.random.default_rng(6)
    values = _values(rng, 3 * BLOCK)
    starts = np.array([0, BLOCK, BLOCK, 2 * BLOCK + 0, 3 * BLOCK], dtype=np.int64)
    got = segmented_cumsum(CpuBackend(), values, starts)
    for a, b in zip(starts[:-1], starts[1:]):
        np.testing.assert_array_equal(_bits(got[a:b]), _bits(np.cumsum(values[a:b])))


def test_empty_input():
    for starts in ([0], [0, 0], [0, 0, 0]):
        out = segmented_cumsum(CpuBackend(), np.empty(0), np.array(starts, dtype=np.int64))
        assert out.shape == (0,) and out.dtype == np.float64


def test_block_must_shrink_the_recursion():
    with pytest.raises(ValueError, match="at least 2"):
        segmented_cumsum(CpuBackend(), np.ones(5), np.array([0, 5], dtype=np.int64), block=1)


# ----------------------------------------------------------------- threads and devices


@pytest.mark.parametrize("block, lengths", [
    (4, [60_000, 0, 3, 45_001]),  # 26k blocks: the CPU build runs the kernels on a team
    (BLOCK, [1_200_000, 0, 7, 900_000]),  # 16k blocks
])
def test_same_bits_with_one_and_two_threads(block, lengths):
    rng = np.random.default_rng(block)
    starts = _starts(lengths)
    values = _values(rng, int(starts[-1]))
    assert level_threads(lengths, block)[0] > 8192  # above the kernels' OpenMP threshold
    one = segmented_cumsum(CpuBackend(threads=1), values, starts, block=block)
    two = segmented_cumsum(CpuBackend(threads=2), values, starts, block=block)
    np.testing.assert_array_equal(_bits(one), _bits(two))
    if block == 4:
        np.testing.assert_array_equal(_bits(two), _bits(reference(values, starts, block)))


@requires_gpu
@pytest.mark.parametrize("block", [3, BLOCK])
def test_gpu_gives_the_cpu_bits(block):
    import cupy

    from gpurisk.backend import GpuBackend

    rng = np.random.default_rng(9)
    lengths = [300_000, 0, 1, 2_000_000, 5, 0]
    starts = _starts(lengths)
    values = _values(rng, int(starts[-1]))
    cpu = segmented_cumsum(CpuBackend(), values, starts, block=block)
    gpu = segmented_cumsum(GpuBackend(), cupy.asarray(values), cupy.asarray(starts), block=block)
    np.testing.assert_array_equal(_bits(cpu), _bits(cupy.asnumpy(gpu)))


# ----------------------------------------------------------------- accuracy


def test_error_against_fsum_is_bounded_by_the_path_length():
    rng = np.random.default_rng(12)
    lengths = [250_000, 0, 1_000, 40_000]
    starts = _starts(lengths)
    values = _values(rng, int(starts[-1]))
    got = segmented_cumsum(CpuBackend(), values, starts)
    levels = len(level_threads(lengths))
    # Every prefix is a chain of at most `levels` block scans of at most BLOCK additions:
    # |error| <= (levels·BLOCK)·u·Σ|v| (u = 2^-53), to first order.
    k = levels * BLOCK * 2.0 ** -53
    pick = random.Random(0)
    for a, b in zip(starts[:-1], starts[1:]):
        if a == b:
            continue
        for i in {a, b - 1, *(pick.randrange(a, b) for _ in range(40))}:
            exact = math.fsum(values[a:i + 1])
            bound = k * math.fsum(np.abs(values[a:i + 1])) * 1.01
            assert abs(got[i] - exact) <= bound, (i, got[i], exact, bound)


# ----------------------------------------------------------------- layout


def test_layout_fills_a_gpu_at_production_sizes():
    # 30M positions in 20 queues (10 symbols × 2 sides), computed from the lengths alone.
    n = 30_000_000
    lengths = np.full(20, n // 20, dtype=np.int64)
    sizes = level_threads(lengths)
    assert sum(lengths) == n
    assert sizes[0] >= n / BLOCK  # one thread per BLOCK elements at the first level
    assert sizes[0] >= 200_000  # ~ the 270k resident threads of a 132-SM GPU
    assert len(sizes) <= 4 and sizes[-1] == 20  # short recursion; ends with one block per queue
    # One queue of 30M also splits: the old fixed per-segment walk would give one thread.
    one = level_threads([n])
    assert one[0] >= n / BLOCK and one[-1] == 1


class _Recording(CpuBackend):
    def __init__(self):
        super().__init__()
        self.launches = []

    def launch(self, kernel, *args):
        self.launches.append((kernel, int(args[0])))
        super().launch(kernel, *args)


def test_launches_follow_the_layout():
    lengths = [10_000, 0, 3, 2_500]
    starts = _starts(lengths)
    be = _Recording()
    segmented_cumsum(be, np.ones(int(starts[-1])), starts, block=8)
    sizes = level_threads(lengths, 8)  # [1565, 197, 26, 4, 2]
    sums = [n for k, n in be.launches if k == "block_sum"]
    scans = [n for k, n in be.launches if k == "block_scan"]
    assert sums == sizes[:-1]
    assert sorted(scans) == sorted(sizes)
    assert [n for k, n in be.launches if k == "segment_block_offsets"] == sizes[:-1][::-1]
    assert max(n for _, n in be.launches) == sizes[0] == sum(-(-x // 8) for x in lengths)
