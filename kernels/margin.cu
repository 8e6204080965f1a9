// Per-position margin and per-account aggregation (DESIGN §4). The formulas themselves are
// common.cuh's position_figures and account_figures, shared with the what-if kernel.
#include "common.cuh"

GR_KERNEL void position_margin(
    long long n, const int* symbol, const double* size, const double* entry,
    const double* leverage, const double* mark, const double* contract_size,
    const int* tier_start, const double* tier_floor, const double* tier_mmr,
    const double* tier_cum, const double* tier_max_leverage, int mm_on_entry,
    int tiers_by_contracts, int im_on_entry, double close_fee_rate, const signed char* inverse,
    double* notional, double* upnl, double* maint, double* init, double* close_fee) {
    for_each_index(i, n) {
        const int s = symbol[i];
        const PositionFigures f = position_figures(size[i], entry[i], leverage[i], mark[s], contract_size[s], s,
                                                   tier_start, tier_floor, tier_mmr, tier_cum, tier_max_leverage,
                                                   mm_on_entry, tiers_by_contracts, im_on_entry, close_fee_rate,
                                                   inverse[s]);
        notional[i] = f.notional;
        upnl[i] = f.upnl;
        maint[i] = f.maint;
        init[i] = f.init;
        // The taker fee to close at the mark, counted in the requirement beside the MM (at the
        // trigger the mark is the liquidation price). Without a fee the caller's zeros stay:
        // no store, and no load downstream (with_fee = 0).
        if (close_fee_rate > 0.0) close_fee[i] = f.fee;
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
        const AccountFigures f = account_figures(wallet[a], su, sm, si, sf, nc, available_rule, margin_call_ratio,
                                                 liquidation_ratio);
        acc_upnl[a] = su;
        equity[a] = f.equity;
        acc_maint[a] = sm;
        acc_init[a] = si;
        acc_fee[a] = sf;
        available[a] = f.available;
        n_cross[a] = nc;
        ratio[a] = f.ratio;
        status[a] = f.status;
    }
}
