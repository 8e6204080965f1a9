"""GPU parity of what-if orders and funding: the gpu backend (skipped without a GPU) and the
stand-in twin (gpurisk.parity.StandInBackend, the cpu kernels on one thread) give the bits
of the cpu backend on every thread. NumPy only, like tests/test_gpu.py."""

import os

import numpy as np
import pytest

from gpurisk import Engine, synthetic_book
from gpurisk.backend import CpuBackend, get_backend, gpu_available
from gpurisk.engine import DeviceBook
from gpurisk.funding import settle
from gpurisk.parity import StandInBackend, StrictStandInBackend
from gpurisk.whatif import what_if_arrays

REFERENCE = CpuBackend(threads=os.cpu_count() or 1)


@pytest.fixture(params=["gpu", "stand-in", "stand-in-strict"], scope="module")
def candidate(request):
    if request.param == "gpu":
        if not gpu_available():
            pytest.skip("needs a CUDA GPU (CuPy reports none); the stand-in twin runs instead")
        return get_backend("gpu")
    return StrictStandInBackend() if request.param == "stand-in-strict" else StandInBackend()


def _orders(book, n, seed):
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, book.n_positions, n)
    held = rng.random(n) < 0.7
    acc = np.where(held, book.pos_account[pick], rng.integers(0, book.n_accounts, n)).astype(np.int32)
    sym = np.where(held, book.pos_symbol[pick], rng.integers(0, book.n_symbols, n)).astype(np.int32)
    iso = np.where(held, book.isolated[pick], rng.random(n) < 0.2).astype(np.int8)
    size = np.where(held, book.size[pick] * rng.choice([0.5, -0.3, -1.0, -1.7], n), rng.normal(size=n))
    price = book.mark_price[sym] * (1 + rng.normal(size=n) * 0.01)
    margin = np.where(rng.random(n) < 0.5, np.nan, 50.0)
    margin[iso == 0] = np.nan
    return acc, sym, size, price, iso, margin


@pytest.mark.parametrize("venue", ["binance", "bitmex", "bybit", "okx", "gate"])
def test_what_if_same_bits(candidate, venue):
    book = synthetic_book(20_000, seed=9)
    args = _orders(book, 30_000, seed=2)
    marks = book.mark_price * 0.97
    want = what_if_arrays(Engine(book, venue=venue, backend=REFERENCE), *args, marks=marks)
    got = what_if_arrays(Engine(book, venue=venue, backend=candidate), *args, marks=marks)
    for k, v in vars(want).items():
        assert np.array_equal(v, getattr(got, k), equal_nan=True), k


def test_funding_same_bits(candidate):
    book = synthetic_book(20_000, seed=9)
    rates = np.linspace(-7e-4, 9e-4, book.n_symbols)
    runs = []
    for b in (REFERENCE, candidate):
        runs.append(settle(b, DeviceBook(book, b), book.size, book.wallet, book.isolated_margin,
                           book.mark_price, rates))
    for k, v in vars(runs[0]).items():
        assert np.array_equal(v, getattr(runs[1], k)), k


@pytest.mark.parametrize("venue", ["binance", "bybit", "okx"])
def test_what_if_same_bits_on_inverse_markets(candidate, venue):
    """Coin-margined markets, wallets per asset: the kernel's inverse forms, the same bits."""
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from test_whatif_inverse import pool_orders

    from gpurisk.whatif import check_orders

    book = synthetic_book(3_000, seed=9, inverse_markets=3)
    _, args = check_orders(book, pool_orders(book, 4_000, seed=5))
    marks = book.mark_price * 1.02
    want = what_if_arrays(Engine(book, venue=venue, backend=REFERENCE), *args, marks=marks)
    got = what_if_arrays(Engine(book, venue=venue, backend=candidate), *args, marks=marks)
    assert np.isfinite(want.liq_price[book.inverse[args[1]] == 1]).any()
    for k, v in vars(want).items():
        assert np.array_equal(v, getattr(got, k), equal_nan=True), k


@pytest.mark.parametrize("venue", ["bybit_uta", "binance_multi_assets"])
def test_what_if_same_bits_under_pooled_collateral(candidate, venue):
    """Pooled venues: the order's row re-valued in its pool, the pool's figures and the
    liquidation price against it, the same bits."""
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from test_collateral import pooled_synthetic_book
    from test_whatif import _random_orders

    from gpurisk.whatif import check_orders

    book = pooled_synthetic_book(3_000)
    _, args = check_orders(book, _random_orders(book, 4_000, seed=5))
    marks = book.mark_price * 0.98
    want = what_if_arrays(Engine(book, venue=venue, backend=REFERENCE), *args, marks=marks)
    got = what_if_arrays(Engine(book, venue=venue, backend=candidate), *args, marks=marks)
    assert want.pool_equity.size == args[0].size and np.isfinite(want.liq_price).any()
    for k, v in vars(want).items():
        assert np.array_equal(v, getattr(got, k), equal_nan=True), k
