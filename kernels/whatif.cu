// Bulk what-if orders (README "What-if orders"): each order applied hypothetically to its
// account's position in its symbol, against the resident book and its revaluation at the
// marks, without changing either. One thread per order; orders are independent.
//
// The account's figures after the order are summed again over its positions in storage
// order, the traded position in its place (replaced, or inserted where the modified book
// would store it): the arithmetic of a revaluation of the book with the order applied, so
// the same bits. The per-position and per-account formulas are the engine's own
// (common.cuh's position_figures and account_figures), and the liquidation price is
// liquidation.cu's root and trigger-side search, included here so each stays one source.
// A pooled venue's pool (collateral.cuh: the row's collateral value, the pool's figures, the
// liquidation price against the pool) is summed as pool_margin sums it, the order's row in it.
#include "common.cuh"
#include "collateral.cuh"
#include "liquidation.cu"

// Storage index of the position (account a, symbol s, margin mode iso) when the account
// holds it, else where it would be stored (the first of the account's positions that sorts
// after it, or the account's end): a binary search of the account's positions, which are
// stored sorted by (symbol, margin mode).
GR_DEVICE long long position_slot(const long long* pos_start, const int* symbol, const signed char* isolated,
                                  int a, int s, int iso) {
    long long lo = pos_start[a], hi = pos_start[a + 1];
    const long long key = 2LL * s + iso;
    while (lo < hi) {
        const long long mid = lo + (hi - lo) / 2;
        const long long k = 2LL * symbol[mid] + (isolated[mid] ? 1 : 0);
        if (k < key) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

// Per order o (account row: the margin pool (account, the market's settle asset); symbol
// index, signed size dq, price px, margin mode). Money is in the pool's asset: the coin for an
// inverse market (inverse[s] = 1, common.cuh's inverse forms throughout).
//   q1 = q0 + dq. Increase (or open): entry_after_add (linear (q0·E0 + dq·px) / q1, inverse
//   the harmonic q1 / (q0/E0 + dq/px)). Reduce: entry kept,
//   realised = upnl_at(closed, px, E0) with closed = −dq. Flip or close: the whole old
//   position is closed at px (realised = upnl_of(q0, px, E0)) and the rest opens at px.
//   Cross: realised PnL goes to the wallet. Isolated: to the position's margin, and margin
//   added for the order (order_margin, or when NaN the initial margin of the opened size
//   at px, notional_at / leverage) moves from the wallet to the position; a position closed to zero releases its
//   margin to the wallet.
//   The resulting position: position_figures at the mark (MM, IM, close fee under the
//   venue's conventions). Account (cross): upnl, MM, IM and close-fee sums over its open
//   cross positions in storage order with the resulting one in its place; equity, available
//   balance, ratio and status by account_figures.
//   Liquidation price of the resulting position, others at their marks: position_risk's root
//   and its step to the trigger side and the tick, so the price a revaluation of the
//   modified book reports.
//   Pooled venue (pooled = 1): the pool of the account (rows pool_start[p]..pool_start[p+1])
//   summed in row order as pool_margin sums it, the order's row (a) with its figures after the
//   order and the others with the revaluation's (acc_*): the pool's margin ratio, available
//   balance and status replace the row's, and a cross position's liquidation price is the one
//   against the pool (pooled_prices'). Per-asset venues pass pooled = 0 and one-element
//   placeholders for the pool arrays, which are then neither read nor written.
//   im_ok: an order that does not increase the position always passes; otherwise the
//   account's (pool's) available balance after it must be >= 0 and, isolated, the position's
//   equity (margin + upnl at the mark) >= its initial margin.
GR_KERNEL void what_if(
    long long n_orders, const int* order_account, const int* order_symbol, const double* order_size,
    const double* order_price, const signed char* order_isolated, const double* order_margin,
    const double* order_leverage,
    const long long* pos_start, const int* symbol, const double* size, const double* entry,
    const signed char* isolated, const double* isolated_margin, const double* leverage,
    const double* mark, const double* contract_size, const double* tick_size, const int* tier_start,
    const double* tier_floor, const double* tier_mmr, const double* tier_cum, const double* tier_req_mmr,
    const double* tier_root_bound, const double* tier_max_leverage, int mm_on_entry, int tiers_by_contracts,
    int tier_rate_whole, int im_on_entry, double close_fee_rate, int available_rule,
    double margin_call_ratio, double liquidation_ratio, const signed char* inverse,
    const double* upnl, const double* maint, const double* init, const double* fee, const double* wallet,
    int pooled, long long n_pools, const long long* pool_start, const int* row_asset, const double* acc_equity,
    const double* acc_maint, const double* acc_fee, const double* acc_init, const int* acc_n_cross,
    const double* index_price, const int* coll_start, const double* coll_floor, const double* coll_ratio,
    double* collateral_value_out, double* pool_equity_out, double* pool_maint_out, double* pool_fee_out,
    double* pool_init_out,
    long long* position_index, double* new_size, double* new_entry, double* realised,
    double* new_isolated_margin, double* pos_notional, double* pos_upnl, double* pos_maint,
    double* pos_init, double* pos_fee, double* wallet_out, double* equity_out, double* maint_out,
    double* init_out, double* fee_out, double* ratio_out, double* available_out, signed char* status_out,
    double* pos_equity_out, double* pos_ratio_out, signed char* pos_status_out, double* liq_price_out,
    signed char* im_ok) {
    const bool with_fee = close_fee_rate > 0.0;  // no fee: the fee arrays are not read
    for_each_index(o, n_orders) {
        const int a = order_account[o];
        const int s = order_symbol[o];
        const int iso = order_isolated[o] ? 1 : 0;
        const double dq = order_size[o];
        const double px = order_price[o];
        const double p = mark[s];
        const double cs = contract_size[s];
        const int inv = inverse[s];
        const long long end = pos_start[a + 1];
        const long long slot = position_slot(pos_start, symbol, isolated, a, s, iso);
        const bool held = slot < end && symbol[slot] == s && (isolated[slot] ? 1 : 0) == iso;
        const long long j = held ? slot : -1;
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
        const double rpnl = adds ? 0.0 : upnl_at(closed, px, e0, cs, inv);
        const double e1 = adds ? (q0 == 0.0 ? px : entry_after_add(q0, e0, dq, px, inv)) : (flips ? px : e0);
        const bool open = q1 != 0.0;

        // The resulting position at the mark (position_margin's figures).
        const PositionFigures f = position_figures(q1, e1, lev_given, p, cs, s, tier_start, tier_floor, tier_mmr,
                                                   tier_cum, tier_max_leverage, mm_on_entry, tiers_by_contracts,
                                                   im_on_entry, close_fee_rate, inv);
        const double up1 = open ? f.upnl : 0.0;
        const double mm1 = open ? f.maint : 0.0;
        const double im1 = open ? f.init : 0.0;
        const double fee1 = open && with_fee ? f.fee : 0.0;
        const double req1 = mm1 + (with_fee ? fee1 : 0.0);  // position_risk's requirement: MM + close fee

        // Money: realised PnL and isolated margin between wallet and position.
        const double given_margin = order_margin[o];
        const double added = !iso ? 0.0 : (given_margin == given_margin ? given_margin
                                                                         : notional_at(fabs(opened), px, cs, inv) /
                                                                               f.leverage);
        const double m1 = iso ? (m0 + rpnl) + added : 0.0;
        const double w0 = wallet[a];
        const double w1 = iso ? (open ? w0 - added : w0 + (m0 + rpnl)) : w0 + rpnl;

        // The account's cross sums in storage order (account_margin's loop): the resulting
        // cross position in its slot, the old one left out.
        const bool new_cross = open && !iso;
        double su = 0.0, sm = 0.0, si = 0.0, sf = 0.0;
        int nc = 0;
        for (long long k = pos_start[a]; k < end; ++k) {
            if (k == slot && new_cross) {
                su += up1;
                sm += mm1;
                si += im1;
                sf += fee1;
                ++nc;
            }
            if (k == j || isolated[k] || size[k] == 0.0) continue;
            su += upnl[k];
            sm += maint[k];
            si += init[k];
            sf += with_fee ? fee[k] : 0.0;
            ++nc;
        }
        if (slot == end && new_cross) {  // sorts after every stored position of the account
            su += up1;
            sm += mm1;
            si += im1;
            sf += fee1;
            ++nc;
        }
        AccountFigures af = account_figures(w1, su, sm, si, sf, nc, available_rule, margin_call_ratio,
                                            liquidation_ratio);

        // A pooled venue: the account's pool with the order's row re-valued (pool_margin's sums).
        double row_value = 0.0, pse = 0.0, psm = 0.0, psf = 0.0, psi = 0.0;
        if (pooled) {
            long long lo = 0, hi = n_pools;  // the pool holding row a: pool_start[p] <= a < pool_start[p + 1]
            while (hi - lo > 1) {
                const long long mid = lo + (hi - lo) / 2;
                if (pool_start[mid] <= a) lo = mid;
                else hi = mid;
            }
            int pnc = 0;
            for (long long r = pool_start[lo]; r < pool_start[lo + 1]; ++r) {
                const bool mine = r == a;
                const int ra = row_asset[r];
                const double x = index_price[ra];
                const double cv = collateral_value_of(mine ? af.equity : acc_equity[r], x, coll_start, coll_floor,
                                                      coll_ratio, ra);
                if (mine) row_value = cv;
                pse += cv;
                psm += (mine ? sm : acc_maint[r]) * x;
                psf += (mine ? sf : acc_fee[r]) * x;
                psi += (mine ? si : acc_init[r]) * x;
                pnc += mine ? nc : acc_n_cross[r];
            }
            const PoolFigures pf = pool_figures(pse, psm, psf, psi, pnc, margin_call_ratio, liquidation_ratio);
            af.ratio = pf.ratio;
            af.available = pf.available;
            af.status = pf.status;
            collateral_value_out[o] = row_value;
            pool_equity_out[o] = pse;
            pool_maint_out[o] = psm;
            pool_fee_out[o] = psf;
            pool_init_out[o] = psi;
        }

        // The resulting position's own unit: its isolated margin, or the cross account.
        const double peq = iso ? m1 + up1 : af.equity;
        const double pr = iso ? margin_ratio_of(req1, peq) : af.ratio;
        const signed char pst = iso ? status_of(peq, pr, margin_call_ratio, liquidation_ratio) : af.status;

        // Liquidation price, others held at their marks (position_risk's cases and search).
        double lp = GR_NAN;
        if (open && pooled && !iso) {  // against the pool: pooled_prices' search for the resulting position
            const int ra = row_asset[a];
            const PoolAt c = pool_at(q1, e1, cs, index_price[ra], af.equity, row_value, pse, psm + psf, mm1, fee1, up1,
                                     close_fee_rate, margin_call_ratio, liquidation_ratio, s, inv, ra, mm_on_entry,
                                     tiers_by_contracts, tier_start, tier_floor, tier_mmr, tier_cum, coll_start,
                                     coll_floor, coll_ratio);
            lp = pooled_liq_price(c, p, tick_size[s]);
        } else if (open) {
            const bool multi = !iso && nc > 1;
            const double wp = iso ? m1 : (multi ? af.equity - up1 : w1);
            const double mmp = multi ? (sm + (with_fee ? sf : 0.0)) - req1 : 0.0;
            lp = liquidation_root(wp, mmp, mm1, q1, e1, cs, s, mm_on_entry, tiers_by_contracts, tier_rate_whole,
                                  close_fee_rate, tier_start, tier_floor, tier_req_mmr, tier_cum, tier_root_bound, inv);
            const TriggerCheck chk = {slot, a, s, mm_on_entry, tiers_by_contracts, iso != 0, nc == 1, !held, q1, e1,
                                      cs, m1, mm1, margin_call_ratio, liquidation_ratio, close_fee_rate, w1,
                                      pos_start, isolated, size, upnl, maint, fee, tier_start, tier_floor,
                                      tier_mmr, tier_cum, inv};
            lp = trigger_side_price(chk, lp, tick_size[s]);
        }
        const bool increases = open && (q0 == 0.0 || flips || fabs(q1) > fabs(q0));
        const bool passes = !increases || (af.available >= 0.0 && (!iso || peq >= im1));

        position_index[o] = j;
        new_size[o] = q1;
        new_entry[o] = open ? e1 : GR_NAN;
        realised[o] = rpnl;
        new_isolated_margin[o] = open ? m1 : 0.0;
        pos_notional[o] = open ? f.notional : 0.0;
        pos_upnl[o] = up1;
        pos_maint[o] = mm1;
        pos_init[o] = im1;
        pos_fee[o] = fee1;
        wallet_out[o] = w1;
        equity_out[o] = af.equity;
        maint_out[o] = sm;
        init_out[o] = si;
        fee_out[o] = sf;
        ratio_out[o] = af.ratio;
        available_out[o] = af.available;
        status_out[o] = af.status;
        pos_equity_out[o] = open ? peq : GR_NAN;
        pos_ratio_out[o] = open ? pr : GR_NAN;
        pos_status_out[o] = open ? pst : (signed char)-1;
        liq_price_out[o] = lp;
        im_ok[o] = passes ? 1 : 0;
    }
}
