"""The device check: one command that proves, in under 5 minutes on one H100/H200, that the
gpu backend gives the cpu backend's bits everywhere, and measures it.

    python bench/gpu_check.py --out gpu-check           # on a GPU machine: CuPy and NumPy, no Polars
    python bench/gpu_check.py --stand-in --quick        # anywhere: a second cpu backend stands in
    python bench/gpu_check.py --stand-in --strict --quick   # the same under CuPy's array rules

Sections, parity first (a parity failure is fixed before anything else):

  compile   every kernel through NVRTC for the device: registers, stack, spills, max threads per block
  tiny      books of 0, 1 and 2 positions, every venue, three mark sets
  revalue   every output array, seven venues, the book's marks and two shocked mark sets, on a book
            whose position and account loops both wrap at least twice
  chunks    explicit chunk sizes, automatic sizing (pool-held memory counted as free; a GPU
            shared by workers), the resident engine with out= reuse
  sort      the ADL queue sort on adversarial keys (±0, ±inf, NaN payloads, ties, many queues)
            against the cpu radix sort and a lexsort oracle
  stress    every policy and ladder, price impact, multi-step paths, several screening batches:
            every summary field and every detail row
  flags     the stress screen with flag indices past 2^31
  portfolio portfolio margin: revaluation arrays, what-if orders and the screen's portfolio flags,
            groups independent (binance) and joint (okx), every third account tiered
  timing    revaluation at 1M, 10M, 30M positions against the card's copy bandwidth; a stress grid
            split into kernels, sorts, transfers and host work

Each section is skipped, and says so, when too little of --budget is left for it; a section
that overruns is stopped at the limit. Writes gpu-check.json and gpu-check.md into --out
(each replaced atomically) and prints the table.

--stand-in runs everything with StandInBackend (one cpu thread, the gpu backend's queue sort,
a simulated device) against the cpu backend on all threads, at sizes scaled to the simulated
launch width: CI runs it, and --plant shows that a 1-bit difference is caught.

Exit status: 0 every check passed (skipped sections listed), 1 a check failed or a section
broke, 2 cannot run (no GPU without --stand-in, bad arguments).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
import traceback
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpurisk import kernels as K  # noqa: E402
from gpurisk.backend import GPU_BLOCK, Backend, BackendUnavailable, CpuBackend, get_backend  # noqa: E402
from gpurisk.engine import BYTES_PER_POSITION, CHUNK_MEMORY_SHARE, DeviceBook, Engine  # noqa: E402
from gpurisk.liquidation import PositionRisk  # noqa: E402
from gpurisk.margin import AccountMargin, PositionMargin  # noqa: E402
from gpurisk.adl import AdlQueues  # noqa: E402
from gpurisk.parity import (StandInBackend, StrictStandInBackend, adversarial_queue_keys, compare, plant,  # noqa: E402
                            queue_order_oracle, risk_arrays, run_stress_case, scenario_arrays, stress_arrays,
                            stress_cases, tiny_books)
from gpurisk.synthetic import synthetic_book  # noqa: E402
from harness import TimedBackend, Timer, device_bandwidth, kernel_pass_bytes, stages, warm_up  # noqa: E402

VENUES = ("binance", "bybit", "bitmex", "hyperliquid", "dydx", "okx", "gate")
POSITIONS_PER_ACCOUNT = 2.66
PLANTABLE = tuple(f"{part}.{f.name}" for part, cls in (("position_margin", PositionMargin),
                                                        ("account_margin", AccountMargin),
                                                        ("position_risk", PositionRisk), ("adl", AdlQueues))
                  for f in dataclasses.fields(cls))


class SectionTimeout(Exception):
    """A section ran past the check's time limit."""


# ------------------------------------------------------------------ the run


class Check:
    """The backends under comparison, the books shared by sections, and the report."""

    def __init__(self, candidate: Backend, reference: CpuBackend, mode: str, quick: bool, budget: float,
                 plant: str | None):
        self.candidate, self.reference, self.mode, self.quick = candidate, reference, mode, quick
        self.start = time.monotonic()
        self.budget = budget
        self.plant = plant
        self.launch_threads = int(candidate.launch_threads)
        self.sections: list[dict] = []
        self._wrap_book = None
        self._references: dict = {}

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    # -- books shared by sections
    def wrap_book(self):
        """A book whose account loop (and so its position loop) wraps at least twice on
        one launch: 2.5 launch widths of accounts."""
        if self._wrap_book is None:
            n = math.ceil(2.5 * self.launch_threads)
            t = time.monotonic()
            self._wrap_book = synthetic_book(n, seed=7, isolated_share=0.3)
            self.build_seconds_per_account = (time.monotonic() - t) / n
        return self._wrap_book

    def mark_sets(self, book) -> dict[str, np.ndarray]:
        alternate = np.where(np.arange(book.n_symbols) % 2 == 0, 1.25, 0.65)
        return {"book marks": book.mark_price.copy(), "crash -20%": book.mark_price * 0.8,
                "mixed +25%/-35%": book.mark_price * alternate}

    def reference_arrays(self, venue: str, label: str):
        """The cpu backend's results on the wrap book (kept: several sections compare with them)."""
        key = (venue, label)
        if key not in self._references:
            book = self.wrap_book()
            engine = Engine(book, venue=venue, backend=self.reference)
            self._references[key] = risk_arrays(engine.revalue(self.mark_sets(book)[label]))
        return self._references[key]

    def forget_references(self):
        self._references.clear()

    # -- sections
    def run(self, name: str, fn, min_seconds: float) -> None:
        left = self.left()
        entry = {"name": name, "status": "skipped", "seconds": 0.0, "checks": [], "figures": {}, "notes": []}
        self.sections.append(entry)
        if left < min_seconds:
            entry["notes"].append(f"skipped: {left:.0f} s of the budget left, the section needs about {min_seconds:.0f} s")
            _progress(entry)
            return
        t = time.monotonic()
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(max(1, int(left)))
        try:
            fn(self, entry)
            failed = any(c["mismatches"] for c in entry["checks"])
            entry["status"] = "FAIL" if failed else "pass"
        except SectionTimeout:
            entry["status"] = "stopped"
            entry["notes"].append("stopped at the time limit; the checks listed ran to the end")
        except Exception as exc:  # a broken section is reported, the others still run
            entry["status"] = "ERROR"
            entry["notes"].append(f"{type(exc).__name__}: {exc}")
            entry["traceback"] = traceback.format_exc()
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
            self.candidate.synchronize()
            entry["seconds"] = round(time.monotonic() - t, 2)
        _progress(entry)


def _alarm(signum, frame):
    raise SectionTimeout()


def _progress(entry: dict) -> None:
    n = len(entry["checks"])
    bad = sum(1 for c in entry["checks"] if c["mismatches"])
    print(f"[gpu-check] {entry['name']:<8} {entry['status']:<7} {entry['seconds']:7.1f} s  "
          f"{n} comparison(s), {bad} with differences  {'; '.join(entry['notes'])}", flush=True)


def parity(entry: dict, what: str, reference: dict, candidate: dict) -> None:
    mismatches = compare(reference, candidate)
    entry["checks"].append({"what": what, "outputs": len(reference),
                            "elements": int(sum(a.size for a in reference.values())),
                            "mismatches": [str(m) for m in mismatches]})


# ------------------------------------------------------------------ sections


def section_compile(check: Check, entry: dict) -> None:
    """ptxas's figures for every kernel, and on a GPU the loaded function's limits: a kernel
    whose registers leave fewer than GPU_BLOCK threads per block would fail to launch."""
    arch = _arch(check.candidate)
    rows = []
    for fname in K.KERNEL_FILES:
        for kernel, res in K.ptxas_resources(fname, arch).items():
            rows.append({"kernel": kernel, "file": fname, **res, "max_threads_per_block": _max_threads(check, kernel)})
    entry["figures"]["arch"] = arch
    entry["figures"]["kernels"] = rows
    missing = sorted(set(K.signatures()) - {r["kernel"] for r in rows})
    entry["checks"].append({"what": f"every kernel built for {arch}", "outputs": len(rows), "elements": len(rows),
                            "mismatches": [f"{k}: no ptxas report" for k in missing]})
    small = [f"{r['kernel']}: {r['max_threads_per_block']} threads per block, launches use {GPU_BLOCK}"
             for r in rows if r["max_threads_per_block"] is not None and r["max_threads_per_block"] < GPU_BLOCK]
    entry["checks"].append({"what": f"every kernel launches {GPU_BLOCK} threads per block", "outputs": len(rows),
                            "elements": len(rows), "mismatches": small})
    spills = [r["kernel"] for r in rows if r["spill_store_bytes"] or r["spill_load_bytes"]]
    if spills:
        entry["notes"].append(f"register spills in {', '.join(spills)}")


def _arch(backend) -> str:
    if backend.name == "gpu":
        return f"sm_{backend.xp.cuda.Device().compute_capability}"  # CuPy gives e.g. "90"
    return "sm_90"  # the H100/H200 the stand-in stands in for


def _max_threads(check: Check, kernel: str):
    if check.candidate.name != "gpu":
        return None
    from cupy_backends.cuda.api import driver

    function = check.candidate._function(kernel)
    return int(driver.funcGetAttribute(driver.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, function.ptr))


def section_tiny(check: Check, entry: dict) -> None:
    base = synthetic_book(40, seed=3)
    books = dict(tiny_books(base))
    ticked = synthetic_book(2_000, seed=3, isolated_share=0.3)
    ticked.tick_size = np.where(np.arange(ticked.n_symbols) % 3 == 2, 0.0, ticked.mark_price * 1e-4)
    books["2,000 accounts, liquidation prices rounded to ticks"] = ticked
    for name, book in books.items():
        for venue in VENUES:
            for label, marks in check.mark_sets(book).items():
                ref = risk_arrays(Engine(book, venue=venue, backend=check.reference).revalue(marks))
                got = risk_arrays(Engine(book, venue=venue, backend=check.candidate).revalue(marks))
                parity(entry, f"{name} / {venue} / {label}", ref, got)


def section_revalue(check: Check, entry: dict) -> None:
    book = check.wrap_book()
    threads = check.launch_threads
    entry["figures"].update(positions=book.n_positions, accounts=book.n_accounts, launch_threads=threads,
                            account_loop_passes=round(book.n_accounts / threads, 2),
                            position_loop_passes=round(book.n_positions / threads, 2))
    if book.n_accounts <= 2 * threads:
        entry["checks"].append({"what": "the account loop wraps at least twice", "outputs": 1, "elements": 1,
                                "mismatches": [f"{book.n_accounts} accounts for {threads} threads"]})
    planted = check.plant
    for venue in VENUES:
        engine = Engine(book, venue=venue, backend=check.candidate)
        for label, marks in check.mark_sets(book).items():
            risk = engine.revalue(marks)
            if planted:
                index = plant(risk, planted)
                entry["notes"].append(f"planted: low bit of {planted}[{index}] flipped ({venue}, {label})")
                planted = None
            reference = check.reference_arrays(venue, label) if venue == "binance" else _once(check, book, venue, marks)
            parity(entry, f"{venue} / {label}", reference, risk_arrays(risk))


def _once(check: Check, book, venue: str, marks):
    return risk_arrays(Engine(book, venue=venue, backend=check.reference).revalue(marks))


def section_chunks(check: Check, entry: dict) -> None:
    book = check.wrap_book()
    marks = check.mark_sets(book)
    reference = check.reference_arrays("binance", "book marks")
    n = book.n_positions
    for chunk in (n // 3 + 1, n // 7 + 1):
        engine = Engine(book, venue="binance", backend=check.candidate, chunk_positions=chunk)
        parity(entry, f"chunks of {chunk:,} positions ({len(engine.chunks)} chunks)", reference,
               risk_arrays(engine.revalue()))
    small = synthetic_book(3_000, seed=4, isolated_share=0.3)
    small_ref = risk_arrays(Engine(small, venue="bitmex", backend=check.reference).revalue())
    for chunk in (1_000, 7):
        engine = Engine(small, venue="bitmex", backend=check.candidate, chunk_positions=chunk)
        parity(entry, f"bitmex, {small.n_positions:,} positions in chunks of {chunk} ({len(engine.chunks)} chunks)",
               small_ref, risk_arrays(engine.revalue()))

    # Automatic sizing. Memory the pool holds unused is free: a book that fits is one pass
    # even after the pool has kept a freed block so large that the driver alone reports
    # too little free for the book.
    free, total = check.candidate.device_memory()
    entry["figures"]["device_memory_free_bytes"] = free
    if check.candidate.name == "gpu":
        cp = check.candidate.xp
        pool = cp.get_default_memory_pool()
        need = n * BYTES_PER_POSITION / CHUNK_MEMORY_SHARE
        block = cp.empty(max(0, int(free - need / 2)) // 8, dtype=cp.float64)
        del block  # back to the pool, not to the driver
        raw_free = int(cp.cuda.runtime.memGetInfo()[0])
        entry["figures"].update(raw_free_bytes_with_pool_block=raw_free, pool_free_bytes=int(pool.free_bytes()))
    free_now = check.candidate.device_memory()[0]
    engine = Engine(book, venue="binance", backend=check.candidate)
    if n * BYTES_PER_POSITION <= free * CHUNK_MEMORY_SHARE:  # fits the memory free before the block
        entry["checks"].append({"what": "automatic sizing keeps a book that fits in one pass", "outputs": 1,
                                "elements": 1, "mismatches": [] if len(engine.chunks) == 1 else
                                [f"split into {len(engine.chunks)} chunks with {free_now:,} bytes free"]})
    else:
        entry["notes"].append(f"the book needs more than the {free_now:,} bytes free: "
                              f"{len(engine.chunks)} automatic chunks")
    if check.candidate.name == "gpu":
        check.candidate.xp.get_default_memory_pool().free_all_blocks()
    del engine
    free = check.candidate.device_memory()[0]
    workers = max(2, int(free * CHUNK_MEMORY_SHARE // (BYTES_PER_POSITION * math.ceil(n / 3))))
    engine = Engine(book, venue="binance", backend=check.candidate, workers_per_gpu=workers)
    entry["figures"]["shared_gpu"] = {"workers_per_gpu": workers, "chunks": len(engine.chunks)}
    chunked = len(engine.chunks) >= 2
    entry["checks"].append({"what": f"a GPU shared by {workers} workers chunks the book", "outputs": 1, "elements": 1,
                            "mismatches": [] if chunked else [f"{len(engine.chunks)} chunk(s)"]})
    parity(entry, f"automatic chunks, {workers} workers per GPU ({len(engine.chunks)} chunks)", reference,
           risk_arrays(engine.revalue()))
    del engine

    # The resident engine, revalued in a loop into the same buffers.
    engine = Engine(book, venue="binance", backend=check.candidate)
    first = engine.revalue(marks["crash -20%"])
    buffers = {name: id(getattr(getattr(first, p), f)) for name in ("position_risk.liq_price", "adl.order")
               for p, f in [name.split(".")]}
    for label in ("book marks", "mixed +25%/-35%"):
        again = engine.revalue(marks[label], out=first)
        moved = [name for name, ident in buffers.items()
                 if id(getattr(getattr(again, name.split(".")[0]), name.split(".")[1])) != ident]
        entry["checks"].append({"what": f"out= reuses the result buffers ({label})", "outputs": len(buffers),
                                "elements": len(buffers), "mismatches": [f"{m}: a new array" for m in moved]})
        parity(entry, f"resident engine, out= reuse, {label}", check.reference_arrays("binance", label),
               risk_arrays(again))
        first = again


def section_sort(check: Check, entry: dict) -> None:
    n = 3 * check.launch_threads
    cand, ref = check.candidate, check.reference
    for n_groups, seed in ((20, 1), (40_000, 2)):  # int16 and int32 queue ids in the sort
        group, score = adversarial_queue_keys(n, n_groups, seed)
        oracle = {"order": queue_order_oracle(group, score)}
        got = {"order": cand.to_host(cand.queue_order(cand.asarray(group), cand.asarray(score), n_groups))}
        parity(entry, f"{n:,} adversarial keys, {n_groups:,} queues: {cand.name} vs lexsort oracle", oracle, got)
        parity(entry, f"{n:,} adversarial keys, {n_groups:,} queues: cpu radix sort vs lexsort oracle", oracle,
               {"order": ref.queue_order(group, score, n_groups)})


def section_monitor(check: Check, entry: dict) -> None:
    """The live monitor's kernels (kernels/adl.cu): the ADL head candidates (heads, counts,
    |size| per queue, some positions of size 0 as a layout with free rows has) and the
    uncovered deficit's block sums, candidate against reference."""
    from gpurisk.adl import DEFICIT_BLOCK, queue_heads

    book = check.wrap_book()
    ref_risk = Engine(book, backend=check.reference).revalue(rank=False)
    size = book.size.copy()
    size[::17] = 0.0  # free rows
    score = np.array(ref_risk.adl.score)
    score[::29] = np.nan
    score[1::31] = 0.0  # ties
    out = {}
    for name, be in (("reference", check.reference), ("candidate", check.candidate)):
        found = queue_heads(be, be.asarray(book.pos_symbol), be.asarray(size), be.asarray(score),
                            2 * book.n_symbols, 5)
        am, pr = ref_risk.account_margin, ref_risk.position_risk
        n_acc, n_pos = am.equity.size, pr.equity.size
        acc_blocks = -(-n_acc // DEFICIT_BLOCK)
        n_blocks = acc_blocks + -(-n_pos // DEFICIT_BLOCK)
        totals = be.xp.empty(n_blocks, dtype=be.xp.float64)
        be.launch("uncovered_blocks", n_blocks, acc_blocks, DEFICIT_BLOCK, n_acc, be.asarray(am.equity),
                  be.asarray(am.n_cross), n_pos, be.asarray(pr.equity), be.asarray(book.isolated), totals)
        out[name] = {"heads": np.array([i for h in found.heads for i in h], dtype=np.int64),
                     "head_lengths": np.array([len(h) for h in found.heads], dtype=np.int64),
                     "count": np.asarray(found.count), "abs_size": np.asarray(found.abs_size),
                     "deficit_blocks": be.to_host(totals)}
    parity(entry, f"{book.n_positions:,} positions: ADL heads and deficit blocks", out["reference"],
           out["candidate"])


def section_stress(check: Check, entry: dict) -> None:
    book = synthetic_book(1_500 if check.mode == "stand-in" else 20_000, seed=9, isolated_share=0.3)
    n_scenarios, batch = (6, 4) if check.quick else (10, 4)
    entry["figures"].update(positions=book.n_positions, scenarios=n_scenarios, screening_batch=batch)
    for case in stress_cases(check.quick):
        ref = stress_arrays(run_stress_case(book, case, check.reference, n_scenarios, batch))
        got = stress_arrays(run_stress_case(book, case, check.candidate, n_scenarios, batch))
        rows = {k.split(".")[0]: int(v.size) for k, v in ref.items()}
        what = (f"{case['venue']} ({'/'.join(case['policy'])}, {case['steps']} step(s), impact {case['impact']}): "
                + ", ".join(f"{rows[t]:,} {t} rows" for t in ("summary", "liquidations", "adl_fills", "haircuts")))
        parity(entry, what, ref, got)


def section_flags(check: Check, entry: dict) -> None:
    book = check.wrap_book()
    past = 2**31 // book.n_accounts + 2  # scenarios for the last flag index to pass 2^31
    n_scenarios = past if check.mode == "gpu" else min(past, 16)
    rng = np.random.default_rng(5)
    marks = np.ascontiguousarray(book.mark_price[None, :] * (1 + rng.uniform(-0.6, 0.6, (n_scenarios, book.n_symbols))))
    last = n_scenarios * book.n_accounts - 1
    entry["figures"].update(scenarios=n_scenarios, accounts=book.n_accounts, last_flag_index=last,
                            past_2_31=last >= 2**31)
    if last < 2**31:
        entry["notes"].append(f"reduced for the {check.mode}: last flag index {last:,} (< 2^31)")
    flags = {}
    from gpurisk.tier_rules import venue_tiers
    from gpurisk.venue import get_venue

    venue = get_venue("okx")  # every convention the screen follows: close fee, contract tiers, whole rate
    for name, b in (("reference", check.reference), ("candidate", check.candidate)):
        d = DeviceBook(book, b)
        out = b.xp.empty(n_scenarios * book.n_accounts, dtype=b.xp.int8)
        b.launch("stress_flags", book.n_accounts, n_scenarios, book.n_symbols, d.pos_start, d.pos_symbol, d.size,
                 d.entry, d.isolated, d.isolated_margin, d.wallet, b.asarray(marks.ravel()), d.contract_size,
                 d.tier_start, d.tier_floor, d.tier_mmr, venue_tiers(b, d, venue).cum, int(venue.mm_base == "entry"),
                 int(venue.tier_basis == "contracts"), float(venue.close_fee_rate),
                 float(venue.margin_call_ratio), float(venue.liquidation_ratio), d.inverse, out)
        flags[name] = {"flags": b.to_host(out)}
        del d, out
    entry["figures"]["flagged_share"] = float(flags["reference"]["flags"].mean())
    parity(entry, f"stress_flags, {n_scenarios} scenarios x {book.n_accounts:,} accounts", flags["reference"],
           flags["candidate"])


def section_portfolio(check: Check, entry: dict) -> None:
    """Portfolio margin (kernels/portfolio.cu) on a book whose account loop wraps, every third
    account tiered: the revaluation's arrays (the portfolio figures among them), what-if orders,
    and the stress screen's portfolio flags, under groups moving independently (binance) and
    jointly (okx: close fee, contract tiers)."""
    from gpurisk.ladder import get_ladder
    from gpurisk.portfolio import PortfolioModel
    from gpurisk.screen import account_flags
    from gpurisk.stress_context import StressContext
    from gpurisk.venue import get_venue
    from gpurisk.whatif import what_if_arrays

    book = check.wrap_book()
    book = dataclasses.replace(book, margin_model=np.where(np.arange(book.n_accounts) % 3 == 0, 0, -1).astype(np.int8),
                               meta={})
    n, g = book.n_symbols, min(book.n_symbols, 3)
    model = PortfolioModel(symbols=tuple(book.symbols), symbol_group=tuple(k % g for k in range(n)),
                           groups=tuple(f"G{k}" for k in range(g)), price_range=(0.15,) * g, shocks=(33,) * g,
                           offset_rate=(0.01,) * g, liquidity_threshold=(250_000.0,) * g, liquidity_rate=(0.02,) * g)
    rng = np.random.default_rng(11)
    k = min(book.n_positions, 100_000)
    pick = rng.integers(0, book.n_positions, k)
    orders = (book.pos_account[pick], book.pos_symbol[pick], book.size[pick] * rng.choice([0.5, -0.4, -1.6], k),
              book.mark_price[book.pos_symbol[pick]] * 1.01, book.isolated[pick])
    shocks = np.linspace(-0.3, 0.3, 4)[:, None] * np.ones(n)
    entry["figures"].update(positions=book.n_positions, accounts=book.n_accounts, orders=k, scenarios=len(shocks))
    for name, move in (("binance", "independent"), ("okx", "joint")):
        venue = get_venue(name).with_(margin_model="portfolio", portfolio=dataclasses.replace(model, groups_move=move))
        results = {}
        for side, b in (("reference", check.reference), ("candidate", check.candidate)):
            engine = Engine(book, venue=venue, backend=b)
            arrays = risk_arrays(engine.revalue())
            arrays.update({f"what_if.{f}": np.asarray(v) for f, v in vars(what_if_arrays(engine, *orders)).items()})
            ctx = StressContext(book, venue, b, get_ladder(None, venue.name), None, 0.0)
            arrays["screen.flags"] = b.to_host(account_flags(ctx, shocks)).ravel()
            results[side] = arrays
            del engine, ctx
        parity(entry, f"portfolio margin, {name} ({move} groups): revaluation, {k:,} what-if orders, screen",
               results["reference"], results["candidate"])


def section_timing(check: Check, entry: dict) -> None:
    b = check.candidate
    gpu = b.name == "gpu"
    sizes = ([1e6, 1e7, 3e7] if gpu else [1e4] if check.quick else [1e4, 1e5])
    repeats = 20 if gpu else 5
    warm_up(b)
    bandwidth = device_bandwidth(b, nbytes=(1 << 30) if gpu else (64 << 20))
    entry["figures"]["copy_bandwidth_GBps"] = round(bandwidth / 1e9, 1)
    rows = entry["figures"]["revalue"] = []
    reserve = 45.0 if gpu else 5.0  # for the stress grid after this
    check.wrap_book()  # measures how fast books build
    build = check.build_seconds_per_account

    def accounts(size):
        return math.ceil(size / POSITIONS_PER_ACCOUNT)

    # One book of the largest size whose building and timing fit; smaller sizes are slices.
    per_position = 1e-6 if gpu else 1e-5  # timing work per position, refined as sizes run
    fit = [s for s in sizes if accounts(s) * build * 1.3 + per_position * s * 3 < check.left() - reserve]
    source = synthetic_book(accounts(max(fit)), seed=0) if fit else None
    for size in sizes:
        needed = per_position * size * 1.5
        if size not in fit or needed > check.left() - reserve:
            entry["notes"].append(f"{size:,.0f} positions skipped: not enough of the budget left")
            continue
        t0 = time.monotonic()
        book = source.slice_accounts(0, min(accounts(size), source.n_accounts))
        rows.append(_time_revalue(b, book, repeats, bandwidth))
        per_position = (time.monotonic() - t0) / size
        print(f"[gpu-check]   timing {book.n_positions:,} positions: {rows[-1]}", flush=True)
    del source
    entry["figures"]["stress_grid"] = _time_stress(check)


def _time_revalue(b, book, repeats: int, bandwidth: float) -> dict:
    gpu = b.name == "gpu"
    pool = b.xp.get_default_memory_pool() if gpu else None
    if gpu:
        pool.free_all_blocks()
    before = pool.used_bytes() if gpu else 0
    t = time.perf_counter()
    engine = Engine(book, venue="binance", backend=b)
    b.synchronize()
    upload = time.perf_counter() - t
    resident = (pool.used_bytes() - before) if gpu else None
    risk = engine.revalue()
    engine.revalue(out=risk)
    timer = Timer(b)
    kernels, ranking = stages(engine, risk)
    dev = engine.device
    kernel_s = statistics.median(timer(kernels, repeats))
    sort_s = statistics.median(timer(lambda: b.queue_order(dev.group, risk.adl.score, dev.n_groups), repeats))
    ranking_s = statistics.median(timer(ranking, repeats))
    e2e_s = statistics.median(timer(lambda: engine.revalue(out=risk), repeats))
    nbytes = kernel_pass_bytes(engine, risk)
    floor = nbytes / bandwidth
    peak = (pool.total_bytes() - before) if gpu else None
    n = book.n_positions
    return {"positions": n, "accounts": book.n_accounts, "upload_ms": round(upload * 1e3, 2),
            "kernel_pass_ms": round(kernel_s * 1e3, 3), "floor_ms": round(floor * 1e3, 3),
            "kernel_over_floor": round(kernel_s / floor, 2), "sort_ms": round(sort_s * 1e3, 3),
            "ranking_ms": round(ranking_s * 1e3, 3), "end_to_end_ms": round(e2e_s * 1e3, 3),
            "resident_bytes_per_position": round(resident / n, 1) if resident is not None else None,
            "peak_bytes_per_position": round(peak / n, 1) if peak is not None else None}


def _time_stress(check: Check) -> dict:
    from gpurisk.stress import run_stress

    gpu = check.candidate.name == "gpu"
    n_accounts, n_scenarios = (376_000, 64) if gpu else (3_000, 8)
    book = synthetic_book(n_accounts, seed=0)
    ids, shocks = scenario_arrays(book, n_scenarios, 1, False, lo=-0.5, hi=0.5)
    timed = TimedBackend(check.candidate)
    t = time.perf_counter()
    records = run_stress(book, ids, shocks, venue="binance", backend=timed, policy="queue", progress=False,
                         detail=False)
    total = time.perf_counter() - t
    device = sum(timed.seconds.values())
    live = int(n_scenarios - records.timings.get("screened_quiet", 0))
    return {"positions": book.n_positions, "scenarios": n_scenarios, "scenarios_run_in_full": live,
            "policy": "queue", "seconds": round(total, 3), **{f"{k}_s": round(v, 3) for k, v in timed.seconds.items()},
            "host_s": round(total - device, 3), "host_share": round((total - device) / total, 3),
            "bytes_to_device": timed.bytes["to_device"], "bytes_to_host": timed.bytes["to_host"]}


SECTIONS = [  # name, function, seconds it needs at least on a GPU / on the stand-in
    ("compile", section_compile, 10, 10),
    ("tiny", section_tiny, 10, 5),
    ("revalue", section_revalue, 60, 5),
    ("chunks", section_chunks, 45, 5),
    ("sort", section_sort, 20, 2),
    ("monitor", section_monitor, 10, 2),
    ("stress", section_stress, 40, 5),
    ("flags", section_flags, 25, 2),
    ("portfolio", section_portfolio, 40, 5),
    ("timing", section_timing, 60, 5),
]


# ------------------------------------------------------------------ report


def device_facts(check: Check) -> dict:
    b = check.candidate
    facts = {"backend": b.name, "host": platform.node(), "cpu_threads": os.cpu_count(),
             "python": platform.python_version(), "numpy": np.__version__}
    if b.name == "gpu":
        cp = b.xp
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        name = props["name"]
        facts.update(device=name.decode() if isinstance(name, bytes) else str(name),
                     compute_capability=str(cp.cuda.Device().compute_capability),
                     multiprocessors=int(props["multiProcessorCount"]), memory_bytes=int(props["totalGlobalMem"]),
                     driver=cp.cuda.runtime.driverGetVersion(), runtime=cp.cuda.runtime.runtimeGetVersion(),
                     cupy=cp.__version__)
    else:
        facts.update(device=f"stand-in: cpu kernels, 1 thread, simulated {b.memory_bytes / 2**30:.1f} GiB device")
    facts["launch_threads"] = check.launch_threads
    return facts


def render(report: dict) -> str:
    d = report["device"]
    lines = [f"# gpurisk device check: {d['device']}", "",
             f"{report['date']}, mode {report['mode']}, {report['elapsed_s']:.0f} s of a {report['budget_s']:.0f} s "
             f"budget; run {report['run_id']}. **{'ALL CHECKS PASSED' if report['passed'] else 'FAILED'}**", "",
             "| section | status | time | comparisons | with differences | notes |", "|---|---|---|---|---|---|"]
    for s in report["sections"]:
        bad = sum(1 for c in s["checks"] if c["mismatches"])
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} s | {len(s['checks'])} | {bad} | "
                     f"{'; '.join(s['notes'])} |")
    failures = [(s["name"], c) for s in report["sections"] for c in s["checks"] if c["mismatches"]]
    errors = [s for s in report["sections"] if s["status"] == "ERROR"]
    if failures or errors:
        lines += ["", "## What differs"]
        for name, c in failures:
            lines.append(f"- **{name} / {c['what']}**")
            lines += [f"  - {m}" for m in c["mismatches"][:12]]
        for s in errors:
            lines += [f"- **{s['name']}** broke:", "```", s.get("traceback", "").rstrip(), "```"]
    by_name = {s["name"]: s for s in report["sections"]}
    kernels = by_name.get("compile", {}).get("figures", {}).get("kernels")
    if kernels:
        lines += ["", f"## Kernels (NVRTC, {by_name['compile']['figures']['arch']})", "",
                  "| kernel | file | registers | stack | spill stores | spill loads | max threads/block |",
                  "|---|---|---|---|---|---|---|"]
        for r in kernels:
            lines.append(f"| {r['kernel']} | {r['file']} | {r['registers']} | {r['stack_bytes']} B | "
                         f"{r['spill_store_bytes']} B | {r['spill_load_bytes']} B | {r['max_threads_per_block'] or 'n/a'} |")
    timing = by_name.get("timing", {}).get("figures", {})
    if timing.get("revalue"):
        lines += ["", f"## Revaluation (copy bandwidth {timing['copy_bandwidth_GBps']} GB/s, medians)", "",
                  "| positions | upload | kernel pass | floor | kernel/floor | sort | ranking | end to end | "
                  "resident B/pos | peak B/pos |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in timing["revalue"]:
            lines.append(f"| {r['positions']:,} | {r['upload_ms']} ms | {r['kernel_pass_ms']} ms | {r['floor_ms']} ms | "
                         f"{r['kernel_over_floor']}x | {r['sort_ms']} ms | {r['ranking_ms']} ms | {r['end_to_end_ms']} ms | "
                         f"{r['resident_bytes_per_position']} | {r['peak_bytes_per_position']} |")
    grid = timing.get("stress_grid")
    if grid:
        lines += ["", "## Stress grid", "",
                  f"{grid['scenarios']} scenarios ({grid['scenarios_run_in_full']} run in full) over "
                  f"{grid['positions']:,} positions, policy {grid['policy']}, summary only: {grid['seconds']} s = "
                  f"kernels {grid['kernels_s']} s + sorts {grid['sorts_s']} s + to device {grid['to_device_s']} s "
                  f"({grid['bytes_to_device'] / 1e9:.2f} GB) + to host {grid['to_host_s']} s "
                  f"({grid['bytes_to_host'] / 1e9:.2f} GB) + host {grid['host_s']} s ({grid['host_share']:.0%})."]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ------------------------------------------------------------------ command line


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu-check", help="folder for gpu-check.json and gpu-check.md")
    ap.add_argument("--budget", type=float, default=285.0, help="seconds for the whole check (default 285)")
    ap.add_argument("--stand-in", action="store_true", help="no GPU: a second cpu backend stands in for it")
    ap.add_argument("--strict", action="store_true",
                    help="--stand-in: arrays that keep CuPy's rules (what would raise on a card raises here)")
    ap.add_argument("--quick", action="store_true", help="the smallest sizes (CI)")
    ap.add_argument("--launch-threads", type=int, default=4096,
                    help="--stand-in: the simulated launch width the sizes follow (an H100/H200's is 1081344)")
    ap.add_argument("--only", nargs="+", choices=[s[0] for s in SECTIONS], help="run these sections only")
    ap.add_argument("--plant", choices=PLANTABLE, metavar="OUTPUT",
                    help="flip the low bit of one element of this revaluation output on the candidate backend "
                         "(e.g. position_risk.liq_price), to show the check catches it")
    args = ap.parse_args(argv)
    if not args.budget > 0:
        ap.error("--budget must be > 0")
    try:
        # The simulated device holds the books sized from its launch width.
        stand_in = StrictStandInBackend if args.strict else StandInBackend
        candidate = (stand_in(memory_bytes=max(2 << 30, args.launch_threads * 20_000),
                              launch_threads=args.launch_threads) if args.stand_in else get_backend("gpu"))
        reference = CpuBackend(threads=os.cpu_count() or 1)
        K.cpu_library("margin.cu")  # the reference needs a C++ compiler: say so now, not mid-check
    except (BackendUnavailable, K.KernelBuildError) as exc:
        print(f"gpu_check: {exc}\n(run with --stand-in to check the check itself without a GPU)", file=sys.stderr)
        return 2
    mode = "stand-in" if args.stand_in else "gpu"
    check = Check(candidate, reference, mode, args.quick, args.budget, args.plant)
    print(f"[gpu-check] {mode}: {device_facts(check)['device']}, budget {args.budget:.0f} s", flush=True)
    for name, fn, gpu_s, standin_s in SECTIONS:
        if args.only and name not in args.only:
            continue
        check.run(name, fn, gpu_s if mode == "gpu" else standin_s)
        if name == "chunks":
            check.forget_references()
    report = {"run_id": uuid.uuid4().hex[:12], "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "mode": mode,
              "budget_s": args.budget, "elapsed_s": round(time.monotonic() - check.start, 1),
              "device": device_facts(check), "planted": args.plant, "sections": check.sections,
              "passed": all(s["status"] in ("pass", "skipped") for s in check.sections)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "gpu-check.json", json.dumps(report, indent=1, default=str))
    text = render(report)
    write_atomically(out / "gpu-check.md", text)
    print(text)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
