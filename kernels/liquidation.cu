// Per-position margin ratio, status, liquidation price and bankruptcy price (DESIGN §4).
#include "common.cuh"

// Root of f(P) = W' + q·(P − E)·cs − MM' − MM_i(P) on P > 0, with MM_i piecewise linear
// in P over the tiers. f is monotone (increasing for longs, decreasing for shorts, as
// mmr < 1), so the root lies in the one tier segment where f changes sign; the sign is
// read at the segment boundaries and the root solved in that tier. NaN: no positive root.
// Written with selects rather than branches on the side: longs and shorts interleave at
// random in a book, and mispredicted branches would cost more than the arithmetic.
// With a whole-position rate (jumps: no deduction, MM jumps up at each floor) f also jumps
// down at each floor. A long's root still lies inside its tier; a short's may be the jump
// itself, so its price is clamped to the next floor's price.
// Inverse contracts call it in x = 1/P with size −q and entry 1/E (common.cuh): f is the same
// function of x, the tiers bound the coin notional |q|·x·cs, and the root is 1/LP.
GR_DEVICE double liquidation_price_tiered(
    double wp, double mmp, double q, double e, double cs, int s,
    const int* tier_start, const double* tier_mmr, const double* tier_cum,
    const double* tier_root_bound, const double* tier_floor, int jumps) {
    const double aq = fabs(q);
    const int is_short = q < 0.0 ? 1 : 0;
    const double side = copysign(1.0, q);  // q != 0: ±1 (not a select: longs and shorts mix at random)
    // base = f(0), and side·f at the boundary of tier t (where q·P·cs = side·floor_t) is
    // side·base + floor_t − side·MM_at_floor_t: the root lies past that boundary when
    // side·base < the tier's bound (precomputed per tier and side, gpurisk/engine.py).
    // One comparison per boundary keeps the chain to the final division short.
    const double base = wp - mmp - q * e * cs;
    const double side_base = side * base;
    const double* bound = tier_root_bound + is_short;
    // The boundaries passed form a prefix (f is monotone). Almost every root lies within the
    // first few: count those without branches, walk on only past them. Padding tiers have
    // a bound of -inf: never passed.
    const int first = tier_start[s];
    int k = first;
    for (int j = 1; j <= GR_LOOKAHEAD; ++j) k += side_base < bound[2 * (first + j)] ? 1 : 0;
    if (k == first + GR_LOOKAHEAD) {
        const int last = tier_start[s + 1] - 1;
        while (k < last && side_base < bound[2 * (k + 1)]) ++k;
    }
    double lp = (wp - mmp + tier_cum[k] - q * e * cs) / (aq * cs * tier_mmr[k] - q * cs);
    if (jumps && is_short) {
        const double top = k + 1 < tier_start[s + 1] ? tier_floor[k + 1] / (aq * cs) : GR_INF;
        lp = lp < top ? lp : top;
    }
    // No positive root when side·f(0) >= 0: collateral covers any move (long), or no price
    // is safe (short). A masked select: a plain one compiles to a branch, mispredicted as often
    // as books mix positions with and without a root.
    return pick((side_base < 0.0) & (lp > 0.0), lp, GR_NAN);
}

// The liquidation price's root for a position (q, e) with W' = wp and the others' requirement
// MM' = mmp held (DESIGN §4), under the venue's conventions: its own MM fixed (mm, on entry;
// the close fee, moving with the price, joins the slope), tiers counted in contracts (the
// tier set by |q|: one linear equation), or tiers by notional (searched, with jumps for a
// whole-position rate). tier_req_mmr: each tier's MM rate plus the close fee rate. NaN: no
// positive root.
GR_DEVICE double liquidation_root(
    double wp, double mmp, double mm, double q, double e, double cs, int s, int mm_on_entry,
    int tiers_by_contracts, int tier_rate_whole, double close_fee_rate, const int* tier_start,
    const double* tier_floor, const double* tier_req_mmr, const double* tier_cum, const double* tier_root_bound,
    int inv) {
    // Inverse: the same closed forms in x = 1/P with size −q and entry 1/E (common.cuh), and
    // P = 1/x at the end (NaN stays NaN; x = +inf, P = 0, finds no price below). Linear: the
    // same bits as without the transform.
    const double qx = inv ? -q : q;
    const double ex = inv ? 1.0 / e : e;
    double lp;
    if (mm_on_entry) {
        // (A branch on a launch parameter: predicted, and one division, not two.)
        if (close_fee_rate > 0.0) lp = (mmp + mm - wp + qx * ex * cs) / (cs * (qx - close_fee_rate * fabs(q)));
        else lp = ex - (wp - mmp - mm) / (qx * cs);
        lp = lp > 0.0 ? lp : GR_NAN;
    } else if (tiers_by_contracts) {
        const int k = tier_of(tier_start, tier_floor, s, fabs(q));
        lp = (wp - mmp + tier_cum[k] - qx * ex * cs) / (fabs(q) * cs * tier_req_mmr[k] - qx * cs);
        lp = lp > 0.0 ? lp : GR_NAN;
    } else {
        lp = liquidation_price_tiered(wp, mmp, qx, ex, cs, s, tier_start, tier_req_mmr, tier_cum, tier_root_bound,
                                      tier_floor, tier_rate_whole);
    }
    return inv ? 1.0 / lp : lp;
}

// What a revaluation with this position's symbol marked at p, every other price held,
// would say of its status: the engine's own arithmetic in its own order (position_margin for
// this position, account_margin's sums in storage order for its cross account), so the answer
// is the status such a revaluation reports, bit for bit, on every backend.
// The position checked sits at storage index i of its account: it replaces the stored
// position there, or (inserts, a what-if order's new position) is summed just before it, with
// i = the account's end when it sorts after every stored one. wallet: the account's wallet
// (after the order, for a what-if).
struct TriggerCheck {
    long long i;
    int a, s, mm_on_entry, by_contracts;
    bool iso, alone, inserts;  // alone: the account's only open cross position
    double q, e, cs, iso_margin, mm_fixed, margin_call_ratio, liquidation_ratio, fee_rate, wallet;
    const long long* pos_start;
    const signed char* isolated;
    const double* size;
    const double* upnl;
    const double* maint;
    const double* fee;
    const int* tier_start;
    const double* tier_floor;
    const double* tier_mmr;
    const double* tier_cum;
    int inv;  // inverse contract (last: an initialiser that leaves it out means linear)
};

GR_DEVICE bool liquidatable_at(const TriggerCheck& c, double p) {
    const double up = upnl_at(c.q, p, c.e, c.cs, c.inv);
    const double n_p = notional_at(fabs(c.q), p, c.cs, c.inv);
    const double mm = c.mm_on_entry ? c.mm_fixed
                      : (c.by_contracts ? maint_margin_in(c.tier_mmr, c.tier_cum,
                                                          tier_of(c.tier_start, c.tier_floor, c.s, fabs(c.q)), n_p)
                                        : maint_margin_of(c.tier_start, c.tier_floor, c.tier_mmr, c.tier_cum, c.s, n_p));
    // The close fee at p, as position_margin computes it (no fee: 0, even where the search's
    // far prices make n_p overflow, so that 0·inf never turns a status into NaN).
    const double fp = c.fee_rate > 0.0 ? c.fee_rate * n_p : 0.0;
    double eq = c.iso_margin + up;
    double sm = mm, sf = fp;
    if (!c.iso && c.alone) {  // the sums below over one position: the same bits, no walk
        eq = c.wallet + (0.0 + up);
        sm = 0.0 + mm;
        sf = 0.0 + fp;
    } else if (!c.iso) {
        double su = 0.0;
        sm = 0.0;
        sf = 0.0;
        const long long end = c.pos_start[c.a + 1];
        for (long long j = c.pos_start[c.a]; j < end; ++j) {
            if (j == c.i) {  // this position, in its place in storage order
                su += up;
                sm += mm;
                sf += fp;
                if (!c.inserts) continue;
            }
            if (c.isolated[j] || c.size[j] == 0.0) continue;
            su += c.upnl[j];
            sm += c.maint[j];
            sf += c.fee_rate > 0.0 ? c.fee[j] : 0.0;
        }
        if (c.inserts && c.i == end) {  // a new position sorting after every stored one
            su += up;
            sm += mm;
            sf += fp;
        }
        eq = c.wallet + su;
    }
    const double r = margin_ratio_of(sm + sf, eq);
    return status_of(eq, r, c.margin_call_ratio, c.liquidation_ratio) >= GR_LIQUIDATABLE;
}

// lp rounded to a multiple of the tick on the trigger side (down for a long, up for a short)
// that still qualifies; lp itself where float64 cannot resolve the tick at that price.
GR_DEVICE double tick_price(const TriggerCheck& c, double lp, double tick, bool is_long) {
    double m = is_long ? floor(lp / tick) : ceil(lp / tick);
    for (int k = 0; k < 4; ++k) {
        const double t = m * tick;
        if (is_long && !(t > 0.0)) return GR_NAN;  // no positive tick price liquidates
        if ((is_long ? t <= lp : t >= lp) && liquidatable_at(c, t)) return t;
        m += is_long ? -1.0 : 1.0;
    }
    return lp;
}

// The search behind trigger_side_price, for a root whose neighbour on the trigger side does not
// qualify (rare: kept out of line, away from the hot loop): the root itself when it qualifies,
// else the nearest qualifying double by a doubling search in ulps (positive doubles order as
// their bit patterns) then a bisection to the boundary: at most ~126 checks.
GR_DEVICE_COLD double trigger_side_search(const TriggerCheck& c, double root, double tick) {
    const bool is_long = c.q > 0.0;
    double lp = root;
    if (!liquidatable_at(c, root)) {
        const long long limit = is_long ? 1LL : 0x7fefffffffffffffLL;  // smallest / largest positive double
        long long bad = GR_BITS(root), good = -1, step = 1;
        for (int it = 0; it < 64; ++it) {
            const long long room = is_long ? bad - limit : limit - bad;
            const long long cand = room <= step ? limit : (is_long ? bad - step : bad + step);
            // The first candidate is the neighbour, or the root where the neighbour is past the
            // last double: both known not to qualify.
            if (it > 0 && liquidatable_at(c, GR_FROM_BITS(cand))) {
                good = cand;
                break;
            }
            bad = cand;
            if (cand == limit) break;
            step *= 2;
        }
        if (good < 0) return GR_NAN;
        while (good - bad > 1 || bad - good > 1) {
            const long long mid = bad + (good - bad) / 2;
            if (liquidatable_at(c, GR_FROM_BITS(mid))) good = mid;
            else bad = mid;
        }
        lp = GR_FROM_BITS(good);
    }
    return tick > 0.0 ? tick_price(c, lp, tick, is_long) : lp;
}

// The reported liquidation price: a double on the trigger side of the solved root (below it
// for a long, above it for a short) at which liquidatable_at holds: the root's neighbour when
// it qualifies (nearly always: one check); otherwise trigger_side_search's. NaN when no
// positive double qualifies. With a tick (> 0), rounded to a multiple of the tick on the
// trigger side (down for a long, up for a short) that still qualifies; the unrounded price
// stays where float64 cannot resolve the tick at that price.
// trigger_side_near is its first step: the price, or -root (< 0) when the neighbour does not
// qualify and trigger_side_search must run.
GR_DEVICE double trigger_side_near(const TriggerCheck& c, double root, double tick) {
    if (!(root > 0.0 && root < GR_INF)) return GR_NAN;
    const bool is_long = c.q > 0.0;
    // The root's neighbour on the trigger side nearly always qualifies: one check, a branch the
    // CPU predicts (checking the root first fails about half the time, a mispredicted branch
    // and a second check). The report is then at most one ulp beyond the nearest qualifying
    // price, still on the trigger side.
    const long long near_bits = GR_BITS(root) + 1 - 2 * (long long)is_long;  // no branch: sides mix at random
    if (near_bits >= 1 && near_bits <= 0x7fefffffffffffffLL && liquidatable_at(c, GR_FROM_BITS(near_bits))) {
        root = GR_FROM_BITS(near_bits);
        return tick > 0.0 ? tick_price(c, root, tick, is_long) : root;
    }
    return -root;
}

GR_DEVICE double trigger_side_price(const TriggerCheck& c, double root, double tick) {
    const double lp = trigger_side_near(c, root, tick);
    return lp < 0.0 ? trigger_side_search(c, -lp, tick) : lp;
}

// What position i's own figures rest on: its collateral W' (the isolated margin, the wallet
// when alone in its account, else the account's equity less its own unrealised PnL) and the
// requirement of the account's other cross positions MM' (0 unless it shares the account).
struct Collateral {
    bool iso, multi;
    double wp, mmp, req;
};

GR_DEVICE Collateral collateral_of(long long i, int a, const signed char* isolated, const double* isolated_margin,
                                   const double* upnl, const double* maint, const double* fee,
                                   const double* acc_fee, double close_fee_rate, const double* wallet,
                                   const double* equity, const double* acc_maint, const int* n_cross) {
    // Every input is loaded whatever the case, and the case picked by selects (see
    // position_risk): a load the compiler cannot prove safe would force a branch.
    Collateral c;
    const bool with_fee = close_fee_rate > 0.0;  // no fee: its arrays are not read
    const double iso_margin = isolated_margin[i];
    const double up = upnl[i];
    const double w_acct = wallet[a];
    const double eq_acct = equity[a];
    const double mm_acct = acc_maint[a];
    c.iso = isolated[i] != 0;
    c.req = maint[i] + (with_fee ? fee[i] : 0.0);  // this position's requirement: MM + close fee
    c.multi = !c.iso & (n_cross[a] > 1);
    c.wp = c.iso ? iso_margin : (c.multi ? eq_acct - up : w_acct);
    c.mmp = c.multi ? (mm_acct + (with_fee ? acc_fee[a] : 0.0)) - c.req : 0.0;
    return c;
}

// The trigger-side check of stored position i (q != 0) in its account, others at their marks.
GR_DEVICE TriggerCheck trigger_check_of(
    long long i, int a, int s, double q, double e, double cs, int inv, const Collateral& c, int mm_on_entry,
    int tiers_by_contracts, double margin_call_ratio, double liquidation_ratio, double close_fee_rate,
    const double* isolated_margin, const double* upnl, const double* maint, const double* fee,
    const double* wallet, const int* n_cross, const long long* pos_start, const signed char* isolated,
    const double* size, const int* tier_start, const double* tier_floor, const double* tier_mmr,
    const double* tier_cum) {
    // Member by member: an initialiser list lets the compiler clear the whole struct first.
    TriggerCheck chk;
    chk.i = i;
    chk.a = a;
    chk.s = s;
    chk.mm_on_entry = mm_on_entry;
    chk.by_contracts = tiers_by_contracts;
    chk.iso = c.iso;
    chk.alone = n_cross[a] == 1;
    chk.inserts = false;
    chk.q = q;
    chk.e = e;
    chk.cs = cs;
    chk.iso_margin = isolated_margin[i];
    chk.mm_fixed = maint[i];
    chk.margin_call_ratio = margin_call_ratio;
    chk.liquidation_ratio = liquidation_ratio;
    chk.fee_rate = close_fee_rate;
    chk.wallet = wallet[a];
    chk.pos_start = pos_start;
    chk.isolated = isolated;
    chk.size = size;
    chk.upnl = upnl;
    chk.maint = maint;
    chk.fee = fee;
    chk.tier_start = tier_start;
    chk.tier_floor = tier_floor;
    chk.tier_mmr = tier_mmr;
    chk.tier_cum = tier_cum;
    chk.inv = inv;
    return chk;
}

// The liquidation price of position i (q != 0), others held at their marks: the root of
// equity = requirement in its case, then stepped to the trigger side (and the tick).
// Inverse (inv): the same closed forms in x = 1/P with size −q and entry 1/E (common.cuh),
// and P = 1/x at the end. Linear: the same bits as without the transform.
// Returns trigger_side_near's result: -root where the search must run, which
// liquidation_search_at finishes (kept apart: the common path then never passes the check's
// figures out of line, which would make the compiler build them in memory).
GR_DEVICE double liquidation_price_at(
    long long i, int a, int s, double q, double e, double cs, int inv, const Collateral& c,
    const int* tier_start, const double* tier_mmr, const double* tier_cum, const double* tier_root_bound,
    int mm_on_entry, double margin_call_ratio, double liquidation_ratio, const double* isolated_margin,
    const double* upnl, const double* maint, const double* wallet, const int* n_cross,
    const long long* pos_start, const signed char* isolated, const double* size, const double* tier_floor,
    const double* tick_size, const double* fee, double close_fee_rate, int tiers_by_contracts,
    const double* tier_req_mmr, int tier_rate_whole) {
    const double lp = liquidation_root(c.wp, c.mmp, maint[i], q, e, cs, s, mm_on_entry, tiers_by_contracts,
                                       tier_rate_whole, close_fee_rate, tier_start, tier_floor, tier_req_mmr,
                                       tier_cum, tier_root_bound, inv);
    // Step from the root to the trigger side: at the reported price a revaluation says
    // liquidatable (or bankrupt), whatever float64 rounding did to the root.
    const TriggerCheck chk = trigger_check_of(i, a, s, q, e, cs, inv, c, mm_on_entry, tiers_by_contracts,
                                              margin_call_ratio, liquidation_ratio, close_fee_rate, isolated_margin,
                                              upnl, maint, fee, wallet, n_cross, pos_start, isolated, size,
                                              tier_start, tier_floor, tier_mmr, tier_cum);
    return trigger_side_near(chk, lp, tick_size[s]);
}

// liquidation_price_at's result where it returned -root (< 0): trigger_side_search from that root.
GR_DEVICE_COLD double liquidation_search_at(
    long long i, double root, const int* account, const int* symbol, const double* size, const double* entry,
    const double* contract_size, const signed char* inverse, const int* tier_start, const double* tier_mmr,
    const double* tier_cum, int mm_on_entry, double margin_call_ratio, double liquidation_ratio,
    const double* isolated_margin, const double* upnl, const double* maint, const double* wallet,
    const double* equity, const double* acc_maint, const int* n_cross, const long long* pos_start,
    const signed char* isolated, const double* tier_floor, const double* tick_size, const double* fee,
    const double* acc_fee, double close_fee_rate, int tiers_by_contracts) {
    const int a = account[i];
    const int s = symbol[i];
    const Collateral c = collateral_of(i, a, isolated, isolated_margin, upnl, maint, fee, acc_fee, close_fee_rate,
                                       wallet, equity, acc_maint, n_cross);
    const TriggerCheck chk = trigger_check_of(i, a, s, size[i], entry[i], contract_size[s], inverse[s], c,
                                              mm_on_entry, tiers_by_contracts, margin_call_ratio, liquidation_ratio,
                                              close_fee_rate, isolated_margin, upnl, maint, fee, wallet, n_cross,
                                              pos_start, isolated, size, tier_start, tier_floor, tier_mmr, tier_cum);
    return trigger_side_search(chk, root, tick_size[s]);
}

GR_KERNEL void position_risk(
    long long n, const int* account, const int* symbol, const double* size,
    const double* entry, const signed char* isolated, const double* isolated_margin,
    const double* mark, const double* contract_size,
    const int* tier_start, const double* tier_mmr, const double* tier_cum,
    const double* tier_root_bound, int mm_on_entry,
    double margin_call_ratio, double liquidation_ratio,
    const double* upnl, const double* maint,
    const double* wallet, const double* equity, const double* acc_maint,
    const double* acc_ratio, const signed char* acc_status, const int* n_cross,
    const long long* pos_start, const double* tier_floor, const double* tick_size, int want_liq_price,
    const double* fee, const double* acc_fee, double close_fee_rate, int tiers_by_contracts,
    const double* tier_req_mmr, int tier_rate_whole, const signed char* inverse, int bankruptcy_fee,
    double* pos_equity, double* ratio, signed char* status, double* liq_price,
    double* bankruptcy_price) {
    for_each_index(i, n) {
        const int a = account[i];
        const int s = symbol[i];
        const double q = size[i];
        const double e = entry[i];
        const double p = mark[s];
        const double cs = contract_size[s];
        // Three cases, picked by selects rather than branches: isolated, cross and alone in
        // its account, cross with others. Books mix them at random, and a mispredicted
        // branch costs more than the arithmetic of a select. Each case takes one division
        // for the bankruptcy price; with other cross positions, held at their marks, the
        // account's equity is shared out in proportion to maintenance margin (dYdX v4's
        // rule): P − eq·MM_i / (MM_acct·q·cs).
        const Collateral c = collateral_of(i, a, isolated, isolated_margin, upnl, maint, fee, acc_fee,
                                           close_fee_rate, wallet, equity, acc_maint, n_cross);
        const bool iso = c.iso, multi = c.multi;
        const double up = upnl[i];
        const double mm = maint[i];
        const double mm_acct = acc_maint[a];
        const double wp = c.wp;
        const double eq = iso ? wp + up : equity[a];
        double r = acc_ratio[a];
        signed char st = acc_status[a];
        if (iso) {  // the one branch left: its division is needed for 15% of positions only
            r = margin_ratio_of(c.req, eq);
            st = status_of(eq, r, margin_call_ratio, liquidation_ratio);
        }
        ratio[i] = r;
        status[i] = st;
        // Inverse: the same closed forms in x = 1/P with size −q and entry 1/E (common.cuh),
        // and P = 1/x at the end. Linear: the same bits as without the transform.
        const int inv = inverse[s];
        const double qx = inv ? -q : q;
        const double ex = inv ? 1.0 / e : e;
        const double px = inv ? 1.0 / p : p;
        // Closing at B leaves equity zero: q·cs·(B − X) = −S with X the entry (alone) or the
        // mark (shared, S = this position's share). With bankruptcy_fee (Bybit) the close fee
        // f·|q|·B·cs is paid from it too: B = (q·X·cs − S) / (cs·(q − f·|q|)).
        const double bx_at = multi ? px : ex;
        const double b_share = multi ? eq * mm / mm_acct : wp;
        double bp = bankruptcy_fee ? (qx * bx_at * cs - b_share) / (cs * (qx - close_fee_rate * fabs(q)))
                                   : bx_at - (multi ? eq * mm : wp) / ((multi ? mm_acct : 1.0) * (qx * cs));
        bp = inv ? 1.0 / bp : bp;
        pos_equity[i] = eq;
        // The liquidation price's root (liquidation_price_at's) here, its step to the trigger side
        // in the pass below. A stress run reads statuses and bankruptcy prices only, and the monitor
        // the prices of positions entering liquidation only (liquidation_prices): want_liq_price = 0
        // skips both (the same for every thread of a launch: no divergence).
        double lp = GR_NAN;
        if (want_liq_price && q != 0.0)
            lp = liquidation_root(wp, c.mmp, mm, q, e, cs, s, mm_on_entry, tiers_by_contracts, tier_rate_whole,
                                  close_fee_rate, tier_start, tier_floor, tier_req_mmr, tier_cum, tier_root_bound, inv);
        if (q == 0.0) {  // closed during a stress run: no prices, no status of its own
            ratio[i] = 0.0;
            status[i] = GR_HEALTHY;
            bp = GR_NAN;
            lp = GR_NAN;
        }
        bankruptcy_price[i] = bp;
        liq_price[i] = lp;
    }
    // The step from each root to the trigger side (liquidation_price_at's, in the same order), in
    // a pass of its own: the main loop with the check inlined ran slower (bench/RESULTS.md,
    // 2026-11-29). Each thread reads back only the roots it wrote above (the same indices: no
    // sync needed). The rare search runs out of line.
    if (want_liq_price) {
        for_each_index(i, n) {
            const double q = size[i];
            if (q == 0.0) continue;
            const int a = account[i];
            const int s = symbol[i];
            const Collateral c = collateral_of(i, a, isolated, isolated_margin, upnl, maint, fee, acc_fee,
                                               close_fee_rate, wallet, equity, acc_maint, n_cross);
            const TriggerCheck chk = trigger_check_of(i, a, s, q, entry[i], contract_size[s], inverse[s], c,
                                                      mm_on_entry, tiers_by_contracts, margin_call_ratio,
                                                      liquidation_ratio, close_fee_rate, isolated_margin, upnl, maint,
                                                      fee, wallet, n_cross, pos_start, isolated, size, tier_start,
                                                      tier_floor, tier_mmr, tier_cum);
            const double near = trigger_side_near(chk, liq_price[i], tick_size[s]);
            liq_price[i] = near < 0.0 ? liquidation_search_at(i, -near, account, symbol, size, entry, contract_size,
                                                              inverse, tier_start, tier_mmr, tier_cum, mm_on_entry,
                                                              margin_call_ratio, liquidation_ratio, isolated_margin,
                                                              upnl, maint, wallet, equity, acc_maint, n_cross,
                                                              pos_start, isolated, tier_floor, tick_size, fee, acc_fee,
                                                              close_fee_rate, tiers_by_contracts)
                                      : near;
        }
    }
}

// position_risk's liquidation price for the positions `selected` only (written at their
// places in liq_price), from the same revaluation's figures: the same function, the same bits.
GR_KERNEL void liquidation_prices(
    long long n_selected, const long long* selected, const int* account, const int* symbol,
    const double* size, const double* entry, const signed char* isolated, const double* isolated_margin,
    const double* contract_size, const int* tier_start, const double* tier_mmr, const double* tier_cum,
    const double* tier_root_bound, int mm_on_entry, double margin_call_ratio, double liquidation_ratio,
    const double* upnl, const double* maint, const double* wallet, const double* equity,
    const double* acc_maint, const int* n_cross, const long long* pos_start, const double* tier_floor,
    const double* tick_size, const double* fee, const double* acc_fee, double close_fee_rate,
    int tiers_by_contracts, const double* tier_req_mmr, int tier_rate_whole, const signed char* inverse,
    double* liq_price) {
    for_each_index(k, n_selected) {
        const long long i = selected[k];
        const int a = account[i];
        const int s = symbol[i];
        const double q = size[i];
        double lp = GR_NAN;
        if (q != 0.0) {
            const Collateral c = collateral_of(i, a, isolated, isolated_margin, upnl, maint, fee, acc_fee,
                                               close_fee_rate, wallet, equity, acc_maint, n_cross);
            lp = liquidation_price_at(i, a, s, q, entry[i], contract_size[s], inverse[s], c, tier_start, tier_mmr,
                                      tier_cum, tier_root_bound, mm_on_entry, margin_call_ratio, liquidation_ratio,
                                      isolated_margin, upnl, maint, wallet, n_cross, pos_start, isolated, size,
                                      tier_floor, tick_size, fee, close_fee_rate, tiers_by_contracts, tier_req_mmr,
                                      tier_rate_whole);
            if (lp < 0.0)
                lp = liquidation_search_at(i, -lp, account, symbol, size, entry, contract_size, inverse, tier_start,
                                           tier_mmr, tier_cum, mm_on_entry, margin_call_ratio, liquidation_ratio,
                                           isolated_margin, upnl, maint, wallet, equity, acc_maint, n_cross,
                                           pos_start, isolated, tier_floor, tick_size, fee, acc_fee, close_fee_rate,
                                           tiers_by_contracts);
        }
        liq_price[i] = lp;
    }
}
