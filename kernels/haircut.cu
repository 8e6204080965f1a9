// Haircut kernels (DESIGN §7): the fund takes bankrupt positions over and recovers the loss
// from the opposite side's positive PnL, by policy (pro_rata, capped_pro_rata, rap), and the
// water-fill those policies share. The NumPy definitions (deleverage.haircut_adl, haircuts,
// water_fill) are the reference these kernels keep to the bit.
// numpy_sum and numpy_max: NumPy's sum and maximum, as the queue ADL kernels compute them
#include "deleverage.cu"

// A loop over queues, a thread per queue. On the CPU the queues go to the OpenMP threads one
// at a time (queues differ in length by orders of magnitude, so a static split would leave a
// thread idle); each queue's arithmetic is the same on any thread, so the bits are too.
#if defined(__CUDACC__)
#define for_each_queue(q, n) for_each_index(q, n)
#else
#define for_each_queue(q, n)                                                   \
    GR_PRAGMA(omp parallel for schedule(dynamic, 1) if ((long long)(n) > 1))  \
    for (long long q = 0; q < (long long)(n); ++q)
#endif

// Members of a queue are scattered over the book (a queue is one symbol and side): on the
// CPU, what a member GR_REACH places on reads is fetched while this one is worked on.
#define GR_REACH 16
GR_DEVICE void prefetch_read(const void* p) {
#if !defined(__CUDACC__)
    __builtin_prefetch(p);
#endif
}

// Policy codes of haircut_settle (gpurisk/haircut.py HAIRCUT_POLICIES).
#define GR_PRO_RATA 0
#define GR_CAPPED_PRO_RATA 1
#define GR_RAP 2

// np.minimum(x, y): NaN if either is; y when they are equal (np.minimum(0.0, -0.0) is -0.0).
GR_DEVICE double numpy_min(double x, double y) { return (x != x || x < y) ? x : y; }

// A key of NumPy's ascending order of floats as an unsigned integer: -0.0 and 0.0 the same,
// negatives below positives, every NaN (any sign or payload) after +inf, tied.
GR_DEVICE unsigned long long float_order_code(double x) {
    if (x != x) return ~0ULL;
    const unsigned long long b = (unsigned long long)GR_BITS(x + 0.0);  // -0.0 + 0.0 is 0.0
    return (b >> 63) ? ~b : b | (1ULL << 63);
}

// A stable sort of codes[0..n) with their indices: an LSD radix sort, byte by byte, skipping
// bytes every code shares. Stable, so ties keep index order: with float_order_code, the
// permutation of NumPy's argsort(kind="stable"). The result is in (code, idx); (code_tmp,
// idx_tmp) are scratch of the same length.
GR_DEVICE void radix_sort_codes(long long n, unsigned long long* code, long long* idx, unsigned long long* code_tmp,
                                long long* idx_tmp) {
    unsigned long long *cs = code, *cd = code_tmp;
    long long *is = idx, *id = idx_tmp;
    for (int shift = 0; shift < 64 && n > 1; shift += 8) {
        long long count[256];
        for (int d = 0; d < 256; ++d) count[d] = 0;
        for (long long i = 0; i < n; ++i) ++count[(cs[i] >> shift) & 255];
        if (count[(cs[0] >> shift) & 255] == n) continue;  // one byte for all: order unchanged
        long long at = 0;
        for (int d = 0; d < 256; ++d) {
            const long long c = count[d];
            count[d] = at;
            at += c;
        }
        for (long long i = 0; i < n; ++i) {
            const long long o = count[(cs[i] >> shift) & 255]++;
            cd[o] = cs[i];
            id[o] = is[i];
        }
        unsigned long long* ct = cs; cs = cd; cd = ct;
        long long* it = is; is = id; id = it;
    }
    if (cs != code)
        for (long long i = 0; i < n; ++i) { code[i] = cs[i]; idx[i] = is[i]; }
}

// The water-fill (deleverage.water_fill bit for bit): cut_i = min(cap_i, λ·w_i) with
// Σ cut = need, λ found over the positions sorted by the λ at which each is capped
// (cap_i / w_i, a stable radix sort, NaN last): the first k are capped, λ = (need − Σcap_<k) / Σw_≥k, the
// first k with λ <= its cap level (k = 0 where none is). Every cap where they do not reach
// need; nothing where need <= 0. Running sums are sequential, as np.cumsum's; the caps' sum
// is NumPy's pairwise one. Scratch: code, idx, code_tmp, idx_tmp, free_w, n each.
GR_DEVICE void water_fill(double need, long long n, const double* caps, const double* weights, double* cut,
                          long long* code, long long* idx, long long* code_tmp, long long* idx_tmp, double* free_w) {
    if (need <= 0.0 || n == 0) {
        for (long long i = 0; i < n; ++i) cut[i] = 0.0;
        return;
    }
    if (numpy_sum(caps, n) <= need) {
        for (long long i = 0; i < n; ++i) cut[i] = caps[i];
        return;
    }
    unsigned long long* key = (unsigned long long*)code;
    for (long long i = 0; i < n; ++i) {
        key[i] = float_order_code(caps[i] / weights[i]);
        idx[i] = i;
    }
    radix_sort_codes(n, key, idx, (unsigned long long*)code_tmp, idx_tmp);
    double run = 0.0;
    for (long long j = n - 1; j >= 0; --j) {
        run += weights[idx[j]];
        free_w[j] = run;  // weights from j on, summed from the last
    }
    const double lam0 = need / free_w[0];
    double lam = lam0, capped = 0.0;
    for (long long j = 0; j < n; ++j) {
        const long long i = idx[j];
        const double l = (need - capped) / free_w[j];
        if (l <= caps[i] / weights[i]) { lam = l; break; }
        capped += caps[i];
    }  // none found: lam0 (np.argmax of no True is 0)
    for (long long i = 0; i < n; ++i) cut[i] = numpy_min(caps[i], lam * weights[i]);
}

// Each winner's cut under a policy (deleverage.haircuts bit for bit): pro_rata one rate,
// min(1, need / Σpnl) (none where Σpnl <= 0); capped_pro_rata a water-fill capped at each PnL;
// rap a water-fill weighted by PnL × leverage (at least 1), leverage = notional / equity
// (equity at least 1e-12) of each winner's position (winner). weight: scratch.
GR_DEVICE void policy_cuts(int policy, double need, long long n, const double* pnl, const long long* winner,
                           const double* notional, const double* equity, double* weight, double* cut, long long* code,
                           long long* idx, long long* code_tmp, long long* idx_tmp, double* free_w) {
    if (policy == GR_PRO_RATA) {
        const double total = numpy_sum(pnl, n);
        double rate = 0.0;
        if (total > 0.0) {
            const double r = need / total;
            rate = r < 1.0 ? r : 1.0;  // Python's min(1.0, r): 1.0 unless r is smaller (NaN: 1.0)
        }
        for (long long i = 0; i < n; ++i) cut[i] = pnl[i] * rate;
        return;
    }
    for (long long i = 0; i < n; ++i) {
        if (policy == GR_RAP) {
            const long long p = winner[i];
            if (i + GR_REACH < n) {
                prefetch_read(notional + winner[i + GR_REACH]);
                prefetch_read(equity + winner[i + GR_REACH]);
            }
            const double leverage = notional[p] / numpy_max(equity[p], 1e-12);
            weight[i] = pnl[i] * numpy_max(leverage, 1.0);
        } else {
            weight[i] = 1.0;
        }
    }
    water_fill(need, n, pnl, weight, cut, code, idx, code_tmp, idx_tmp, free_w);
}

// A segmented water-fill for callers outside the stress step: segment q is
// caps/weights[seg_begin[q]..seg_end[q]) with its need[q]; cut written alongside. Scratch
// (code, idx, code_tmp, idx_tmp, free_w) as long as caps.
GR_KERNEL void water_fill_segments(
    long long n_segments, const long long* seg_begin, const long long* seg_end, const double* need,
    const double* caps, const double* weights, double* cut, long long* code, long long* idx, long long* code_tmp,
    long long* idx_tmp, double* free_w) {
    for_each_queue(q, n_segments) {
        const long long b = seg_begin[q], n = seg_end[q] - b;
        water_fill(need[q], n, caps + b, weights + b, cut + b, code + b, idx + b, code_tmp + b, idx_tmp + b,
                   free_w + b);
    }
}

// The haircut step of several queues at once, a thread per queue: deleverage.haircut_adl,
// queue by queue, bit for bit. Queue q's bankrupt positions d_pos[demand_begin[q]..
// demand_end[q]) (d_rest: what is left of each, signed; d_bp: money bankruptcy prices) are
// taken over by the fund at d_bp and sold at the market (money price queue_price[q],
// contract size queue_cs[q]); the loss against the market, Σ rest·(bp − price)·cs, is
// recovered from the winners: members[member_begin[q]..member_end[q]) (the opposite
// queue, storage order) that are counterparties with upnl > 0, cut by policy from their
// balances (cross: the wallet; isolated: the position's margin). Sizes and isolated margins
// are the ledger's, by position (queues own their positions). Wallet credits are written per
// queue from wallet_base[q] (n_wallet[q]), in the ledger's order (takeover PnL of the
// bankrupt positions, then the cuts), for the host to add in that order; a cut of +0.0
// (a no-op) is not written. The winners cut (> 0) and their cuts are left at
// w_pos[member_begin[q]..] and w_cut[member_begin[q]..], n_hit[q] of them. Per queue: the
// loss (q_need), the cuts' sum (q_recovered), the largest cut (q_max_cut), and the
// takeover's external cash and fund gain — NumPy's pairwise sums. Scratch: w_* by member,
// d_work by demand.
GR_KERNEL void haircut_settle(
    long long n_queues, int policy, const long long* demand_begin, const long long* demand_end,
    const long long* member_begin, const long long* member_end, const double* queue_price, const double* queue_cs,
    const long long* d_pos, const double* d_rest, const double* d_bp, const long long* members,
    const signed char* counterparty, const double* upnl, const double* notional, const double* pos_equity,
    const double* entry, const double* cs_pos, const signed char* isolated, const int* account,
    double* size, double* isolated_margin, const long long* wallet_base, long long* wallet_account,
    double* wallet_amount, long long* n_wallet, long long* n_hit,
    long long* w_pos, double* w_pnl, double* w_weight, double* w_cut,
    long long* w_code, long long* w_idx, long long* w_code_tmp, long long* w_idx_tmp, double* w_free, double* d_work,
    double* q_need, double* q_recovered, double* q_max_cut, double* q_x_cash, double* q_fund_gain) {
    for_each_queue(q, n_queues) {
        const long long d0 = demand_begin[q], nd = demand_end[q] - d0;
        const long long m0 = member_begin[q], nm = member_end[q] - m0;
        const double price = queue_price[q], cs = queue_cs[q];
        long long* w_acc = wallet_account + wallet_base[q];
        double* w_amt = wallet_amount + wallet_base[q];
        long long nw = 0;
        double* tmp = d_work + d0;
        // The takeover at the bankruptcy price (Ledger.take_over): PnL to the bankrupt side,
        // sizes, and the sums the host adds to the external cash and the fund.
        for (long long i = 0; i < nd; ++i) {
            const long long d = d0 + i, p = d_pos[d];
            const double amount = d_rest[d] * (d_bp[d] - entry[p]) * cs_pos[p];
            if (isolated[p] == 1) isolated_margin[p] += amount;
            else { w_acc[nw] = account[p]; w_amt[nw++] = amount; }
            size[p] = size[p] - d_rest[d];
        }
        for (long long i = 0; i < nd; ++i) tmp[i] = d_rest[d0 + i] * price * cs_pos[d_pos[d0 + i]];
        q_x_cash[q] = numpy_sum(tmp, nd);
        for (long long i = 0; i < nd; ++i) tmp[i] = d_rest[d0 + i] * (price - d_bp[d0 + i]) * cs_pos[d_pos[d0 + i]];
        q_fund_gain[q] = numpy_sum(tmp, nd);
        for (long long i = 0; i < nd; ++i) tmp[i] = d_rest[d0 + i] * (d_bp[d0 + i] - price) * cs;
        const double need = numpy_sum(tmp, nd);
        q_need[q] = need;
        // The winners: counterparties of the opposite queue with positive PnL, in storage order.
        long long n = 0;
        for (long long j = 0; j < nm; ++j) {
            if (j + GR_REACH < nm) {
                const long long ahead = members[m0 + j + GR_REACH];
                prefetch_read(counterparty + ahead);
                prefetch_read(upnl + ahead);
            }
            const long long p = members[m0 + j];
            if (!counterparty[p]) continue;
            const double pnl = numpy_max(upnl[p], 0.0);
            if (!(pnl > 0.0)) continue;
            w_pos[m0 + n] = p;
            w_pnl[m0 + n] = pnl;
            ++n;
        }
        double* cut = w_cut + m0;
        policy_cuts(policy, need, n, w_pnl + m0, w_pos + m0, notional, pos_equity, w_weight + m0, cut, w_code + m0,
                    w_idx + m0, w_code_tmp + m0, w_idx_tmp + m0, w_free + m0);
        q_recovered[q] = numpy_sum(cut, n);
        // The cuts (Ledger.cut), to the fund. Cuts > 0 are compacted in place, into the
        // winners' slots already read (nh <= i).
        long long nh = 0;
        double max_cut = 0.0;
        for (long long i = 0; i < n; ++i) {
            if (i + GR_REACH < n) {
                const long long ahead = w_pos[m0 + i + GR_REACH];
                prefetch_read(isolated + ahead);
                prefetch_read(account + ahead);
                prefetch_read(isolated_margin + ahead);
            }
            const long long p = w_pos[m0 + i];
            const double c = cut[i];
            if (!(c == 0.0 && GR_BITS(c) == 0)) {  // adding −(+0.0) changes no balance
                if (isolated[p] == 1) isolated_margin[p] += -c;
                else { w_acc[nw] = account[p]; w_amt[nw++] = -c; }
            }
            if (c > 0.0) { w_pos[m0 + nh] = p; cut[nh++] = c; }
            if (max_cut == max_cut && (c != c || c > max_cut)) max_cut = c;  // np.max: NaN wins
        }
        n_wallet[q] = nw;
        n_hit[q] = nh;
        q_max_cut[q] = max_cut;
    }
}
