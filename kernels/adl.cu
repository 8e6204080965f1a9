// Auto-deleveraging priority score and indicator lights (DESIGN §5).
#include "common.cuh"

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

// Lights 1..5 (5 = front of the queue) from the cumulative share of the queue ahead of
// and including a position: share ≤ 20% → 5, ≤ 40% → 4, … A share exactly on a step
// belongs to that step.
GR_DEVICE signed char lights_of(double share) {
    if (share <= 0.2) return 5;
    if (share <= 0.4) return 4;
    if (share <= 0.6) return 3;
    if (share <= 0.8) return 2;
    return 1;
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
