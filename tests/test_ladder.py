"""The ladder's per-position actions as a kernel (``ladder.ladder_actions``) against their NumPy
definition (``ladder.ladder_step``), bit for bit, for every partial mode and preset."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpurisk.backend import CpuBackend, get_backend
from gpurisk.ladder import LADDERS, Ladder, ladder_actions, ladder_step
from gpurisk.parity import StandInBackend, StrictStandInBackend

LADDER_CHOICES = [*LADDERS.values(), Ladder(partial="slices", max_partial_steps=2, backstop_ratio=1.2),
                  Ladder(partial="target", target_ratio=0.5), Ladder(partial="slices", slice_fraction=1.0),
                  Ladder(partial="target", max_partial_steps=0)]


@pytest.mark.parametrize("backend", [get_backend("cpu"), CpuBackend(threads=1), StandInBackend(),
                                     StrictStandInBackend()],
                         ids=["cpu", "cpu-1-thread", "stand-in", "stand-in-strict"])
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 20_000), ladder=st.sampled_from(LADDER_CHOICES))
def test_ladder_actions_are_ladder_step_bit_for_bit(backend, seed, n, ladder):
    """Ratios around the liquidation and backstop ratios, equity around zero (NaN too), partial
    counts around the limit, notionals around the slice floor, restoring fractions that are
    NaN, <= 0, in (0, 1) or 1; over 8,192 positions the kernel runs on several threads."""
    rng = np.random.default_rng(seed)
    size = rng.choice([-3.0, -0.7, 0.25, 1.0, 12.5], n) * rng.uniform(0.5, 2.0, n)
    ratio = rng.choice([0.9, 1.0, 1.2, 1.5, 2.0, 5.0, np.nan], n)
    equity = rng.choice([-10.0, -0.0, 0.0, 1e-9, 50.0, 1e4, np.nan], n)
    isolated = rng.random(n) < 0.2
    partials = rng.integers(0, 4, n).astype(np.int32)
    notional = rng.choice([5e4, 1e5, 1e5 + 1e-9, 2e6], n)
    account_keep = rng.choice([np.nan, -0.5, 0.0, 1e-300, 0.3, 0.999, 1.0, np.inf], n)
    asked = []

    def restoring(mask):
        asked.append(mask.copy())
        return np.where(mask, account_keep, 1.0)

    want_action, want_qty = ladder_step(ladder, size, ratio, equity, isolated, partials,
                                        notional if ladder.partial == "slices" else None, restoring)
    asked_want = list(asked)
    asked.clear()
    got_action, got_qty = ladder_actions(backend, ladder, size, ratio, equity, isolated, partials,
                                         notional if ladder.partial == "slices" else None, restoring)
    assert np.array_equal(got_action, want_action)
    assert got_qty.tobytes() == want_qty.tobytes()
    # the restoring fraction is asked for the same positions (an account's solve costs a kernel)
    assert len(asked) == len(asked_want) and all(np.array_equal(a, b) for a, b in zip(asked, asked_want))
