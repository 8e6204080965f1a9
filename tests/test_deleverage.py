"""The deleveraging steps as array functions (gpurisk/deleverage.py): the queue front is
exactly the front of the documented total order, the merge conserves size, the fund pays
most underwater first, and the haircuts recover what they can within their caps."""

import functools

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gpurisk.deleverage import fund_cover, haircuts, queue_fills, queue_front, queue_front_numpy, water_fill
from gpurisk.parity import adversarial_queue_keys, queue_order_oracle


@pytest.mark.parametrize("seed", range(4))
def test_queue_front_is_the_front_of_the_full_order(seed):
    n = 30_000
    _, score = adversarial_queue_keys(n, 1, seed)  # ±0, ±inf, NaN payloads, long runs of ties
    rng = np.random.default_rng(seed)
    members = np.sort(rng.choice(3 * n, n, replace=False))  # a queue: storage indices, ascending
    full_score = np.zeros(3 * n)
    full_score[members] = score
    size = np.zeros(3 * n)
    size[members] = rng.choice([0.5, 1.0, 3.0], n) * rng.choice([-1.0, 1.0], n)
    keep = rng.random(3 * n) > 0.2
    oracle = members[queue_order_oracle(np.zeros(n, np.int32), score)]
    oracle = oracle[keep[oracle]]
    supply = np.cumsum(np.abs(size[oracle]))
    for need in (1e-3, 7.0, 800.0, supply[-1] * 0.4, supply[-1] * 0.9, supply[-1], supply[-1] * 2, np.inf):
        front = queue_front(members, full_score, keep, size, need)
        # the native front and the NumPy one (where no compiler is found) are the same
        if np.isfinite(need):
            np.testing.assert_array_equal(queue_front_numpy(members, full_score, keep, size, need), front)
        np.testing.assert_array_equal(front, oracle[:front.size])
        running = np.cumsum(np.abs(size[front]))
        assert front.size == oracle.size or running[-1] >= need
        if need < supply[-1] * 0.01:
            assert front.size < oracle.size // 4  # shallow demand orders a small front only


demands = st.lists(st.floats(0.001, 50, allow_nan=False), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(demands, demands)
@example([15.0, 50.0], [15.0, 49.99999999999999])  # the supply rounds to the demand's running sum
def test_queue_fills_conserve_size_and_respect_every_position(demand, supply):
    demand, supply = np.array(demand), np.array(supply)
    di, si, qty, demand_closed, supply_closed = queue_fills(demand, supply)
    assert np.all(qty > 0)
    matched = min(demand.sum(), supply.sum())
    assert abs(qty.sum() - matched) <= 1e-9 * max(matched, 1.0)
    filled = np.bincount(di, weights=qty, minlength=demand.size)
    taken = np.bincount(si, weights=qty, minlength=supply.size)
    assert np.all(filled <= demand * (1 + 1e-9)) and np.all(taken <= supply * (1 + 1e-9))
    np.testing.assert_allclose(filled[demand_closed], demand[demand_closed], rtol=1e-12)
    # A demand met whole by one fill gets exactly its size, or exactly its supply's size when that
    # supply is consumed whole too and is the smaller within rounding (a fill never exceeds a side).
    single = np.bincount(di, minlength=demand.size) == 1
    whole = single & demand_closed
    fill_of = np.zeros(demand.size, dtype=np.int64)
    fill_of[di] = np.arange(di.size)
    supply_of = si[fill_of]
    exact = np.where(supply_closed[supply_of] & (supply[supply_of] < demand), supply[supply_of], demand)
    np.testing.assert_array_equal(filled[whole], exact[whole])
    np.testing.assert_allclose(filled[whole], demand[whole], rtol=1e-12)
    assert np.all(np.diff(di) >= 0) and np.all(np.diff(si) >= 0)  # in order, each side
    # Queue order: a supply is touched only when every supply before it is used up.
    touched = np.unique(si)
    assert np.all(supply_closed[touched[:-1]])


def test_fund_pays_the_most_underwater_first_while_it_lasts():
    np.testing.assert_array_equal(fund_cover(np.array([5.0, 3.0, 4.0]), 6.0), [5.0, 1.0, 0.0])
    np.testing.assert_array_equal(fund_cover(np.array([5.0, 3.0]), 100.0), [5.0, 3.0])
    np.testing.assert_array_equal(fund_cover(np.array([5.0, 3.0]), -2.0), [0.0, 0.0])  # a fund below zero pays nothing


def test_water_fill_caps_and_levels():
    assert water_fill(6.0, caps=np.array([1.0, 5.0, 10.0]), weights=np.ones(3)).tolist() == [1.0, 2.5, 2.5]
    assert water_fill(100.0, caps=np.array([1.0, 5.0]), weights=np.ones(2)).tolist() == [1.0, 5.0]
    assert water_fill(0.0, caps=np.array([1.0]), weights=np.ones(1)).tolist() == [0.0]


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 500), st.lists(st.tuples(st.floats(0.01, 100), st.floats(1, 1e4), st.floats(0.5, 1e3)),
                                   min_size=1, max_size=25))
def test_every_haircut_policy_recovers_what_it_can_within_each_pnl(need, winners):
    pnl, notional, equity = (np.array(c) for c in zip(*winners))
    for policy in ("pro_rata", "capped_pro_rata", "rap"):
        cut = haircuts(policy, need, pnl, notional, equity)
        assert np.all(cut >= 0) and np.all(cut <= pnl * (1 + 1e-12))
        expected = min(need, pnl.sum())
        assert abs(cut.sum() - expected) <= 1e-9 * max(expected, 1.0), policy
    with pytest.raises(ValueError, match="unknown policy"):
        haircuts("queue", need, pnl, notional, equity)


# ------------------------------------------------------------------ the merge kernel


def _queues(data, n_queues):
    sizes = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
    demands, supplies = [], []
    for _ in range(n_queues):
        demands.append(np.array(data.draw(st.lists(sizes, min_size=1, max_size=12)), dtype=np.float64))
        supplies.append(np.array(data.draw(st.lists(sizes, min_size=0, max_size=12)), dtype=np.float64))
    return demands, supplies


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n_queues=st.integers(1, 5), whole=st.booleans())
def test_the_merge_kernel_gives_queue_fills_bits_for_every_queue_at_once(data, n_queues, whole):
    from gpurisk.backend import get_backend
    from gpurisk.deleverage import queue_merges

    demands, supplies = _queues(data, n_queues)
    if whole:  # supplies that are sums of demands: cuts that coincide
        supplies = [np.concatenate([d[:2].sum(keepdims=True), d[2:], s]) for d, s in zip(demands, supplies)]
    # Queues laid out in a shuffled order in the supply array, as the queue ids put them.
    layout = data.draw(st.permutations(range(n_queues)))
    supply = np.concatenate([supplies[k] for k in layout]) if n_queues else np.zeros(0)
    at = {k: sum(supplies[j].size for j in layout[:i]) for i, k in enumerate(layout)}
    s_bounds = np.array([[at[k], at[k] + supplies[k].size] for k in range(n_queues)])
    d_edges = np.concatenate([[0], np.cumsum([d.size for d in demands])])
    d_bounds = np.stack([d_edges[:-1], d_edges[1:]], axis=1)
    got = queue_merges(get_backend("cpu"), np.concatenate(demands), d_bounds, supply, s_bounds)
    for k in range(n_queues):
        s_cum = np.cumsum(supplies[k])
        reach = int(np.searchsorted(s_cum, np.cumsum(demands[k])[-1], side="left"))
        want = queue_fills(demands[k], supplies[k][:reach + 1])
        for name, a, b in zip(("di", "si", "qty", "demand_closed", "supply_closed"), got[k], want):
            assert a.shape == b.shape, (k, name)
            assert np.array_equal(np.asarray(a).view(np.uint8), np.asarray(b).view(np.uint8)), (k, name, a, b)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 400), n_queues=st.integers(1, 6))
def test_queue_fronts_order_each_queue_as_queue_front_does(seed, n, n_queues):
    from gpurisk.backend import get_backend
    from gpurisk.deleverage import queue_fronts

    rng = np.random.default_rng(seed)
    group, score = adversarial_queue_keys(n, n_queues, seed)
    group = group.astype(np.int64)
    keep = rng.random(n) < 0.8
    size = rng.uniform(0.1, 5.0, n)
    wanted = np.unique(rng.integers(0, n_queues, 3))
    order, start = queue_fronts(get_backend("cpu"), group, score, keep, wanted, n_queues)
    for q in range(n_queues):
        mine = order[start[q]:start[q + 1]]
        if q not in wanted:
            assert mine.size == 0
            continue
        members = np.flatnonzero(group == q)
        whole = queue_front(members, score, keep, size, np.inf)  # the whole queue, in order
        assert np.array_equal(mine, whole)


def test_a_fill_within_noise_of_both_sizes_is_the_smaller():
    """Demand 49.99999999999999 against supply 50 (found by hypothesis): the fill closes the
    demand whole at its own size, never the larger supply's."""
    from gpurisk.backend import get_backend
    from gpurisk.deleverage import queue_merges

    demand, supply = np.array([49.99999999999999]), np.array([50.0])
    di, si, qty, demand_closed, supply_closed = queue_fills(demand, supply)
    assert qty.tolist() == [49.99999999999999] and demand_closed.tolist() == [True]
    assert supply_closed.tolist() == [False]
    got = queue_merges(get_backend("cpu"), demand, np.array([[0, 1]]), supply, np.array([[0, 1]]))[0]
    assert got[2].tolist() == [49.99999999999999]


def _queue_adl_one_by_one(ledger, pos, rest, bp, bounds, fronts, price, cs):
    """What the stress step did before settle_queues: queue_adl queue by queue, on the fills
    queue_merges gives (each front used as deep as its demand)."""
    from gpurisk.backend import get_backend
    from gpurisk.deleverage import queue_adl, queue_merges

    sizes = np.array([f.size for f in fronts], dtype=np.int64)
    ends = np.cumsum(sizes)
    merges = queue_merges(get_backend("cpu"), np.abs(rest), bounds, np.abs(ledger.size[np.concatenate(fronts)]),
                          np.stack([ends - sizes, ends], axis=1))
    return [queue_adl(ledger, pos[d0:d1], rest[d0:d1], bp[d0:d1], float(price[k]), float(cs[k]),
                      fronts[k][:merged[4].size], merged)
            for k, ((d0, d1), merged) in enumerate(zip(bounds, merges))]


def _bits(a) -> bytes:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes()


@pytest.mark.parametrize("backend_name", ["cpu", "cpu-1-thread", "stand-in", "stand-in-strict"])
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_queues=st.integers(1, 8), bankrupt_share=st.sampled_from([0.02, 0.3, 0.9]),
       depth=st.sampled_from([0.01, 0.2, 1.0]))
def test_settle_queues_moves_the_money_of_queue_adl_bit_for_bit(backend_name, seed, n_queues, bankrupt_share, depth):
    """Every balance, size and total of the kernel's queue ADL equals queue_adl's, run queue
    by queue, to the bit: wallets credited by several queues in the same order, NumPy's
    pairwise sums (demands of up to ~800 positions: leaves of 8 and 128, recursive halves),
    the fund's takeover of demand a shallow queue cannot meet, isolated margin released."""
    from gpurisk.backend import CpuBackend, get_backend
    from gpurisk.deleverage import settle_queues
    from gpurisk.ledger import Ledger
    from gpurisk.parity import StandInBackend, StrictStandInBackend, adl_settle_case

    backend = {"cpu": lambda: get_backend("cpu"), "cpu-1-thread": lambda: CpuBackend(threads=1),
               "stand-in": StandInBackend, "stand-in-strict": StrictStandInBackend}[backend_name]()
    book, pos, rest, bp, bounds, fronts, price, cs = adl_settle_case(seed, n_queues, bankrupt_share, depth)
    if pos.size == 0:
        return
    want_ledger, got_ledger = Ledger(book, fund=1e5), Ledger(book, fund=1e5)
    want = _queue_adl_one_by_one(want_ledger, pos, rest, bp, bounds, fronts, price, cs)
    got = settle_queues(backend, got_ledger, pos, rest, bp, bounds, fronts, price, cs)
    for name in ("size", "wallet", "isolated_margin", "x_size"):
        assert _bits(getattr(got_ledger, name)) == _bits(getattr(want_ledger, name)), name
    assert _bits([got_ledger.fund, got_ledger.x_cash]) == _bits([want_ledger.fund, want_ledger.x_cash])
    assert _bits(got.socialized) == _bits([f.socialized for f in want])
    assert _bits(got.notional) == _bits([f.notional for f in want])
    assert got.filled.tolist() == [f.max_loss is not None for f in want]
    assert _bits(got.max_loss[got.filled]) == _bits([f.max_loss for f in want if f.max_loss is not None])
    assert got.fund_takes.tolist() == [f.fund_took is not None for f in want]
    assert _bits(got.fund_took[got.fund_takes]) == _bits([f.fund_took for f in want if f.fund_took is not None])
    queue, bankrupt, counterparty, qty, fill_price = got.fills()
    assert np.array_equal(bankrupt, np.concatenate([f.bankrupt for f in want]))
    assert np.array_equal(counterparty, np.concatenate([f.counterparty for f in want]))
    assert _bits(qty) == _bits(np.concatenate([f.qty for f in want]))
    assert _bits(fill_price) == _bits(np.concatenate([f.price for f in want]))
    assert np.array_equal(queue, np.repeat(np.arange(len(want)), [f.qty.size for f in want]))
    assert np.array_equal(got.counterparties, np.concatenate([f.counterparties for f in want]))


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_supply=st.integers(0, 300), n_demand=st.integers(1, 40),
       first=st.integers(1, 64))
def test_the_supply_gathered_for_the_merge_is_as_deep_as_it_can_be_used(seed, n_supply, n_demand, first):
    """settle_queues gathers a front only as deep as the merge reads it, growing the prefix
    from ``first`` members: the merge of that prefix is the merge of the whole front."""
    from gpurisk.backend import get_backend
    from gpurisk.deleverage import _usable_supply, queue_merges

    rng = np.random.default_rng(seed)
    size = rng.choice([-1.0, 1.0], 500) * rng.uniform(0.01, 5.0, 500)
    front = rng.permutation(500)[:n_supply]
    demand = rng.uniform(0.01, 5.0, n_demand)
    got = _usable_supply(SimpleNamespace(size=size, take=lambda balance, i: balance[i]), front, demand, first=first)
    whole = np.abs(size[front])
    assert np.array_equal(got, whole[:got.size])
    reaches = np.cumsum(got) >= np.cumsum(demand)[-1]
    assert got.size == whole.size or reaches[-1]  # deep enough
    if first < got.size < whole.size:  # and grown only while the smaller prefix fell short
        assert not reaches[got.size // 4 - 1]
    bounds = np.array([[0, n_demand]])
    short = queue_merges(get_backend("cpu"), demand, bounds, got, np.array([[0, got.size]]))[0]
    full = queue_merges(get_backend("cpu"), demand, bounds, whole, np.array([[0, whole.size]]))[0]
    for a, b in zip(short, full):
        assert np.array_equal(np.asarray(a).view(np.uint8), np.asarray(b).view(np.uint8))


@functools.lru_cache(maxsize=None)
def _takeover_book(inverse: bool):
    from gpurisk.synthetic import synthetic_book

    return synthetic_book(10_000, seed=3, isolated_share=0.3, inverse_markets=2 if inverse else 0)


@pytest.mark.parametrize("backend_name", ["cpu", "cpu-1-thread", "stand-in", "stand-in-strict"])
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), share=st.sampled_from([0.002, 0.05, 0.5, 1.0]),
       fund=st.sampled_from([0.0, -5.0, 0.3, 0.5, 1e12]), ties=st.sampled_from([0.0, 0.5, 1.0]),
       inverse=st.booleans(), nan=st.booleans())
def test_the_takeover_kernels_move_the_money_of_take_over_bankrupt_numpy_bit_for_bit(backend_name, seed, share, fund,
                                                                                     ties, inverse, nan):
    """Every balance, size and total of the kernels' takeover equals the NumPy definition's to
    the bit: units (cross books with several positions, isolated positions) and their deficits,
    the settlement order with ties (bankruptcy price at the market: ±0.0 deficits, broken by
    account then cross before isolated), the fund's running total (none, below zero, part of
    the deficit, all of it), NumPy's pairwise sums (up to a few thousand units), inverse
    contracts' money prices, and a NaN bankruptcy price carried as NumPy carries it."""
    from gpurisk.backend import CpuBackend, get_backend
    from gpurisk.deleverage import take_over_bankrupt, take_over_bankrupt_numpy
    from gpurisk.ledger import Ledger
    from gpurisk.parity import StandInBackend, StrictStandInBackend

    backend = {"cpu": lambda: get_backend("cpu"), "cpu-1-thread": lambda: CpuBackend(threads=1),
               "stand-in": StandInBackend, "stand-in-strict": StrictStandInBackend}[backend_name]()
    book = _takeover_book(inverse)
    rng = np.random.default_rng(seed)
    pos = np.flatnonzero((book.size != 0.0) & (rng.random(book.n_positions) < share))
    if pos.size == 0:
        pos = np.flatnonzero(book.size != 0.0)[:1]
    cs_pos = book.contract_size[book.pos_symbol]
    market = book.mark_price[book.pos_symbol[pos]] * rng.uniform(0.7, 1.3, pos.size)
    bp = np.where(rng.random(pos.size) < ties, market, market * rng.uniform(0.8, 1.2, pos.size))
    if nan:
        bp[rng.integers(pos.size)] = np.nan
    want_ledger, got_ledger = Ledger(book, cs_pos=cs_pos), Ledger(book, cs_pos=cs_pos)
    # the fund as a share of the whole loss, in money prices (-5: a fund below zero pays nothing)
    gap = want_ledger.money(pos, bp) - want_ledger.money(pos, market)
    whole = float(np.nansum(np.abs(book.size[pos] * gap * cs_pos[pos])))
    want_ledger.fund = got_ledger.fund = fund * whole if 0 < fund < 1 else fund
    order = lambda group, score: get_backend("cpu").queue_order(group, score, int(group.max()) + 1)  # noqa: E731
    want = take_over_bankrupt_numpy(want_ledger, order, pos, bp, market, book.pos_start, cs_pos)
    got = take_over_bankrupt(backend, got_ledger, pos, bp, market)
    for name in ("size", "wallet", "isolated_margin", "x_size"):
        assert _bits(getattr(got_ledger, name)) == _bits(getattr(want_ledger, name)), name
    assert _bits([got_ledger.fund, got_ledger.x_cash]) == _bits([want_ledger.fund, want_ledger.x_cash])
    assert _bits([got.deficit, got.covered]) == _bits([want.deficit, want.covered])
    assert _bits(backend.to_host(got.rest)) == _bits(want.rest)
    assert np.array_equal(backend.to_host(got.unit_rank), want.unit_rank)
    if not nan:  # money only moves between the accounts, the fund and the external account
        start = Ledger(book, cs_pos=cs_pos)
        start.fund = fund * whole if 0 < fund < 1 else fund
        scale = max(whole, float(np.abs(book.size * book.entry * cs_pos).sum()), 1.0)
        assert abs(_ledger_value(book, got_ledger) - _ledger_value(book, start)) <= 1e-9 * scale


def _ledger_value(book, ledger) -> float:
    """Balances, unrealised PnL at the marks, the fund and the external account."""
    money = ledger.money(slice(None), book.mark_price[book.pos_symbol])
    upnl = ledger.size * (money - ledger._entry) * ledger._cs_pos
    return float(ledger.wallet.sum() + ledger.isolated_margin.sum() + upnl.sum() + ledger.fund
                 + ledger.external_value(book.mark_price))


def test_the_takeover_kernels_refuse_positions_out_of_order():
    from gpurisk.backend import get_backend
    from gpurisk.deleverage import take_over_bankrupt
    from gpurisk.ledger import Ledger

    book = _takeover_book(False)
    pos = np.array([3, 9, 9, 12])
    price = book.mark_price[book.pos_symbol[pos]]
    with pytest.raises(ValueError, match=r"ascending and distinct; pos\[2\] = 9 follows 9"):
        take_over_bankrupt(get_backend("cpu"), Ledger(book), pos, price, price)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3000), n_queues=st.integers(1, 6),
       depth=st.sampled_from([1e-9, 0.01, 0.3, 0.9, 1.0, 1.5, np.inf]))
def test_queue_fronts_to_demand_is_each_front_of_the_full_order_as_deep_as_its_demand(seed, n, n_queues, depth):
    """Every wanted queue's front is the first places of the documented total order (the
    oracle's lexsort) over its kept positions, cut at the first whose running |size| reaches
    the demand's sum (or whole); the NumPy path (no compiler) gives the same arrays."""
    _check_queue_fronts_to_demand(seed, n, n_queues, depth)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3000), n_queues=st.integers(1, 6),
       depth=st.sampled_from([0.01, 0.3, 0.9, 1.0, 1.5]), margin=st.sampled_from([-0.5, -0.9, -1.0]))
def test_queue_fronts_to_demand_reads_every_bucket_when_its_first_reach_falls_short(seed, n, n_queues, depth, margin):
    """A front whose score buckets' sums reach its demand but whose running sum, in queue
    order, falls short (rounding, at real sizes) reads every bucket once more: forced here by a
    negative margin (the first reach stops at a fraction of the demand), it gives the same
    fronts as the documented order."""
    from gpurisk import queue_front as front

    kept = front.BUCKET_MARGIN
    front.BUCKET_MARGIN = margin
    try:
        _check_queue_fronts_to_demand(seed, n, n_queues, depth)
    finally:
        front.BUCKET_MARGIN = kept


def _check_queue_fronts_to_demand(seed, n, n_queues, depth):
    from gpurisk import queue_front as front
    from gpurisk.queue_front import queue_fronts_to_demand

    rng = np.random.default_rng(seed)
    group, score = adversarial_queue_keys(n, n_queues, seed)  # ±0, ±inf, NaN payloads, ties, empty queues
    keep = rng.random(n) < 0.8
    size = rng.choice([0.5, 1.0, 3.0, 1e-3, 7e4], n) * rng.choice([-1.0, 1.0], n)
    wanted = np.unique(rng.integers(0, n_queues, 3))
    order = queue_order_oracle(group, score)
    demands, bounds, want = [], [], {}
    for q in wanted:
        ranked = order[group[order] == q]
        ranked = ranked[keep[ranked]]
        total = float(np.abs(size[ranked]).sum())
        parts = rng.uniform(0.1, 1.0, rng.integers(1, 5))
        d = parts / parts.sum() * (total * depth if np.isfinite(depth) and total > 0 else 1e9)
        bounds.append((sum(map(len, demands)), sum(map(len, demands)) + d.size))
        demands.append(d)
        need = np.cumsum(d)[-1]
        reach = np.flatnonzero(np.cumsum(np.abs(size[ranked])) >= need)
        want[q] = ranked[:int(reach[0]) + 1] if reach.size else ranked
    demand = np.concatenate(demands)
    fronts, supplies = queue_fronts_to_demand(group, wanted, n_queues, demand, np.array(bounds), score, keep, size)
    native = front._native
    front._native = lambda: None  # the NumPy path, as on a machine without a compiler
    try:
        plain_fronts, plain_supplies = queue_fronts_to_demand(group, wanted, n_queues, demand, np.array(bounds),
                                                              score, keep, size)
    finally:
        front._native = native
    for k, q in enumerate(wanted):
        np.testing.assert_array_equal(fronts[k], want[q])
        np.testing.assert_array_equal(supplies[k], np.abs(size[want[q]]))
        np.testing.assert_array_equal(plain_fronts[k], want[q])
        np.testing.assert_array_equal(plain_supplies[k], supplies[k])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 2000), n_queues=st.integers(1, 8))
def test_demand_by_queue_orders_by_queue_settlement_rank_and_position(seed, n, n_queues):
    """The bankrupt demand, queue by queue, in settlement order of the units, a unit's positions
    by index: the native counting sorts and the backend's queue sort (where no compiler is
    found) give the documented order."""
    from gpurisk import queue_front as front
    from gpurisk.backend import get_backend
    from gpurisk.queue_front import demand_by_queue

    rng = np.random.default_rng(seed)
    queue = rng.integers(0, n_queues, n).astype(np.int64)
    rest = np.where(rng.random(n) < 0.3, 0.0, rng.uniform(-5, 5, n))
    unit_rank = rng.integers(0, max(1, n // 3), n).astype(np.int64)  # units share ranks
    b = get_backend("cpu")

    def order(group, score):
        return b.to_host(b.queue_order(np.ascontiguousarray(group, dtype=np.int32), score,
                                       int(group.max()) + 1 if group.size else 1))

    owed = np.flatnonzero(rest != 0.0)
    want = owed[np.lexsort((owed, unit_rank[owed], queue[owed]))]
    queues, parts = demand_by_queue(order, queue, rest, unit_rank)
    native = front._native
    front._native = lambda: None
    try:
        plain_queues, plain_parts = demand_by_queue(order, queue, rest, unit_rank)
    finally:
        front._native = native
    got = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(queues, np.unique(queue[owed]))
    assert all(np.all(queue[p] == g) for g, p in zip(queues, parts))
    np.testing.assert_array_equal(plain_queues, queues)
    assert len(plain_parts) == len(parts) and all(np.array_equal(a, c) for a, c in zip(plain_parts, parts))


def test_queue_fronts_to_demand_refuses_a_queue_named_twice():
    from gpurisk.deleverage import queue_fronts_to_demand

    group = np.array([0, 1, 0, 1], dtype=np.int32)
    ones = np.ones(4)
    with pytest.raises(ValueError, match="distinct"):
        queue_fronts_to_demand(group, np.array([1, 1]), 2, np.ones(2), np.array([[0, 1], [1, 2]]), ones,
                               np.ones(4, bool), ones)
