// Pooled (multi-asset) collateral's device functions (README "Multi-asset collateral"), one
// source for the revaluation (collateral.cu) and the what-if orders (whatif.cu): a row's
// collateral value, the pool's figures from its sums, and the liquidation (bankruptcy) price
// of a cross position against its pool.
#include "common.cuh"

// Value in the margin currency of an asset balance x (wallet + upnl of that asset's cross
// positions): a positive balance counts band by band, like a progressive tax, each band of
// the collateral table [floor_k, floor_k+1) at its ratio, then times the index price; a debt
// (x <= 0) counts at full value (Bybit UTA: "assets with a negative balance default to a 100%
// collateral value ratio"). Bands in table order: the same bits on every backend.
GR_DEVICE double collateral_value_of(double x, double price, const int* coll_start,
                                     const double* coll_floor, const double* coll_ratio, int asset) {
    if (!(x > 0.0)) return x * price;
    double v = 0.0;
    const int first = coll_start[asset], end = coll_start[asset + 1];
    for (int k = first; k < end; ++k) {
        const double lo = coll_floor[k];
        if (!(x > lo)) break;
        const double hi = k + 1 < end ? coll_floor[k + 1] : x;
        const double top = x < hi ? x : hi;
        v += (top - lo) * coll_ratio[k];
    }
    return v * price;
}

// The pool's margin ratio, available balance and status from its sums in the margin currency
// (equity se, MM sm, close fee sf, IM si) and its count of open cross positions nc.
struct PoolFigures {
    double ratio, available;
    signed char status;
};

GR_DEVICE PoolFigures pool_figures(double se, double sm, double sf, double si, int nc, double margin_call_ratio,
                                   double liquidation_ratio) {
    PoolFigures f;
    f.ratio = nc == 0 ? 0.0 : margin_ratio_of(sm + sf, se);
    f.status = nc == 0 ? (signed char)GR_HEALTHY : status_of(se, f.ratio, margin_call_ratio, liquidation_ratio);
    f.available = se - si;
    return f;
}

// The pool at price p of position i's symbol, everything else held (other prices, the other
// assets' balances, index prices and the collateral table): the row's equity moves by the
// position's upnl change, its collateral value is re-read from the table, and the pool's
// requirement moves by the position's MM and close fee change at the index price.
struct PoolAt {
    double q, e, cs, x, row_equity, row_value, pool_equity, pool_req, mm0, fee0, upnl0, fee_rate;
    double margin_call_ratio, liquidation_ratio;
    int s, inv, asset, mm_on_entry, by_contracts;
    const int* tier_start;
    const double* tier_floor;
    const double* tier_mmr;
    const double* tier_cum;
    const int* coll_start;
    const double* coll_floor;
    const double* coll_ratio;
};

// Position (q, e) of symbol s in a pool: the row's equity and collateral value, the pool's
// equity and requirement (MM + close fee, margin currency), the position's own MM, close fee
// and upnl at the mark; asset: the row's, at index price x.
GR_DEVICE PoolAt pool_at(double q, double e, double cs, double x, double row_equity, double row_value,
                         double pool_equity, double pool_req, double mm0, double fee0, double upnl0, double fee_rate,
                         double margin_call_ratio, double liquidation_ratio, int s, int inv, int asset,
                         int mm_on_entry, int by_contracts, const int* tier_start, const double* tier_floor,
                         const double* tier_mmr, const double* tier_cum, const int* coll_start,
                         const double* coll_floor, const double* coll_ratio) {
    PoolAt c;
    c.q = q; c.e = e; c.cs = cs; c.x = x;
    c.row_equity = row_equity; c.row_value = row_value; c.pool_equity = pool_equity; c.pool_req = pool_req;
    c.mm0 = mm0; c.fee0 = fee0; c.upnl0 = upnl0; c.fee_rate = fee_rate;
    c.margin_call_ratio = margin_call_ratio; c.liquidation_ratio = liquidation_ratio;
    c.s = s; c.inv = inv; c.asset = asset; c.mm_on_entry = mm_on_entry; c.by_contracts = by_contracts;
    c.tier_start = tier_start; c.tier_floor = tier_floor; c.tier_mmr = tier_mmr; c.tier_cum = tier_cum;
    c.coll_start = coll_start; c.coll_floor = coll_floor; c.coll_ratio = coll_ratio;
    return c;
}

// want_bankrupt: pool equity <= 0; else the pool's status is liquidatable (or bankrupt).
// *gap: a continuous function of the price that crosses zero where the answer turns (pool
// equity, or equity·liquidation ratio − requirement), which steers the search; the answer
// itself is always the status arithmetic's.
GR_DEVICE bool pool_hit_at(const PoolAt& c, double p, int want_bankrupt, double* gap = 0) {
    const double aq = fabs(c.q);
    const double n_p = notional_at(aq, p, c.cs, c.inv);
    const double mm = c.mm_on_entry ? c.mm0
                      : (c.by_contracts ? maint_margin_in(c.tier_mmr, c.tier_cum,
                                                          tier_of(c.tier_start, c.tier_floor, c.s, aq), n_p)
                                        : maint_margin_of(c.tier_start, c.tier_floor, c.tier_mmr, c.tier_cum, c.s, n_p));
    const double fee = c.fee_rate > 0.0 ? c.fee_rate * n_p : 0.0;
    const double row_eq = c.row_equity + (upnl_at(c.q, p, c.e, c.cs, c.inv) - c.upnl0);
    const double eq = c.pool_equity - c.row_value +
                      collateral_value_of(row_eq, c.x, c.coll_start, c.coll_floor, c.coll_ratio, c.asset);
    if (want_bankrupt) {
        if (gap) *gap = eq;
        return eq <= 0.0;
    }
    const double req = c.pool_req + ((mm + fee) - (c.mm0 + c.fee0)) * c.x;
    if (gap) *gap = eq * c.liquidation_ratio - req;
    return status_of(eq, margin_ratio_of(req, eq), c.margin_call_ratio, c.liquidation_ratio) >= GR_LIQUIDATABLE;
}

// The price nearest the mark, on the adverse side, where pool_hit_at turns true: doubling
// (halving) steps from the mark bracket the crossing (at most GR_POOL_STEPS), false position
// then narrows the bracket to adjacent doubles (or GR_POOL_BISECT steps), and the returned end is the
// one that hits by pool_hit_at (the revaluation's pool with the one row re-valued: its status
// there, up to the last bits of the pool's sum order). A long's adverse side is down, a short's up; if
// the mark itself hits, the search runs the other way to the price where it stops hitting and
// returns the hitting end. NaN where no price within the steps hits.
#define GR_POOL_STEPS 128
#define GR_POOL_BISECT 200
GR_DEVICE double pool_crossing(const PoolAt& c, double mark, int want_bankrupt) {
    const bool is_long = c.q > 0.0;
    const bool hit_mark = pool_hit_at(c, mark, want_bankrupt);
    // walking "down" when a long is healthy at the mark or a short is hit there
    const bool down = is_long != hit_mark;
    // The far end first: where it answers as the mark does, no crossing is looked for (most
    // well-collateralised positions, whose search would otherwise run every step). Equity is
    // monotone in the price (ratios >= 0), so this misses no bankruptcy price; a liquidation
    // price it could miss needs a requirement that turns back within the range (a band of
    // ratio below the MM rate), and is reported null.
    const double extreme = down ? ldexp(mark, -GR_POOL_STEPS) : ldexp(mark, GR_POOL_STEPS);
    if (pool_hit_at(c, extreme, want_bankrupt) == hit_mark) return hit_mark ? mark : GR_NAN;
    double near = mark, far = mark;
    bool found = false;
    for (int k = 0; k < GR_POOL_STEPS; ++k) {
        far = down ? near * 0.5 : near * 2.0;
        if (pool_hit_at(c, far, want_bankrupt) != hit_mark) { found = true; break; }
        near = far;
    }
    if (!found) return hit_mark ? mark : GR_NAN;
    // pool_hit_at(a) == hit_mark, pool_hit_at(b) != hit_mark. The gap is piecewise linear in
    // the price (in 1/price for an inverse contract), so false position (Illinois: the end that
    // stays has its gap halved) lands on the crossing in a few steps, with a bisection every
    // fourth step; the bracket narrows to adjacent doubles.
    double a = near, b = far, ga, gb;
    pool_hit_at(c, a, want_bankrupt, &ga);
    pool_hit_at(c, b, want_bankrupt, &gb);
    int kept = 0;  // the end kept last time: -1 a, 1 b
    for (int k = 0; k < GR_POOL_BISECT; ++k) {
        const double lo = a < b ? a : b, hi = a < b ? b : a;
        double m = (k & 3) == 3 || !(ga != gb) ? 0.5 * (a + b) : a - ga * ((b - a) / (gb - ga));
        if (!(m > lo && m < hi)) m = 0.5 * (a + b);
        if (m == a || m == b) break;
        double gm;
        if (pool_hit_at(c, m, want_bankrupt, &gm) == hit_mark) {
            a = m; ga = gm;
            if (kept == 1) gb *= 0.5;
            kept = 1;
        } else {
            b = m; gb = gm;
            if (kept == -1) ga *= 0.5;
            kept = -1;
        }
    }
    return hit_mark ? a : b;
}

// The liquidation price against the pool (pool_crossing), rounded to the tick on the trigger
// side (down for a long, up for a short) where the rounded price still hits.
GR_DEVICE double pooled_liq_price(const PoolAt& c, double mark, double tick) {
    double lp = pool_crossing(c, mark, 0);
    if (tick > 0.0 && lp == lp) {
        const bool is_long = c.q > 0.0;
        const double t = (is_long ? floor(lp / tick) : ceil(lp / tick)) * tick;
        if (t > 0.0 && pool_hit_at(c, t, 0)) lp = t;
    }
    return lp;
}
