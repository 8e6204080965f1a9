"""Bit-for-bit parity between backends.

The result arrays of a revaluation or a stress run, gathered on the host by name and
compared byte for byte; the inputs that must still agree (tiny books, adversarial sort
keys); and a stand-in for the GPU where there is none. Polars-free, so it runs on a bare
GPU machine (bench/gpu_check.py, tests/test_gpu.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .adl import queue_group
from .backend import Backend, CpuBackend
from .book import Book

RISK_PARTS = ("position_margin", "account_margin", "position_risk", "adl", "portfolio", "pool_margin")  # None without a model or pooled venue


@dataclass(frozen=True)
class Mismatch:
    """One output that differs: how many elements, and the first of them, bits shown."""

    name: str
    count: int
    first: int
    reference: str
    candidate: str

    def __str__(self) -> str:
        if self.first < 0:
            return f"{self.name}: {self.reference} vs {self.candidate}"
        return (f"{self.name}: {self.count:,} element(s) differ; first at [{self.first}]: "
                f"reference {self.reference}, candidate {self.candidate}")


def risk_arrays(risk) -> dict[str, np.ndarray]:
    """Every result array of a Risk, on the host, by name (``position_risk.liq_price``, ...).
    Queue places not ranked (``revalue(rank=False)``) are left out."""
    out = {}
    for part in RISK_PARTS:
        if getattr(risk, part, None) is None:
            continue
        for field, value in vars(getattr(risk, part)).items():
            if value is not None:
                out[f"{part}.{field}"] = risk.backend.to_host(value)
    return out


def stress_arrays(records) -> dict[str, np.ndarray]:
    """Every column of a stress run's records (summary and every detail table), by name."""
    out = {}
    for table in ("summary", "liquidations", "adl_fills", "haircuts", "prices"):
        for column, value in getattr(records, table).items():
            out[f"{table}.{column}"] = np.asarray(value)
    return out


def _show(a: np.ndarray, i: int) -> str:
    v = a[i]
    if a.dtype.kind == "f":
        return f"{float(v)!r} ({float(v).hex()})"
    return repr(v.item())


def compare(reference: dict, candidate: dict) -> list[Mismatch]:
    """The outputs whose bits differ (dtype, shape or any element); empty when identical."""
    out = []
    for name in sorted(set(reference) | set(candidate)):
        if name not in candidate or name not in reference:
            out.append(Mismatch(name, -1, -1, "present" if name in reference else "missing",
                                "present" if name in candidate else "missing"))
            continue
        a, b = np.ascontiguousarray(reference[name]), np.ascontiguousarray(candidate[name])
        if a.dtype != b.dtype or a.shape != b.shape:
            out.append(Mismatch(name, -1, -1, f"{a.dtype}{a.shape}", f"{b.dtype}{b.shape}"))
            continue
        if a.size == 0:
            continue
        bits = f"u{a.dtype.itemsize}"
        differ = a.reshape(-1).view(bits) != b.reshape(-1).view(bits)
        if differ.any():
            first = int(np.argmax(differ))
            out.append(Mismatch(name, int(differ.sum()), first, _show(a.reshape(-1), first),
                                _show(b.reshape(-1), first)))
    return out


def flip_low_bit(array, index: int) -> None:
    """Flip the lowest bit of one element in place (NumPy or CuPy): a planted 1-bit
    difference, to show a parity check notices one."""
    view = array.reshape(-1).view(f"u{array.dtype.itemsize}")
    view[index] ^= 1


def plant(risk, name: str) -> int:
    """Flip the low bit of the middle element of result ``name`` (``part.field``) on the
    device; returns the index flipped."""
    part, field = name.split(".")
    array = getattr(getattr(risk, part), field)
    index = int(array.size // 2)
    flip_low_bit(array, index)
    return index


# ------------------------------------------------------------------ inputs that must agree


def tiny_book(base: Book, positions: list[tuple[int, int, float, float, float]], n_accounts: int) -> Book:
    """A book on ``base``'s markets and tiers with ``n_accounts`` accounts (ids 1..n, wallet
    1,000) and the given positions: (account index, symbol index, size, entry, isolated
    margin; 0 for cross), in storage order."""
    acc = np.array([p[0] for p in positions], dtype=np.int32)
    pos_start = np.zeros(n_accounts + 1, dtype=np.int64)
    np.cumsum(np.bincount(acc, minlength=n_accounts), out=pos_start[1:])
    col = lambda k, dtype: np.array([p[k] for p in positions], dtype=dtype)  # noqa: E731
    iso_margin = col(4, np.float64)
    return Book(
        symbols=base.symbols, mark_price=base.mark_price, contract_size=base.contract_size,
        tier_start=base.tier_start, tier_floor=base.tier_floor, tier_mmr=base.tier_mmr,
        tier_cum=base.tier_cum, tier_max_leverage=base.tier_max_leverage,
        account_id=np.arange(1, n_accounts + 1, dtype=np.int64), wallet=np.full(n_accounts, 1_000.0),
        pos_start=pos_start, pos_account=acc, pos_symbol=col(1, np.int32), size=col(2, np.float64),
        entry=col(3, np.float64), isolated=(iso_margin > 0).astype(np.int8), isolated_margin=iso_margin,
        leverage=np.zeros(len(positions)))


def tiny_books(base: Book) -> dict[str, Book]:
    """Books of 0, 1 and 2 positions on ``base``'s markets: the edges of every launch."""
    p0 = float(base.mark_price[0])
    return {
        "0 positions": tiny_book(base, [], 1),
        "1 position": tiny_book(base, [(0, 0, 0.5, p0 * 1.02, 0.0)], 1),
        "2 positions": tiny_book(base, [(0, 0, -0.3, p0 * 0.97, 0.0), (1, 0, 0.3, p0 * 1.1, p0 * 0.02)], 2),
    }


_PALETTE = np.array([0.0, -0.0, np.inf, -np.inf, 1.0, np.nextafter(1.0, 2.0), -1.0, 5e-324, -5e-324,
                     1e308, -1e308, 0.5, 0.5, 2.0])
_NAN_BITS = np.array([0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001, 0xFFF0000000000ABC,
                      0x7FFFFFFFFFFFFFFF], dtype=np.uint64)


def adversarial_queue_keys(n: int, n_groups: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(group int32, score float64) for the ADL queue sort: ±0, ±inf, NaNs of every sign
    and payload, subnormals, long runs of ties, and queues left empty."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, 3, n)
    score = np.where(pick == 0, _PALETTE[rng.integers(0, _PALETTE.size, n)],
                     np.round(rng.normal(size=n), 1))
    nan = pick == 2
    nan &= rng.random(n) < 0.2
    score[nan] = _NAN_BITS[rng.integers(0, _NAN_BITS.size, int(nan.sum()))].view(np.float64)
    used = max(1, n_groups - max(1, n_groups // 10))  # the last tenth of the queues stay empty
    group = rng.integers(0, used, n).astype(np.int32)
    return group, score


def queue_order_oracle(group: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The queue order as DESIGN defines it, by a plain lexsort: queue ascending, score
    descending (-0.0 equal to 0.0, NaN after every number), then storage index."""
    nan = np.isnan(score)
    descending = -np.where(nan, 0.0, score)
    return np.lexsort((np.arange(score.size), descending, nan, group))


def stress_cases(quick: bool = False) -> list[dict]:
    """Every policy and every ladder kind, both impact models, one- and multi-step paths,
    each over several screening batches."""
    return [
        dict(venue="binance", policy=["queue", "pro_rata", "capped_pro_rata", "rap"], steps=1, impact=None,
             path=False, fund=2e5),  # ladder: reduce to a target ratio
        dict(venue="hyperliquid", policy=["queue", "rap"], steps=4, impact="sqrt", path=True,
             fund=0.0),  # ladder: slices and backstop
        dict(venue="bitmex", policy=["pro_rata", "capped_pro_rata"], steps=3, impact="linear", path=True,
             fund=5e4),  # no ladder; MM on entry
        dict(venue="dydx", policy=["queue"], steps=2, impact="sqrt", path=False, fund=0.0),  # random queues
        dict(venue="bybit", policy=["queue", "pro_rata"], steps=1, impact=None, path=False, fund=0.0),
    ][: 3 if quick else 5]


def scenario_arrays(book, n: int, steps: int, path: bool, lo=-0.45, hi=0.3) -> tuple[np.ndarray, np.ndarray]:
    """(ids, shocks[scenario, step, symbol]): a grid from lo to hi; a path reaches it in
    ``steps`` steps, odd symbols moving 0.7 as far."""
    level = np.linspace(lo, hi, n)
    symbol_factor = np.where(np.arange(book.n_symbols) % 2 == 0, 1.0, 0.7)
    if path:
        frac = np.arange(1, steps + 1) / steps
        shocks = level[:, None, None] * frac[None, :, None] * symbol_factor[None, None, :]
    else:
        shocks = level[:, None, None] * symbol_factor[None, None, :]
    return np.arange(n, dtype=np.int64), np.ascontiguousarray(shocks)


def run_stress_case(book, case: dict, backend, n_scenarios: int = 10, batch: int = 4):
    """One of ``stress_cases`` on ``book``: ``n_scenarios`` scenarios screened ``batch`` at
    a time, every detail row kept (StressRecords)."""
    from .stress import run_stress

    ids, shocks = scenario_arrays(book, n_scenarios, case["steps"], case["path"])
    return run_stress(book, ids, shocks, venue=case["venue"], backend=backend, insurance_fund=case["fund"],
                      policy=case["policy"], steps=case["steps"], impact=case["impact"], batch=batch,
                      progress=False, detail=True)


class StandInBackend(CpuBackend):
    """The cpu kernels standing in for a GPU where there is none, so the device check's own
    logic runs in CI: one thread (the reference runs on all), the queue sort the gpu backend
    runs (two stable sorts on ``xp``; the cpu backend's own is a radix sort), and a
    simulated device of ``memory_bytes`` whose launches cover ``launch_threads`` indices
    before the grid-stride loops wrap."""

    name = "stand-in"
    # The gpu backend's orchestration, not the cpu backend's native passes: its queue sort,
    # its queue groups on xp, and no one-call ranking (adl_queues sorts, then places).
    queue_order = Backend.queue_order
    queue_groups = Backend.queue_groups
    queue_ranking = Backend.queue_ranking
    add_at = Backend.add_at
    numpy_sum = Backend.numpy_sum

    def __init__(self, memory_bytes: int = 2 << 30, launch_threads: int = 4096):
        super().__init__(threads=1)
        self.memory_bytes = int(memory_bytes)
        self.launch_threads = int(launch_threads)

    def device_memory(self) -> tuple[int, int]:
        return self.memory_bytes, self.memory_bytes


class StrictStandInBackend(StandInBackend):
    """The stand-in with CuPy's rules on its arrays (gpurisk/device_arrays.py): its ``xp``
    returns device arrays that refuse to mix with NumPy arrays or turn into them implicitly,
    its kernels take device arrays only, and ``traffic`` counts the bytes copied each way.
    The kernels and the arithmetic are the cpu backend's, so the bits are the same; what it
    finds is code that would raise on a card."""

    name = "stand-in-strict"

    def __init__(self, memory_bytes: int = 2 << 30, launch_threads: int = 4096):
        from .device_arrays import DeviceArray, DeviceNamespace, DeviceTraffic

        super().__init__(memory_bytes, launch_threads)
        self.traffic = DeviceTraffic()
        self.xp = DeviceNamespace(self.traffic)
        self.array_type = DeviceArray
        self.array_kind = "device (the strict stand-in's)"

    def launch(self, kernel: str, *args) -> None:
        from .device_arrays import DeviceArray

        from . import kernels

        sig = self._check(kernel, args)  # device arrays only, as on the card
        lib = kernels.cpu_library(sig.file)
        lib.gr_set_num_threads(int(self.threads))
        getattr(lib, kernel)(*(a._a.ctypes.data if isinstance(a, DeviceArray) else a for a in args))

    def _check_place(self, kernel: str, name: str, a) -> None:
        pass

    def to_host(self, a) -> np.ndarray:
        from .device_arrays import DeviceArray

        if not isinstance(a, DeviceArray):
            return np.asarray(a)  # host data stays where it is, as cupy.asnumpy leaves it
        self.traffic.to_host += a.nbytes
        return a._a.copy()


@functools.lru_cache(maxsize=None)
def _settle_book() -> Book:
    from .synthetic import synthetic_book

    return synthetic_book(3000, seed=1)


def adl_settle_case(seed: int, n_queues: int, bankrupt_share: float, depth: float):
    """``deleverage.settle_queues``'s arguments for a step's queue ADL on a synthetic book:
    ``n_queues`` (symbol, side) queues owed by a share of their positions (signed rests, some
    whole, some partial), each against the opposite side's other open positions in a shuffled
    order, cut to ``depth`` of them (a shallow queue leaves demand to the fund). Accounts hold
    positions in several symbols, so wallets take credits from several queues; a tenth of the
    positions are isolated. Returns (book, pos, rest, bp, demand_bounds, fronts, price, cs)."""
    book = _settle_book()
    rng = np.random.default_rng(seed)
    group = queue_group(np, book.pos_symbol, book.size)
    queues = np.sort(rng.choice(2 * book.n_symbols, n_queues, replace=False))
    bankrupt = np.isin(group, queues) & (rng.random(book.n_positions) < bankrupt_share)
    parts, fronts = [], []
    for g in queues:
        owed = np.flatnonzero(bankrupt & (group == g))
        parts.append(owed[rng.permutation(owed.size)])
        supply = np.flatnonzero((group == (g ^ 1)) & ~bankrupt)
        fronts.append(supply[rng.permutation(supply.size)][:max(1, int(depth * supply.size))])
    keep = [k for k, p in enumerate(parts) if p.size]
    queues, parts, fronts = queues[keep], [parts[k] for k in keep], [fronts[k] for k in keep]
    pos = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    share = np.where(rng.random(pos.size) < 0.5, 1.0, rng.uniform(0.05, 1.0, pos.size))
    rest = book.size[pos] * share
    mark = book.mark_price[book.pos_symbol[pos]]
    bp = mark * rng.uniform(0.8, 1.2, pos.size)
    symbols = queues // 2
    price = book.mark_price[symbols] * rng.uniform(0.7, 1.3, symbols.size)
    ends = np.cumsum([p.size for p in parts]).astype(np.int64)
    bounds = np.stack([ends - [p.size for p in parts], ends], axis=1) if parts else np.zeros((0, 2), np.int64)
    return book, pos, rest, bp, bounds, fronts, price, book.contract_size[symbols]
