"""Venue conventions: how margin, ADL priority and indicator lights are computed.

A :class:`Venue` holds the conventions; the presets are instances of it, and every API
that takes ``venue=`` accepts a preset name or a ``Venue``. The README cites each venue's
public documentation for the rules below.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

ADL_SCORES = {"pnl_leverage": 0, "binance": 1, "hyperliquid": 2, "random": 3}  # kernel codes
LIGHTS_RULES = ("size", "rank")
MM_BASES = ("mark", "entry")


@dataclass(frozen=True)
class Venue:
    """Conventions of one venue.

    name: label used in outputs.
    mm_base: ``"mark"`` (maintenance margin on mark notional) or ``"entry"`` (on entry
        notional, as BitMEX and Bybit classic do).
    adl_score: ``"pnl_leverage"`` (BitMEX/Bybit: pnl% × effective leverage),
        ``"binance"`` (positive PnL over wallet × margin ratio), ``"hyperliquid"``
        ((mark/entry)^side × notional / equity), ``"random"`` (dYdX: a seeded cyclic order).
    lights: ``"size"`` (size-weighted cumulative share of the queue) or ``"rank"``
        (rank / count), both in 20% steps, 5 lights at the front.
    margin_call_ratio: margin ratio from which an account is in ``margin_call``.
    liquidation_ratio: margin ratio from which it is ``liquidatable`` (1 = equity at MM).
    adl_seed: seed of the ``random`` order.
    """

    name: str
    mm_base: str = "mark"
    adl_score: str = "binance"
    lights: str = "rank"
    margin_call_ratio: float = 0.8
    liquidation_ratio: float = 1.0
    adl_seed: int = 0

    def __post_init__(self):
        if self.mm_base not in MM_BASES:
            raise ValueError(f"Venue.mm_base must be one of {MM_BASES}, got {self.mm_base!r}")
        if self.adl_score not in ADL_SCORES:
            raise ValueError(f"Venue.adl_score must be one of {tuple(ADL_SCORES)}, got {self.adl_score!r}")
        if self.lights not in LIGHTS_RULES:
            raise ValueError(f"Venue.lights must be one of {LIGHTS_RULES}, got {self.lights!r}")
        if not (0 < self.margin_call_ratio <= self.liquidation_ratio):
            raise ValueError("Venue needs 0 < margin_call_ratio <= liquidation_ratio, got "
                             f"{self.margin_call_ratio} and {self.liquidation_ratio}")

    def with_(self, **changes) -> "Venue":
        """A copy with some conventions changed, e.g. ``BINANCE.with_(margin_call_ratio=0.7)``."""
        return replace(self, **changes)


BINANCE = Venue("binance", mm_base="mark", adl_score="binance", lights="rank")
BYBIT = Venue("bybit", mm_base="entry", adl_score="pnl_leverage", lights="rank")
BITMEX = Venue("bitmex", mm_base="entry", adl_score="pnl_leverage", lights="size")
HYPERLIQUID = Venue("hyperliquid", mm_base="mark", adl_score="hyperliquid", lights="rank")
DYDX = Venue("dydx", mm_base="mark", adl_score="random", lights="rank")

PRESETS = {v.name: v for v in (BINANCE, BYBIT, BITMEX, HYPERLIQUID, DYDX)}


def get_venue(venue: "str | Venue") -> Venue:
    if isinstance(venue, Venue):
        return venue
    try:
        return PRESETS[venue]
    except (KeyError, TypeError):
        raise ValueError(f"unknown venue {venue!r}; presets are {', '.join(PRESETS)}, "
                         "or pass a gpurisk.Venue(...)") from None
