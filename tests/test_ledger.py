"""The ledger's money moves (gpurisk/ledger.py): each conserves the book's total value."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gpurisk import synthetic_book
from gpurisk.ledger import Ledger

BOOK = synthetic_book(300, seed=11)


def total(ledger: Ledger, marks: np.ndarray) -> float:
    """Σ(wallet + isolated margin + upnl) + fund + external account, in plain float sums."""
    b = BOOK
    upnl = ledger.size * (marks[b.pos_symbol] - b.entry) * b.contract_size[b.pos_symbol]
    return float(ledger.wallet.sum() + ledger.isolated_margin.sum() + upnl.sum() + ledger.fund
                 + ledger.external_value(marks))


def scale(marks):
    return float(np.sum(np.abs(BOOK.size) * marks[BOOK.pos_symbol] * BOOK.contract_size[BOOK.pos_symbol])) + 1.0


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), move=st.sampled_from(["market", "takeover", "cut"]),
       shock=st.floats(-0.6, 0.6))
def test_every_move_conserves_the_total(seed, move, shock):
    rng = np.random.default_rng(seed)
    marks = BOOK.mark_price * (1 + shock)
    ledger = Ledger(BOOK, fund=float(rng.uniform(0, 1e6)))
    before = total(ledger, marks)
    i = np.unique(rng.integers(0, BOOK.n_positions, 40))
    share = rng.uniform(0, 1, i.size)
    qty = ledger.size[i] * share
    price = marks[BOOK.pos_symbol[i]]
    if move == "market":
        ledger.close_to_market(i, qty, price)
    elif move == "takeover":
        bankruptcy = price * rng.uniform(0.5, 1.5, i.size)
        ledger.take_over(i, qty, bankruptcy, price)
    else:
        ledger.cut(i, rng.uniform(0, 100, i.size))
    ledger.release_isolated(i)
    after = total(ledger, marks)
    assert abs(after - before) <= 1e-12 * scale(marks)


def test_closing_a_whole_isolated_position_returns_its_margin_to_the_wallet():
    j = int(np.flatnonzero(BOOK.isolated == 1)[0])
    acc = int(BOOK.pos_account[j])
    ledger = Ledger(BOOK)
    margin, wallet = ledger.isolated_margin[j], ledger.wallet[acc]
    price = BOOK.entry[j]  # closed at entry: no PnL
    ledger.close_to_market(np.array([j]), ledger.size[[j]], np.array([price]))
    ledger.release_isolated(np.array([j]))
    assert ledger.size[j] == 0.0 and ledger.isolated_margin[j] == 0.0
    assert ledger.wallet[acc] == wallet + margin
    assert ledger.x_size[BOOK.pos_symbol[j]] == BOOK.size[j]
