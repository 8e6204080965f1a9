"""Backends: where the kernels run and which array namespace (``xp``) orchestrates them.

Both backends run the same ``kernels/*.cu``; they differ only in how a kernel is launched
and which array library holds the data (NumPy on ``cpu``, CuPy on ``gpu``).
"""

from __future__ import annotations

import ctypes
import functools
import threading

import numpy as np

from . import kernels as _kernels

GPU_BLOCK = 256


#: levels of NumPy's pairwise recursion a thread of Backend.numpy_sum combines at once (up to
#: 2**5 sums of the level below)
SUM_LEVEL_SPLITS = 5


def _pairwise_rounds(n: int) -> list:
    """NumPy's pairwise recursion over n terms, round by round: the segments' starts after
    each round of splitting every segment of more than 128 terms at half, rounded down to a
    multiple of 8 (kernels/deleverage.cu numpy_sum_tree), until none is over 128; each with n
    appended. The last round's segments are the leaves."""
    lo, length = np.zeros(1, dtype=np.int64), np.array([n], dtype=np.int64)
    rounds = [np.append(lo, n)]
    while (length > 128).any():
        big = length > 128
        half = length // 2
        half -= half % 8
        reps = np.where(big, 2, 1)
        at = np.repeat(np.arange(lo.size), reps)
        second = np.zeros(at.size, dtype=bool)
        second[np.cumsum(reps)[big] - 1] = True
        lo, length = (np.where(second, lo[at] + half[at], lo[at]),
                      np.where(big[at], np.where(second, length[at] - half[at], half[at]), length[at]))
        rounds.append(np.append(lo, n).astype(np.int64))
    return rounds


@functools.lru_cache(maxsize=64)
def _pairwise_plan(n: int) -> tuple:
    """Backend.numpy_sum's plan for n terms: the leaves' starts, then, level by level up to the
    root, (node lengths, each node's first part in the level below, splits between them)."""
    rounds = _pairwise_rounds(n)
    levels, fine = [], len(rounds) - 1
    while fine > 0:
        coarse = max(0, fine - SUM_LEVEL_SPLITS)
        starts = rounds[coarse]
        levels.append((np.diff(starts), np.searchsorted(rounds[fine][:-1], starts[:-1]), fine - coarse))
        fine = coarse
    if not levels:  # a single leaf: the root adds 0.0 to it
        levels.append((np.array([n], dtype=np.int64), np.zeros(1, dtype=np.int64), 0))
    return rounds[-1], levels


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run on this machine; the message says what to do."""


class Backend:
    name: str
    xp = np

    def launch(self, kernel: str, *args) -> None:
        raise NotImplementedError

    def asarray(self, a, dtype=None):
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_host(self, a) -> np.ndarray:
        return np.asarray(a)

    def synchronize(self) -> None:
        pass

    def device_memory(self) -> "tuple[int, int] | None":
        """(free, total) bytes of the device the tables live on, or None where they live in
        host memory."""
        return None

    def queue_order(self, group, score, n_groups: int, out=None):
        """Positions ordered by (group, score descending, index): a total order, so every
        correct sort gives the same permutation. -0.0 ties with 0.0; NaN scores (any sign or
        payload) come after every number, tied. Two stable sorts on ``xp``; ``out``: an int64
        array to write the order into."""
        xp = self.xp
        with np.errstate(invalid="ignore"):  # a signalling NaN payload warns in NumPy
            by_score = xp.argsort(-(score + 0.0), kind="stable")  # NaN sorts last in NumPy and CuPy
        narrow = xp.int16 if n_groups < 2**15 else xp.int32
        by_group = xp.argsort(group[by_score].astype(narrow), kind="stable")
        if out is not None and out.size == score.size and out.dtype == by_score.dtype:
            return xp.take(by_score, by_group, out=out)
        return by_score[by_group]

    def numpy_sum(self, a) -> float:
        """float(np.sum(a)) of a contiguous float64 array on the backend's device, the same
        bits, with only the total crossing to the host: the leaves of NumPy's pairwise
        recursion are summed on threads of their own (kernel ``numpy_sum_leaves``), then
        combined in the recursion's order, level by level up to the root, a thread per node
        adding up to 2**SUM_LEVEL_SPLITS sums of the level below (``numpy_sum_nodes``)."""
        xp = self.xp
        plans = self.__dict__.setdefault("_sum_plans", {})  # the plan's arrays on the device, once per length
        plan = plans.get(int(a.size))
        if plan is None:
            leaves, levels = _pairwise_plan(int(a.size))
            plan = plans[int(a.size)] = (self.asarray(leaves), leaves.size - 1,
                                         [(self.asarray(ln), self.asarray(first), depth, ln.size)
                                          for ln, first, depth in levels])
        leaf_start, n_leaves, levels = plan
        sums = xp.empty(n_leaves, dtype=xp.float64)
        self.launch("numpy_sum_leaves", n_leaves, leaf_start, a, sums)
        for k, (node_len, first, depth, n_nodes) in enumerate(levels):
            parts, sums = sums, xp.empty(n_nodes, dtype=xp.float64)
            self.launch("numpy_sum_nodes", n_nodes, node_len, first, parts, depth, int(k == len(levels) - 1), sums)
        return float(self.to_host(sums)[0])

    def add_at(self, balance, index, amount) -> None:
        """balance[index[k]] += amount[k], k in order, on the backend's device: np.add.at's
        bits (a balance's additions in the order given), with no float atomics. The additions
        are sorted by (balance, place given), and kernel ``ordered_add`` adds each balance's
        run in order on one thread. index, amount: host or device arrays."""
        xp = self.xp
        index, amount = self.asarray(index, xp.int64), self.asarray(amount, xp.float64)
        n = int(index.size)
        if n == 0:
            return
        by = xp.argsort(index * n + xp.arange(n, dtype=xp.int64))  # distinct keys: one order on any sort
        target, amount = xp.ascontiguousarray(index[by]), xp.ascontiguousarray(amount[by])
        first = xp.ones(n, dtype=xp.bool_)
        first[1:] = target[1:] != target[:-1]
        run_start = xp.concatenate([xp.flatnonzero(first), xp.full(1, n, dtype=xp.int64)])
        self.launch("ordered_add", int(run_start.size) - 1, run_start, target, amount, balance)

    def queue_groups(self, pos_symbol, size, n_groups: int):
        """(group, group_start): each position's ADL queue, 2·symbol + (size < 0), int32, and
        the first place of each queue in queue order, int64 (n_groups + 1): adl.queue_group
        and adl.queue_starts."""
        from .adl import queue_group, queue_starts

        xp = self.xp
        group = xp.ascontiguousarray(queue_group(xp, pos_symbol, size))
        return group, queue_starts(self, group, n_groups)

    def queue_ranking(self, group, score, n_groups: int, size, by_size: bool, scan_block: int, rotation=None,
                      out=None):
        """Order, rank and lights of every queue in one call, where the backend has one: a
        tuple (order, rank, lights), the same bits as queue_order and adl.queue_places
        (``rotation``: int64 per queue, the places each queue is turned by, as
        adl.rotate_queues turns it; ``out``: (order, rank, lights) arrays to write into). None
        where it has none: adl_queues then sorts and places in two steps."""
        return None

    def __repr__(self) -> str:
        return f"<gpurisk backend {self.name}>"

    #: the array type whose memory the kernels can read, and what to call it in errors
    array_type: type = np.ndarray
    array_kind = "host (NumPy)"

    def _check(self, kernel: str, args: tuple) -> _kernels.KernelSignature:
        """Every argument is what the kernel's signature says, before anything runs: a
        wrong buffer would otherwise crash the process or fail deep inside CuPy."""
        sig = _kernels.signatures()[kernel]
        if len(args) != len(sig.params):
            raise TypeError(f"kernel {kernel} takes {len(sig.params)} arguments, got {len(args)}")
        for p, a in zip(sig.params, args):
            if p.kind == "ptr":
                if not isinstance(a, self.array_type):
                    raise TypeError(
                        f"kernel {kernel}: argument {p.name} is a {type(a).__module__}.{type(a).__name__}; "
                        f"the {self.name} backend runs on {self.array_kind} arrays: pass backend.asarray(...)")
                if a.dtype != np.dtype(p.dtype) or not a.flags.c_contiguous:
                    raise TypeError(f"kernel {kernel}: argument {p.name} must be a contiguous "
                                    f"{p.dtype} array, got {a.dtype} (contiguous={a.flags.c_contiguous})")
                self._check_place(kernel, p.name, a)
            elif not isinstance(a, (int, float, np.integer, np.floating)) or isinstance(a, bool):
                raise TypeError(f"kernel {kernel}: argument {p.name} must be a {p.dtype} scalar, "
                                f"got {type(a).__name__}")
        return sig

    def _check_place(self, kernel: str, name: str, a) -> None:
        """Device arrays: on the device this backend launches on."""


class CpuBackend(Backend):
    """Kernels compiled by the host C++ compiler, run by OpenMP threads, NumPy around them."""

    name = "cpu"
    xp = np

    def __init__(self, threads: int | None = None):
        self.threads = threads
        self._local = threading.local()  # radix sort buffers, kept between calls, per thread

    def launch(self, kernel: str, *args) -> None:
        sig = self._check(kernel, args)
        lib = _kernels.cpu_library(sig.file)
        if self.threads is not None:
            lib.gr_set_num_threads(int(self.threads))
        cargs = [a.ctypes.data if p.kind == "ptr" else a for p, a in zip(sig.params, args)]
        getattr(lib, kernel)(*cargs)

    def numpy_sum(self, a) -> float:
        """Backend.numpy_sum by np.sum itself."""
        return float(np.sum(a))

    def add_at(self, balance, index, amount) -> None:
        """Backend.add_at by np.add.at (the same bits, in place on the host)."""
        np.add.at(balance, index, amount)

    def queue_order(self, group, score, n_groups: int, out=None):
        """The same order as Backend.queue_order, by a parallel stable radix sort
        (gpurisk/native/radix_sort.cpp): NumPy's comparison sorts take seconds at 10M keys.
        ``out``: an int64 array to write the order into (fresh memory costs page faults)."""
        lib = _kernels.native_library("radix_sort.cpp")
        if self.threads is not None:
            _kernels.cpu_library("scan.cu").gr_set_num_threads(int(self.threads))
        group = np.ascontiguousarray(group, dtype=np.int32)
        score = np.ascontiguousarray(score, dtype=np.float64)
        n = score.size
        work = self._sort_work(n)
        key, key_tmp, idx_tmp = work
        order = out if out is not None and out.size == n else np.empty(n, dtype=np.int64)
        lib.queue_order.restype = None
        lib.queue_order(ctypes.c_longlong(n), ctypes.c_void_p(group.ctypes.data),
                        ctypes.c_void_p(score.ctypes.data), ctypes.c_int(n_groups),
                        ctypes.c_void_p(order.ctypes.data), ctypes.c_void_p(key.ctypes.data),
                        ctypes.c_void_p(key_tmp.ctypes.data), ctypes.c_void_p(idx_tmp.ctypes.data))
        return order

    def _sort_work(self, n: int):
        """Three uint64 work buffers of at least n entries, kept between calls (per thread)."""
        work = getattr(self._local, "sort_work", None)
        if work is None or work[0].size < n:
            work = self._local.sort_work = tuple(np.empty(n, dtype=np.uint64) for _ in range(3))
        return work

    def queue_groups(self, pos_symbol, size, n_groups: int):
        """Backend.queue_groups in one native pass (gpurisk/native/queue_ranking.cpp): NumPy
        takes three passes and a widening copy for the same integers."""
        pos_symbol = np.ascontiguousarray(pos_symbol, dtype=np.int32)
        size = np.ascontiguousarray(size, dtype=np.float64)
        lib = _kernels.native_library("queue_ranking.cpp")
        if self.threads is not None:
            _kernels.cpu_library("scan.cu").gr_set_num_threads(int(self.threads))
        group = np.empty(pos_symbol.size, dtype=np.int32)
        group_start = np.empty(n_groups + 1, dtype=np.int64)
        lib.queue_groups.restype = None
        lib.queue_groups(ctypes.c_longlong(pos_symbol.size), ctypes.c_void_p(pos_symbol.ctypes.data),
                         ctypes.c_void_p(size.ctypes.data), ctypes.c_int(n_groups),
                         ctypes.c_void_p(group.ctypes.data), ctypes.c_void_p(group_start.ctypes.data))
        return group, group_start

    def queue_ranking(self, group, score, n_groups: int, size, by_size: bool, scan_block: int, rotation=None,
                      out=None):
        """Backend.queue_ranking by gpurisk/native/queue_ranking.cpp: each queue sorted in
        the cache, rank and lights written in storage order, not scattered."""
        if scan_block < 2:
            raise ValueError(f"scan_block must be at least 2 (segmented_cumsum's layout), got {scan_block}")
        n = int(score.size)
        if n >= 2**29:  # places and lights are packed in 32 bits
            return None
        lib = _kernels.native_library("queue_ranking.cpp")
        if self.threads is not None:
            _kernels.cpu_library("scan.cu").gr_set_num_threads(int(self.threads))
        group = np.ascontiguousarray(group, dtype=np.int32)
        score = np.ascontiguousarray(score, dtype=np.float64)
        size = np.ascontiguousarray(size, dtype=np.float64)
        if rotation is not None:
            rotation = np.ascontiguousarray(rotation, dtype=np.int64)
        order, rank, lights = out if out is not None else (None, None, None)
        order = order if order is not None and order.size == n else np.empty(n, dtype=np.int64)
        rank = rank if rank is not None and rank.size == n else np.empty(n, dtype=np.int64)
        lights = lights if lights is not None and lights.size == n else np.empty(n, dtype=np.int8)
        key, key_tmp, slot = (w.ctypes.data for w in self._sort_work(n))
        lib.queue_ranking.restype = ctypes.c_int
        declined = lib.queue_ranking(
            ctypes.c_longlong(n), ctypes.c_void_p(group.ctypes.data), ctypes.c_void_p(score.ctypes.data),
            ctypes.c_int(n_groups), ctypes.c_void_p(size.ctypes.data), ctypes.c_int(int(by_size)),
            ctypes.c_void_p(None if rotation is None else rotation.ctypes.data), ctypes.c_longlong(scan_block),
            ctypes.c_void_p(order.ctypes.data), ctypes.c_void_p(rank.ctypes.data),
            ctypes.c_void_p(lights.ctypes.data), ctypes.c_void_p(key), ctypes.c_void_p(key_tmp),
            ctypes.c_void_p(slot))
        return None if declined else (order, rank, lights)


class GpuBackend(Backend):
    """Kernels compiled by NVRTC through CuPy (``--fmad=false``), CuPy around them."""

    name = "gpu"

    def __init__(self):
        try:
            import cupy
        except ImportError as exc:
            raise BackendUnavailable(
                "backend='gpu' needs CuPy, which is not installed. Install the gpu extra "
                "(pip install 'gpurisk[gpu]') on a machine with an NVIDIA driver, or use backend='cpu'."
            ) from exc
        if not cupy.is_available():
            raise BackendUnavailable(
                "backend='gpu' found CuPy but no usable CUDA GPU (no device, or no NVIDIA driver "
                "recent enough for CUDA 13). Check nvidia-smi, or use backend='cpu', which runs "
                "the same kernels on the CPU and gives the same numbers."
            )
        self.xp = cupy
        self._cupy = cupy
        self.array_type = cupy.ndarray
        self.array_kind = "device (CuPy)"
        self.device_id = cupy.cuda.Device().id
        self._grid_cap = cupy.cuda.Device().attributes["MultiProcessorCount"] * 32
        #: indices one launch covers before its grid-stride loops wrap
        self.launch_threads = self._grid_cap * GPU_BLOCK

    def _check_place(self, kernel: str, name: str, a) -> None:
        if a.device.id != self.device_id:
            raise TypeError(f"kernel {kernel}: argument {name} lives on GPU {a.device.id}; this backend "
                            f"launches on GPU {self.device_id}")

    def device_memory(self) -> tuple[int, int]:
        """Free bytes count what CuPy's memory pool holds without using: the pool keeps freed
        blocks for reuse, and they are as good as free to a new table."""
        free, total = self._cupy.cuda.runtime.memGetInfo()
        return int(free) + int(self._cupy.get_default_memory_pool().free_bytes()), int(total)

    @functools.lru_cache(maxsize=None)
    def _function(self, kernel: str):
        sig = _kernels.signatures()[kernel]
        module = self._module(sig.file)
        return module.get_function(kernel)

    @functools.lru_cache(maxsize=None)
    def _module(self, fname: str):
        cupy = self._cupy
        module = cupy.RawModule(code=_kernels.source(fname), options=_kernels.NVRTC_OPTIONS)
        try:
            module.compile()
        except cupy.cuda.compiler.CompileException as exc:
            raise _kernels.KernelBuildError(f"NVRTC failed on kernels/{fname}:\n{exc}") from exc
        return module

    def launch(self, kernel: str, *args) -> None:
        sig = self._check(kernel, args)
        n = int(args[0])
        if n <= 0:
            return
        grid = max(1, min((n + GPU_BLOCK - 1) // GPU_BLOCK, self._grid_cap))
        kargs = tuple(a if p.kind == "ptr" else np.dtype(p.dtype).type(a) for p, a in zip(sig.params, args))
        self._function(kernel)((grid,), (GPU_BLOCK,), kargs)

    def to_host(self, a) -> np.ndarray:
        return self._cupy.asnumpy(a)

    def synchronize(self) -> None:
        self._cupy.cuda.get_current_stream().synchronize()


def gpu_available() -> bool:
    try:
        import cupy
    except ImportError:
        return False
    try:
        return bool(cupy.is_available())
    except Exception:  # a broken driver install reports as unavailable
        return False


def get_backend(backend: "str | Backend" = "auto") -> Backend:
    """``"cpu"``, ``"gpu"``, ``"auto"`` (gpu when CuPy sees a GPU, else cpu) or a Backend."""
    if isinstance(backend, Backend):
        return backend
    if backend == "auto":
        return _gpu() if gpu_available() else _cpu()
    if backend == "cpu":
        return _cpu()
    if backend == "gpu":
        return _gpu()
    raise ValueError(f"backend must be 'auto', 'cpu' or 'gpu', got {backend!r}")


@functools.lru_cache(maxsize=None)
def _cpu() -> CpuBackend:
    return CpuBackend()


@functools.lru_cache(maxsize=None)
def _gpu() -> GpuBackend:
    return GpuBackend()
