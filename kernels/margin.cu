// Per-position margin and per-account aggregation (DESIGN §4).
#include "common.cuh"

// Available-balance rules (gpurisk/venue.py AVAILABLE_RULES).
#define GR_AVAILABLE_EQUITY 0
#define GR_AVAILABLE_LOSSES 1
#define GR_AVAILABLE_WALLET 2

// notional N = |q|·P·cs, upnl = q·(P − E)·cs (inverse: N = |q|·cs/P and upnl = q·cs·(1/E − 1/P),
// in the coin, common.cuh notional_at / upnl_at; tiers on the coin notional), MM = N_mm·mmr_k − cum_k with k the tier of
// N_mm (N_mm is the mark notional, or the entry notional when mm_on_entry; k the tier of |q|
// when tiers_by_contracts; cum_k = 0 for a whole-position rate, gpurisk/tier_rules.py),
// IM = N / leverage (N at entry when im_on_entry), leverage defaulting (0) to the max
// leverage of the tier of N, close fee = close_fee_rate·N.
GR_KERNEL void position_margin(
    long long n, const int* symbol, const double* size, const double* entry,
    const double* leverage, const double* mark, const double* contract_size,
    const int* tier_start, const double* tier_floor, const double* tier_mmr,
    const double* tier_cum, const double* tier_max_leverage, int mm_on_entry,
    int tiers_by_contracts, int im_on_entry, double close_fee_rate, const signed char* inverse,
    double* notional, double* upnl, double* maint, double* init, double* close_fee) {
    for_each_index(i, n) {
        const int s = symbol[i];
        const double q = size[i];
        const double aq = fabs(q);
        const double p = mark[s];
        const double cs = contract_size[s];
        const double e = entry[i];
        const int inv = inverse[s];
        const double n_mark = notional_at(aq, p, cs, inv);
        const double n_entry = notional_at(aq, e, cs, inv);
        const double n_mm = mm_on_entry ? n_entry : n_mark;
        // One tier scan serves both the MM (on mark notional) and the default leverage. Tiers
        // counted in contracts (OKX) do not move with the price: one scan on |q| serves both.
        const double x_mark = tiers_by_contracts ? aq : n_mark;
        const int k_mark = tier_of(tier_start, tier_floor, s, x_mark);
        const int k_mm = (mm_on_entry && !tiers_by_contracts) ? tier_of(tier_start, tier_floor, s, n_mm) : k_mark;
        // Given leverage, else the tier's maximum. Both loaded, then a select that compiles
        // without a branch (books mix both, and a branch here would be mispredicted).
        const double given = leverage[i];
        const double tier_lev = tier_max_leverage[k_mark];
        const double lev = given > 0.0 ? given : tier_lev;
        notional[i] = n_mark;
        upnl[i] = upnl_at(q, p, e, cs, inv);
        maint[i] = maint_margin_in(tier_mmr, tier_cum, k_mm, n_mm);
        init[i] = (im_on_entry ? n_entry : n_mark) / lev;
        // The taker fee to close at the mark, counted in the requirement beside the MM (at the
        // trigger the mark is the liquidation price). Without a fee the caller's zeros stay:
        // no store, and no load downstream (with_fee = 0).
        if (close_fee_rate > 0.0) close_fee[i] = close_fee_rate * n_mark;
    }
}

// One thread per account sums its open cross positions in storage order (sorted by
// symbol), so the sums are the same bits on every backend and thread count. Positions of
// size 0 (closed during a stress run) do not count.
GR_KERNEL void account_margin(
    long long n_accounts, const long long* pos_start, const signed char* isolated,
    const double* size,
    const double* upnl, const double* maint, const double* init, const double* fee,
    const double* wallet, double margin_call_ratio, double liquidation_ratio, int available_rule, int with_fee,
    double* acc_upnl, double* equity, double* acc_maint, double* acc_init,
    double* ratio, double* available, signed char* status, int* n_cross, double* acc_fee) {
    for_each_index(a, n_accounts) {
        double su = 0.0, sm = 0.0, si = 0.0, sf = 0.0;
        int nc = 0;
        for (long long j = pos_start[a]; j < pos_start[a + 1]; ++j) {
            if (isolated[j] || size[j] == 0.0) continue;
            su += upnl[j];
            sm += maint[j];
            si += init[j];
            sf += with_fee ? fee[j] : 0.0;
            ++nc;
        }
        const double eq = wallet[a] + su;
        acc_upnl[a] = su;
        equity[a] = eq;
        acc_maint[a] = sm;
        acc_init[a] = si;
        acc_fee[a] = sf;
        // GR_AVAILABLE_*: equity − IM, or the wallet with unrealised losses only, or none.
        const double w = wallet[a];
        available[a] = available_rule == GR_AVAILABLE_EQUITY ? eq - si
                       : (available_rule == GR_AVAILABLE_LOSSES ? w + (su < 0.0 ? su : 0.0) - si : w - si);
        n_cross[a] = nc;
        if (nc == 0) {
            ratio[a] = 0.0;
            status[a] = GR_HEALTHY;
        } else {
            const double r = margin_ratio_of(sm + sf, eq);  // the requirement: MM + close fee
            ratio[a] = r;
            status[a] = status_of(eq, r, margin_call_ratio, liquidation_ratio);
        }
    }
}
