"""Kernel sources and their compilation.

Every per-position and per-account formula lives once, in ``kernels/*.cu``. This module
finds those sources (inside the installed package, or beside it in a checkout), expands
their local includes, parses the kernel signatures, and builds them:

* for the CPU, with the host C++ compiler (OpenMP, ``-ffp-contract=off``), into a shared
  library cached by the hash of source, flags and compiler version;
* for the GPU, with NVRTC (``--fmad=false``), through CuPy.

FMA contraction is off on both sides so the two builds give the same bits.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

# OpenMP's idle threads wait passively (asleep) between kernels rather than spinning: a
# spinning thread takes a core the orchestration needs, and where the machine is shared (a
# Dask worker beside others, CI) a parallel region then waits for a descheduled thread.
# Measured on a loaded 2-core VM: 3.8–8.5 ms per small kernel launch spinning, 0.34 ms
# passive. It must be set before libgomp loads; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

KERNEL_FILES = ("margin.cu", "liquidation.cu", "adl.cu", "scan.cu", "stress.cu", "deleverage.cu", "whatif.cu",
                "funding.cu", "portfolio.cu", "collateral.cu", "haircut.cu")

CPU_FLAGS = ("-x", "c++", "-std=c++17", "-O3", "-ffp-contract=off", "-fno-fast-math",
             "-fPIC", "-shared")
NVRTC_OPTIONS = ("--fmad=false", "-std=c++17")
NVCC_PTX_FLAGS = ("--ptx", "-arch=sm_90", "--fmad=false")


class KernelBuildError(RuntimeError):
    """A kernel source could not be compiled; the message carries the compiler's log."""


def kernel_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "kernels", here.parent / "kernels"):
        if (candidate / "common.cuh").is_file():
            return candidate
    raise FileNotFoundError(
        f"gpurisk's kernel sources were not found in {here / 'kernels'} or "
        f"{here.parent / 'kernels'}; reinstall gpurisk (pip install gpurisk) or run from a checkout."
    )


_INCLUDE = re.compile(r'^\s*#include\s+"([^"]+)"\s*$', re.M)


@functools.lru_cache(maxsize=None)
def source(name: str) -> str:
    """The kernel file ``name`` with its local ``#include "..."`` lines expanded once each."""
    return expand_includes((kernel_dir() / name).read_text(), {name})


def expand_includes(text: str, seen: "set[str] | None" = None, first: "Path | None" = None) -> str:
    """``text`` with its local ``#include "..."`` lines replaced by the files they name (from
    ``first`` where it holds one, else from the kernel directory), each expanded once."""
    roots = [r for r in (first, kernel_dir()) if r is not None]
    seen = set() if seen is None else seen

    def expand(fname: str) -> str:
        if fname in seen:
            return ""
        seen.add(fname)
        root = next((r for r in roots if (r / fname).is_file()), roots[-1])
        return _INCLUDE.sub(lambda m: expand(m.group(1)), (root / fname).read_text())

    return _INCLUDE.sub(lambda m: expand(m.group(1)), text)


# C parameter types used by the kernels -> (kind, numpy dtype name)
_PARAM_TYPES = {
    "const double*": ("ptr", "float64"), "double*": ("ptr", "float64"),
    "const long long*": ("ptr", "int64"), "long long*": ("ptr", "int64"),
    "const int*": ("ptr", "int32"), "int*": ("ptr", "int32"),
    "const signed char*": ("ptr", "int8"), "signed char*": ("ptr", "int8"),
    "long long": ("scalar", "int64"), "int": ("scalar", "int32"), "double": ("scalar", "float64"),
}


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "ptr" or "scalar"
    dtype: str  # numpy dtype name
    writes: bool  # a non-const pointer


@dataclass(frozen=True)
class KernelSignature:
    name: str
    file: str
    params: tuple[Param, ...]


_SIGNATURE = re.compile(r"GR_KERNEL\s+void\s+(\w+)\s*\(([^)]*)\)", re.S)


def _parse_param(text: str, kernel: str) -> Param:
    text = " ".join(text.split())
    m = re.match(r"(.*?)(\w+)$", text)
    if not m:
        raise KernelBuildError(f"cannot parse parameter {text!r} of kernel {kernel}")
    ctype = m.group(1).replace(" *", "*").strip()
    if ctype not in _PARAM_TYPES:
        raise KernelBuildError(f"kernel {kernel}: unsupported parameter type {ctype!r}")
    kind, dtype = _PARAM_TYPES[ctype]
    return Param(m.group(2), kind, dtype, kind == "ptr" and not ctype.startswith("const"))


@functools.lru_cache(maxsize=None)
def signatures() -> dict[str, KernelSignature]:
    """Every kernel in ``kernels/*.cu``, by name, with its parameter list. A kernel belongs to
    the file that defines it, not to one that includes that file for its device functions
    (whatif.cu includes liquidation.cu)."""
    out: dict[str, KernelSignature] = {}
    for fname in KERNEL_FILES:
        for m in _SIGNATURE.finditer((kernel_dir() / fname).read_text()):
            params = tuple(_parse_param(p, m.group(1)) for p in m.group(2).split(","))
            out[m.group(1)] = KernelSignature(m.group(1), fname, params)
    return out


# ---------------------------------------------------------------- CPU build


def find_cxx() -> str:
    for cand in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    raise KernelBuildError(
        "The cpu backend compiles gpurisk's kernels with a C++ compiler, and none was found "
        "(looked for $CXX, g++, c++, clang++). Install one (Debian/Ubuntu: apt-get install g++; "
        "macOS: xcode-select --install) or set CXX, or use backend='gpu' on a CUDA machine."
    )


def configured_cache_dir() -> Path:
    """Where compiled kernels are cached: $GPURISK_CACHE_DIR/kernels, else
    $XDG_CACHE_HOME/gpurisk/kernels (default ~/.cache/gpurisk/kernels)."""
    root = os.environ.get("GPURISK_CACHE_DIR")
    path = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gpurisk"
    return path / "kernels"


_FALLBACK_DIRS: dict[str, Path] = {}


def cache_dir() -> Path:
    """The kernel cache directory, created if needed. When the configured place cannot hold
    files (it is a file, or under one, or not writable), a fresh temporary directory serves
    this process instead, with a warning: kernels are then rebuilt once per process."""
    path = configured_cache_dir()
    if str(path) in _FALLBACK_DIRS:
        return _FALLBACK_DIRS[str(path)]
    problem = _cache_problem(path)
    return path if problem is None else _fallback_cache_dir(path, problem)


def _cache_problem(path: Path) -> str | None:
    """Why ``path`` cannot serve as the cache (None when it can): create it, then a file in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None


def _fallback_cache_dir(path: Path, problem: str) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="gpurisk-kernels-"))
    atexit.register(shutil.rmtree, tmp, True)
    _FALLBACK_DIRS[str(path)] = tmp
    warnings.warn(f"the kernel cache {path} cannot be used ({problem}); building kernels in {tmp} for "
                  f"this run (set GPURISK_CACHE_DIR to a writable directory to keep them)",
                  RuntimeWarning, stacklevel=3)
    return tmp


def _digest_path(lib_path: Path) -> Path:
    return lib_path.with_name(lib_path.name + ".sha256")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cached_library_ok(lib_path: Path) -> bool:
    """Whether ``lib_path`` is a complete build: it hashes to the sha256 written beside it
    (``<lib>.sha256``) when it was built. A missing, truncated or altered library, or a
    missing digest, is not loaded: the caller rebuilds it."""
    try:
        want = _digest_path(lib_path).read_text().strip()
        return len(want) == 64 and _sha256(lib_path) == want
    except OSError:
        return False


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@functools.lru_cache(maxsize=None)
def _compiler_identity(cxx: str) -> str:
    out = subprocess.run([cxx, "--version"], capture_output=True, text=True)
    return out.stdout.splitlines()[0] if out.stdout else cxx


def _run_cxx(cxx: str, flags: list[str], src: Path, dst: Path) -> subprocess.CompletedProcess:
    # Relative names from the build directory: the library's bytes do not depend on where
    # it was built, so concurrent builders write the same file (and the same digest).
    return subprocess.run([cxx, *flags, src.name, "-o", str(dst.relative_to(src.parent))],
                          capture_output=True, text=True, cwd=src.parent)


NATIVE_DIR = Path(__file__).resolve().parent / "native"


@functools.lru_cache(maxsize=None)
def native_library(fname: str) -> ctypes.CDLL:
    """Host-only helpers of the cpu backend (gpurisk/native/*.cpp), built like the kernels;
    their local includes name headers beside them or kernel headers (kernels/*.cuh), whose
    formulas they share."""
    return _build_cpu(expand_includes((NATIVE_DIR / fname).read_text(), first=NATIVE_DIR), fname)


@functools.lru_cache(maxsize=None)
def cpu_library(fname: str) -> ctypes.CDLL:
    """Compile (once, cached on disk by hash) and load the CPU build of one kernel file."""
    lib = _build_cpu(source(fname), fname)
    for sig in signatures().values():
        if sig.file != fname:
            continue
        fn = getattr(lib, sig.name)
        fn.restype = None
        fn.argtypes = [_ctype(p) for p in sig.params]
    return lib


def _build_cpu(text: str, fname: str) -> ctypes.CDLL:
    cxx = find_cxx()
    flags = [*CPU_FLAGS, "-fopenmp"]
    key = hashlib.sha256("\0".join([text, *flags, _compiler_identity(cxx)]).encode()).hexdigest()[:20]
    name = f"{Path(fname).stem}-{key}.so"
    cache = cache_dir()
    lib_path = cache / name
    if not cached_library_ok(lib_path):  # never dlopen a file that is not a complete build
        try:
            _compile_into(cxx, flags, text, fname, lib_path)
        except OSError as exc:  # the cache failed mid-way (disk full, permissions): a private one
            lib_path = _fallback_cache_dir(configured_cache_dir(), f"{type(exc).__name__}: {exc}") / name
            _compile_into(cxx, flags, text, fname, lib_path)
    try:
        return ctypes.CDLL(str(lib_path))
    except OSError as exc:
        raise KernelBuildError(f"the compiled kernels/{fname} ({lib_path}) could not be loaded: {exc}") from exc


def _compile_into(cxx: str, flags: list[str], text: str, fname: str, lib_path: Path) -> None:
    """Build into a temporary directory beside ``lib_path``, then move the library into place
    and write its sha256 beside it, each atomically (library first: a reader that finds the
    digest finds the library it describes, or rebuilds)."""
    with tempfile.TemporaryDirectory(dir=lib_path.parent) as tmp:
        src = Path(tmp) / fname
        src.write_text(text)  # sources are self-contained: local includes are expanded
        out = Path(tmp) / lib_path.name
        res = _run_cxx(cxx, flags, src, out)
        if res.returncode != 0:
            # A compiler without OpenMP still builds a correct, single-threaded library.
            res_serial = _run_cxx(cxx, list(CPU_FLAGS), src, out)
            if res_serial.returncode != 0:
                raise KernelBuildError(f"compiling kernels/{fname} with {cxx} failed:\n{res.stderr}")
            warnings.warn(f"{cxx} could not build with OpenMP; kernels/{fname} runs on one thread",
                          RuntimeWarning, stacklevel=3)
        digest = _sha256(out)
        with open(out, "rb") as f:
            os.fsync(f.fileno())
        os.replace(out, lib_path)  # atomic: concurrent builders never see half a file
        _write_atomically(_digest_path(lib_path), (digest + "\n").encode())


def _ctype(p: Param):
    if p.kind == "ptr":
        return ctypes.c_void_p
    return {"int64": ctypes.c_longlong, "int32": ctypes.c_int, "float64": ctypes.c_double}[p.dtype]


# ---------------------------------------------------------------- GPU build checks


def _nvrtc(fname: str, options: list[str], cubin: bool = False) -> tuple[str, str]:
    """(PTX or "" when ``cubin``, program log) of one kernel file compiled by NVRTC with the
    run-time options plus ``options``. CuPy's low-level bindings need no device."""
    from cupy.cuda import nvrtc

    prog = nvrtc.createProgram(source(fname), fname, [], [])
    try:
        try:
            nvrtc.compileProgram(prog, [*NVRTC_OPTIONS, *options])
        except nvrtc.NVRTCError as exc:
            raise KernelBuildError(f"NVRTC failed on kernels/{fname}:\n{nvrtc.getProgramLog(prog)}") from exc
        log = nvrtc.getProgramLog(prog)
        log = log.decode() if isinstance(log, bytes) else log
        if cubin:
            nvrtc.getCUBIN(prog)
            return "", log
        ptx = nvrtc.getPTX(prog)
        return (ptx.decode() if isinstance(ptx, bytes) else ptx), log
    finally:
        nvrtc.destroyProgram(prog)


def nvrtc_ptx(fname: str, arch: str = "compute_90") -> str:
    """Compile one kernel file to PTX with NVRTC and the run-time options, without a GPU.

    Uses CuPy's low-level NVRTC bindings (they need no device), so CI checks that every
    kernel compiles for the GPU exactly as the gpu backend will compile it.
    """
    return _nvrtc(fname, [f"--gpu-architecture={arch}"])[0]


# ptxas -v reports each entry function in a block that starts "Compiling entry function 'name'";
# device functions kept out of line (__noinline__) get "Function properties" of their own, with
# no register count, so a block is read from its own start to the next one's
_PTXAS_BLOCK = re.compile(r"Compiling entry function '(\w+)'(.*?)(?=Compiling entry function|\Z)", re.S)
_PTXAS_FRAME = r"Function properties for {}\s*\n[^\n]*?(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
_PTXAS_REGISTERS = re.compile(r"Used (\d+) registers")


def ptxas_resources(fname: str, arch: str = "sm_90") -> dict[str, dict[str, int]]:
    """Per kernel of one file, what ptxas reports when NVRTC builds machine code for
    ``arch`` (no GPU needed): registers, stack frame, spill stores and loads in bytes."""
    log = _nvrtc(fname, [f"--gpu-architecture={arch}", "--ptxas-options=-v"], cubin=True)[1]
    out = {}
    for name, block in _PTXAS_BLOCK.findall(log):
        frame = re.search(_PTXAS_FRAME.format(re.escape(name)), block)
        registers = _PTXAS_REGISTERS.search(block)
        if frame and registers:
            out[name] = {"registers": int(registers.group(1)), "stack_bytes": int(frame.group(1)),
                         "spill_store_bytes": int(frame.group(2)), "spill_load_bytes": int(frame.group(3))}
    return out


def nvcc_ptx(fname: str, nvcc: str | None = None) -> str:
    """Compile one kernel file to PTX with nvcc (sm_90, --fmad=false)."""
    nvcc = nvcc or shutil.which("nvcc")
    if not nvcc:
        raise KernelBuildError("nvcc not found")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / fname
        src.write_text(source(fname))
        out = Path(tmp) / (src.stem + ".ptx")
        res = subprocess.run([nvcc, *NVCC_PTX_FLAGS, str(src), "-o", str(out)], capture_output=True, text=True)
        if res.returncode != 0:
            raise KernelBuildError(f"nvcc failed on kernels/{fname}:\n{res.stderr}")
        return out.read_text()
