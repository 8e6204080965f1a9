"""The live monitor's kernels (kernels/adl.cu queue_head_candidates, uncovered_blocks) against
plain NumPy references, bit for bit: ties, -0.0, NaN scores, positions of size 0."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gpurisk.adl import queue_heads
from gpurisk.backend import CpuBackend


def _reference_heads(symbol, size, score, n_groups, top):
    """Each queue sorted whole: score descending (-0.0 = 0.0), NaN last, ties by index."""
    heads = []
    for g in range(n_groups):
        members = [i for i in range(size.size) if size[i] != 0 and 2 * symbol[i] + (size[i] < 0) == g]
        members.sort(key=lambda i: (np.isnan(score[i]), 0.0 if np.isnan(score[i]) else -score[i], i))
        heads.append(tuple(members[:top]))
    return heads


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_queue_heads_are_the_front_of_the_full_ranking(data):
    n = data.draw(st.integers(0, 3000))
    n_symbols = data.draw(st.integers(1, 4))
    top = data.draw(st.integers(1, 6))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    symbol = rng.integers(0, n_symbols, n).astype(np.int32)
    size = rng.choice([-2.0, -0.5, 0.0, 0.25, 1.0, 3.0], n)
    # few distinct scores: many ties; signed zeros and NaNs of both signs
    score = rng.choice([0.0, -0.0, 1.5, 2.0, -1.0, np.nan, -np.nan, 7.0], n)
    threads = data.draw(st.sampled_from([1, 2]))
    found = queue_heads(CpuBackend(threads=threads), symbol, size, score, 2 * n_symbols, top)
    assert found.heads == _reference_heads(symbol, size, score, 2 * n_symbols, top)
    group = 2 * symbol + (size < 0)
    live = size != 0
    assert found.count.tolist() == np.bincount(group[live], minlength=2 * n_symbols).tolist()
    # |size| per queue, block by block: exact here (sizes are binary fractions)
    want = np.bincount(group[live], weights=np.abs(size[live]), minlength=2 * n_symbols)
    assert found.abs_size.tolist() == want.tolist()


def test_queue_heads_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(1)
    n = 200_000
    symbol = rng.integers(0, 10, n).astype(np.int32)
    size = rng.normal(0, 1, n)
    score = np.round(rng.random(n), 3)  # ties across blocks
    one = queue_heads(CpuBackend(threads=1), symbol, size, score, 20, 5)
    two = queue_heads(CpuBackend(threads=2), symbol, size, score, 20, 5)
    assert one.heads == two.heads
    assert one.abs_size.view(np.uint64).tolist() == two.abs_size.view(np.uint64).tolist()
    order = np.lexsort((np.arange(n), -score, 2 * symbol + (size < 0)))
    group = (2 * symbol + (size < 0))[order]
    for g in range(20):
        assert list(one.heads[g]) == order[group == g][:5].tolist()


def test_uncovered_blocks_sum_the_negative_equity_in_block_order():
    from gpurisk import adl

    be = CpuBackend()
    rng = np.random.default_rng(2)
    n_acc, n_pos, block = 40_000, 90_000, adl.DEFICIT_BLOCK
    acc_eq, n_cross = rng.normal(0, 1e4, n_acc), rng.integers(0, 3, n_acc).astype(np.int32)
    pos_eq, iso = rng.normal(0, 1e3, n_pos), rng.integers(0, 2, n_pos).astype(np.int8)
    ab, pb = -(-n_acc // block), -(-n_pos // block)
    out = np.empty(ab + pb)
    be.launch("uncovered_blocks", ab + pb, ab, block, n_acc, acc_eq, n_cross, n_pos, pos_eq, iso, out)
    want = []
    for b in range(ab):
        s = 0.0
        for a in range(b * block, min((b + 1) * block, n_acc)):
            if n_cross[a] > 0 and acc_eq[a] < 0:
                s += -acc_eq[a]
        want.append(s)
    for b in range(pb):
        s = 0.0
        for i in range(b * block, min((b + 1) * block, n_pos)):
            if iso[i] == 1 and pos_eq[i] < 0:
                s += -pos_eq[i]
        want.append(s)
    assert np.array_equal(out.view(np.uint64), np.array(want).view(np.uint64))


def test_queue_heads_over_many_blocks_with_nan_ties_and_free_rows():
    """Candidates from ~50 blocks merged (kernels/adl.cu queue_head_merge): ties and NaNs
    across block boundaries, the same on one thread and two."""
    rng = np.random.default_rng(4)
    n = 50 * 1024 + 77
    symbol = rng.integers(0, 3, n).astype(np.int32)
    size = rng.choice([-1.5, -0.25, 0.0, 0.5, 2.0], n)
    score = rng.choice([0.0, -0.0, 0.5, 0.75, np.nan, 1.0, -2.0], n, p=[.3, .2, .2, .1, .1, .05, .05])
    score[-5:] = 9.0  # the best places in the last block
    found = [queue_heads(CpuBackend(threads=t), symbol, size, score, 6, 7) for t in (1, 2)]
    assert found[0].heads == found[1].heads
    group = 2 * symbol + (size < 0)
    live = size != 0
    nan = np.isnan(score)
    order = np.lexsort((np.arange(n), np.where(nan, 0.0, -(score + 0.0)), nan, np.where(live, group, 99)))
    for g in range(6):
        want = order[group[order] == g]
        want = want[live[want]][:7].tolist()
        assert list(found[0].heads[g]) == want, g
    assert found[0].count.tolist() == np.bincount(group[live], minlength=6).tolist()
    assert found[0].abs_size.view(np.uint64).tolist() == found[1].abs_size.view(np.uint64).tolist()


def test_uncovered_deficit_does_not_depend_on_the_thread_count():
    from gpurisk.adl import uncovered_deficit

    rng = np.random.default_rng(3)
    n_acc, n_pos = 300_000, 700_000
    acc_eq, n_cross = rng.normal(0, 1e4, n_acc), rng.integers(0, 3, n_acc).astype(np.int32)
    pos_eq, iso = rng.normal(0, 1e3, n_pos), rng.integers(0, 2, n_pos).astype(np.int8)
    one, two = (uncovered_deficit(CpuBackend(threads=t), acc_eq, n_cross, pos_eq, iso) for t in (1, 2))
    assert np.float64(one).view(np.uint64) == np.float64(two).view(np.uint64)
    assert one > 0
