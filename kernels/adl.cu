// Auto-deleveraging priority score and indicator lights (DESIGN §5).
#include "common.cuh"
#include "lights.cuh"

#define GR_SCORE_PNL_LEVERAGE 0  // BitMEX, Bybit: pnl% × effective leverage
#define GR_SCORE_BINANCE 1       // max(0, upnl) / max(1, wallet) × margin ratio
#define GR_SCORE_HYPERLIQUID 2   // (P/E)^side × notional / equity
#define GR_SCORE_NONE 3          // no ranking (dYdX): order set by the caller
#define GR_SCORE_MARK_OVER_ENTRY 4  // (P/E) × notional / equity, both sides (Hyperliquid's text)

// Higher score = deleveraged first. pos_equity is the account's equity for cross
// positions and the position's own for isolated ones; ratio likewise.
GR_KERNEL void adl_score(
    long long n, int method, const int* account, const int* symbol, const double* size,
    const double* entry, const signed char* isolated, const double* isolated_margin,
    const double* mark, const double* notional, const double* upnl,
    const double* bankruptcy_price, const double* wallet, const double* pos_equity,
    const double* ratio, const signed char* inverse, double* score) {
    for_each_index(i, n) {
        const double q = size[i];
        const double p = mark[symbol[i]];
        const double e = entry[i];
        const double side = q > 0.0 ? 1.0 : -1.0;
        double sc = 0.0;
        if (method == GR_SCORE_PNL_LEVERAGE) {
            // Inverse: in x = 1/P with size −q (common.cuh), so PnL% = upnl / entry value and
            // effective leverage = mark value / (mark value − bankruptcy value), all in coin
            // (BitMEX's definitions): pnl = side·(1 − E/P), eff_lev = (1/P) / |1/P − 1/BP|.
            const int inv = inverse[symbol[i]];
            const double aq = fabs(q);
            const double sx = inv ? -side : side;
            const double px = inv ? 1.0 / p : p;
            const double ex = inv ? 1.0 / e : e;
            const double bx = inv ? 1.0 / bankruptcy_price[i] : bankruptcy_price[i];
            const double pnl = sx * (px - ex) / ex;
            const double eff_lev = (aq * px) / (aq * fabs(px - bx));
            sc = pnl > 0.0 ? pnl * eff_lev : pnl / eff_lev;
        } else if (method == GR_SCORE_BINANCE) {
            const double eq = pos_equity[i];
            if (eq > 0.0) {
                const double w = isolated[i] ? isolated_margin[i] : wallet[account[i]];
                const double gain = upnl[i] > 0.0 ? upnl[i] : 0.0;
                sc = gain / (w > 1.0 ? w : 1.0) * ratio[i];
            }
        } else if (method == GR_SCORE_HYPERLIQUID) {
            const double eq = pos_equity[i];
            if (eq > 0.0) sc = (q > 0.0 ? p / e : e / p) * notional[i] / eq;
        } else if (method == GR_SCORE_MARK_OVER_ENTRY) {
            const double eq = pos_equity[i];
            if (eq > 0.0) sc = (p / e) * notional[i] / eq;
        }
        score[i] = sc;
    }
}

// Each position's place in its queue, from the queue order (order[k] = the position at
// place k; queue g holds places group_start[g] .. group_start[g+1]-1): rank (1 = front)
// and lights, by size share (cum_size = running |size| in queue order) or by rank/count.
GR_KERNEL void queue_places(long long n, int n_groups, const long long* order,
                            const long long* group_start, const double* cum_size, int by_size,
                            long long* rank, signed char* lights) {
    for_each_index(k, n) {
        const long long i = order[k];
        // The queue of place k: the last g with group_start[g] <= k (a short, cached table,
        // cheaper than reading group[i] at a random i).
        int lo = 0, hi = n_groups - 1;
        while (lo < hi) {
            const int mid = (lo + hi + 1) >> 1;
            if (group_start[mid] <= k) lo = mid; else hi = mid - 1;
        }
        const int g = lo;
        const long long first = group_start[g];
        const long long end = group_start[g + 1];
        const long long r = k - first + 1;
        const double share = by_size ? cum_size[k] / cum_size[end - 1]
                                     : (double)r / (double)(end - first);
        rank[i] = r;
        lights[i] = lights_of(share);
    }
}

// Lights of the front places of each queue without ranking whole queues (the live monitor,
// gpurisk/monitor.py): the rule of queue_places, from each head place's rank and its queue's
// count, or its running |size| and its queue's total |size|.
GR_KERNEL void head_lights(long long n, const long long* rank, const long long* count,
                           const double* cum_size, const double* total_size, int by_size,
                           signed char* lights) {
    for_each_index(k, n) {
        const double share = by_size ? cum_size[k] / total_size[k]
                                     : (double)rank[k] / (double)count[k];
        lights[k] = lights_of(share);
    }
}

// Queue order of two positions: score s at index i goes before score t at index j (score
// descending, -0.0 tied with 0.0, NaN after every number and tied, ties by index).
GR_DEVICE bool queue_ahead(double s, long long i, double t, long long j) {
    const bool s_nan = s != s, t_nan = t != t;
    if (s_nan != t_nan) return t_nan;
    if (!s_nan && s != t) return s > t;
    return i < j;
}

// A loop over blocks of positions or accounts (queue_head_candidates, uncovered_blocks): on the
// CPU the blocks (equal in size, a hundred or so) go to the OpenMP threads, however few there
// are; each block's work is the same on any thread, so the bits are too.
#if defined(__CUDACC__)
#define for_each_block(b, n) for_each_index(b, n)
#else
#define for_each_block(b, n)                                                   \
    GR_PRAGMA(omp parallel for schedule(static) if ((long long)(n) > 1))      \
    for (long long b = 0; b < (long long)(n); ++b)
#endif

// The front places of every ADL queue without ranking whole queues (the live monitor,
// gpurisk/monitor.py): each block of `block` positions keeps, per queue (2·symbol for longs,
// 2·symbol + 1 for shorts), its first `top` positions in queue order (candidates, -1 where
// fewer), and counts the queue's positions and sums their |size| left to right;
// queue_head_merge then merges the blocks. `threshold`: scratch, n_blocks × n_groups.
// Positions of size 0 (free rows of a layout with slack, gpurisk/book_updates.py) belong to
// no queue.
GR_KERNEL void queue_head_candidates(long long n_blocks, long long n, long long block, int n_groups, int top,
                                     const int* symbol, const double* size, const double* score,
                                     long long* candidate, long long* count, double* abs_size,
                                     double* threshold) {
    for_each_block(b, n_blocks) {
        long long* out = candidate + b * n_groups * top;
        long long* cnt = count + b * n_groups;
        double* tot = abs_size + b * n_groups;
        double* thr = threshold + b * n_groups;
        for (int k = 0; k < n_groups * top; ++k) out[k] = -1;
        for (int g = 0; g < n_groups; ++g) {
            cnt[g] = 0;
            tot[g] = 0.0;
            thr[g] = GR_NAN;
        }
        const long long end = (b + 1) * block < n ? (b + 1) * block : n;
        for (long long i = b * block; i < end; ++i) {
            const double q = size[i];
            if (q == 0.0) continue;
            const int g = 2 * symbol[i] + (q < 0.0 ? 1 : 0);
            cnt[g] += 1;
            tot[g] += fabs(q);
            const double s = score[i];
            // Most positions: one compare. A full list's last score, where it is a number: a
            // score not above it is behind (an equal one comes later, so its index is larger)
            if (s <= thr[g]) continue;
            long long* h = out + g * top;
            const long long last = h[top - 1];
            if (last >= 0 && !queue_ahead(s, i, score[last], last)) continue;
            int k = top - 1;
            while (k > 0 && (h[k - 1] < 0 || queue_ahead(s, i, score[h[k - 1]], h[k - 1]))) {
                h[k] = h[k - 1];
                --k;
            }
            h[k] = i;
            if (h[top - 1] >= 0) thr[g] = score[h[top - 1]];  // NaN: no shortcut
        }
    }
}

// The blocks of queue_head_candidates merged, a thread per queue: its first `top` positions
// over all blocks (head, -1 where the queue holds fewer), its positions counted and its
// |size| summed over the blocks in block order (fixed: the same bits on every backend and
// thread count).
GR_KERNEL void queue_head_merge(long long n_groups, long long n_blocks, int top, const double* score,
                                const long long* candidate, const long long* count, const double* abs_size,
                                long long* head, long long* count_total, double* abs_total) {
    for_each_index(g, n_groups) {
        long long* h = head + g * top;
        for (int k = 0; k < top; ++k) h[k] = -1;
        long long c = 0;
        double t = 0.0;
        for (long long b = 0; b < n_blocks; ++b) {
            c += count[b * n_groups + g];
            t += abs_size[b * n_groups + g];
            const long long* cand = candidate + (b * n_groups + g) * top;
            for (int j = 0; j < top && cand[j] >= 0; ++j) {
                const long long i = cand[j];
                const double s = score[i];
                const long long last = h[top - 1];
                if (last >= 0 && !queue_ahead(s, i, score[last], last)) break;  // the block's next are behind too
                int k = top - 1;
                while (k > 0 && (h[k - 1] < 0 || queue_ahead(s, i, score[h[k - 1]], h[k - 1]))) {
                    h[k] = h[k - 1];
                    --k;
                }
                h[k] = i;
            }
        }
        count_total[g] = c;
        abs_total[g] = t;
    }
}

// The uncovered deficit's parts per block, each block summed left to right (the host adds
// the blocks in block order): blocks [0, account_blocks) hold −equity of cross accounts
// (with open cross positions) whose equity is < 0; the rest −equity of isolated positions
// whose equity is < 0.
GR_KERNEL void uncovered_blocks(long long n_blocks, long long account_blocks, long long block,
                                long long n_accounts, const double* account_equity, const int* n_cross,
                                long long n_positions, const double* position_equity,
                                const signed char* isolated, double* block_total) {
    for_each_block(b, n_blocks) {
        double s = 0.0;
        if (b < account_blocks) {
            const long long end = (b + 1) * block < n_accounts ? (b + 1) * block : n_accounts;
            for (long long a = b * block; a < end; ++a)
                if (n_cross[a] > 0 && account_equity[a] < 0.0) s += -account_equity[a];
        } else {
            const long long first = (b - account_blocks) * block;
            const long long end = first + block < n_positions ? first + block : n_positions;
            for (long long i = first; i < end; ++i)
                if (isolated[i] == 1 && position_equity[i] < 0.0) s += -position_equity[i];
        }
        block_total[b] = s;
    }
}
