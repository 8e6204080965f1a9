// Deleveraging kernels (DESIGN §5): the backstop's takeover of bankrupt units (takeover_*),
// the fills of queue ADL, bankrupt demand merged with the ranked opposite queue (adl_merge),
// and the money moves of those fills (adl_settle).
#include "common.cuh"

// One thread per queue q walks the running sums of its demand
// (demand[demand_begin[q]..demand_end[q]), in settlement order) and of its supply
// (supply[supply_begin[q]..supply_end[q]), in queue order) once. The supply is used as deep
// as the demand: up to the first member whose running sum reaches the total demand. Each
// distinct running-sum value up to the smaller total cuts a fill: fill k of queue q,
// written at slot fill_base[q] + k, closes fill_qty of demand fill_demand (index within
// the queue's demand) against supply fill_supply (index within its supply). A fill within
// 1e-12 (relative) of a whole position's size is that size exactly (within it of both
// sides' sizes, the smaller): differences of running sums carry rounding. demand_closed /
// supply_closed mark the members consumed whole (supply only over the used depth,
// n_supply_used[q]). The running sums are sequential, like NumPy's cumsum, so this is
// deleverage.queue_fills bit for bit.
GR_KERNEL void adl_merge(
    long long n_queues, const long long* demand_begin, const long long* demand_end,
    const double* demand, const long long* supply_begin, const long long* supply_end,
    const double* supply, const long long* fill_base, double* d_cum, double* s_cum,
    long long* n_fills, long long* n_supply_used, long long* fill_demand,
    long long* fill_supply, double* fill_qty, signed char* demand_closed,
    signed char* supply_closed) {
    for_each_index(q, n_queues) {
        const double* dm = demand + demand_begin[q];
        const double* sp = supply + supply_begin[q];
        double* dc = d_cum + demand_begin[q];
        double* sc = s_cum + supply_begin[q];
        const long long nd = demand_end[q] - demand_begin[q];
        const long long ns_all = supply_end[q] - supply_begin[q];
        double run = 0.0;
        for (long long i = 0; i < nd; ++i) {
            run += dm[i];
            dc[i] = run;
        }
        const double need = nd > 0 ? dc[nd - 1] : 0.0;
        run = 0.0;
        long long ns = 0;
        while (ns < ns_all) {
            run += sp[ns];
            sc[ns++] = run;
            if (run >= need) break;
        }
        const double total = ns > 0 ? (dc[nd - 1] < sc[ns - 1] ? dc[nd - 1] : sc[ns - 1]) : 0.0;
        long long k = 0, ia = 0, ib = 0, di = 0, si = 0;
        double last = 0.0;
        bool first = true;
        long long* out_d = fill_demand + fill_base[q];
        long long* out_s = fill_supply + fill_base[q];
        double* out_q = fill_qty + fill_base[q];
        for (;;) {
            const bool has_a = ia < nd && dc[ia] <= total;
            const bool has_b = ib < ns && sc[ib] <= total;
            if (!has_a && !has_b) break;
            double cut;
            if (has_a && (!has_b || dc[ia] <= sc[ib])) {
                cut = dc[ia++];
            } else {
                cut = sc[ib++];
            }
            if (!first && cut == last) continue;  // a value both sums reach cuts once
            const double start = first ? 0.0 : last;
            first = false;
            last = cut;
            double seg = cut - start;
            if (!(seg > 0.0)) continue;
            while (dc[di] <= start) ++di;
            while (sc[si] <= start) ++si;
            const double noise = 1e-12 * (dc[di] > sc[si] ? dc[di] : sc[si]);
            const bool d_whole = fabs(seg - dm[di]) <= noise;
            const bool s_whole = fabs(seg - sp[si]) <= noise;
            if (d_whole && s_whole) {
                seg = dm[di] < sp[si] ? dm[di] : sp[si];  // a fill never exceeds either side
            } else if (d_whole) {
                seg = dm[di];
            } else if (s_whole) {
                seg = sp[si];
            }
            out_d[k] = di;
            out_s[k] = si;
            out_q[k] = seg;
            ++k;
        }
        n_fills[q] = k;
        n_supply_used[q] = ns;
        for (long long i = 0; i < nd; ++i) demand_closed[demand_begin[q] + i] = dc[i] <= total;
        for (long long j = 0; j < ns; ++j) supply_closed[supply_begin[q] + j] = sc[j] <= total;
    }
}

// NumPy's sum of a contiguous float64 array (np.sum, float(x.sum())): 0.0 plus the pairwise
// sum, whose leaves of at most 128 terms add in eight interleaved partial sums. The stress
// totals are defined by those bits, so the kernels sum as NumPy does.
GR_DEVICE double pairwise_leaf(const double* a, long long n) {
    if (n < 8) {
        double res = 0.0;
        for (long long i = 0; i < n; ++i) res += a[i];
        return res;
    }
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    long long i = 8;
    for (; i < n - (n % 8); i += 8)
        for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
}

// NumPy splits a sum of more than 128 terms at half (rounded down to a multiple of 8) and
// adds the halves' sums. The recursion runs on an explicit stack (depth < 64), leftmost
// half first. Each leaf's sum is pairwise_leaf over a, or, where part_sums is given, the next
// of those already summed, in the recursion's order: the leaves', or the sums of the nodes
// max_depth splits down (numpy_sum_nodes). The whole sum (root) is 0.0 plus the pairwise sum.
GR_DEVICE double numpy_sum_tree(const double* a, const double* part_sums, long long n, int max_depth,
                                bool root) {
    long long lo[64], len[64];
    double left[64];
    signed char right_done[64];
    int top = 0;
    long long next_part = 0;
    lo[0] = 0;
    len[0] = n;
    for (;;) {
        // descend to the leftmost leaf (or part)
        while (len[top] > 128 && top < max_depth) {
            long long h = len[top] / 2;
            h -= h % 8;
            right_done[top] = 0;
            lo[top + 1] = lo[top];
            len[top + 1] = h;
            ++top;
        }
        double v = part_sums ? part_sums[next_part++] : pairwise_leaf(a + lo[top], len[top]);
        // climb while the parent's right half is the one just summed
        while (top > 0 && right_done[top - 1]) {
            --top;
            v = left[top] + v;
        }
        if (top == 0) return root ? 0.0 + v : v;
        // a left half is done: keep it and sum the right half
        --top;
        left[top] = v;
        right_done[top] = 1;
        long long h = len[top] / 2;
        h -= h % 8;
        lo[top + 1] = lo[top] + h;
        len[top + 1] = len[top] - h;
        ++top;
    }
}

GR_DEVICE double numpy_sum(const double* a, long long n) { return numpy_sum_tree(a, nullptr, n, 64, true); }

// np.sum's bits on many threads (Backend.numpy_sum). First the leaves of NumPy's recursion
// over a, a[leaf_start[k]..leaf_start[k + 1]), each summed by a thread of its own...
GR_KERNEL void numpy_sum_leaves(long long n_leaves, const long long* leaf_start, const double* a,
                                double* leaf_sum) {
    for_each_index(k, n_leaves) leaf_sum[k] = pairwise_leaf(a + leaf_start[k], leaf_start[k + 1] - leaf_start[k]);
}

// ...then level by level up the recursion: node j (node_len[j] terms) adds the sums of the
// nodes `depth` splits below it, part_sum[first_part[j]..), in the recursion's order, on a
// thread of its own; the last level is the root alone (root = 1: 0.0 plus its sum).
GR_KERNEL void numpy_sum_nodes(long long n_nodes, const long long* node_len, const long long* first_part,
                               const double* part_sum, int depth, int root, double* node_sum) {
    for_each_index(j, n_nodes) node_sum[j] = numpy_sum_tree(nullptr, part_sum + first_part[j], node_len[j], depth,
                                                            root != 0);
}

// np.sign: -1, 0 or 1, NaN for NaN.
GR_DEVICE double sign_of(double x) { return x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : (x == 0.0 ? 0.0 : x)); }

// np.maximum(x, y): NaN if either is.
GR_DEVICE double numpy_max(double x, double y) { return (x != x || x >= y) ? x : y; }

// ------------------------------------------------------------------ the backstop's takeover
//
// deleverage.take_over_bankrupt_numpy as kernels, bit for bit: bankrupt positions d_pos
// (ascending, so an account's positions form one run: storage is in account order) are
// taken over at their bankruptcy prices. A unit is an account's cross book or one isolated
// position; units are numbered by account, the cross unit first, then isolated positions by
// index descending (the order that breaks ties). Per-account work runs on the thread of the
// run's first position (the others skip), so no compaction of run starts is needed. Money
// prices (gpurisk/ledger.py): m(P) = P, or -1/P where inverse[p].

GR_DEVICE double money_price(double price, signed char inverse) { return inverse ? -1.0 / price : price; }

GR_DEVICE bool opens_run(long long i, const int* d_account) { return i == 0 || d_account[i - 1] != d_account[i]; }

// Per bankrupt position i: what the taker loses selling it at market, and the position's
// columns the later passes read (money prices, contract size, account, isolated flag),
// gathered once: the book's columns are scattered reads, these are sequential. On a run's
// first position, the run's number of units (run_units, 0 elsewhere).
GR_KERNEL void takeover_loss(
    long long n, const long long* d_pos, const double* d_bp, const double* d_market, const double* size,
    const double* cs_pos, const signed char* inverse, const signed char* isolated, const int* account,
    double* loss, double* d_money_bp, double* d_money_market, double* d_cs, int* d_account,
    signed char* d_isolated, long long* run_units) {
    for_each_index(i, n) {
        const long long p = d_pos[i];
        const double bp = money_price(d_bp[i], inverse[p]), market = money_price(d_market[i], inverse[p]);
        const double cs = cs_pos[p];
        const int a = account[p];
        loss[i] = size[p] * (bp - market) * cs;
        d_money_bp[i] = bp;
        d_money_market[i] = market;
        d_cs[i] = cs;
        d_account[i] = a;
        d_isolated[i] = isolated[p] == 1;
        long long units = 0;
        if (i == 0 || account[d_pos[i - 1]] != a) {
            long long cross = 0;
            for (long long j = i; j < n && account[d_pos[j]] == a; ++j) {
                if (isolated[d_pos[j]] == 1) ++units;
                else cross = 1;
            }
            units += cross;
        }
        run_units[i] = units;
    }
}

// On a run's first position: each of the run's positions' unit (the run's first unit is
// units_through[i] - run_units[i]: units_through is run_units' running sum) and each unit's
// deficit, summed from 0.0 over its positions in order (np.bincount's sum).
GR_KERNEL void takeover_unit_deficits(
    long long n, const int* d_account, const signed char* d_isolated, const double* loss,
    const long long* run_units, const long long* units_through, long long* unit, double* unit_deficit) {
    for_each_index(i, n) {
        if (!opens_run(i, d_account)) continue;
        long long end = i, iso = 0;
        for (; end < n && d_account[end] == d_account[i]; ++end) iso += d_isolated[end];
        const long long base = units_through[i] - run_units[i];
        const long long cross = run_units[i] - iso;
        if (cross) unit_deficit[base] = 0.0;
        long long later = iso;  // isolated positions by index descending: the last one first
        for (long long j = i; j < end; ++j) {
            if (d_isolated[j]) {
                const long long u = base + cross + --later;
                unit[j] = u;
                unit_deficit[u] = 0.0 + loss[j];
            } else {
                unit[j] = base;
                unit_deficit[base] += loss[j];
            }
        }
    }
}

// np.clip(x, lo, hi) on doubles: NaN in x, or hi, comes through.
GR_DEVICE double numpy_clip(double x, double lo, double hi) {
    const double t = (x != x) ? x : (x > lo ? x : lo);
    return (t != t) ? t : (t < hi ? t : hi);
}

// One thread: the insurance fund (fund_available, at least 0) pays whole deficits of the
// units in settlement order (settle: most underwater first) while it lasts, then what is
// left of it; its running total is sequential (np.cumsum). Per unit: the share of its
// positions the fund takes and its settlement rank. The deficit and the cover are NumPy's
// pairwise sums (totals[0], totals[1]) over deficits and covered, in settlement order.
GR_KERNEL void takeover_fund_cover(
    long long n_threads, long long n_units, const long long* settle, const double* unit_deficit,
    double fund_available, double* deficits, double* covered, double* unit_share, long long* unit_rank,
    double* totals) {
    for_each_index(t, n_threads) {
        double before = 0.0;
        for (long long k = 0; k < n_units; ++k) {
            const long long u = settle[k];
            const double d = numpy_max(unit_deficit[u], 0.0);
            const double c = numpy_clip(fund_available - before, 0.0, d);
            deficits[k] = d;
            covered[k] = c;
            unit_share[u] = d > 0.0 ? c / d : 1.0;
            unit_rank[u] = k;
            before = k == 0 ? d : before + d;
        }
        totals[0] = numpy_sum(deficits, n_units);
        totals[1] = numpy_sum(covered, n_units);
    }
}

// On a run's first position: the fund takes its share of each of the run's positions at the
// bankruptcy price (Ledger.take_over): realised PnL to the wallet, in position order, or to
// the isolated margin; sizes shrink. rest: what is left to deleverage (0 for a closed
// position); rank: the settlement rank of the position's unit; cash and gain: each
// position's terms of the external account's cash and the fund's gain (takeover_totals).
GR_KERNEL void takeover_apply(
    long long n, const long long* d_pos, const double* d_money_bp, const double* d_money_market,
    const double* d_cs, const int* d_account, const signed char* d_isolated, const long long* unit,
    const double* unit_share, const long long* unit_rank, const double* entry, double* size, double* wallet,
    double* isolated_margin, double* fund_qty, double* rest, long long* rank, double* cash, double* gain) {
    for_each_index(i, n) {
        if (!opens_run(i, d_account)) continue;
        const int a = d_account[i];
        for (long long j = i; j < n && d_account[j] == a; ++j) {
            const long long p = d_pos[j], u = unit[j];
            const double share = unit_share[u];
            const double qty = size[p];  // not yet moved: each position is taken over once
            const double q = share >= 1.0 ? qty : qty * share;
            const double cs = d_cs[j], price = d_money_bp[j], market = d_money_market[j];
            const double amount = q * (price - entry[p]) * cs;
            if (d_isolated[j]) isolated_margin[p] += amount;
            else wallet[a] += amount;
            const double left = qty - q;
            size[p] = left;
            fund_qty[j] = q;
            rest[j] = left == 0.0 ? 0.0 : qty - q;
            rank[j] = unit_rank[u];
            cash[j] = q * market * cs;
            gain[j] = q * (market - price) * cs;
        }
    }
}

// One thread: the external account's sizes, added in position order (np.add.at), and the
// pairwise sums of its cash (totals[2]) and of the fund's gain (totals[3]).
GR_KERNEL void takeover_totals(
    long long n_threads, long long n, const long long* d_pos, const int* pos_symbol, const double* fund_qty,
    const double* cash, const double* gain, double* x_size, double* totals) {
    for_each_index(t, n_threads) {
        for (long long i = 0; i < n; ++i) x_size[pos_symbol[d_pos[i]]] += fund_qty[i];
        totals[2] = numpy_sum(cash, n);
        totals[3] = numpy_sum(gain, n);
    }
}

// Queue members are scattered over the book: on the CPU, the balances of the member
// GR_AHEAD places on are fetched while this one is settled (a GPU thread per queue cannot).
#define GR_AHEAD 8
GR_DEVICE void prefetch_position(long long p, const double* pos_record, const double* size) {
#if !defined(__CUDACC__)
    __builtin_prefetch(pos_record + 2 * p);
    __builtin_prefetch(size + p, 1);
#endif
}

// A position's fixed columns in one 16-byte record (ledger.Ledger.position_records): the
// entry's money price, then account * 2 + isolated (exact in a double). A scattered position
// then costs one cache line for them instead of three.
GR_DEVICE double record_entry(const double* pos_record, long long p) { return pos_record[2 * p]; }
GR_DEVICE long long record_code(const double* pos_record, long long p) { return (long long)pos_record[2 * p + 1]; }
GR_DEVICE bool record_isolated(long long code) { return (code & 1) != 0; }
GR_DEVICE long long record_account(long long code) { return code >> 1; }

// adl_settle's flags of a bankrupt position (d_left): demand left for the fund, margin to release.
#define GR_OWED 1
#define GR_RELEASE 2

// The money moves of queue ADL for several queues at once, a thread per queue, over the
// fills adl_merge wrote (fill_base, n_fills, fill_demand, fill_supply, fill_qty,
// demand_closed, supply_closed at merge_supply_begin): deleverage.queue_adl bit for bit.
// Queue q's bankrupt positions are d_pos[demand_begin[q]..demand_end[q]) (d_rest: what is
// left of each, signed, all one side; d_bp: bankruptcy prices), its counterparties in queue
// order s_pos[supply_begin[q]..supply_begin[q] + n_supply_used[q]), at market price
// queue_price[q] and contract size queue_cs[q]. Each fill realises PnL at the bankrupt
// position's bankruptcy price on both sides; sizes shrink (a position consumed whole closes
// exactly); isolated positions take PnL into their margin, released to the wallet once
// closed; the fund takes over the demand the queue could not meet (d_left & GR_OWED, d_left_qty, at
// the position's contract size cs_pos). Sizes and margins are the ledger's, by position
// (queues own their positions); pos_record holds each position's entry, account and isolated
// flag (record_*). Wallet credits are not added here: each queue writes its
// own, in the order the ledger makes them (bankrupt PnL, counterparty PnL, releases of
// bankrupt then counterparty margin, takeover PnL), from wallet_base[q] (n_wallet[q] of
// them), and the host adds them in that order, so an account credited by several queues
// gets the same bits. Sums over a position's fills run in fill order; the queue's totals
// (q_*) are NumPy's pairwise sums of the same terms, over scratch work[work_base[q]..).
GR_KERNEL void adl_settle(
    long long n_queues, const long long* demand_begin, const long long* demand_end,
    const long long* supply_begin, const long long* n_supply_used, const long long* merge_supply_begin,
    const long long* fill_base, const long long* n_fills, const long long* fill_demand,
    const long long* fill_supply, const double* fill_qty, const signed char* demand_closed,
    const signed char* supply_closed, const double* queue_price, const double* queue_cs,
    const long long* d_pos, const double* d_rest, const double* d_bp, const long long* s_pos,
    const double* pos_record, const double* cs_pos, double* size, double* isolated_margin, const long long* wallet_base, long long* wallet_account,
    double* wallet_amount, long long* n_wallet, signed char* d_left, double* d_left_qty, signed char* s_release,
    const long long* work_base, double* work, long long* n_counterparties, double* q_socialized,
    double* q_max_loss, double* q_notional, double* q_fund_took, double* q_x_cash,
    double* q_fund_gain, long long* n_left) {
    for_each_index(q, n_queues) {
        const long long d0 = demand_begin[q], nd = demand_end[q] - d0;
        const long long s0 = supply_begin[q], ns = n_supply_used[q];
        const long long f0 = fill_base[q], nf = n_fills[q];
        const double price = queue_price[q], cs = queue_cs[q];
        const double sign = nd > 0 ? sign_of(d_rest[d0]) : 0.0;
        long long* w_acc = wallet_account + wallet_base[q];
        double* w_amt = wallet_amount + wallet_base[q];
        long long nw = 0;
        double* tmp = work + work_base[q];
        const long long n_cp = nf > 0 ? fill_supply[f0 + nf - 1] + 1 : 0;  // fills run in supply order
        n_counterparties[q] = n_cp;
        // Bankrupt side: fills of one position are contiguous (the merge walks demand in order).
        long long k = 0;
        for (long long i = 0; i < nd; ++i) {
            const long long d = d0 + i, p = d_pos[d];
            if (i + GR_AHEAD < nd) prefetch_position(d_pos[d + GR_AHEAD], pos_record, size);
            const double entry = record_entry(pos_record, p);
            const long long code = record_code(pos_record, p);
            double filled = 0.0, pnl = 0.0;
            for (; k < nf && fill_demand[f0 + k] == i; ++k) {
                const double seg = fill_qty[f0 + k];
                filled += seg;
                pnl += seg * (d_bp[d] - entry);
            }
            const double amount = sign * pnl * cs;
            if (record_isolated(code)) isolated_margin[p] += amount;
            else { w_acc[nw] = record_account(code); w_amt[nw++] = amount; }
            const double left_size = demand_closed[d] ? 0.0 : size[p] - sign * filled;
            size[p] = left_size;
            tmp[i] = filled * fabs(d_bp[d] - price) * cs * sign_of((d_bp[d] - price) * sign);
            const double want = fabs(d_rest[d]);
            const bool owed = want - filled > 1e-12 * numpy_max(want, 1e-300);
            // Flags for the passes below, so they revisit only the positions they move.
            d_left[d] = (owed ? GR_OWED : 0) | (record_isolated(code) && left_size == 0.0 ? GR_RELEASE : 0);
            d_left_qty[d] = owed ? left_size : 0.0;
        }
        q_socialized[q] = numpy_sum(tmp, nd);
        // Counterparty side, in queue order; its fills are contiguous too.
        double max_loss = 0.0;
        k = 0;
        for (long long j = 0; j < n_cp; ++j) {
            const long long p = s_pos[s0 + j];
            if (j + GR_AHEAD < n_cp) prefetch_position(s_pos[s0 + j + GR_AHEAD], pos_record, size);
            const double entry = record_entry(pos_record, p);
            const long long code = record_code(pos_record, p);
            double taken = 0.0, pnl = 0.0, loss = 0.0;
            for (; k < nf && fill_supply[f0 + k] == j; ++k) {
                const double seg = fill_qty[f0 + k];
                const double bp = d_bp[d0 + fill_demand[f0 + k]];
                taken += seg;
                pnl += seg * (bp - entry);
                loss += seg * (bp - price) * sign * cs;
            }
            const double amount = -sign * pnl * cs;
            if (record_isolated(code)) isolated_margin[p] += amount;
            else { w_acc[nw] = record_account(code); w_amt[nw++] = amount; }
            const double new_size = supply_closed[merge_supply_begin[q] + j] ? 0.0 : size[p] + sign * taken;
            size[p] = new_size;
            s_release[s0 + j] = record_isolated(code) && new_size == 0.0;
            if (max_loss == max_loss && (loss != loss || loss > max_loss)) max_loss = loss;  // np.max: NaN wins
        }
        // Members past the last counterparty are not traded, but one consumed whole (a size
        // lost in the running sum's rounding) still closes.
        for (long long j = n_cp; j < ns; ++j)
            if (supply_closed[merge_supply_begin[q] + j]) size[s_pos[s0 + j]] = 0.0;
        q_max_loss[q] = max_loss;
        // |price|: an inverse contract's money price is −1/P, its notional |q|·cs/P in the coin
        for (long long f = 0; f < nf; ++f) tmp[f] = fill_qty[f0 + f] * fabs(price) * cs;
        q_notional[q] = numpy_sum(tmp, nf);
        // Closed isolated positions release their margin: bankrupt positions, then counterparties.
        for (long long i = 0; i < nd + n_cp; ++i) {
            if (!(i < nd ? d_left[d0 + i] & GR_RELEASE : s_release[s0 + i - nd])) continue;
            const long long p = i < nd ? d_pos[d0 + i] : s_pos[s0 + i - nd];
            w_acc[nw] = record_account(record_code(pos_record, p));
            w_amt[nw++] = isolated_margin[p];
            isolated_margin[p] = 0.0;
        }
        // The fund takes over what the queue could not meet, at the bankruptcy price, and
        // sells it at the market price.
        long long m = 0;
        for (long long i = 0; i < nd; ++i) {
            const long long d = d0 + i, p = d_pos[d];
            if (!(d_left[d] & GR_OWED)) continue;
            const double qty = d_left_qty[d];
            const long long code = record_code(pos_record, p);
            const double amount = qty * (d_bp[d] - record_entry(pos_record, p)) * cs_pos[p];
            if (record_isolated(code)) isolated_margin[p] += amount;
            else { w_acc[nw] = record_account(code); w_amt[nw++] = amount; }
            size[p] = size[p] - qty;
            tmp[m++] = qty * (d_bp[d] - price) * cs;
        }
        n_left[q] = m;
        n_wallet[q] = nw;
        q_fund_took[q] = numpy_sum(tmp, m);
        m = 0;
        for (long long i = 0; i < nd; ++i)
            if (d_left[d0 + i] & GR_OWED) tmp[m++] = d_left_qty[d0 + i] * price * cs_pos[d_pos[d0 + i]];
        q_x_cash[q] = numpy_sum(tmp, m);
        m = 0;
        for (long long i = 0; i < nd; ++i)
            if (d_left[d0 + i] & GR_OWED)
                tmp[m++] = d_left_qty[d0 + i] * (price - d_bp[d0 + i]) * cs_pos[d_pos[d0 + i]];
        q_fund_gain[q] = numpy_sum(tmp, m);
    }
}
