"""Decimal oracle of pooled (multi-asset) collateral, restated from the venues' documents
(README "Multi-asset collateral"), independent of gpurisk's kernels.

Per (account, asset) row the per-asset figures come from tests/oracle.py. Then, in Decimal:
- a row's collateral value: a positive equity x counts band by band, each band [f_k, f_k+1) of
  the collateral table at its ratio c_k (Σ_k c_k·(min(x, f_k+1) − f_k) over the bands below x),
  times the asset's index price; x <= 0 counts at full value, x·price (Bybit: "The Collateral
  Value Ratio only applies to assets with a positive balance");
- the pool (all rows of an account_id): equity Σ collateral values, maintenance margin, close
  fee and initial margin Σ row figure × index price, ratio (MM + fee) / equity, status;
- a cross position's liquidation (bankruptcy) price: the price of its symbol at which the pool's
  ratio reaches the liquidation ratio (its equity reaches 0), everything else held.
"""

from __future__ import annotations

from decimal import Decimal, localcontext

from oracle import D0, build_tiers, dec, oracle_of, tier_index

PREC = 60


def collateral_bands(collateral_rows) -> dict[str, tuple[Decimal, list[tuple[Decimal, Decimal]]]]:
    """asset -> (index price, [(floor, ratio), ...] sorted by floor)."""
    out: dict = {}
    for r in collateral_rows:
        price, bands = out.setdefault(r["asset"], (dec(r["index_price"]), []))
        bands.append((dec(r.get("amount_floor") or 0.0), dec(r["collateral_ratio"])))
    for _, bands in out.values():
        bands.sort()
    return out


def collateral_value(x: Decimal, price: Decimal, bands) -> Decimal:
    if x <= 0:
        return x * price
    v = D0
    for k, (lo, ratio) in enumerate(bands):
        if x <= lo:
            break
        hi = bands[k + 1][0] if k + 1 < len(bands) else x
        v += (min(x, hi) - lo) * ratio
    return v * price


def _status(req: Decimal, eq: Decimal, has_cross: bool, venue) -> str:
    if not has_cross:
        return "healthy"
    if eq <= 0:
        return "bankrupt"
    r = req / eq
    if r >= Decimal(repr(float(venue.liquidation_ratio))):
        return "liquidatable"
    return "margin_call" if r >= Decimal(repr(float(venue.margin_call_ratio))) else "healthy"


def pooled_oracle(book: dict, collateral_rows, venue) -> dict:
    """{"accounts": {(account_id, asset): row}, "pools": {account_id: pool}, "positions": ...,
    "at": a function (position key, price) -> (pool equity, pool requirement) at that price}."""
    orc = oracle_of(book, venue)
    bands = collateral_bands(collateral_rows)
    with localcontext() as ctx:
        ctx.prec = PREC
        pools: dict = {}
        rows: dict = {}
        for r in orc.accounts:
            price, b = bands[r["asset"]]
            cv = collateral_value(r["equity"], price, b)
            rows[(r["account_id"], r["asset"])] = dict(collateral_value=cv, equity=r["equity"])
            p = pools.setdefault(r["account_id"], dict(pool_equity=D0, pool_maint_margin=D0, pool_close_fee=D0,
                                                       pool_init_margin=D0, n_cross=0))
            p["pool_equity"] += cv
            p["pool_maint_margin"] += r["maint_margin"] * price
            p["pool_close_fee"] += r["close_fee"] * price
            p["pool_init_margin"] += r["init_margin"] * price
        for r in orc.positions:
            if r["margin_mode"] == "cross":
                pools[r["account_id"]]["n_cross"] += 1
        for p in pools.values():
            req = p["pool_maint_margin"] + p["pool_close_fee"]
            eq = p["pool_equity"]
            has = p["n_cross"] > 0
            p["margin_ratio"] = D0 if not has else (req / eq if eq > 0 else Decimal("Infinity"))
            p["status"] = _status(req, eq, has, venue)
            p["available_balance"] = eq - p["pool_init_margin"]

    positions = {(r["account_id"], r["symbol"], r["margin_mode"]): r for r in orc.positions}
    market_of = {m["symbol"]: m for m in book["markets"]}
    tiers_of = build_tiers(book["tiers"])

    def at(key, price) -> tuple[Decimal, Decimal]:
        """(pool equity, pool requirement) with position ``key``'s symbol at ``price``."""
        r = positions[key]
        with localcontext() as ctx:
            ctx.prec = PREC
            P = dec(price)
            m = market_of[r["symbol"]]
            q, E, cs, ts = r["size"], r["entry_price"], dec(m.get("contract_size") or 1.0), tiers_of[r["symbol"]]
            inv = (m.get("contract_type") or "linear") == "inverse"
            aq = abs(q)
            if inv:
                N, up = aq * cs / P, q * cs * (1 / E - 1 / P)
            else:
                N, up = aq * P * cs, q * (P - E) * cs
            if venue.mm_base == "entry":
                mm = r["maint_margin"]
            else:
                k = tier_index(ts, aq if venue.tier_basis == "contracts" else N)
                mm = N * ts[k].mmr - (D0 if venue.tier_rate == "whole" else ts[k].cum)
            fee = N * dec(float(venue.close_fee_rate))
            price_a, b = bands[r["asset"]]
            row = rows[(r["account_id"], r["asset"])]
            pool = pools[r["account_id"]]
            row_eq = row["equity"] + (up - r["upnl"])
            eq = pool["pool_equity"] - row["collateral_value"] + collateral_value(row_eq, price_a, b)
            req = pool["pool_maint_margin"] + pool["pool_close_fee"] + \
                ((mm + fee) - (r["maint_margin"] + r["close_fee"])) * price_a
            return eq, req

    return {"accounts": rows, "pools": pools, "positions": positions, "at": at, "oracle": orc}
