"""The CPU kernel cache: a compiled library is loaded only when it hashes to the sha256
written beside it at build time (else it is rebuilt), and an unusable cache place falls
back to a private temporary directory with a warning."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from gpurisk import kernels

ROOT = Path(__file__).resolve().parent.parent

# Revalue a small synthetic book on the cpu backend; print one sha256 over every result array.
REVALUE_DIGEST = """
import hashlib, gpurisk
from gpurisk.parity import risk_arrays
risk = gpurisk.revalue(gpurisk.synthetic_book(300, seed=3), venue="bybit", backend="cpu")
h = hashlib.sha256()
for name, arr in sorted(risk_arrays(risk).items()):
    h.update(name.encode()); h.update(arr.tobytes())
print(h.hexdigest())
"""


def run_py(code: str, cache, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), GPURISK_CACHE_DIR=str(cache))
    return subprocess.run([sys.executable, *(["-c", code] if code else []), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_truncated_or_corrupt_cached_library_is_rebuilt_and_gives_the_same_bits(tmp_path):
    cache = tmp_path / "cache"
    first = run_py(REVALUE_DIGEST, cache)
    assert first.returncode == 0, first.stderr
    libs = sorted((cache / "kernels").glob("*.so"))
    assert len(libs) >= 3 and all(kernels.cached_library_ok(p) for p in libs)
    sizes = {p: p.stat().st_size for p in libs}
    # damage every library a different way: truncated, emptied, bytes flipped, digest lost
    for k, p in enumerate(libs):
        data = p.read_bytes()
        if k % 4 == 0:
            p.write_bytes(data[: len(data) // 2])
        elif k % 4 == 1:
            p.write_bytes(b"")
        elif k % 4 == 2:
            p.write_bytes(data[:4096] + bytes(b ^ 0xFF for b in data[4096:8192]) + data[8192:])
        else:
            kernels._digest_path(p).unlink()
        assert not kernels.cached_library_ok(p)
    second = run_py(REVALUE_DIGEST, cache)
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in second.stderr
    assert second.stdout == first.stdout  # rebuilt: the same bits
    for p in libs:
        assert kernels.cached_library_ok(p) and p.stat().st_size == sizes[p]


def test_cache_dir_that_is_a_file_falls_back_with_a_warning(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("keep me")
    book = tmp_path / "book"
    assert run_py(None, tmp_path / "c", "-m", "gpurisk.cli", "synth", str(book), "--accounts", "40").returncode == 0
    out = run_py(None, blocker, "-m", "gpurisk.cli", "revalue", str(book), "--backend", "cpu")
    assert out.returncode == 0, out.stderr
    assert "kernel cache" in out.stderr and "cannot be used" in out.stderr and "Traceback" not in out.stderr
    assert "venue binance, backend cpu" in out.stdout
    assert blocker.read_text() == "keep me"
    # and the same bits as from a working cache
    assert run_py(REVALUE_DIGEST, blocker).stdout == run_py(REVALUE_DIGEST, tmp_path / "c").stdout


def test_unusable_cache_warns_once_and_serves_a_writable_directory(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("GPURISK_CACHE_DIR", str(blocker / "under-a-file"))
    monkeypatch.setattr(kernels, "_FALLBACK_DIRS", {})
    with pytest.warns(RuntimeWarning, match="cannot be used"):
        first = kernels.cache_dir()
    assert first.is_dir() and os.access(first, os.W_OK) and blocker not in first.parents
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.cache_dir() == first  # the same private directory, no second warning


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_read_only_cache_falls_back(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    (ro / "kernels").mkdir(parents=True)
    (ro / "kernels").chmod(0o555)
    monkeypatch.setenv("GPURISK_CACHE_DIR", str(ro))
    monkeypatch.setattr(kernels, "_FALLBACK_DIRS", {})
    with pytest.warns(RuntimeWarning, match="cannot be used"):
        assert kernels.cache_dir() != ro / "kernels"


def test_a_library_without_its_digest_is_not_trusted(tmp_path):
    lib = tmp_path / "x.so"
    lib.write_bytes(b"\x7fELF" + b"\0" * 100)
    assert not kernels.cached_library_ok(lib)  # no digest
    kernels._write_atomically(kernels._digest_path(lib), (kernels._sha256(lib) + "\n").encode())
    assert kernels.cached_library_ok(lib)
    lib.write_bytes(b"\x7fELF" + b"\0" * 99)
    assert not kernels.cached_library_ok(lib)


def test_openmp_threads_wait_passively_unless_told_otherwise():
    code = "import gpurisk.kernels, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, OMP_WAIT_POLICY="ACTIVE"), capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"


def test_ptxas_report_keeps_every_entry_beside_out_of_line_device_functions(monkeypatch):
    """A __noinline__ device function gets "Function properties" of its own but no register
    count; each entry function's figures must still be its own (the device check's compile
    section reports every kernel's registers, stack and spills)."""
    from gpurisk import kernels as K

    log = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'liquidation_prices' for 'sm_90'
ptxas info    : Function properties for liquidation_prices
ptxas         .     192 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 70 registers, used 0 barriers, 192 bytes cumulative stack size
ptxas info    : Compile time = 609.778 ms
ptxas info    : Function properties for _ZN45_INTERNAL_19trigger_side_searchERK12TriggerCheckdd
ptxas         .     8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Compiling entry function 'position_risk' for 'sm_90'
ptxas info    : Function properties for position_risk
ptxas         .     176 bytes stack frame, 16 bytes spill stores, 24 bytes spill loads
ptxas info    : Used 66 registers, used 0 barriers, 192 bytes cumulative stack size
"""
    monkeypatch.setattr(K, "_nvrtc", lambda *a, **k: (None, log))
    assert K.ptxas_resources("liquidation.cu") == {
        "liquidation_prices": {"registers": 70, "stack_bytes": 192, "spill_store_bytes": 0, "spill_load_bytes": 0},
        "position_risk": {"registers": 66, "stack_bytes": 176, "spill_store_bytes": 16, "spill_load_bytes": 24}}
