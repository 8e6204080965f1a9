// Bulk what-if orders (README "What-if orders"): each order applied hypothetically to its
// account's position in its symbol, against the resident book and its revaluation at the
// marks, without changing either. One thread per order; orders are independent.
//
// The account's figures after the order are its revaluation's sums with the old position's
// contribution taken out and the new one's put in (a delta, O(1) per order, whatever the
// account holds). The per-position formulas are the engine's own (common.cuh), and the
// liquidation price is liquidation.cu's solver, included here so it stays one source.
#include "common.cuh"
#include "liquidation.cu"

// Storage index of the position (account a, symbol s, margin mode iso), or -1 when the
// account holds none: a binary search of the account's positions, which are stored sorted
// by (symbol, margin mode).
GR_DEVICE long long find_position(const long long* pos_start, const int* symbol,
                                  const signed char* isolated, int a, int s, int iso) {
    long long lo = pos_start[a], hi = pos_start[a + 1];
    const long long key = 2LL * s + iso;
    while (lo < hi) {
        const long long mid = lo + (hi - lo) / 2;
        const long long k = 2LL * symbol[mid] + (isolated[mid] ? 1 : 0);
        if (k < key) lo = mid + 1;
        else hi = mid;
    }
    if (lo < pos_start[a + 1] && symbol[lo] == s && (isolated[lo] ? 1 : 0) == iso) return lo;
    return -1;
}

// Per order o (account index, symbol index, signed size dq, price px, margin mode):
//   q1 = q0 + dq. Increase (or open): entry = (q0·E0 + dq·px) / q1. Reduce: entry kept,
//   realised = upnl_of(closed, px, E0) with closed = −dq. Flip or close: the whole old
//   position is closed at px (realised = upnl_of(q0, px, E0)) and the rest opens at px.
//   Cross: realised PnL goes to the wallet. Isolated: to the position's margin, and margin
//   added for the order (order_margin, or when NaN the initial margin of the opened size
//   at px) moves from the wallet to the position; a position closed to zero releases its
//   margin to the wallet.
//   Account (cross): upnl, MM and IM sums of the revaluation minus the old position's
//   (when cross) plus the new one's (when cross and open); equity = wallet' + upnl';
//   ratio, available balance and status as account_margin has them (0 and healthy with no
//   cross position left, the sums then exactly 0).
//   Liquidation price of the resulting position: the root liquidation.cu solves, others at
//   their marks (not stepped to the trigger side nor rounded to the tick).
//   im_ok: an order that does not increase the position always passes; otherwise the
//   account's available balance after it must be >= 0 and, isolated, the position's
//   equity (margin + upnl at the mark) >= its initial margin.
GR_KERNEL void what_if(
    long long n_orders, const int* order_account, const int* order_symbol, const double* order_size,
    const double* order_price, const signed char* order_isolated, const double* order_margin,
    const double* order_leverage,
    const long long* pos_start, const int* symbol, const double* size, const double* entry,
    const signed char* isolated, const double* isolated_margin, const double* leverage,
    const double* mark, const double* contract_size, const int* tier_start, const double* tier_floor,
    const double* tier_mmr, const double* tier_cum, const double* tier_root_bound,
    const double* tier_max_leverage, int mm_on_entry, double margin_call_ratio, double liquidation_ratio,
    const double* upnl, const double* maint, const double* init, const double* wallet,
    const double* acc_upnl, const double* acc_maint, const double* acc_init, const int* n_cross,
    long long* position_index, double* new_size, double* new_entry, double* realised,
    double* new_isolated_margin, double* pos_notional, double* pos_upnl, double* pos_maint,
    double* pos_init, double* wallet_out, double* equity_out, double* maint_out, double* init_out,
    double* ratio_out, double* available_out, signed char* status_out, double* pos_equity_out,
    double* pos_ratio_out, signed char* pos_status_out, double* liq_price_out, signed char* im_ok) {
    for_each_index(o, n_orders) {
        const int a = order_account[o];
        const int s = order_symbol[o];
        const int iso = order_isolated[o] ? 1 : 0;
        const double dq = order_size[o];
        const double px = order_price[o];
        const double p = mark[s];
        const double cs = contract_size[s];
        const long long j = find_position(pos_start, symbol, isolated, a, s, iso);
        const bool held = j >= 0;
        const double q0 = held ? size[j] : 0.0;
        const double e0 = held ? entry[j] : px;
        const double m0 = held && iso ? isolated_margin[j] : 0.0;
        const double lev_given = order_leverage[o] > 0.0 ? order_leverage[o] : (held ? leverage[j] : 0.0);

        // Trade: what closes at px, what opens, the new size and entry.
        const double q1 = q0 + dq;
        const bool adds = q0 == 0.0 || ((q0 > 0.0) == (dq > 0.0));
        const bool flips = !adds && fabs(dq) > fabs(q0);
        const double closed = adds ? 0.0 : (flips ? q0 : -dq);  // signed like q0
        const double opened = adds ? dq : (flips ? q1 : 0.0);   // signed like q1
        const double rpnl = adds ? 0.0 : upnl_of(closed, px, e0, cs);
        const double e1 = adds ? (q0 == 0.0 ? px : (q0 * e0 + dq * px) / q1) : (flips ? px : e0);
        const bool open = q1 != 0.0;

        // The resulting position at the mark (position_margin's figures).
        const double aq = fabs(q1);
        const double n_mark = aq * p * cs;
        const double n_mm = mm_on_entry ? aq * e1 * cs : n_mark;
        const int k_mark = tier_of(tier_start, tier_floor, s, n_mark);
        const int k_mm = mm_on_entry ? tier_of(tier_start, tier_floor, s, n_mm) : k_mark;
        const double lev = lev_given > 0.0 ? lev_given : tier_max_leverage[k_mark];
        const double up1 = open ? upnl_of(q1, p, e1, cs) : 0.0;
        const double mm1 = open ? maint_margin_in(tier_mmr, tier_cum, k_mm, n_mm) : 0.0;
        const double im1 = open ? n_mark / lev : 0.0;

        // Money: realised PnL and isolated margin between wallet and position.
        const double given_margin = order_margin[o];
        const double added = !iso ? 0.0 : (given_margin == given_margin ? given_margin
                                                                         : fabs(opened) * px * cs / lev);
        const double m1 = iso ? (m0 + rpnl) + added : 0.0;
        const double w0 = wallet[a];
        const double w1 = iso ? (open ? w0 - added : w0 + (m0 + rpnl)) : w0 + rpnl;

        // The account's cross sums: the old cross position out, the new one in.
        const bool old_cross = held && !iso;
        const bool new_cross = open && !iso;
        const int nc = n_cross[a] - (old_cross ? 1 : 0) + (new_cross ? 1 : 0);
        double su = acc_upnl[a], sm = acc_maint[a], si = acc_init[a];
        if (!iso) {
            su = (su - (old_cross ? upnl[j] : 0.0)) + up1;
            sm = (sm - (old_cross ? maint[j] : 0.0)) + mm1;
            si = (si - (old_cross ? init[j] : 0.0)) + im1;
        }
        if (nc == 0) su = sm = si = 0.0;  // as account_margin: nothing left to sum
        const double eq = w1 + su;
        const double r = nc == 0 ? 0.0 : margin_ratio_of(sm, eq);
        const signed char st = nc == 0 ? (signed char)GR_HEALTHY : status_of(eq, r, margin_call_ratio, liquidation_ratio);
        const double avail = eq - si;

        // The resulting position's own unit: its isolated margin, or the cross account.
        const double peq = iso ? m1 + up1 : eq;
        const double pr = iso ? margin_ratio_of(mm1, peq) : r;
        const signed char pst = iso ? status_of(peq, pr, margin_call_ratio, liquidation_ratio) : st;

        // Liquidation price, others held at their marks (position_risk's cases).
        double lp = GR_NAN;
        if (open) {
            const bool multi = !iso && nc > 1;
            const double wp = iso ? m1 : (multi ? eq - up1 : w1);
            const double mmp = multi ? sm - mm1 : 0.0;
            if (mm_on_entry) {
                lp = e1 - (wp - mmp - mm1) / (q1 * cs);
                lp = lp > 0.0 ? lp : GR_NAN;
            } else {
                lp = liquidation_price_tiered(wp, mmp, q1, e1, cs, s, tier_start, tier_mmr, tier_cum,
                                              tier_root_bound, tier_floor, 0);  // deduction tiers
            }
        }
        const bool increases = open && (q0 == 0.0 || flips || fabs(q1) > fabs(q0));
        const bool passes = !increases || (avail >= 0.0 && (!iso || peq >= im1));

        position_index[o] = j;
        new_size[o] = q1;
        new_entry[o] = open ? e1 : GR_NAN;
        realised[o] = rpnl;
        new_isolated_margin[o] = open ? m1 : 0.0;
        pos_notional[o] = open ? n_mark : 0.0;
        pos_upnl[o] = up1;
        pos_maint[o] = mm1;
        pos_init[o] = im1;
        wallet_out[o] = w1;
        equity_out[o] = eq;
        maint_out[o] = sm;
        init_out[o] = si;
        ratio_out[o] = r;
        available_out[o] = avail;
        status_out[o] = st;
        pos_equity_out[o] = open ? peq : GR_NAN;
        pos_ratio_out[o] = open ? pr : GR_NAN;
        pos_status_out[o] = open ? pst : (signed char)-1;
        liq_price_out[o] = lp;
        im_ok[o] = passes ? 1 : 0;
    }
}
