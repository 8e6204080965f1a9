"""GPU parity: the gpu backend gives the cpu backend's bits, output by output.

Every test runs three times: against the real GPU (skipped without one) and against two
stand-ins, its CPU twins that run in CI: gpurisk.parity.StandInBackend (the cpu kernels on one
thread, the gpu backend's orchestration, a simulated device) and StrictStandInBackend (the
same with CuPy's rules on its arrays: a host array mixed with device arrays, or a device
array turned into a NumPy array implicitly, raises as it would on a card). The reference is the cpu backend on every
thread. The module needs only NumPy (and CuPy for the GPU): no Polars, so it runs on a bare
GPU machine (test_gpu_check.py proves it). bench/gpu_check.py runs the same checks at sizes
that wrap every launch, and times them.
"""

import array
import os

import numpy as np
import pytest

from gpurisk import Engine, synthetic_book
from gpurisk.backend import BackendUnavailable, CpuBackend, GpuBackend, get_backend, gpu_available
from gpurisk.engine import auto_chunk_positions
from gpurisk.kernels import signatures
from gpurisk.parity import (StandInBackend, StrictStandInBackend, adversarial_queue_keys, compare, queue_order_oracle,
                            risk_arrays, run_stress_case, stress_arrays, stress_cases, tiny_books)

VENUES = ["binance", "bybit", "bitmex", "hyperliquid", "dydx", "okx", "gate"]
REFERENCE = CpuBackend(threads=os.cpu_count() or 1)


@pytest.fixture(params=["gpu", "stand-in", "stand-in-strict"], scope="module")
def candidate(request):
    if request.param == "gpu":
        if not gpu_available():
            pytest.skip("needs a CUDA GPU (CuPy reports none); the stand-in twins run instead")
        return get_backend("gpu")
    return StrictStandInBackend() if request.param == "stand-in-strict" else StandInBackend()


def sized(candidate, gpu: int, stand_in: int) -> int:
    return gpu if candidate.name == "gpu" else stand_in


def assert_same_bits(reference: dict, candidate: dict):
    mismatches = compare(reference, candidate)
    assert not mismatches, "\n".join(map(str, mismatches))


def revalued(book, venue, backend, marks=None, **engine_options) -> dict:
    return risk_arrays(Engine(book, venue=venue, backend=backend, **engine_options).revalue(marks))


def mark_sets(book):
    alternate = np.where(np.arange(book.n_symbols) % 2 == 0, 1.25, 0.65)
    return [None, book.mark_price * 0.8, book.mark_price * alternate]


def test_gpu_backend_without_gpu_says_what_to_do():
    if gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(BackendUnavailable, match="backend='cpu'"):
        GpuBackend()


@pytest.mark.parametrize("venue", VENUES)
def test_every_output_is_bit_identical(candidate, venue):
    for n_accounts in (1, sized(candidate, 3_000, 500), sized(candidate, 200_000, 4_000)):
        book = synthetic_book(n_accounts, seed=n_accounts, isolated_share=0.3)
        for marks in mark_sets(book):
            assert_same_bits(revalued(book, venue, REFERENCE, marks), revalued(book, venue, candidate, marks))


def test_liquidation_prices_rounded_to_ticks(candidate):
    book = synthetic_book(sized(candidate, 20_000, 1_500), seed=8, isolated_share=0.3)
    book.tick_size = np.where(np.arange(book.n_symbols) % 3 == 2, 0.0, book.mark_price * 1e-4)  # some untick'd
    for venue in VENUES:
        for marks in mark_sets(book):
            ref = revalued(book, venue, REFERENCE, marks)
            assert_same_bits(ref, revalued(book, venue, candidate, marks))
    lp = ref["position_risk.liq_price"]
    ticked = np.isfinite(lp) & (book.tick_size[book.pos_symbol] > 0)
    assert ticked.sum() > 100
    steps = lp[ticked] / book.tick_size[book.pos_symbol][ticked]
    assert np.allclose(steps, np.round(steps), rtol=0, atol=1e-6)  # the rounding ran


def test_books_of_zero_one_and_two_positions(candidate):
    for name, book in tiny_books(synthetic_book(40, seed=3)).items():
        for venue in VENUES:
            for marks in mark_sets(book):
                assert_same_bits(revalued(book, venue, REFERENCE, marks), revalued(book, venue, candidate, marks))


@pytest.mark.parametrize("n_groups", [20, 40_000])  # int16 and int32 queue ids
def test_queue_sort_on_adversarial_keys_is_the_documented_order(candidate, n_groups):
    group, score = adversarial_queue_keys(sized(candidate, 3_000_000, 50_000), n_groups, seed=n_groups)
    oracle = queue_order_oracle(group, score)
    got = candidate.to_host(candidate.queue_order(candidate.asarray(group), candidate.asarray(score), n_groups))
    np.testing.assert_array_equal(got, oracle)
    np.testing.assert_array_equal(REFERENCE.queue_order(group, score, n_groups), oracle)


def test_ties_in_adl_scores_break_by_account_id(candidate):
    book = synthetic_book(2_000, seed=5)
    for venue, min_ties in (("binance_adl_2019", 1_000), ("bybit", 5)):  # zero scores: runs of ties (±0 among them)
        ref = revalued(book, venue, REFERENCE)
        got = revalued(book, venue, candidate)
        assert (ref["adl.score"] == 0).sum() >= min_ties
        np.testing.assert_array_equal(ref["adl.order"], got["adl.order"])
        zero = ref["adl.order"][ref["adl.score"][ref["adl.order"]] == 0]  # queue order of the tied
        group = book.pos_symbol[zero] * 2 + (book.size[zero] < 0)
        for g in np.unique(group):
            ids = book.account_id[book.pos_account[zero[group == g]]]
            assert np.all(np.diff(ids) >= 0)


def test_chunks_explicit_and_automatic_are_bit_identical_to_one_pass(candidate):
    book = synthetic_book(sized(candidate, 60_000, 3_000), seed=4, isolated_share=0.3)
    whole = revalued(book, "bitmex", REFERENCE)
    for chunk in (book.n_positions // 3 + 1, 7_777, 5):
        assert_same_bits(whole, revalued(book, "bitmex", candidate, chunk_positions=chunk))
    free = candidate.device_memory()[0]
    workers = int(free * 0.7 // (320 * (book.n_positions // 3 + 1)))  # a share that fits a third of the book
    engine = Engine(book, venue="bitmex", backend=candidate, workers_per_gpu=workers)
    assert 3 <= len(engine.chunks) <= 5
    assert_same_bits(whole, risk_arrays(engine.revalue()))
    assert len(Engine(book, venue="bitmex", backend=candidate).chunks) == 1


def test_device_memory_counts_what_the_pool_holds_unused(candidate):
    if candidate.name != "gpu":
        free, total = candidate.device_memory()
        assert free == total == candidate.memory_bytes
        return
    cp = candidate.xp
    pool = cp.get_default_memory_pool()
    block = cp.empty(int(cp.cuda.runtime.memGetInfo()[0] * 0.5) // 8)
    del block  # kept by the pool
    raw = int(cp.cuda.runtime.memGetInfo()[0])
    assert pool.free_bytes() > 0
    assert candidate.device_memory()[0] == raw + pool.free_bytes()
    book = synthetic_book(20_000, seed=1)
    assert auto_chunk_positions(book.n_positions, candidate.device_memory()[0]) is None
    pool.free_all_blocks()


def test_resident_engine_reuses_its_buffers_with_the_same_bits(candidate):
    book = synthetic_book(sized(candidate, 50_000, 2_000), seed=6)
    engine = Engine(book, backend=candidate)
    first = engine.device.size
    risk = engine.revalue({"BTCUSDT": 50_000.0})
    def buffers(r):
        return [r.position_risk.liq_price, r.account_margin.equity, r.adl.score, r.adl.rank, r.adl.order]

    kept = buffers(risk)
    for marks in ({"BTCUSDT": 45_000.0}, None, {"ETHUSDT": 1_900.0, "SOLUSDT": 170.0}):
        again = engine.revalue(marks, out=risk)
        assert all(a is b for a, b in zip(buffers(again), kept))
        assert engine.device.size is first  # still the uploaded table
        assert_same_bits(revalued(book, "binance", REFERENCE, marks), risk_arrays(again))
        risk = again


@pytest.mark.parametrize("case", stress_cases(), ids=lambda c: c["venue"])
def test_stress_every_summary_field_and_detail_row(candidate, case):
    book = synthetic_book(sized(candidate, 10_000, 1_200), seed=9, isolated_share=0.3)
    ref = stress_arrays(run_stress_case(book, case, REFERENCE))
    got = stress_arrays(run_stress_case(book, case, candidate))
    assert ref["summary.accounts_liquidated"].sum() > 0 and ref["liquidations.qty"].size > 0
    assert_same_bits(ref, got)


@pytest.mark.parametrize("seed", [3, 17])
def test_queue_adl_money_moves_of_many_queues(candidate, seed):
    """settle_queues (adl_merge + adl_settle) on the candidate moves the ledger's money to
    the bits of the cpu backend: sizes, wallets, isolated margins, the fund, the external
    account, the per-queue totals and every fill."""
    from gpurisk.deleverage import settle_queues
    from gpurisk.ledger import Ledger
    from gpurisk.parity import adl_settle_case

    book, pos, rest, bp, bounds, fronts, price, cs = adl_settle_case(seed, 8, 0.3, 0.2)
    results = []
    for backend in (REFERENCE, candidate):
        ledger = Ledger(book, fund=1e5)
        settled = settle_queues(backend, ledger, pos, rest, bp, bounds, fronts, price, cs)
        arrays = {name: getattr(ledger, name) for name in ("size", "wallet", "isolated_margin", "x_size")}
        arrays["fund_and_cash"] = np.array([ledger.fund, ledger.x_cash])
        arrays.update({name: np.asarray(getattr(settled, name)) for name in
                       ("socialized", "max_loss", "filled", "notional", "fund_took", "fund_takes", "counterparties")})
        arrays.update(zip(("fill_queue", "bankrupt", "counterparty", "qty", "price"), settled.fills()))
        results.append(arrays)
    assert results[0]["qty"].size > 0 and results[0]["fund_takes"].any()
    assert_same_bits(*results)


def test_launch_rejects_arrays_the_backend_cannot_read(candidate):
    sig = signatures()["position_margin"]
    args = [candidate.asarray(np.zeros(4, dtype=p.dtype)) if p.kind == "ptr" else 0 for p in sig.params]
    first_ptr = next(i for i, p in enumerate(sig.params) if p.kind == "ptr")
    foreign = list(args)
    foreign[first_ptr] = np.zeros(4, np.int32) if candidate.name == "gpu" else array.array("i", [0] * 4)
    with pytest.raises(TypeError, match=rf"argument {sig.params[first_ptr].name} is a .*pass backend\.asarray"):
        candidate.launch("position_margin", *foreign)
    not_scalar = list(args)
    not_scalar[0] = args[first_ptr]
    with pytest.raises(TypeError, match=f"argument {sig.params[0].name} must be a int64 scalar"):
        candidate.launch("position_margin", *not_scalar)
    candidate.launch("position_margin", *args)  # the same arguments, all of the right kind, run
