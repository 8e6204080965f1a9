"""The tier arrays a venue's tier conventions ask of the kernels.

The device book holds the tiers as given (rates, deduction amounts, the liquidation solver's
per-tier bounds). A venue that applies the tier's rate to the whole position (OKX: no
deduction) reads zero amounts, and a venue that counts the close fee in the requirement
solves liquidation prices with the fee's rate beside each tier's rate. Both are derived here
once per (device book, convention) and cached on the device book. A venue with neither gets
the device book's own arrays: the same bits as before these conventions existed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .venue import Venue


@dataclass
class VenueTiers:
    cum: object  # deduction amount per tier (zeros for a whole-position rate)
    req_mmr: object  # rate of the requirement per tier: MM rate + close fee rate
    root_bound: object  # the liquidation solver's per-tier bounds for those rates and amounts


def venue_tiers(backend, dev, venue: Venue) -> VenueTiers:
    """The tier arrays of ``dev`` (a DeviceBook) under ``venue``'s tier rate and close fee."""
    whole, fee = venue.tier_rate == "whole", float(venue.close_fee_rate)
    if not whole and fee == 0.0:
        return VenueTiers(dev.tier_cum, dev.tier_mmr, dev.tier_root_bound)
    cache = dev.__dict__.setdefault("_venue_tiers", {})
    key = (whole, fee)
    if key not in cache:
        from .engine import liquidation_root_bounds

        xp = backend.xp
        floor = backend.to_host(dev.tier_floor)
        mmr = backend.to_host(dev.tier_mmr)
        cum = backend.to_host(dev.tier_cum) * (0.0 if whole else 1.0)
        req = mmr + fee if fee else mmr
        bounds = liquidation_root_bounds(floor, req, cum)
        cache[key] = VenueTiers(backend.asarray(cum) if whole else dev.tier_cum,
                                backend.asarray(req) if fee else dev.tier_mmr,
                                xp.ascontiguousarray(backend.asarray(bounds)))
    return cache[key]


def derived_maint_amount(tier_start: np.ndarray, floor: np.ndarray, mmr: np.ndarray) -> np.ndarray:
    """cum_1 = 0, cum_k = cum_(k-1) + floor_k · (mmr_k − mmr_(k−1)) per symbol (MM continuous)."""
    cum = np.zeros(floor.size)
    for s in range(tier_start.size - 1):
        a, b = int(tier_start[s]), int(tier_start[s + 1])
        for k in range(a + 1, b):
            cum[k] = cum[k - 1] + floor[k] * (mmr[k] - mmr[k - 1])
    return cum
