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
