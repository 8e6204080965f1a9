// Risk-based portfolio margin (README "Portfolio margin", gpurisk/portfolio.py): the
// maintenance requirement of an account is the largest loss of its cross positions over a grid
// of relative price moves per risk group, plus contingency add-ons.
#include "common.cuh"

// Risk groups one account can hold, kept per thread (gpurisk/schema.py PORTFOLIO_GROUPS_MAX).
#define GR_PF_MAX_GROUPS 64

// A linear contract's P&L when its price moves from P to P·(1 + x) is q·P·x·cs: linear in the
// move, so the P&L of a whole group under shock x is x times the group's signed notional
// Σ q·P·cs. Summing that notional once per group (in storage order) and scaling it per shock is
// the scenario revaluation of every position; the oracle (tests/oracle.py) revalues position by
// position. Loss = −P&L. Ties go to the earlier shock of the grid (lowest move first).
GR_DEVICE double group_worst_loss(const double* shock, int first, int last, double signed_notional,
                                  double* worst_shock) {
    double best = -GR_INF, best_x = GR_NAN;
    for (int s = first; s < last; ++s) {
        const double x = shock[s];
        const double loss = -(x * signed_notional);
        if (loss > best) {
            best = loss;
            best_x = x;
        }
    }
    *worst_shock = best_x;
    return best;
}

// Contingencies of one group: offset_rate on the offsetting notional min(long, short) (Deribit:
// long one future, short another), liquidity_rate on the gross notional above the threshold
// (+inf: none; the rate then multiplies 0).
GR_DEVICE double offset_contingency_of(double rate, double long_notional, double short_notional) {
    return rate * (long_notional < short_notional ? long_notional : short_notional);
}

GR_DEVICE double liquidity_contingency_of(double rate, double threshold, double gross) {
    const double above = gross - threshold;
    return rate * (above > 0.0 ? above : 0.0);
}

// One thread per account walks its open cross positions in storage order, accumulating per
// risk group (in order of first appearance) the signed, long and short notional; then the worst
// loss per group (groups moving independently: the group losses are summed) or per common shock
// (jointly: the losses of every group at the same shock are summed, in group order), plus the
// contingencies. Figures are written for every account (NaN where a held symbol has no group);
// for accounts in portfolio mode (use_portfolio) the requirement replaces the tiered one in the
// account's maintenance and initial margin, margin ratio, available balance and status, and each
// isolated position gets its own requirement (its group's worst loss and its liquidity
// contingency) in place of its tiered maintenance and initial margin.
GR_KERNEL void portfolio_margin(
    long long n_accounts, const long long* pos_start, const signed char* isolated, const double* size,
    const int* symbol, const double* mark, const double* contract_size,
    const int* sym_group, const int* shock_start, const double* shock, const double* offset_rate,
    const double* liquidity_threshold, const double* liquidity_rate, int joint, double im_multiple,
    const signed char* use_portfolio, const double* wallet, const double* acc_upnl, const double* equity,
    const double* acc_fee, const int* n_cross, double margin_call_ratio, double liquidation_ratio,
    int available_rule,
    double* acc_maint, double* acc_init, double* ratio, double* available, signed char* status,
    double* pos_maint, double* pos_init,
    double* pf_requirement, double* pf_loss, int* pf_worst_group, double* pf_worst_shock,
    double* pf_offset, double* pf_liquidity, double* pf_tiered) {
    for_each_index(a, n_accounts) {
        int gid[GR_PF_MAX_GROUPS];
        double net[GR_PF_MAX_GROUPS], longs[GR_PF_MAX_GROUPS], shorts[GR_PF_MAX_GROUPS];
        int ng = 0;
        bool unmapped = false;
        const long long p0 = pos_start[a], p1 = pos_start[a + 1];
        for (long long j = p0; j < p1; ++j) {
            const double q = size[j];
            if (isolated[j] || q == 0.0) continue;
            const int s = symbol[j];
            const int g = sym_group[s];
            if (g < 0) {
                unmapped = true;
                continue;
            }
            int k = 0;
            while (k < ng && gid[k] != g) ++k;
            if (k == ng) {
                gid[k] = g;
                net[k] = 0.0;
                longs[k] = 0.0;
                shorts[k] = 0.0;
                ++ng;
            }
            const double notional = fabs(q) * mark[s] * contract_size[s];
            net[k] += q > 0.0 ? notional : -notional;
            if (q > 0.0) longs[k] += notional;
            else shorts[k] += notional;
        }
        double loss = 0.0, off = 0.0, liq = 0.0, worst_x = GR_NAN;
        int worst_g = -1;
        if (joint && ng > 0) {
            // Every group shares one grid (gpurisk/portfolio.py checks it): scenario s moves all.
            const int n_s = shock_start[1] - shock_start[0];
            double best = -GR_INF;
            for (int s = 0; s < n_s; ++s) {
                double total = 0.0;
                for (int k = 0; k < ng; ++k) total += -(shock[shock_start[gid[k]] + s] * net[k]);
                if (total > best) {
                    best = total;
                    worst_x = shock[s];
                }
            }
            loss = best > 0.0 ? best : 0.0;
        } else {
            double worst = -GR_INF;
            for (int k = 0; k < ng; ++k) {
                const int g = gid[k];
                double x;
                double l = group_worst_loss(shock, shock_start[g], shock_start[g + 1], net[k], &x);
                l = l > 0.0 ? l : 0.0;  // a grid without 0 cannot credit a gain
                loss += l;
                if (l > worst || (l == worst && g < worst_g)) {
                    worst = l;
                    worst_g = g;
                    worst_x = x;
                }
            }
        }
        for (int k = 0; k < ng; ++k) {
            const int g = gid[k];
            off += offset_contingency_of(offset_rate[g], longs[k], shorts[k]);
            liq += liquidity_contingency_of(liquidity_rate[g], liquidity_threshold[g], longs[k] + shorts[k]);
        }
        const double req = loss + off + liq;
        pf_tiered[a] = acc_maint[a];
        pf_requirement[a] = unmapped ? GR_NAN : req;
        pf_loss[a] = unmapped ? GR_NAN : loss;
        pf_worst_group[a] = unmapped ? -1 : worst_g;
        pf_worst_shock[a] = unmapped ? GR_NAN : worst_x;
        pf_offset[a] = unmapped ? GR_NAN : off;
        pf_liquidity[a] = unmapped ? GR_NAN : liq;
        if (!use_portfolio[a]) continue;
        // The account's figures as account_margin forms them (kernels/margin.cu), from this requirement.
        const double im = im_multiple * req;
        const double eq = equity[a];
        const double w = wallet[a];
        const double su = acc_upnl[a];
        acc_maint[a] = req;
        acc_init[a] = im;
        available[a] = available_rule == 0 ? eq - im : (available_rule == 1 ? w + (su < 0.0 ? su : 0.0) - im : w - im);
        if (n_cross[a] > 0) {
            const double r = margin_ratio_of(req + acc_fee[a], eq);
            ratio[a] = r;
            status[a] = status_of(eq, r, margin_call_ratio, liquidation_ratio);
        }
        for (long long j = p0; j < p1; ++j) {
            const double q = size[j];
            if (!isolated[j] || q == 0.0) continue;
            const int s = symbol[j];
            const int g = sym_group[s];  // mapped: checked for portfolio accounts before compute
            const double notional = fabs(q) * mark[s] * contract_size[s];
            double x;
            double l = group_worst_loss(shock, shock_start[g], shock_start[g + 1], q > 0.0 ? notional : -notional, &x);
            l = l > 0.0 ? l : 0.0;
            const double own = l + liquidity_contingency_of(liquidity_rate[g], liquidity_threshold[g], notional);
            pos_maint[j] = own;
            pos_init[j] = im_multiple * own;
        }
    }
}
