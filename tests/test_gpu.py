"""GPU parity: the gpu backend gives the same bits as the cpu backend (skipped without a GPU;
the cpu twin of every check runs in test_engine.py, and the kernels' GPU compilation is
checked without a GPU in test_kernels.py)."""

import numpy as np
import pytest

from gpurisk import revalue, synthetic_book
from gpurisk.backend import BackendUnavailable, GpuBackend, gpu_available
from tests.books import risk_arrays
from tests.conftest import requires_gpu


def test_gpu_backend_without_gpu_says_what_to_do():
    if gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(BackendUnavailable, match="backend='cpu'"):
        GpuBackend()


@requires_gpu
@pytest.mark.parametrize("n_accounts, seed", [(1, 0), (3_000, 1), (200_000, 2)])
@pytest.mark.parametrize("venue", ["binance", "bybit", "bitmex", "hyperliquid", "dydx"])
def test_gpu_is_bit_identical_to_cpu(n_accounts, seed, venue):
    book = synthetic_book(n_accounts, seed=seed, isolated_share=0.3)
    cpu = risk_arrays(revalue(book, venue=venue, backend="cpu"))
    gpu = risk_arrays(revalue(book, venue=venue, backend="gpu"))
    for k in cpu:
        assert cpu[k].dtype == gpu[k].dtype, k
        assert cpu[k].tobytes() == gpu[k].tobytes(), k


@requires_gpu
def test_gpu_ties_in_adl_scores_break_by_account_id():
    book = synthetic_book(2_000, seed=5)
    for venue in ("binance", "hyperliquid"):  # many zero scores: long runs of ties
        cpu = revalue(book, venue=venue, backend="cpu").positions["adl_rank"].to_numpy()
        gpu = revalue(book, venue=venue, backend="gpu").positions["adl_rank"].to_numpy()
        np.testing.assert_array_equal(cpu, gpu)


@requires_gpu
@pytest.mark.parametrize("chunk", [None, 50_000, 7_777])
def test_gpu_chunks_are_bit_identical_to_one_cpu_pass(chunk):
    from gpurisk import Engine

    book = synthetic_book(60_000, seed=4, isolated_share=0.3)
    cpu = risk_arrays(revalue(book, venue="bitmex", backend="cpu"))
    gpu = risk_arrays(Engine(book, venue="bitmex", backend="gpu", chunk_positions=chunk).revalue())
    for k in cpu:
        assert cpu[k].tobytes() == gpu[k].tobytes(), (chunk, k)


@requires_gpu
def test_gpu_resident_engine_revalues_new_marks_without_reupload():
    from gpurisk import Engine

    book = synthetic_book(20_000, seed=6)
    engine = Engine(book, backend="gpu")
    first = engine.device.size
    risk = engine.revalue({"BTCUSDT": 50_000.0})
    again = engine.revalue({"BTCUSDT": 45_000.0}, out=risk)
    assert engine.device.size is first  # still the uploaded table
    cpu = revalue(book, backend="cpu", marks={"BTCUSDT": 45_000.0})
    assert again.positions.equals(cpu.positions) and again.accounts.equals(cpu.accounts)


@requires_gpu
def test_gpu_stress_matches_cpu():
    from gpurisk.stress import shock_grid, stress

    book = synthetic_book(3_000, seed=2)
    a = stress(book, shock_grid(-0.3, 0.3, 5), backend="cpu", policy=["queue", "pro_rata"]).summary
    b = stress(book, shock_grid(-0.3, 0.3, 5), backend="gpu", policy=["queue", "pro_rata"]).summary
    assert a.drop("conservation_error").equals(b.drop("conservation_error"))
