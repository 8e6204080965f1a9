"""Liquidation and bankruptcy prices, and each position's own margin ratio and status
(kernels/liquidation.cu)."""

from __future__ import annotations

from dataclasses import dataclass

from .backend import Backend
from .margin import AccountMargin, PositionMargin
from .tier_rules import venue_tiers
from .venue import Venue


@dataclass
class PositionRisk:
    equity: object  # the account's equity (cross) or the position's own (isolated)
    ratio: object
    status: object
    liq_price: object  # on the trigger side of the root (and the tick); NaN where no positive price liquidates
    bankruptcy_price: object  # raw; may be <= 0 for an over-collateralised long


def position_risk(backend: Backend, dev, mark, pm: PositionMargin, am: AccountMargin, venue: Venue,
                  out: PositionRisk | None = None, liq_price: bool = True) -> PositionRisk:
    """``liq_price=False``: leave liq_price NaN (a stress run needs statuses and bankruptcy
    prices only, not the trigger-side search)."""
    xp = backend.xp
    n = dev.n_positions
    if out is None:
        out = PositionRisk(xp.empty(n, dtype=xp.float64), xp.empty(n, dtype=xp.float64),
                           xp.empty(n, dtype=xp.int8), xp.empty(n, dtype=xp.float64),
                           xp.empty(n, dtype=xp.float64))
    tiers = venue_tiers(backend, dev, venue)
    backend.launch("position_risk", n, dev.pos_account, dev.pos_symbol, dev.size, dev.entry,
                   dev.isolated, dev.isolated_margin, mark, dev.contract_size, dev.tier_start,
                   dev.tier_mmr, tiers.cum, tiers.root_bound, int(venue.mm_base == "entry"),
                   float(venue.margin_call_ratio), float(venue.liquidation_ratio),
                   pm.upnl, pm.maint, dev.wallet, am.equity, am.maint, am.ratio, am.status, am.n_cross,
                   dev.pos_start, dev.tier_floor, dev.tick_size, int(liq_price),
                   pm.close_fee, am.close_fee, float(venue.close_fee_rate), int(venue.tier_basis == "contracts"),
                   tiers.req_mmr, int(venue.tier_rate == "whole"), dev.inverse,
                   int(venue.bankruptcy_fee and venue.close_fee_rate > 0),
                   out.equity, out.ratio, out.status, out.liq_price, out.bankruptcy_price)
    return out


def liquidation_prices(backend: Backend, dev, pm: PositionMargin, am: AccountMargin, venue: Venue,
                       positions, liq_price) -> None:
    """Write into ``liq_price`` (a PositionRisk's, from a revaluation run with
    ``liq_price=False``) the liquidation prices of ``positions`` (int64 indices) only: the
    same kernel function as position_risk's, so the same bits as a full revaluation's."""
    positions = backend.xp.ascontiguousarray(backend.asarray(positions), dtype=backend.xp.int64)
    if not positions.size:
        return
    tiers = venue_tiers(backend, dev, venue)
    backend.launch("liquidation_prices", int(positions.size), positions, dev.pos_account, dev.pos_symbol,
                   dev.size, dev.entry, dev.isolated, dev.isolated_margin, dev.contract_size, dev.tier_start,
                   dev.tier_mmr, tiers.cum, tiers.root_bound, int(venue.mm_base == "entry"),
                   float(venue.margin_call_ratio), float(venue.liquidation_ratio), pm.upnl, pm.maint,
                   dev.wallet, am.equity, am.maint, am.n_cross, dev.pos_start, dev.tier_floor, dev.tick_size,
                   pm.close_fee, am.close_fee, float(venue.close_fee_rate), int(venue.tier_basis == "contracts"),
                   tiers.req_mmr, int(venue.tier_rate == "whole"), dev.inverse, liq_price)
