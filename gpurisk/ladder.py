"""The tiered deleveraging ladder (DESIGN §6): what happens to an account as its margin
ratio rises, before the insurance fund and ADL.

margin call (notify) → partial reduction (fixed slices of large positions, or the smallest
proportional reduction that restores a target ratio) → full liquidation at the market →
backstop takeover at the bankruptcy price → insurance fund → ADL.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

PARTIAL_MODES = ("none", "slices", "target")


@dataclass(frozen=True)
class Ladder:
    """Deleveraging steps for liquidatable accounts (margin ratio >= the venue's
    liquidation ratio).

    partial: ``"none"`` (close everything at once), ``"slices"`` (positions above
        ``slice_min_notional`` are reduced by ``slice_fraction`` per step; smaller ones are
        closed) or ``"target"`` (cross positions are reduced in proportion, by the least
        that brings the margin ratio down to ``target_ratio``).
    max_partial_steps: how many partial reductions an account gets before it is closed in
        full (None: no limit).
    backstop_ratio: from this margin ratio on, the backstop takes the positions over at their
        bankruptcy prices instead of selling them in the market (None: only when bankrupt).
    """

    partial: str = "none"
    slice_fraction: float = 0.2
    slice_min_notional: float = 100_000.0
    target_ratio: float = 0.8
    max_partial_steps: int | None = None
    backstop_ratio: float | None = None

    def __post_init__(self):
        if self.partial not in PARTIAL_MODES:
            raise ValueError(f"Ladder.partial must be one of {PARTIAL_MODES}, got {self.partial!r}")
        if not 0 < self.slice_fraction <= 1:
            raise ValueError("Ladder.slice_fraction must be in (0, 1]")
        if not 0 < self.target_ratio < 1:
            raise ValueError("Ladder.target_ratio must be in (0, 1): below the liquidation ratio")
        if self.backstop_ratio is not None and self.backstop_ratio <= 1:
            raise ValueError("Ladder.backstop_ratio must be above 1 (the liquidation ratio)")

    def with_(self, **changes) -> "Ladder":
        return replace(self, **changes)


LADDERS = {
    # Binance: one reduction to compliance, else the account is taken over.
    "binance": Ladder(partial="target", target_ratio=0.8, max_partial_steps=1),
    # Hyperliquid: 20% slices of positions above 100k notional; backstop below 2/3 of MM.
    "hyperliquid": Ladder(partial="slices", slice_fraction=0.2, slice_min_notional=100_000.0,
                          backstop_ratio=1.5),
    "bybit": Ladder(),
    "bitmex": Ladder(),
    "dydx": Ladder(),
}


def get_ladder(ladder: "str | Ladder | None", venue_name: str) -> Ladder:
    if isinstance(ladder, Ladder):
        return ladder
    name = venue_name if ladder is None else ladder
    if name in LADDERS:
        return LADDERS[name]
    if ladder is None:
        return Ladder()
    raise ValueError(f"unknown ladder {ladder!r}; presets are {', '.join(LADDERS)}, or pass gpurisk.Ladder(...)")


def ladder_step(ladder: Ladder, size, ratio, equity, isolated, partials, notional, restoring):
    """The NumPy definition of ``ladder_actions`` (what the stress step runs, as a kernel):
    what the ladder does to each unit's positions this step (arrays over the positions
    of liquidatable units: an account's cross book, or one isolated position).

    size, ratio, equity: each position's size and its unit's margin ratio and equity;
    isolated: bool; partials: partial reductions its account has had; notional: the
    position's. ``restoring(mask)``: for the cross positions in mask, the share of each
    account's cross book to keep that brings its ratio to the target (NaN or <= 0: none
    does), as the ``restoring_fraction`` kernel gives it.

    Returns (action, qty): action 0 reduce, 1 liquidate in the market, 2 take over at the
    bankruptcy price; qty the signed size to close.
    """
    action = np.full(size.size, 1, dtype=np.int8)
    if ladder.backstop_ratio is not None:
        action[ratio >= ladder.backstop_ratio] = 2
    action[equity <= 0] = 2
    qty = size.copy()
    may_partial = (action == 1) & (ladder.partial != "none")
    if ladder.max_partial_steps is not None:
        may_partial &= partials < ladder.max_partial_steps
    if ladder.partial == "target":
        solve = may_partial & ~isolated
        if solve.any():
            keep = restoring(solve)
            part = solve & np.isfinite(keep) & (keep > 0)
            qty[part] = size[part] * (1.0 - keep[part])
            action[part] = 0
    elif ladder.partial == "slices":
        big = may_partial & (notional > ladder.slice_min_notional)
        qty[big] = size[big] * ladder.slice_fraction
        action[big] = 0
    return action, qty


#: partial modes' codes in the ``ladder_actions`` kernel (kernels/stress.cu)
_PARTIAL_CODE = {"none": 0, "slices": 1, "target": 2}


def ladder_actions(backend, ladder: Ladder, size, ratio, equity, isolated, partials, notional, restoring):
    """``ladder_step`` (same arguments, after the backend; same results, bit for bit) by the
    kernel ``ladder_actions``: one launch, two for a target ladder whose accounts need their
    restoring fraction. ``notional`` is read by a slices ladder only (None otherwise)."""
    b, xp = backend, backend.xp
    size = np.ascontiguousarray(size, dtype=np.float64)
    n = size.size
    # -1: no limit; a limit below 0 allows no reduction, as 0 does (counts are >= 0)
    max_steps = -1 if ladder.max_partial_steps is None else min(max(int(ladder.max_partial_steps), 0), 2**31 - 1)
    arrays = [b.asarray(np.ascontiguousarray(a, dtype=dt)) for a, dt in
              ((size, np.float64), (ratio, np.float64), (equity, np.float64),
               (np.asarray(isolated, dtype=np.bool_).view(np.int8), np.int8), (partials, np.int32),
               (size if notional is None else notional, np.float64))]
    action, qty, solve = xp.empty(n, dtype=xp.int8), xp.empty(n, dtype=xp.float64), xp.empty(n, dtype=xp.int8)
    options = (_PARTIAL_CODE[ladder.partial], float(ladder.slice_fraction), float(ladder.slice_min_notional),
               max_steps, int(ladder.backstop_ratio is not None),
               float(ladder.backstop_ratio) if ladder.backstop_ratio is not None else 0.0)

    def launch(keep, have_keep: int):
        b.launch("ladder_actions", n, *arrays, keep, *options, have_keep, action, qty, solve)

    launch(arrays[0], 0)  # keep unread
    if ladder.partial == "target":
        solve_host = b.to_host(solve).view(bool)
        if solve_host.any():
            launch(b.asarray(np.ascontiguousarray(restoring(solve_host), dtype=np.float64)), 1)
    return b.to_host(action), b.to_host(qty)
