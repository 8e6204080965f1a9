"""The haircut kernels (gpurisk/haircut.py, kernels/haircut.cu) against their NumPy definitions
(deleverage.haircut_adl, haircuts, water_fill), bit for bit: every balance, size and total,
on every backend and thread count."""

import copy

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gpurisk.backend import CpuBackend, get_backend
from gpurisk.deleverage import haircut_adl, water_fill
from gpurisk.haircut import HAIRCUT_POLICIES, settle_haircuts, water_fills
from gpurisk.ledger import Ledger
from gpurisk.parity import StandInBackend, StrictStandInBackend, adl_settle_case

BACKENDS = {"cpu": lambda: get_backend("cpu"), "cpu-1-thread": lambda: CpuBackend(threads=1),
            "stand-in": StandInBackend, "stand-in-strict": StrictStandInBackend}


def _bits(a) -> bytes:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes()


def _haircut_case(seed: int, n_queues: int, bankrupt_share: float, pnl_scale: float, ties: bool,
                  inverse: bool = False):
    """A step's haircut on a synthetic book: adl_settle_case's bankrupt demand per queue (most
    queues at a loss against the market, some not: nothing to recover); the
    opposite queues' members (storage order), a fifth of them not counterparties; PnL around
    ``pnl_scale`` times the queue's loss spread over its winners (some negative: not
    winners), from few distinct values where ``ties`` (the water-fill's sort keeps ties in
    order); notional and equity per position, some equity <= 0. ``inverse``: every other
    symbol coin-margined (money prices −1/P)."""
    book, pos, rest, bp, bounds, _, price, cs = adl_settle_case(seed, n_queues, bankrupt_share, 1.0)
    if inverse:
        book = copy.copy(book)
        book.inverse = (np.arange(book.n_symbols) % 2).astype(np.int8)
    rng = np.random.default_rng(seed + 1)
    group = 2 * book.pos_symbol.astype(np.int64) + (book.size < 0)
    members = np.argsort(group, kind="stable")
    start = np.searchsorted(group[members], np.arange(2 * book.n_symbols + 1))
    # Bankruptcy prices beyond the market (a loss to recover), in a few queues short of it (none).
    for k, (d0, d1) in enumerate(bounds):
        side = np.sign(rest[d0:d1]) * (1.0 if rng.random() < 0.8 else -1.0)
        bp[d0:d1] = price[k] * (1.0 + side * rng.uniform(0.0, 0.2, d1 - d0))
    opposite = group[pos[bounds[:, 0]]] ^ 1 if pos.size else np.zeros(0, np.int64)
    member_bounds = np.stack([start[opposite], start[opposite + 1]], axis=1)
    counterparty = (rng.random(book.n_positions) < 0.8) & (book.size != 0)
    counterparty[pos] = False
    upnl = rng.uniform(-0.3, 1.0, book.n_positions)
    if ties:
        upnl = rng.choice([-1.0, 0.0, 0.25, 1.0, 2.0], book.n_positions)
    for k, (d0, d1) in enumerate(bounds):
        m = members[member_bounds[k, 0]:member_bounds[k, 1]]
        loss = abs(float(np.sum(rest[d0:d1] * (bp[d0:d1] - price[k]) * cs[k])))
        upnl[m] *= pnl_scale * max(loss, 1.0) / max(m.size, 1)
    notional = np.abs(book.size) * book.mark_price[book.pos_symbol] * rng.uniform(0.5, 2.0, book.n_positions)
    equity = notional * rng.choice([0.05, 0.2, 1.0, 3.0], book.n_positions)
    equity[rng.random(book.n_positions) < 0.05] = rng.choice([0.0, -5.0])
    if ties:
        notional = np.round(notional, -3)
        equity = np.where(equity > 0, np.round(equity, -2), equity)
    return book, pos, rest, bp, bounds, members, member_bounds, counterparty, upnl, notional, equity, price, cs


def _haircut_one_by_one(ledger, policy, pos, rest, bp, bounds, members, member_bounds, counterparty, upnl, notional,
                        equity, price, cs):
    """What the stress step did before settle_haircuts: haircut_adl queue by queue."""
    out = []
    for k, (d0, d1) in enumerate(bounds):
        winners = members[member_bounds[k, 0]:member_bounds[k, 1]]
        winners = winners[counterparty[winners]]
        pnl = np.maximum(upnl[winners], 0.0)
        won = pnl > 0
        winners, pnl = winners[won], pnl[won]
        out.append(haircut_adl(ledger, policy, pos[d0:d1], rest[d0:d1], bp[d0:d1], float(price[k]), float(cs[k]),
                               winners, pnl, notional[winners], equity[winners]))
    return out


@pytest.mark.parametrize("backend_name", list(BACKENDS))
@pytest.mark.parametrize("policy", list(HAIRCUT_POLICIES))
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_queues=st.integers(1, 8), bankrupt_share=st.sampled_from([0.02, 0.3, 0.9]),
       pnl_scale=st.sampled_from([0.01, 1.0, 5.0, 10.0, 100.0]), ties=st.booleans(), inverse=st.booleans())
@example(seed=0, n_queues=8, bankrupt_share=0.3, pnl_scale=10.0, ties=True, inverse=True)
def test_settle_haircuts_moves_the_money_of_haircut_adl_bit_for_bit(backend_name, policy, seed, n_queues,
                                                                    bankrupt_share, pnl_scale, ties, inverse):
    """Every balance, size and total of the kernel's haircuts equals haircut_adl's, run queue
    by queue, to the bit: wallets credited by several queues in the same order, NumPy's
    pairwise sums (queues of up to ~800 winners), the water-fill's stable sort with ties,
    losses the winners cannot cover (every cap taken) and losses they can, linear and
    inverse contracts."""
    backend = BACKENDS[backend_name]()
    case = _haircut_case(seed, n_queues, bankrupt_share, pnl_scale, ties, inverse)
    book, pos = case[0], case[1]
    if pos.size == 0:
        return
    want_ledger, got_ledger = Ledger(book, fund=1e5), Ledger(book, fund=1e5)
    want = _haircut_one_by_one(want_ledger, policy, *case[1:])
    got = settle_haircuts(backend, got_ledger, policy, *case[1:])
    for name in ("size", "wallet", "isolated_margin", "x_size"):
        assert _bits(getattr(got_ledger, name)) == _bits(getattr(want_ledger, name)), name
    assert _bits([got_ledger.fund, got_ledger.x_cash]) == _bits([want_ledger.fund, want_ledger.x_cash])
    assert _bits(got.need) == _bits([h.need for h in want])
    assert _bits(got.recovered) == _bits([h.recovered for h in want])
    assert _bits(got.max_cut) == _bits([h.max_cut for h in want])
    assert got.n_cut.tolist() == [h.positions.size for h in want]
    assert np.array_equal(got.positions, np.concatenate([h.positions for h in want]))
    assert _bits(got.amount) == _bits(np.concatenate([h.amount for h in want]))
    for h in want:
        if policy != "pro_rata" and h.need > 0:  # a water-fill takes what it needs, or every cap
            assert h.recovered <= h.need * (1 + 1e-12) + 1e-9


def test_the_haircut_step_conserves_money():
    """Balances + fund + external account (sizes at the takeover's market price) are the same
    before and after the haircuts of every queue (money moves between them only)."""
    case = _haircut_case(3, 6, 0.3, 0.5, False)
    book, pos, rest, bp, bounds, *_, price, cs = case
    ledger = Ledger(book, fund=1e5)

    def value():
        # the bankrupt positions' value at the takeover's price, the external account's likewise
        mark = np.zeros(book.n_positions)
        for k, (d0, d1) in enumerate(bounds):
            mark[pos[d0:d1]] = price[k]
        sym_price = np.zeros(book.n_symbols)
        sym_price[book.pos_symbol[pos[bounds[:, 0]]]] = price
        upnl = np.sum(ledger.size[pos] * (mark[pos] - book.entry[pos]) * book.contract_size[book.pos_symbol[pos]])
        return (np.sum(ledger.wallet) + np.sum(ledger.isolated_margin) + ledger.fund + ledger.x_cash + upnl
                + np.sum(ledger.x_size * sym_price * book.contract_size))

    before = value()
    got = settle_haircuts(get_backend("cpu"), ledger, "capped_pro_rata", *case[1:])
    assert got.recovered.sum() > 0 and np.any(got.recovered < got.need)  # some queues cut in part
    assert abs(value() - before) <= 1e-9 * max(abs(before), 1.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-10, 500), st.lists(st.tuples(st.sampled_from([0.5, 1.0, 2.0, 7.25, 0.0, -0.0]),
                                                                     st.sampled_from([1.0, 0.5, 3.0, 1e-3, 0.0, -2.0])),
                                                           min_size=0, max_size=300)), min_size=1, max_size=5),
       st.booleans())
@example([(6.0, [(1.0, 1.0), (5.0, 1.0), (10.0, 1.0)])], False)
@example([(0.25, [(0.5, -2.0), (0.0, 0.0)])], False)  # np.minimum(0.0, -0.0) is -0.0
def test_water_fills_give_water_fill_bits_on_every_segment(segments, spread):
    """Segments of ties (caps and weights from few values) and of spread values, needs below,
    at and above the caps' sum: the kernel's cuts are water_fill's, bit for bit. Zero weights
    (cap levels of ±inf, or NaN for a zero cap), negative ones and -0.0 caps (a level of -0.0,
    tied with 0.0) hold the sort to NumPy's order of floats."""
    rng = np.random.default_rng(len(segments))
    caps = [np.array([c for c, _ in s], dtype=np.float64) for _, s in segments]
    weights = [np.array([w for _, w in s], dtype=np.float64) for _, s in segments]
    if spread:
        caps = [c * rng.uniform(0.5, 1.5, c.size) for c in caps]
    need = np.array([n for n, _ in segments])
    edges = np.concatenate([[0], np.cumsum([c.size for c in caps])])
    bounds = np.stack([edges[:-1], edges[1:]], axis=1)
    for backend in (get_backend("cpu"), StandInBackend()):
        got = water_fills(backend, need, np.concatenate(caps), np.concatenate(weights), bounds)
        want = np.concatenate([water_fill(n, c, w) for n, c, w in zip(need, caps, weights)])
        assert _bits(got) == _bits(want)


def test_water_fills_refuse_bad_segments():
    with pytest.raises(ValueError, match="bounds out of \\[0, 3\\] or reversed at rows \\[1\\]"):
        water_fills(get_backend("cpu"), [1.0, 1.0], np.ones(3), np.ones(3), [[0, 2], [2, 4]])
    with pytest.raises(ValueError, match="bounds overlap at rows \\[0, 1\\]"):  # the kernel's threads would race
        water_fills(get_backend("cpu"), [1.0, 1.0], np.ones(3), np.ones(3), [[0, 2], [1, 3]])
    with pytest.raises(ValueError, match="2 segments but 1 needs"):
        water_fills(get_backend("cpu"), [1.0], np.ones(3), np.ones(3), [[0, 2], [2, 3]])


def test_settle_haircuts_refuses_bounds_past_the_arrays():
    case = list(_haircut_case(1, 3, 0.3, 1.0, False))
    ledger = Ledger(case[0], fund=0.0)
    members = case[5]
    case[6] = case[6].copy()
    case[6][1, 1] = members.size + 1  # a queue's members past the end of the array
    with pytest.raises(ValueError, match=rf"member_bounds out of \[0, {members.size}\] or reversed at rows \[1\]"):
        settle_haircuts(get_backend("cpu"), ledger, "rap", *case[1:])


def test_settle_haircuts_refuses_an_unknown_policy():
    with pytest.raises(ValueError, match="unknown haircut policy 'queue'"):
        settle_haircuts(get_backend("cpu"), None, "queue", *([None] * 12))
