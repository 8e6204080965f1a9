// Stress kernels (DESIGN §6–§7): which accounts a batch of price scenarios puts past
// liquidation, read in one pass over the positions, and the partial reduction that
// restores a target margin ratio.
#include "common.cuh"

// flags[sc·n_accounts + a] = 1 when, at the marks of scenario sc (marks[sc·n_symbols + s]),
// account a's cross margin or one of its isolated positions is liquidatable or bankrupt.
// One thread per account walks its positions once per scenario, from cache; the sums run
// in storage order exactly as in account_margin, and the requirement follows the venue's
// conventions as position_margin does (tiers counted in contracts; tier_cum zero for a
// whole-position rate; the close fee beside the MM; inverse contracts in the coin), so the
// flags agree with a revaluation.
GR_KERNEL void stress_flags(
    long long n_accounts, int n_scenarios, int n_symbols, const long long* pos_start,
    const int* symbol, const double* size, const double* entry, const signed char* isolated,
    const double* isolated_margin, const double* wallet, const double* marks,
    const double* contract_size, const int* tier_start, const double* tier_floor,
    const double* tier_mmr, const double* tier_cum, int mm_on_entry, int tiers_by_contracts,
    double close_fee_rate, double margin_call_ratio, double liquidation_ratio, const signed char* inverse,
    signed char* flags) {
    for_each_index(a, n_accounts) {
        for (int sc = 0; sc < n_scenarios; ++sc) {
            const double* mark = marks + (long long)sc * n_symbols;
            double su = 0.0, sm = 0.0, sf = 0.0;
            int nc = 0;
            signed char flag = 0;
            for (long long j = pos_start[a]; j < pos_start[a + 1]; ++j) {
                const double q = size[j];
                if (q == 0.0) continue;
                const int s = symbol[j];
                const double cs = contract_size[s];
                const double p = mark[s];
                const int inv = inverse[s];
                const double n_mark = notional_at(fabs(q), p, cs, inv);
                const double n_mm = mm_on_entry ? notional_at(fabs(q), entry[j], cs, inv) : n_mark;
                const int k = tier_of(tier_start, tier_floor, s, tiers_by_contracts ? fabs(q) : n_mm);
                const double mm = maint_margin_in(tier_mmr, tier_cum, k, n_mm);
                const double fee = close_fee_rate > 0.0 ? close_fee_rate * n_mark : 0.0;
                const double u = upnl_at(q, p, entry[j], cs, inv);
                if (isolated[j]) {
                    const double eq = isolated_margin[j] + u;
                    if (status_of(eq, margin_ratio_of(mm + fee, eq), margin_call_ratio, liquidation_ratio)
                        >= GR_LIQUIDATABLE) flag = 1;
                } else {
                    su += u;
                    sm += mm;
                    sf += fee;
                    ++nc;
                }
            }
            if (nc > 0) {
                const double eq = wallet[a] + su;
                if (status_of(eq, margin_ratio_of(sm + sf, eq), margin_call_ratio, liquidation_ratio)
                    >= GR_LIQUIDATABLE) flag = 1;
            }
            flags[(long long)sc * n_accounts + a] = flag;
        }
    }
}

// The fraction y of its cross positions account a keeps (all reduced in proportion, at the
// mark, so equity is unchanged) for its margin ratio to fall to target: solve
// Σ_i MM_i(y·N_i) = target·equity. MM is piecewise linear in y: in a piece, y·A − C with
// A = Σ N_i·mmr_k(i), C = Σ cum_k(i); walking y down from 1, each piece ends where some
// position's notional reaches its tier floor. Accounts with solve[a] == 0 keep y = 1;
// y = NaN where no reduction can help (equity <= 0).
GR_KERNEL void restoring_fraction(
    long long n_accounts, const signed char* solve, const long long* pos_start,
    const int* symbol, const double* size, const signed char* isolated,
    const double* mm_notional, const double* equity, const int* tier_start,
    const double* tier_floor, const double* tier_mmr, const double* tier_cum,
    double target_ratio, double* keep) {
    for_each_index(a, n_accounts) {
        if (!solve[a]) { keep[a] = 1.0; continue; }
        const double eq = equity[a];
        if (!(eq > 0.0)) { keep[a] = GR_NAN; continue; }
        const double goal = target_ratio * eq;
        double y = 1.0;
        double result = 1.0;
        for (int guard = 0; guard < 4096; ++guard) {
            double slope = 0.0, cum = 0.0, y_low = 0.0;
            for (long long j = pos_start[a]; j < pos_start[a + 1]; ++j) {
                if (isolated[j] || size[j] == 0.0) continue;
                const int s = symbol[j];
                const double n = mm_notional[j];
                // The tier just below y·n, comparing y with floor/n exactly as y_low is
                // formed, so a boundary reached is always left on the next piece.
                int k = tier_start[s];
                for (int t = tier_start[s] + 1; t < tier_start[s + 1]; ++t) k += tier_floor[t] / n < y ? 1 : 0;
                slope += n * tier_mmr[k];
                cum += tier_cum[k];
                const double b = tier_floor[k] / n;
                if (b > y_low) y_low = b;
            }
            const double solution = (goal + cum) / slope;
            if (solution >= y_low || y_low <= 0.0) { result = solution; break; }
            y = y_low;
            result = y;
        }
        keep[a] = result < 1.0 ? result : 1.0;
    }
}

// in_unit[j] = 1 when position j is open and the ladder acts on it this step: its account's
// cross book is liquidatable (a cross position), or it is itself a liquidatable isolated
// position. One pass instead of a chain of masks over every position.
GR_KERNEL void stress_units(
    long long n_positions, const int* pos_account, const double* size,
    const signed char* isolated, const signed char* status, const int* n_cross,
    const signed char* pos_status, signed char* in_unit) {
    for_each_index(j, n_positions) {
        signed char u = 0;
        if (size[j] != 0.0) {
            if (isolated[j]) {
                u = pos_status[j] >= GR_LIQUIDATABLE;
            } else {
                const int a = pos_account[j];
                u = status[a] >= GR_LIQUIDATABLE && n_cross[a] > 0;
            }
        }
        in_unit[j] = u;
    }
}

// Additions to balances in the order given, as np.add.at makes them, with no float atomics:
// the additions sorted by (balance, place given); run r, sorted[run_start[r]..run_start[r + 1]),
// all go to balance target[run_start[r]], and one thread adds them to it in order.
GR_KERNEL void ordered_add(
    long long n_runs, const long long* run_start, const long long* target, const double* amount,
    double* balance) {
    for_each_index(r, n_runs) {
        const long long j0 = run_start[r], j1 = run_start[r + 1];
        double v = balance[target[j0]];
        for (long long j = j0; j < j1; ++j) v += amount[j];
        balance[target[j0]] = v;
    }
}

// upnl[j] at marks: the book's value for the conservation check, position by position.
GR_KERNEL void stress_upnl(
    long long n_positions, const int* symbol, const double* size, const double* entry,
    const double* marks, const double* contract_size, const signed char* inverse, double* upnl) {
    for_each_index(j, n_positions) {
        const int s = symbol[j];
        upnl[j] = upnl_at(size[j], marks[s], entry[j], contract_size[s], inverse[s]);
    }
}

// The ladder's action on each position of a liquidatable unit (ladder.ladder_step bit for
// bit): 2, taken over at the bankruptcy price, from the backstop ratio on (has_backstop) or
// at equity <= 0; else 1, liquidated in the market, or 0, reduced, where a partial reduction
// applies (an account's max_partial_steps not used up; < 0: no limit): partial_mode 1
// (slices) reduces positions above slice_min_notional by slice_fraction; partial_mode 2
// (target) reduces cross positions by 1 − keep, their account's share to keep, where keep is
// finite and > 0. A target ladder runs twice: first without keep (have_keep = 0), flagging in
// solve the positions whose accounts need it (restoring_fraction), then with it. qty: the
// signed size to close.
GR_KERNEL void ladder_actions(
    long long n_positions, const double* size, const double* ratio, const double* equity,
    const signed char* isolated, const int* partials, const double* notional, const double* keep,
    int partial_mode, double slice_fraction, double slice_min_notional, int max_partial_steps,
    int has_backstop, double backstop_ratio, int have_keep, signed char* action, double* qty,
    signed char* solve) {
    for_each_index(i, n_positions) {
        signed char a = 1;
        if (has_backstop && ratio[i] >= backstop_ratio) a = 2;
        if (equity[i] <= 0.0) a = 2;
        double q = size[i];
        bool may_partial = a == 1 && partial_mode != 0;
        if (max_partial_steps >= 0) may_partial = may_partial && partials[i] < max_partial_steps;
        signed char s = 0;
        if (partial_mode == 2) {
            s = may_partial && !isolated[i];
            if (s && have_keep) {
                const double k = keep[i];
                if (k - k == 0.0 && k > 0.0) {  // finite and > 0
                    q = size[i] * (1.0 - k);
                    a = 0;
                }
            }
        } else if (partial_mode == 1 && may_partial && notional[i] > slice_min_notional) {
            q = size[i] * slice_fraction;
            a = 0;
        }
        action[i] = a;
        qty[i] = q;
        solve[i] = s;
    }
}
