"""What the benchmarks time, defined once: the revaluation kernel pass, the ADL ranking,
and the bytes the kernel pass must move (for the memory floor); how they time it (device
events on a GPU) and the copy bandwidth of the device. Arrays only, no Polars."""

from __future__ import annotations

import sys
import time

import numpy as np
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpurisk.adl import adl_queues, adl_score  # noqa: E402
from gpurisk.backend import Backend  # noqa: E402
from gpurisk.liquidation import position_risk  # noqa: E402
from gpurisk.margin import account_margin, position_margin  # noqa: E402


def stages(engine, risk):
    """(kernel_pass, ranking): callables re-running those stages into ``risk``'s buffers."""
    b, dev, venue = engine.backend, engine.device, engine.venue
    mark = b.asarray(engine.book.mark_price)

    def kernel_pass():
        pm = position_margin(b, dev, mark, venue, risk.position_margin)
        am = account_margin(b, dev, pm, venue, risk.account_margin)
        position_risk(b, dev, mark, pm, am, venue, risk.position_risk)

    def ranking():
        score = adl_score(b, dev, mark, risk.position_margin, risk.position_risk, venue, risk.adl.score)
        adl_queues(b, dev, score, venue)

    return kernel_pass, ranking


def kernel_pass_bytes(engine, risk) -> int:
    """Bytes the three revaluation kernels must read and write: every array argument once per
    kernel (the per-symbol tables are negligible)."""
    dev, pm, am, pr = engine.device, risk.position_margin, risk.account_margin, risk.position_risk
    margin = [dev.pos_symbol, dev.size, dev.entry, dev.leverage, pm.notional, pm.upnl, pm.maint, pm.init]
    account = [dev.pos_start, dev.isolated, dev.size, pm.upnl, pm.maint, pm.init, dev.wallet,
               am.upnl, am.equity, am.maint, am.init, am.ratio, am.available, am.status, am.n_cross]
    positions = [dev.pos_account, dev.pos_symbol, dev.size, dev.entry, dev.isolated, dev.isolated_margin,
                 pm.upnl, pm.maint, dev.wallet, am.equity, am.maint, am.ratio, am.status, am.n_cross,
                 pr.equity, pr.ratio, pr.status, pr.liq_price, pr.bankruptcy_price]
    return sum(int(a.nbytes) for a in margin + account + positions)


class Timer:
    """Seconds per call of ``fn``: device events on a GPU, perf_counter on the CPU."""

    def __init__(self, backend):
        self.backend = backend
        self.gpu = backend.name == "gpu"

    def __call__(self, fn, repeats: int) -> list[float]:
        out = []
        for _ in range(repeats):
            if self.gpu:
                cp = self.backend.xp
                start, stop = cp.cuda.Event(), cp.cuda.Event()
                start.record()
                fn()
                stop.record()
                stop.synchronize()
                out.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
            else:
                t = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t)
        return out


def device_bandwidth(backend, nbytes=1 << 30, repeats=10) -> float:
    """Bytes read + written per second by the best of ``repeats`` device-to-device copies."""
    xp = backend.xp
    src = xp.ones(nbytes // 8)
    dst = xp.empty_like(src)
    timer = Timer(backend)
    timer(lambda: dst.__setitem__(Ellipsis, src), 2)
    return 2 * src.nbytes / min(timer(lambda: dst.__setitem__(Ellipsis, src), repeats))


def warm_up(backend) -> None:
    """Compile every kernel and CuPy's own kernels (first use compiles them) on a tiny book,
    so a timed upload or revaluation measures the work, not the compilers."""
    from gpurisk.engine import Engine
    from gpurisk.synthetic import synthetic_book

    for venue in ("binance", "bitmex", "dydx"):
        engine = Engine(synthetic_book(300, seed=1, isolated_share=0.3), venue=venue, backend=backend)
        engine.revalue(engine.book.mark_price * 0.7)
    backend.synchronize()



class TimedBackend(Backend):
    """A backend that times what it is asked to do, with a synchronisation around each call:
    kernels, queue sorts, host-to-device and device-to-host copies (and their bytes)."""

    def __init__(self, inner: Backend):
        self.inner, self.xp, self.name = inner, inner.xp, inner.name
        self.seconds = {"kernels": 0.0, "sorts": 0.0, "to_device": 0.0, "to_host": 0.0}
        self.bytes = {"to_device": 0, "to_host": 0}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _timed(self, what: str, fn, *args, **kwargs):
        self.inner.synchronize()
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        self.inner.synchronize()
        self.seconds[what] += time.perf_counter() - t
        return out

    def launch(self, kernel, *args):
        return self._timed("kernels", self.inner.launch, kernel, *args)

    def queue_order(self, group, score, n_groups, out=None):
        return self._timed("sorts", self.inner.queue_order, group, score, n_groups, out=out)

    def asarray(self, a, dtype=None):
        if isinstance(a, np.ndarray):
            self.bytes["to_device"] += a.nbytes
        return self._timed("to_device", self.inner.asarray, a, dtype)

    def to_host(self, a):
        out = self._timed("to_host", self.inner.to_host, a)
        self.bytes["to_host"] += out.nbytes
        return out

    def synchronize(self):
        self.inner.synchronize()

    def device_memory(self):
        return self.inner.device_memory()
