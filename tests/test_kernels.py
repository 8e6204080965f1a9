"""The kernel sources: parsing, the CPU build and its cache, and compilation for the GPU
(NVRTC through CuPy's low-level bindings, and nvcc) without needing a GPU."""

import importlib.util
import shutil

import numpy as np
import pytest

from gpurisk import kernels
from gpurisk.backend import CpuBackend
from gpurisk.scan import segmented_cumsum


def test_every_kernel_is_parsed_with_its_parameters():
    sigs = kernels.signatures()
    assert {"position_margin", "account_margin", "position_risk", "adl_score", "queue_places",
            "block_sum", "segment_block_offsets", "block_scan"} <= set(sigs)
    pm = sigs["position_margin"]
    assert pm.params[0].name == "n" and pm.params[0].kind == "scalar"
    assert [p.name for p in pm.params if p.writes] == ["notional", "upnl", "maint", "init", "close_fee"]


def test_tier_padding_covers_the_kernels_lookahead():
    # The kernels read GR_LOOKAHEAD tier boundaries with no bounds check; the engine pads
    # every ladder to TIER_LOOKAHEAD + 1 tiers. The two must agree.
    import re

    from gpurisk.engine import TIER_LOOKAHEAD

    found = re.search(r"#define GR_LOOKAHEAD (\d+)", kernels.source("margin.cu"))
    assert found and int(found.group(1)) == TIER_LOOKAHEAD


def test_cpu_build_is_cached_by_source_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("GPURISK_CACHE_DIR", str(tmp_path))
    kernels.cpu_library.cache_clear()
    try:
        kernels.cpu_library("scan.cu")
        built = sorted((tmp_path / "kernels").glob("scan-*.so"))
        assert len(built) == 1
        stamp = built[0].stat().st_mtime_ns
        kernels.cpu_library.cache_clear()
        kernels.cpu_library("scan.cu")  # loads, does not rebuild
        assert built[0].stat().st_mtime_ns == stamp
    finally:
        kernels.cpu_library.cache_clear()


def test_missing_compiler_is_explained(monkeypatch):
    monkeypatch.setenv("CXX", "")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(kernels.KernelBuildError, match="apt-get install g\\+\\+"):
        kernels.find_cxx()


def test_launcher_checks_dtypes():
    be = CpuBackend()
    with pytest.raises(TypeError, match="must be a contiguous float64 array"):
        be.launch("block_sum", 1, np.array([0, 1], dtype=np.int64), np.array([1], dtype=np.int32),
                  np.empty(1))


@pytest.mark.parametrize("fname", kernels.KERNEL_FILES)
def test_kernels_compile_with_nvcc(fname):
    if not shutil.which("nvcc"):
        pytest.skip("nvcc is not installed on this machine")
    ptx = kernels.nvcc_ptx(fname)
    assert ".target sm_90" in ptx
    for sig in kernels.signatures().values():
        if sig.file == fname:
            assert f".entry {sig.name}(" in ptx


@pytest.mark.parametrize("fname", kernels.KERNEL_FILES)
def test_kernels_compile_with_nvrtc_as_the_gpu_backend_does(fname):
    if importlib.util.find_spec("cupy") is None:
        pytest.skip("CuPy is not installed (pip install -e '.[dev]' installs it on Linux)")
    ptx = kernels.nvrtc_ptx(fname)
    for sig in kernels.signatures().values():
        if sig.file == fname:
            assert f".entry {sig.name}(" in ptx
    assert "fma.rn" not in ptx  # --fmad=false: no contracted multiply-adds


def test_nvrtc_errors_carry_the_program_log(monkeypatch):
    if importlib.util.find_spec("cupy") is None:
        pytest.skip("CuPy is not installed")
    monkeypatch.setattr(kernels, "source", lambda name: "GR_KERNEL void broken( { }")
    with pytest.raises(kernels.KernelBuildError, match="NVRTC failed on kernels/x.cu"):
        kernels.nvrtc_ptx("x.cu")


def test_segmented_cumsum_is_sequential_per_block_and_thread_independent():
    rng = np.random.default_rng(3)
    values = rng.normal(size=20_000) * 10.0 ** rng.integers(-3, 6, 20_000)
    starts = np.array([0, 0, 7, 9_000, 9_001, 20_000], dtype=np.int64)  # with empty segments
    outs = []
    for threads in (1, 2):
        outs.append(segmented_cumsum(CpuBackend(threads=threads), values, starts, block=1_000))
    np.testing.assert_array_equal(outs[0], outs[1])
    for a, b in zip(starts[:-1], starts[1:]):
        np.testing.assert_allclose(outs[0][a:b], np.cumsum(values[a:b]), rtol=1e-9, atol=1e-6)
    # One block per segment is exactly the left-to-right sum.
    one = segmented_cumsum(CpuBackend(), values, starts, block=1 << 20)
    for a, b in zip(starts[:-1], starts[1:]):
        np.testing.assert_array_equal(one[a:b], np.cumsum(values[a:b]))


def test_native_radix_queue_order_matches_two_stable_sorts():
    from gpurisk.backend import Backend

    rng = np.random.default_rng(7)
    n = 200_000
    group = rng.integers(0, 600, n).astype(np.int32)  # > 256 queues: two group bytes
    score = rng.normal(size=n)
    score[rng.random(n) < 0.3] = 0.0  # long runs of ties
    score[rng.random(n) < 0.05] = -0.0
    score[:10] = [np.inf, -np.inf, 1e-300, -1e-300, 5e300, -5e300, 0.0, -0.0, 1.0, 1.0]
    reference = Backend.queue_order(CpuBackend(), group, score, 600)
    for threads in (1, 2):
        np.testing.assert_array_equal(CpuBackend(threads=threads).queue_order(group, score, 600), reference)
    g, s = group[reference], score[reference]
    assert np.all(np.diff(g) >= 0)
    same = g[1:] == g[:-1]
    assert np.all(s[:-1][same] >= s[1:][same])
    tie = same & (s[:-1] == s[1:])
    assert np.all(reference[:-1][tie] < reference[1:][tie])


def test_cpu_backend_sorts_from_several_threads_at_once():
    from concurrent.futures import ThreadPoolExecutor

    be = CpuBackend()
    rng = np.random.default_rng(1)
    jobs = [(rng.integers(0, 4, n).astype(np.int32), rng.normal(size=n)) for n in (70_000, 90_000, 120_000, 80_000)]
    expected = [np.lexsort((np.arange(g.size), -s, g)) for g, s in jobs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda j: be.queue_order(j[0], j[1], 4), jobs * 3))
    for e, g in zip(expected * 3, got):
        np.testing.assert_array_equal(e, g)
