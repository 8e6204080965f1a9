"""The cpu backend's one-call ADL ranking (CpuBackend.queue_ranking, gpurisk/native/queue_ranking.cpp)
against the two-step route every backend has: Backend.queue_order (two stable NumPy sorts),
adl.rotate_queues, then the queue_places kernel on segmented_cumsum's sums. The order, ranks
and lights must be the same bits."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpurisk.adl import adl_queues, queue_starts, rotate_queues, rotation_offsets
from gpurisk.backend import Backend, CpuBackend
from gpurisk.parity import adversarial_queue_keys
from gpurisk.scan import BLOCK, segmented_cumsum


SIZES = np.array([0.1, 0.2, 0.3, 0.7, 1 / 3, 0.05, 1e-3])


def two_step(group, score, n_groups, size, by_size, block, seed):
    """Order, rank and lights by the generic route (seed: the dYdX rotation's, or None)."""
    be = CpuBackend()
    order = Backend.queue_order(be, group, score, n_groups)
    starts = queue_starts(be, group, n_groups)
    if seed is not None:
        order = rotate_queues(be, group, order, starts, seed)
    cum = segmented_cumsum(be, np.abs(size[order]), starts, block) if by_size else np.zeros(1)
    rank, lights = np.empty(order.size, np.int64), np.empty(order.size, np.int8)
    be.launch("queue_places", order.size, n_groups, order, starts, cum, int(by_size), rank, lights)
    return order, rank, lights


def one_call(group, score, n_groups, size, by_size, block, seed, threads):
    rotation = None
    if seed is not None:
        rotation = rotation_offsets(np.bincount(group, minlength=n_groups), seed)
    return CpuBackend(threads=threads).queue_ranking(group, score, n_groups, size, by_size, block, rotation)


def assert_same(got, expected):
    assert got is not None
    for g, e, name in zip(got, expected, ("order", "rank", "lights")):
        assert g.dtype == e.dtype, name
        np.testing.assert_array_equal(g, e, err_msg=name)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 3000), n_groups=st.integers(1, 12), key_seed=st.integers(0, 2**31),
       fine=st.booleans(), by_size=st.booleans(), equal_sizes=st.booleans(), block=st.sampled_from([2, 3, 16, BLOCK]),
       seed=st.one_of(st.none(), st.integers(0, 2**31)), threads=st.sampled_from([1, 2]))
def test_one_call_ranking_is_the_two_step_ranking(n, n_groups, key_seed, fine, by_size, equal_sizes, block,
                                                  seed, threads):
    # ±0, ±inf, NaNs of every payload, subnormals, runs of ties and empty queues; sizes of
    # both signs whose sums round differently in another order, and equal in a queue
    # (equal_sizes), so that shares land on the lights' steps: on one side or the other
    # unless the additions are segmented_cumsum's.
    group, score = adversarial_queue_keys(n, n_groups, key_seed)
    rng = np.random.default_rng(key_seed)
    if fine:  # keys that differ deep in the mantissa too: the sort's lower levels
        pick = rng.random(n) < 0.7
        score[pick] = rng.normal(size=int(pick.sum())) * 10.0 ** rng.integers(-3, 3, int(pick.sum()))
    pick = (group + key_seed % SIZES.size) % SIZES.size if equal_sizes else rng.integers(0, SIZES.size, n)
    size = SIZES[pick] * np.where(rng.random(n) < 0.5, 1.0, -1.0)
    expected = two_step(group, score, n_groups, size, by_size, block, seed)
    assert_same(one_call(group, score, n_groups, size, by_size, block, seed, threads), expected)


@pytest.mark.parametrize("by_size", [False, True])
@pytest.mark.parametrize("rotate", [False, True])
def test_one_call_ranking_on_a_book_the_team_shares(by_size, rotate):
    # Large enough for the thread team; queues of very different lengths (one empty), runs
    # of equal scores as long as a queue, keys that differ only in their lowest bits.
    rng = np.random.default_rng(3)
    n, n_groups = 300_000, 9
    group = np.minimum(rng.geometric(0.25, n) - 1, n_groups - 2).astype(np.int32)
    group[group == 4] = 5  # queue 4 stays empty
    score = rng.lognormal(size=n) * np.where(rng.random(n) < 0.2, -1.0, 1.0)
    score[rng.random(n) < 0.4] = 0.0
    score[group == 6] = 1.5
    low = group == 3
    score[low] = (np.uint64(0x3FF0000000000000) + rng.integers(0, 64, int(low.sum())).astype(np.uint64)).view(
        np.float64)
    size = rng.lognormal(size=n) * np.where(rng.random(n) < 0.5, 1.0, -1.0)
    seed = 11 if rotate else None
    expected = two_step(group, score, n_groups, size, by_size, BLOCK, seed)
    for threads in (1, 2):
        assert_same(one_call(group, score, n_groups, size, by_size, BLOCK, seed, threads), expected)


def test_a_queue_of_more_than_half_the_book_is_ranked_in_two_steps():
    # One thread per queue would leave the team idle: queue_ranking declines, and adl_queues
    # ranks through queue_order and queue_places instead, with the same result.
    from types import SimpleNamespace

    from gpurisk.venue import get_venue

    rng = np.random.default_rng(5)
    n = 200_000
    group = np.where(rng.random(n) < 0.8, 0, 1).astype(np.int32)
    score = rng.normal(size=n)
    size = rng.lognormal(size=n)
    assert CpuBackend(threads=2).queue_ranking(group, score, 2, size, False, BLOCK) is None
    dev = SimpleNamespace(group=group, n_groups=2, group_start=queue_starts(CpuBackend(), group, 2), size=size)
    got = adl_queues(CpuBackend(threads=2), dev, score, get_venue("binance"))
    assert_same((got.order, got.rank, got.lights), two_step(group, score, 2, size, False, BLOCK, None))


def test_a_scan_block_below_two_is_refused():
    group, score = adversarial_queue_keys(100, 3, 0)
    with pytest.raises(ValueError, match="scan_block must be at least 2"):
        CpuBackend().queue_ranking(group, score, 3, np.ones(100), True, 1)


@pytest.mark.parametrize("n", [0, 1, 1000, 65_535, 65_536, 200_003])
@pytest.mark.parametrize("threads", [1, 2])
def test_native_queue_groups_equal_numpys(n, threads):
    """CpuBackend.queue_groups (one native pass) against Backend.queue_groups (adl.queue_group
    and queue_starts on NumPy): the same queue per position and the same starts, sizes of
    -0.0 (a long) and NaN (never short) included, on one thread and a team."""
    rng = np.random.default_rng(n)
    n_symbols = 7
    symbol = rng.integers(0, n_symbols, n).astype(np.int32)
    size = rng.normal(size=n)
    size[::11] = -0.0
    size[5::13] = np.nan
    size[7::17] = 0.0
    be = CpuBackend(threads=threads)
    group, start = be.queue_groups(symbol, size, 2 * n_symbols)
    want_group, want_start = Backend.queue_groups(be, symbol, size, 2 * n_symbols)
    assert group.dtype == np.int32 and start.dtype == np.int64
    assert np.array_equal(group, want_group)
    assert np.array_equal(start, want_start)
