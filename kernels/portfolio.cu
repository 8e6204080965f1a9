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

// An account's open cross positions, accumulated per risk group in order of first appearance:
// signed, long and short notional (the notional as position_margin computes it).
struct GroupSums {
    int gid[GR_PF_MAX_GROUPS];
    double net[GR_PF_MAX_GROUPS], longs[GR_PF_MAX_GROUPS], shorts[GR_PF_MAX_GROUPS];
    int ng;
    bool unmapped;  // a held symbol without a risk group
};

GR_DEVICE void group_sums_add(GroupSums& b, int g, double q, double notional) {
    if (g < 0) {
        b.unmapped = true;
        return;
    }
    int k = 0;
    while (k < b.ng && b.gid[k] != g) ++k;
    if (k == b.ng) {
        b.gid[k] = g;
        b.net[k] = 0.0;
        b.longs[k] = 0.0;
        b.shorts[k] = 0.0;
        ++b.ng;
    }
    b.net[k] += q > 0.0 ? notional : -notional;
    if (q > 0.0) b.longs[k] += notional;
    else b.shorts[k] += notional;
}

struct PortfolioParams {
    const int* sym_group;
    const int* shock_start;
    const double* shock;
    const double* offset_rate;
    const double* liquidity_threshold;
    const double* liquidity_rate;
    int joint;
};

struct Requirement {
    double requirement, loss, offset, liquidity, worst_shock;
    int worst_group;
};

// The worst loss over the grid (groups independent: each group's worst, summed; jointly: the
// worst of the per-shock totals, in group order) plus the contingencies of every group.
GR_DEVICE Requirement requirement_of(const GroupSums& b, const PortfolioParams& m) {
    Requirement r = {0.0, 0.0, 0.0, 0.0, GR_NAN, -1};
    if (m.joint && b.ng > 0) {
        // Every group shares one grid (gpurisk/portfolio.py checks it): scenario s moves all.
        const int n_s = m.shock_start[1] - m.shock_start[0];
        double best = -GR_INF;
        for (int s = 0; s < n_s; ++s) {
            double total = 0.0;
            for (int k = 0; k < b.ng; ++k) total += -(m.shock[m.shock_start[b.gid[k]] + s] * b.net[k]);
            if (total > best) {
                best = total;
                r.worst_shock = m.shock[s];
            }
        }
        r.loss = best > 0.0 ? best : 0.0;
    } else {
        double worst = -GR_INF;
        for (int k = 0; k < b.ng; ++k) {
            const int g = b.gid[k];
            double x;
            double l = group_worst_loss(m.shock, m.shock_start[g], m.shock_start[g + 1], b.net[k], &x);
            l = l > 0.0 ? l : 0.0;  // a grid without 0 cannot credit a gain
            r.loss += l;
            if (l > worst || (l == worst && g < r.worst_group)) {
                worst = l;
                r.worst_group = g;
                r.worst_shock = x;
            }
        }
    }
    for (int k = 0; k < b.ng; ++k) {
        const int g = b.gid[k];
        r.offset += offset_contingency_of(m.offset_rate[g], b.longs[k], b.shorts[k]);
        r.liquidity += liquidity_contingency_of(m.liquidity_rate[g], m.liquidity_threshold[g], b.longs[k] + b.shorts[k]);
    }
    r.requirement = r.loss + r.offset + r.liquidity;
    return r;
}

// An isolated position margined on its own: its group's worst loss and its liquidity
// contingency (one position offsets nothing).
GR_DEVICE double isolated_requirement(const PortfolioParams& m, int g, double q, double notional) {
    double x;
    double l = group_worst_loss(m.shock, m.shock_start[g], m.shock_start[g + 1], q > 0.0 ? notional : -notional, &x);
    l = l > 0.0 ? l : 0.0;
    return l + liquidity_contingency_of(m.liquidity_rate[g], m.liquidity_threshold[g], notional);
}

// One thread per account walks its open cross positions in storage order into GroupSums, then
// takes the requirement. Figures are written for every account (NaN where a held symbol has no
// group); for accounts in portfolio mode (use_portfolio) the requirement replaces the tiered one
// in the account's maintenance and initial margin, margin ratio, available balance and status,
// and each isolated position gets its own requirement in place of its tiered maintenance and
// initial margin.
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
    const PortfolioParams m = {sym_group, shock_start, shock, offset_rate, liquidity_threshold, liquidity_rate, joint};
    for_each_index(a, n_accounts) {
        GroupSums b;
        b.ng = 0;
        b.unmapped = false;
        const long long p0 = pos_start[a], p1 = pos_start[a + 1];
        for (long long j = p0; j < p1; ++j) {
            const double q = size[j];
            if (isolated[j] || q == 0.0) continue;
            const int s = symbol[j];
            group_sums_add(b, sym_group[s], q, fabs(q) * mark[s] * contract_size[s]);
        }
        const Requirement r = requirement_of(b, m);
        const bool unmapped = b.unmapped;
        pf_tiered[a] = acc_maint[a];
        pf_requirement[a] = unmapped ? GR_NAN : r.requirement;
        pf_loss[a] = unmapped ? GR_NAN : r.loss;
        pf_worst_group[a] = unmapped ? -1 : r.worst_group;
        pf_worst_shock[a] = unmapped ? GR_NAN : r.worst_shock;
        pf_offset[a] = unmapped ? GR_NAN : r.offset;
        pf_liquidity[a] = unmapped ? GR_NAN : r.liquidity;
        if (!use_portfolio[a]) continue;
        // The account's figures as account_margin forms them (kernels/margin.cu), from this
        // requirement (available_rule: gpurisk/venue.py AVAILABLE_RULES).
        const double req = r.requirement;
        const double im = im_multiple * req;
        const double eq = equity[a];
        const double w = wallet[a];
        const double su = acc_upnl[a];
        acc_maint[a] = req;
        acc_init[a] = im;
        available[a] = available_rule == 0 ? eq - im : (available_rule == 1 ? w + (su < 0.0 ? su : 0.0) - im : w - im);
        if (n_cross[a] > 0) {
            const double rt = margin_ratio_of(req + acc_fee[a], eq);
            ratio[a] = rt;
            status[a] = status_of(eq, rt, margin_call_ratio, liquidation_ratio);
        }
        for (long long j = p0; j < p1; ++j) {
            const double q = size[j];
            if (!isolated[j] || q == 0.0) continue;
            const int s = symbol[j];  // mapped: checked for portfolio accounts before compute
            const double own = isolated_requirement(m, sym_group[s], q, fabs(q) * mark[s] * contract_size[s]);
            pos_maint[j] = own;
            pos_init[j] = im_multiple * own;
        }
    }
}

// What-if orders of accounts in portfolio mode (README "What-if orders", gpurisk/whatif.py),
// after kernels/whatif.cu's tiered pass: the account's requirement after the order, from its
// cross positions walked in storage order with the traded one at its new size (a new cross
// position taken at its sorted place), as a revaluation of the modified book walks them; the
// account's upnl summed in the same order; then its maintenance and initial margin, ratio (with
// the close fee the tiered pass summed), available balance (the venue's rule) and status, an
// isolated order's own requirement and its unit's ratio and status, no liquidation price, and the
// initial-margin check. Orders of tiered accounts are left as they are.
GR_KERNEL void portfolio_what_if(
    long long n_orders, const int* order_account, const int* order_symbol, const signed char* order_isolated,
    const long long* position_index, const double* new_size,
    const long long* pos_start, const int* symbol, const double* size, const signed char* isolated,
    const double* mark, const double* contract_size, const double* upnl,
    const int* sym_group, const int* shock_start, const double* shock, const double* offset_rate,
    const double* liquidity_threshold, const double* liquidity_rate, int joint, double im_multiple,
    const signed char* use_portfolio, int available_rule, double margin_call_ratio, double liquidation_ratio,
    const double* pos_upnl, const double* pos_fee, const double* wallet_out, const double* equity_out,
    const double* fee_out, const double* pos_equity_out,
    double* maint_out, double* init_out, double* ratio_out, double* available_out, signed char* status_out,
    double* pos_maint, double* pos_init, double* pos_ratio_out, signed char* pos_status_out,
    double* liq_price_out, signed char* im_ok) {
    const PortfolioParams m = {sym_group, shock_start, shock, offset_rate, liquidity_threshold, liquidity_rate, joint};
    for_each_index(o, n_orders) {
        const int a = order_account[o];
        if (!use_portfolio[a]) continue;
        const int s_o = order_symbol[o];
        const bool iso_o = order_isolated[o] != 0;
        const long long held = position_index[o];
        const double q1 = new_size[o];
        const double q0 = held >= 0 ? size[held] : 0.0;
        const bool open = q1 != 0.0;
        const double n1 = fabs(q1) * mark[s_o] * contract_size[s_o];
        const double up1 = pos_upnl[o];
        GroupSums b;
        b.ng = 0;
        b.unmapped = false;
        double su = 0.0;
        int nc = 0;
        bool pending = !iso_o && held < 0 && open;  // a new cross position, added at its place
        const long long key_o = 2LL * s_o;
        for (long long j = pos_start[a]; j < pos_start[a + 1]; ++j) {
            if (pending && 2LL * symbol[j] + (isolated[j] ? 1 : 0) > key_o) {
                group_sums_add(b, sym_group[s_o], q1, n1);
                su += up1;
                ++nc;
                pending = false;
            }
            const bool traded = j == held;
            const double q = traded ? q1 : size[j];
            if (isolated[j] || q == 0.0) continue;
            const int s = symbol[j];
            group_sums_add(b, sym_group[s], q, fabs(q) * mark[s] * contract_size[s]);
            su += traded ? up1 : upnl[j];
            ++nc;
        }
        if (pending) {
            group_sums_add(b, sym_group[s_o], q1, n1);
            su += up1;
            ++nc;
        }
        const double req = nc == 0 ? 0.0 : requirement_of(b, m).requirement;
        const double im = im_multiple * req;
        const double eq = equity_out[o];
        const double w = wallet_out[o];
        const double r = nc == 0 ? 0.0 : margin_ratio_of(req + fee_out[o], eq);
        const signed char st = nc == 0 ? (signed char)GR_HEALTHY : status_of(eq, r, margin_call_ratio, liquidation_ratio);
        // account_margin's available-balance rules (gpurisk/venue.py AVAILABLE_RULES)
        const double avail = available_rule == 0 ? eq - im : (available_rule == 1 ? w + (su < 0.0 ? su : 0.0) - im : w - im);
        maint_out[o] = req;
        init_out[o] = im;
        ratio_out[o] = r;
        available_out[o] = avail;
        status_out[o] = st;
        double im_pos = 0.0;
        const double peq = pos_equity_out[o];
        if (iso_o && open) {
            const double own = isolated_requirement(m, sym_group[s_o], q1, n1);
            im_pos = im_multiple * own;
            pos_maint[o] = own;
            pos_init[o] = im_pos;
            const double pr = margin_ratio_of(own + pos_fee[o], peq);
            pos_ratio_out[o] = pr;
            pos_status_out[o] = status_of(peq, pr, margin_call_ratio, liquidation_ratio);
        } else if (open) {
            pos_ratio_out[o] = r;
            pos_status_out[o] = st;
        }
        liq_price_out[o] = GR_NAN;
        const bool increases = open && (q0 == 0.0 || (q1 > 0.0) != (q0 > 0.0) || fabs(q1) > fabs(q0));
        im_ok[o] = (!increases || (avail >= 0.0 && (!iso_o || peq >= im_pos))) ? 1 : 0;
    }
}

// The stress ladder's "target" reduction for accounts in portfolio mode (gpurisk/stress.py):
// the share y of the cross book to keep, every position scaled by y, that brings the
// requirement (with any close fee) down to target_ratio × equity (closing at the mark leaves
// equity as it is). The worst loss and the offset contingency scale with y; each group's
// liquidity contingency is rate·max(0, y·G − T), so the requirement is piecewise linear and
// convex in y: walk y down from 1, each piece ending where a group's gross notional reaches its
// threshold. Accounts not in portfolio mode, or with solve[a] == 0, keep what the tiered
// kernel wrote; NaN where no reduction can help (equity <= 0).
GR_KERNEL void portfolio_restoring_fraction(
    long long n_accounts, const signed char* solve, const signed char* use_portfolio, const long long* pos_start,
    const int* symbol, const double* size, const signed char* isolated, const double* mark,
    const double* contract_size, const int* sym_group, const int* shock_start, const double* shock,
    const double* offset_rate, const double* liquidity_threshold, const double* liquidity_rate, int joint,
    double close_fee_rate, const double* equity, double target_ratio, double* keep) {
    const PortfolioParams m = {sym_group, shock_start, shock, offset_rate, liquidity_threshold, liquidity_rate, joint};
    for_each_index(a, n_accounts) {
        if (!solve[a] || !use_portfolio[a]) continue;
        const double eq = equity[a];
        if (!(eq > 0.0)) {
            keep[a] = GR_NAN;
            continue;
        }
        GroupSums b;
        b.ng = 0;
        b.unmapped = false;
        double gross = 0.0;
        for (long long j = pos_start[a]; j < pos_start[a + 1]; ++j) {
            const double q = size[j];
            if (isolated[j] || q == 0.0) continue;
            const int s = symbol[j];
            const double n = fabs(q) * mark[s] * contract_size[s];
            group_sums_add(b, sym_group[s], q, n);
            gross += n;
        }
        const Requirement r = requirement_of(b, m);
        const double linear = r.loss + r.offset + close_fee_rate * gross;  // the parts proportional to y
        const double goal = target_ratio * eq;
        double y = 1.0, result = 1.0;
        for (int guard = 0; guard <= GR_PF_MAX_GROUPS; ++guard) {
            double slope = linear, cum = 0.0, y_low = 0.0;
            for (int k = 0; k < b.ng; ++k) {
                const int g = b.gid[k];
                const double g_gross = b.longs[k] + b.shorts[k];
                const double t = liquidity_threshold[g];
                const double y_g = t / g_gross;  // below it, the group is under its threshold
                if (liquidity_rate[g] > 0.0 && y_g < y) {
                    slope += liquidity_rate[g] * g_gross;
                    cum += liquidity_rate[g] * t;
                    if (y_g > y_low) y_low = y_g;
                }
            }
            const double solution = slope > 0.0 ? (goal + cum) / slope : GR_INF;
            if (solution >= y_low || y_low <= 0.0) {
                result = solution;
                break;
            }
            y = y_low;
            result = y;
        }
        keep[a] = result < 1.0 ? result : 1.0;
    }
}

// The stress screen for accounts in portfolio mode (gpurisk/screen.py), after the tiered
// stress_flags pass: flags[sc·n_accounts + a] = 1 when, at the marks of scenario sc, account a's
// cross book (its portfolio requirement plus any close fee, against wallet + Σ upnl summed in
// storage order as account_margin sums them) or one of its isolated positions (its own
// requirement) is liquidatable or bankrupt: the statuses a revaluation at those marks gives.
// Flags of tiered accounts are left as the tiered pass wrote them.
GR_KERNEL void portfolio_stress_flags(
    long long n_accounts, int n_scenarios, int n_symbols, const long long* pos_start, const int* symbol,
    const double* size, const double* entry, const signed char* isolated, const double* isolated_margin,
    const double* wallet, const double* marks, const double* contract_size,
    const int* sym_group, const int* shock_start, const double* shock, const double* offset_rate,
    const double* liquidity_threshold, const double* liquidity_rate, int joint,
    const signed char* use_portfolio, double close_fee_rate, double margin_call_ratio, double liquidation_ratio,
    signed char* flags) {
    const PortfolioParams m = {sym_group, shock_start, shock, offset_rate, liquidity_threshold, liquidity_rate, joint};
    for_each_index(a, n_accounts) {
        if (!use_portfolio[a]) continue;
        for (int sc = 0; sc < n_scenarios; ++sc) {
            const double* mark = marks + (long long)sc * n_symbols;
            GroupSums b;
            b.ng = 0;
            b.unmapped = false;
            double su = 0.0, sf = 0.0;
            int nc = 0;
            signed char flag = 0;
            for (long long j = pos_start[a]; j < pos_start[a + 1]; ++j) {
                const double q = size[j];
                if (q == 0.0) continue;
                const int s = symbol[j];
                const double p = mark[s];
                const double n = fabs(q) * p * contract_size[s];
                const double fee = close_fee_rate > 0.0 ? close_fee_rate * n : 0.0;
                const double u = upnl_of(q, p, entry[j], contract_size[s]);
                if (isolated[j]) {
                    const double eq = isolated_margin[j] + u;
                    const double own = isolated_requirement(m, sym_group[s], q, n);
                    if (status_of(eq, margin_ratio_of(own + fee, eq), margin_call_ratio, liquidation_ratio)
                        >= GR_LIQUIDATABLE) flag = 1;
                } else {
                    group_sums_add(b, sym_group[s], q, n);
                    su += u;
                    sf += fee;
                    ++nc;
                }
            }
            if (nc > 0) {
                const double eq = wallet[a] + su;
                const double req = requirement_of(b, m).requirement;
                if (status_of(eq, margin_ratio_of(req + sf, eq), margin_call_ratio, liquidation_ratio)
                    >= GR_LIQUIDATABLE) flag = 1;
            }
            flags[(long long)sc * n_accounts + a] = flag;
        }
    }
}
