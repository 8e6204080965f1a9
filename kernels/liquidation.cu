// Per-position margin ratio, status, liquidation price and bankruptcy price (DESIGN §4).
#include "common.cuh"

// Root of f(P) = W' + q·(P − E)·cs − MM' − MM_i(P) on P > 0, with MM_i piecewise linear
// in P over the tiers. f is monotone (increasing for longs, decreasing for shorts, as
// mmr < 1), so the root lies in the one tier segment where f changes sign; the sign is
// read at the segment boundaries and the root solved in that tier. NaN: no positive root.
// Written with selects rather than branches on the side: longs and shorts interleave at
// random in a book, and mispredicted branches would cost more than the arithmetic.
GR_DEVICE double liquidation_price_tiered(
    double wp, double mmp, double q, double e, double cs, int s,
    const int* tier_start, const double* tier_floor, const double* tier_mmr,
    const double* tier_cum) {
    const double aq = fabs(q);
    const int last = tier_start[s + 1] - 1;
    const double side = q > 0.0 ? 1.0 : -1.0;
    // side·f at P = 0; at the boundary of tier t, where q·P·cs = side·floor_t, it is
    // side·(base + side·floor_t − MM_at_floor_t): no division needed to find the segment.
    const double base = wp - mmp - q * e * cs;
    // The boundaries on the near side of the root form a prefix (f is monotone). Almost every
    // root lies within the first few: count those without branches, walk on only past them.
    // Padding tiers (floor +inf) give f = NaN and are never counted.
    const int first = tier_start[s];
    int k = first;
    for (int j = 1; j <= 3; ++j) {
        const int t = first + j <= last ? first + j : last;
        const double f = base + side * tier_floor[t] - (tier_floor[t] * tier_mmr[t] - tier_cum[t]);
        k += ((first + j <= last) & (side * f < 0.0)) ? 1 : 0;
    }
    if (k == first + 3) {
        while (k < last) {
            const int t = k + 1;
            const double f = base + side * tier_floor[t] - (tier_floor[t] * tier_mmr[t] - tier_cum[t]);
            if (side * f < 0.0) k = t; else break;
        }
    }
    const double lp = (wp - mmp + tier_cum[k] - q * e * cs) / (aq * cs * tier_mmr[k] - q * cs);
    // No positive root when side·f(0) >= 0: collateral covers any move (long), or no price
    // is safe (short).
    // lp·1 is lp exactly and lp·NaN is NaN: a select with no branch to mispredict.
    const double keep[2] = {GR_NAN, 1.0};
    return lp * keep[(side * base < 0.0) & (lp > 0.0)];
}

GR_KERNEL void position_risk(
    long long n, const int* account, const int* symbol, const double* size,
    const double* entry, const signed char* isolated, const double* isolated_margin,
    const double* mark, const double* contract_size,
    const int* tier_start, const double* tier_floor, const double* tier_mmr,
    const double* tier_cum, int mm_on_entry, double margin_call_ratio,
    double liquidation_ratio,
    const double* upnl, const double* maint,
    const double* wallet, const double* equity, const double* acc_maint,
    const double* acc_ratio, const signed char* acc_status, const int* n_cross,
    double* pos_equity, double* ratio, signed char* status, double* liq_price,
    double* bankruptcy_price) {
    for_each_index(i, n) {
        const int a = account[i];
        const int s = symbol[i];
        const double q = size[i];
        const double e = entry[i];
        const double p = mark[s];
        const double cs = contract_size[s];
        // Branches, not selects, between the three cases: each takes its own divisions,
        // and divisions cost more than the occasional mispredicted branch.
        double wp, mmp, eq, bp;
        if (isolated[i]) {
            wp = isolated_margin[i];
            mmp = 0.0;
            eq = wp + upnl[i];
            const double r = margin_ratio_of(maint[i], eq);
            ratio[i] = r;
            status[i] = status_of(eq, r, margin_call_ratio, liquidation_ratio);
            bp = e - wp / (q * cs);
        } else if (n_cross[a] == 1) {
            wp = wallet[a];
            mmp = 0.0;
            eq = equity[a];
            ratio[i] = acc_ratio[a];
            status[i] = acc_status[a];
            bp = e - wp / (q * cs);
        } else {
            // Other positions held at their marks; the account's equity is shared out in
            // proportion to maintenance margin for the bankruptcy price (dYdX v4's rule).
            wp = equity[a] - upnl[i];
            mmp = acc_maint[a] - maint[i];
            eq = equity[a];
            ratio[i] = acc_ratio[a];
            status[i] = acc_status[a];
            bp = p - (eq * maint[i] / acc_maint[a]) / (q * cs);
        }
        pos_equity[i] = eq;
        double lp;
        if (mm_on_entry) {
            lp = e - (wp - mmp - maint[i]) / (q * cs);
            lp = lp > 0.0 ? lp : GR_NAN;
        } else {
            lp = liquidation_price_tiered(wp, mmp, q, e, cs, s, tier_start, tier_floor, tier_mmr,
                                          tier_cum);
        }
        if (q == 0.0) {  // closed during a stress run: no prices, no status of its own
            ratio[i] = 0.0;
            status[i] = GR_HEALTHY;
            bp = GR_NAN;
            lp = GR_NAN;
        }
        bankruptcy_price[i] = bp;
        liq_price[i] = lp;
    }
}
