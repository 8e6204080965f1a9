"""Pooled (multi-asset) collateral: an account's wallets of every asset as one margin pool in
the venue's margin currency (kernels/collateral.cu; README "Multi-asset collateral").

The per-asset figures (equity, maintenance and initial margin of each (account, asset) row)
come from kernels/margin.cu as for any venue; pool_margin then values each row's equity
through the collateral table and sums the pool, and pooled_prices re-solves the liquidation and
bankruptcy prices of cross positions against the pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import Backend
from .liquidation import PositionRisk
from .margin import AccountMargin, PositionMargin
from .tier_rules import venue_tiers
from .venue import Venue


@dataclass
class PoolMargin:
    """Per accounts row: the row's collateral value and its pool's sums (margin currency)."""

    collateral_value: object
    pool_equity: object
    pool_maint: object
    pool_close_fee: object
    pool_init: object


def pool_layout(book) -> dict[str, np.ndarray]:
    """Host arrays a pooled revaluation needs: pools (runs of equal account_id over the rows,
    which are sorted by (account_id, asset)), each row's asset, and the collateral table."""
    ids = book.account_id
    first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if ids.size else np.zeros(0, np.int64)
    pool_start = np.append(first, ids.size).astype(np.int64)
    return {"pool_start": pool_start, "row_asset": np.ascontiguousarray(book.account_asset, dtype=np.int32),
            **book.collateral_arrays()}


class DevicePools:
    """pool_layout on one backend (uploaded once, beside the DeviceBook)."""

    def __init__(self, book, backend: Backend):
        for name, arr in pool_layout(book).items():
            setattr(self, name, backend.asarray(arr))
        self.n_pools = int(self.pool_start.size) - 1


def pool_margin(backend: Backend, pools: DevicePools, am: AccountMargin, venue: Venue,
                out: PoolMargin | None = None) -> PoolMargin:
    """Value and sum every pool; overwrite am.ratio, am.available and am.status with the pool's."""
    xp = backend.xp
    n = int(am.equity.size)
    out = out or PoolMargin(*(xp.empty(n, dtype=xp.float64) for _ in range(5)))
    backend.launch("pool_margin", pools.n_pools, pools.pool_start, pools.row_asset, am.equity, am.maint,
                   am.close_fee, am.init, am.n_cross, pools.index_price, pools.coll_start, pools.coll_floor,
                   pools.coll_ratio, float(venue.margin_call_ratio), float(venue.liquidation_ratio),
                   out.collateral_value, out.pool_equity, out.pool_maint, out.pool_close_fee, out.pool_init,
                   am.ratio, am.available, am.status)
    return out


def pooled_prices(backend: Backend, dev, pools: DevicePools, mark, pm: PositionMargin, am: AccountMargin,
                  pool: PoolMargin, pr: PositionRisk, venue: Venue, liq_price: bool = True) -> None:
    """Liquidation and bankruptcy prices of the cross positions against their pool: the price
    of the position's symbol where the pool turns liquidatable (bankrupt), everything else held.
    Isolated positions keep position_risk's."""
    tiers = venue_tiers(backend, dev, venue)
    backend.launch("pooled_prices", dev.n_positions, dev.pos_account, dev.pos_symbol, dev.size, dev.entry,
                   dev.isolated, mark, dev.contract_size, dev.inverse, dev.tier_start, dev.tier_floor,
                   dev.tier_mmr, tiers.cum, int(venue.mm_base == "entry"), int(venue.tier_basis == "contracts"),
                   float(venue.close_fee_rate), float(venue.margin_call_ratio), float(venue.liquidation_ratio),
                   pm.upnl, pm.maint, pm.close_fee, pools.row_asset, am.equity, pool.collateral_value,
                   pool.pool_equity, pool.pool_maint, pool.pool_close_fee, pools.index_price, pools.coll_start,
                   pools.coll_floor, pools.coll_ratio, dev.tick_size, int(liq_price), pr.liq_price,
                   pr.bankruptcy_price)


def pooled_prices_of(backend: Backend, dev, pools: DevicePools, mark, pm: PositionMargin, am: AccountMargin,
                     pool: PoolMargin, pr: PositionRisk, venue: Venue, positions) -> None:
    """pooled_prices for the positions ``positions`` (int64 indices) only, written into
    ``pr.liq_price`` and ``pr.bankruptcy_price`` at those indices: the same kernel over the
    positions' own fields (a position's prices read its row's and pool's sums, nothing of
    other positions), so the same bits as a full pass. Isolated positions are left as they are."""
    xp = backend.xp
    idx = xp.ascontiguousarray(backend.asarray(positions), dtype=xp.int64)
    n = int(idx.size)
    if not n:
        return
    part = {k: xp.ascontiguousarray(xp.take(getattr(dev, k), idx)) for k in
            ("pos_account", "pos_symbol", "size", "entry", "isolated")}
    upnl, maint, fee = (xp.ascontiguousarray(xp.take(a, idx)) for a in (pm.upnl, pm.maint, pm.close_fee))
    liq, bkr = xp.ascontiguousarray(xp.take(pr.liq_price, idx)), xp.ascontiguousarray(xp.take(pr.bankruptcy_price, idx))
    tiers = venue_tiers(backend, dev, venue)
    backend.launch("pooled_prices", n, part["pos_account"], part["pos_symbol"], part["size"], part["entry"],
                   part["isolated"], mark, dev.contract_size, dev.inverse, dev.tier_start, dev.tier_floor,
                   dev.tier_mmr, tiers.cum, int(venue.mm_base == "entry"), int(venue.tier_basis == "contracts"),
                   float(venue.close_fee_rate), float(venue.margin_call_ratio), float(venue.liquidation_ratio),
                   upnl, maint, fee, pools.row_asset, am.equity, pool.collateral_value, pool.pool_equity,
                   pool.pool_maint, pool.pool_close_fee, pools.index_price, pools.coll_start, pools.coll_floor,
                   pools.coll_ratio, dev.tick_size, 1, liq, bkr)
    pr.liq_price[idx] = liq
    pr.bankruptcy_price[idx] = bkr
