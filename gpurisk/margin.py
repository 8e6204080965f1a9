"""Margin: notional, unrealised PnL, tiered maintenance and initial margin per position,
and equity, margin ratio, available balance and status per account (kernels/margin.cu)."""

from __future__ import annotations

from dataclasses import dataclass

from .backend import Backend
from .venue import Venue


@dataclass
class PositionMargin:
    notional: object
    upnl: object
    maint: object
    init: object


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


def position_margin(backend: Backend, dev, mark, venue: Venue, out: PositionMargin | None = None) -> PositionMargin:
    """Per-position margin figures at the mark prices ``mark`` (one per symbol)."""
    xp = backend.xp
    n = dev.n_positions
    out = out or PositionMargin(*(xp.empty(n, dtype=xp.float64) for _ in range(4)))
    backend.launch("position_margin", n, dev.pos_symbol, dev.size, dev.entry, dev.leverage, mark,
                   dev.contract_size, dev.tier_start, dev.tier_floor, dev.tier_mmr, dev.tier_cum,
                   dev.tier_max_leverage, int(venue.mm_base == "entry"),
                   out.notional, out.upnl, out.maint, out.init)
    return out


def account_margin(backend: Backend, dev, pm: PositionMargin, venue: Venue,
                   out: AccountMargin | None = None) -> AccountMargin:
    """Per-account sums over cross positions, in storage order (deterministic)."""
    xp = backend.xp
    n = dev.n_accounts
    if out is None:
        out = AccountMargin(*(xp.empty(n, dtype=xp.float64) for _ in range(6)),
                            xp.empty(n, dtype=xp.int8), xp.empty(n, dtype=xp.int32))
    backend.launch("account_margin", n, dev.pos_start, dev.isolated, dev.size, pm.upnl, pm.maint, pm.init,
                   dev.wallet, float(venue.margin_call_ratio), float(venue.liquidation_ratio),
                   out.upnl, out.equity, out.maint, out.init, out.ratio, out.available,
                   out.status, out.n_cross)
    return out
