// Pooled (multi-asset) collateral: an account's wallets of every asset form one margin pool
// valued in the venue's margin currency (README "Multi-asset collateral", DESIGN §4).
#include "collateral.cuh"

// One thread per pool (an account_id: its rows pool_start[p]..pool_start[p+1], sorted by
// asset). Sums in row order: collateral value of each row's equity, and the row's maintenance
// margin, close fee and initial margin converted at the index price. Every row of the pool gets
// the pool's figures; margin ratio, status and available balance are overwritten with the
// pool's (the per-asset ones mean nothing once the wallets are pooled).
GR_KERNEL void pool_margin(
    long long n_pools, const long long* pool_start, const int* row_asset, const double* equity,
    const double* maint, const double* fee, const double* init, const int* n_cross,
    const double* index_price, const int* coll_start, const double* coll_floor, const double* coll_ratio,
    double margin_call_ratio, double liquidation_ratio,
    double* collateral_value, double* pool_equity, double* pool_maint, double* pool_fee, double* pool_init,
    double* ratio, double* available, signed char* status) {
    for_each_index(p, n_pools) {
        double se = 0.0, sm = 0.0, sf = 0.0, si = 0.0;
        int nc = 0;
        for (long long r = pool_start[p]; r < pool_start[p + 1]; ++r) {
            const int a = row_asset[r];
            const double x = index_price[a];
            const double cv = collateral_value_of(equity[r], x, coll_start, coll_floor, coll_ratio, a);
            collateral_value[r] = cv;
            se += cv;
            sm += maint[r] * x;
            sf += fee[r] * x;
            si += init[r] * x;
            nc += n_cross[r];
        }
        const PoolFigures f = pool_figures(se, sm, sf, si, nc, margin_call_ratio, liquidation_ratio);
        for (long long r = pool_start[p]; r < pool_start[p + 1]; ++r) {
            pool_equity[r] = se;
            pool_maint[r] = sm;
            pool_fee[r] = sf;
            pool_init[r] = si;
            ratio[r] = f.ratio;
            available[r] = f.available;
            status[r] = f.status;
        }
    }
}

// Liquidation and bankruptcy prices of the cross positions of pooled accounts (isolated and
// closed positions keep the values already there). Liquidation prices rounded to the tick on
// the trigger side (down for a long, up for a short) where the rounded price still hits.
GR_KERNEL void pooled_prices(
    long long n, const int* pos_account, const int* pos_symbol, const double* size, const double* entry,
    const signed char* isolated, const double* mark, const double* contract_size, const signed char* inverse,
    const int* tier_start, const double* tier_floor, const double* tier_mmr, const double* tier_cum,
    int mm_on_entry, int tiers_by_contracts, double fee_rate, double margin_call_ratio, double liquidation_ratio,
    const double* upnl, const double* maint, const double* fee, const int* row_asset, const double* row_equity,
    const double* collateral_value, const double* pool_equity, const double* pool_maint, const double* pool_fee,
    const double* index_price, const int* coll_start, const double* coll_floor, const double* coll_ratio,
    const double* tick_size, int with_liq_price, double* liq_price, double* bankruptcy_price) {
    for_each_index(i, n) {
        if (isolated[i] || size[i] == 0.0) continue;
        const int r = pos_account[i];
        const int s = pos_symbol[i];
        const int a = row_asset[r];
        const PoolAt c = pool_at(size[i], entry[i], contract_size[s], index_price[a], row_equity[r],
                                 collateral_value[r], pool_equity[r], pool_maint[r] + pool_fee[r], maint[i], fee[i],
                                 upnl[i], fee_rate, margin_call_ratio, liquidation_ratio, s, inverse[s], a,
                                 mm_on_entry, tiers_by_contracts, tier_start, tier_floor, tier_mmr, tier_cum,
                                 coll_start, coll_floor, coll_ratio);
        bankruptcy_price[i] = pool_crossing(c, mark[s], 1);
        if (with_liq_price) liq_price[i] = pooled_liq_price(c, mark[s], tick_size[s]);
    }
}
