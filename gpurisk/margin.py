"""Margin: notional, unrealised PnL, tiered maintenance and initial margin per position,
and equity, margin ratio, available balance and status per account (kernels/margin.cu)."""

from __future__ import annotations

from dataclasses import dataclass

from .backend import Backend
from .tier_rules import venue_tiers
from .venue import AVAILABLE_RULES, Venue


@dataclass
class PositionMargin:
    notional: object
    upnl: object
    maint: object
    init: object
    close_fee: object = None  # taker fee to close at the mark, counted in the requirement beside maint


@dataclass
class AccountMargin:
    upnl: object
    equity: object
    maint: object
    init: object
    ratio: object
    available: object
    status: object
    n_cross: object
    close_fee: object = None  # Σ close fee over cross positions


def position_margin(backend: Backend, dev, mark, venue: Venue, out: PositionMargin | None = None) -> PositionMargin:
    """Per-position margin figures at the mark prices ``mark`` (one per symbol)."""
    xp = backend.xp
    n = dev.n_positions
    # close_fee starts at zero: the kernel writes it only for a venue with a fee
    out = out or PositionMargin(*(xp.empty(n, dtype=xp.float64) for _ in range(4)), xp.zeros(n, dtype=xp.float64))
    tiers = venue_tiers(backend, dev, venue)
    backend.launch("position_margin", n, dev.pos_symbol, dev.size, dev.entry, dev.leverage, mark,
                   dev.contract_size, dev.tier_start, dev.tier_floor, dev.tier_mmr, tiers.cum,
                   dev.tier_max_leverage, int(venue.mm_base == "entry"), int(venue.tier_basis == "contracts"),
                   int(venue.im_base == "entry"), float(venue.close_fee_rate), dev.inverse,
                   out.notional, out.upnl, out.maint, out.init, out.close_fee)
    return out


def account_margin(backend: Backend, dev, pm: PositionMargin, venue: Venue,
                   out: AccountMargin | None = None) -> AccountMargin:
    """Per-account sums over cross positions, in storage order (deterministic)."""
    xp = backend.xp
    n = dev.n_accounts
    if out is None:
        out = AccountMargin(*(xp.empty(n, dtype=xp.float64) for _ in range(6)),
                            xp.empty(n, dtype=xp.int8), xp.empty(n, dtype=xp.int32), xp.empty(n, dtype=xp.float64))
    backend.launch("account_margin", n, dev.pos_start, dev.isolated, dev.size, pm.upnl, pm.maint, pm.init,
                   pm.close_fee, dev.wallet, float(venue.margin_call_ratio), float(venue.liquidation_ratio),
                   AVAILABLE_RULES.index(venue.available_upnl), int(venue.close_fee_rate > 0),
                   out.upnl, out.equity, out.maint, out.init, out.ratio, out.available,
                   out.status, out.n_cross, out.close_fee)
    return out
