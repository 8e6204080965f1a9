"""The strict stand-in's arrays (gpurisk/device_arrays.py) keep CuPy's rules, so the gpu
backend's orchestration is held to them in CI (tests/test_gpu.py and the other GPU twins run
on gpurisk.parity.StrictStandInBackend too): these tests hold the rules themselves."""

import numpy as np
import pytest

from gpurisk.parity import StrictStandInBackend


@pytest.fixture()
def backend():
    return StrictStandInBackend()


def test_a_device_array_never_turns_into_a_numpy_array_implicitly(backend):
    d = backend.asarray(np.arange(5.0))
    host = np.ones(5)
    for convert in (lambda: np.asarray(d), lambda: np.ascontiguousarray(d), lambda: np.array(d),
                    lambda: host[backend.asarray(np.array([1, 2]))], lambda: host.__setitem__(slice(None), d)):
        with pytest.raises(TypeError, match="Implicit conversion"):
            convert()
    np.testing.assert_array_equal(backend.to_host(d), np.arange(5.0))


def test_ufuncs_and_functions_refuse_numpy_arrays_among_device_arrays(backend):
    xp, d = backend.xp, backend.asarray(np.arange(4.0))
    for mix in (lambda: d + np.ones(4), lambda: np.ones(4) * d, lambda: np.maximum(d, np.zeros(4)),
                lambda: np.concatenate([d, np.ones(2)]), lambda: xp.cumsum(np.ones(3)),
                lambda: xp.where(d > 1, d, np.zeros(4))):
        with pytest.raises(TypeError, match="NumPy array among device arrays"):
            mix()
    # numbers and NumPy scalars mix freely; results (reductions too) stay on the device
    assert isinstance(d * 2.0 + np.float64(1.0), xp.ndarray)
    total = d.sum()
    assert isinstance(total, xp.ndarray) and total.shape == () and float(total) == 6.0
    assert isinstance(np.flatnonzero(d > 1.5), xp.ndarray)


def test_float_scatter_adds_are_refused_and_integer_ones_kept(backend):
    xp = backend.xp
    wallet, counts = xp.zeros(3), xp.zeros(3, dtype=xp.int64)
    with pytest.raises(TypeError, match="atomics"):
        np.add.at(wallet, xp.asarray([0, 0, 2]), xp.asarray([1.0, 2.0, 3.0]))
    np.add.at(counts, xp.asarray([0, 0, 2]), 1)
    assert counts.tolist() == [2, 0, 1]


def test_out_arrays_come_back_as_given_and_traffic_is_counted(backend):
    xp = backend.xp
    backend.traffic.reset()
    d = backend.asarray(np.arange(6, dtype=np.int64))  # 48 bytes over
    out = xp.empty(3, dtype=xp.int64)
    assert xp.take(d, xp.asarray([5, 0, 1]), out=out) is out  # 24 bytes of index over
    assert np.negative(d, out=d) is d
    other = xp.empty(6, dtype=xp.int64)
    assert np.add(d, 1, out=other) is other and np.add(d, d, out=(other,)) is other
    picked = d[np.array([1, 2])]  # a host index: copied to the device, as CuPy copies it (16 bytes)
    d[np.array([0])] = np.array([7])  # 8 + 8 bytes
    assert backend.traffic.to_device == 48 + 24 + 16 + 16
    assert backend.to_host(picked).tolist() == [-1, -2] and backend.traffic.to_host == 16
    assert backend.to_host(out).tolist() == [5, 0, 1]


def test_kernels_take_device_arrays_only(backend):
    n = 4
    with pytest.raises(TypeError, match=r"kernel stress_upnl: argument symbol is a numpy\.ndarray.*backend\.asarray"):
        backend.launch("stress_upnl", n, np.zeros(n, np.int32), backend.asarray(np.ones(n)),
                       backend.asarray(np.ones(n)), backend.asarray(np.ones(1)), backend.asarray(np.ones(1)),
                       backend.asarray(np.zeros(1, np.int8)), backend.xp.empty(n))
    with pytest.raises(AttributeError, match="no ctypes"):
        backend.asarray(np.ones(2)).ctypes


# ---- the device's own versions of np.add.at and np.sum: the same bits ----------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from gpurisk.backend import _pairwise_plan, get_backend  # noqa: E402
from gpurisk.parity import StandInBackend  # noqa: E402

DEVICES = [StrictStandInBackend(), StandInBackend(), get_backend("cpu")]


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 400), m=st.integers(1, 30))
def test_add_at_on_a_device_adds_in_the_order_given_as_np_add_at(seed, n, m):
    """Backend.add_at (a sort by balance and place, then one thread per balance) gives
    np.add.at's bits: each balance's additions in the order given, magnitudes 1e-12..1e12
    (where the order shows)."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, m, n)
    amount = rng.standard_normal(n) * 10.0 ** rng.integers(-12, 12, n)
    base = rng.standard_normal(m) * 1e6
    want = base.copy()
    np.add.at(want, index, amount)
    for b in DEVICES:
        got = b.asarray(base.copy())
        b.add_at(got, index, amount)
        assert np.array_equal(b.to_host(got).view(np.uint64), want.view(np.uint64)), b


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.one_of(st.integers(0, 300), st.integers(300, 200_000)))
def test_numpy_sum_on_a_device_is_np_sum(seed, n):
    """Backend.numpy_sum (the leaves of NumPy's pairwise recursion on threads, combined in
    its order) gives float(np.sum(a)) bit for bit; its leaves tile [0, n) in order, none over
    128 terms."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(n) * 10.0 ** rng.integers(-12, 12, n)
    want = np.float64(np.sum(a))
    for b in DEVICES:
        assert np.float64(b.numpy_sum(b.asarray(a))).view(np.uint64) == want.view(np.uint64), b
    starts = _pairwise_plan(n)[0]  # the leaves
    assert starts[0] == 0 and starts[-1] == n and np.all(np.diff(starts) <= 128)
    assert n == 0 or np.all(np.diff(starts) > 0)


@pytest.mark.parametrize("n", [129, 4_097, 1_000_003, 3_000_001])
def test_numpy_sum_levels_hold_at_most_32_parts_and_give_np_sum_bits(n):
    """Up the recursion, a node adds at most 2**SUM_LEVEL_SPLITS sums of the level below (no
    thread walks the leaves of a large array alone), and the total is np.sum's, -0.0 too."""
    from gpurisk.backend import SUM_LEVEL_SPLITS, _pairwise_plan

    leaves, levels = _pairwise_plan(n)
    below = leaves.size - 1
    for node_len, first, depth in levels:
        assert depth <= SUM_LEVEL_SPLITS and node_len.sum() == n
        assert np.all(np.diff(np.append(first, below)) <= 2 ** SUM_LEVEL_SPLITS)
        below = node_len.size
    assert below == 1  # the root
    rng = np.random.default_rng(n)
    for a in (rng.standard_normal(n) * 10.0 ** rng.integers(-12, 12, n), -np.zeros(n)):
        want = np.float64(np.sum(a))
        for b in DEVICES:
            assert np.float64(b.numpy_sum(b.asarray(a))).view(np.uint64) == want.view(np.uint64), b


def test_a_stress_run_on_a_device_moves_its_ledger_there_not_over_the_bus():
    """A stress run's balances live on the device: what crosses per run, beyond the context's
    one upload of the book, is the step's own rows (units, fills) and a few totals, not the
    ledger's columns (3 × 8 bytes a position each way, per step, before). Counted on the
    strict stand-in as the difference between 7 runs and 1, per position."""
    from gpurisk import synthetic_book
    from gpurisk.ladder import Ladder
    from gpurisk.stress import run_stress

    book = synthetic_book(3_000, seed=0)
    counts = {}
    for n in (1, 7):
        b = StrictStandInBackend()
        shocks = np.linspace(-0.4, 0.3, n)[:, None, None] * np.ones((1, 1, book.n_symbols))
        rec = run_stress(book, np.arange(n), shocks, backend=b, ladder=Ladder(), progress=False, detail=False)
        counts[n] = (b.traffic.to_device, b.traffic.to_host, int(rec.summary["steps"].sum()))
    assert counts[7][2] - counts[1][2] == 6  # six more runs, one step each, every one liquidating
    to_device = (counts[7][0] - counts[1][0]) / 6 / book.n_positions
    to_host = (counts[7][1] - counts[1][1]) / 6 / book.n_positions
    assert to_device < 24 and to_host < 24, (to_device, to_host)
