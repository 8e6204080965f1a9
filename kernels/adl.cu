// Auto-deleveraging priority score and indicator lights (DESIGN §5).
#include "common.cuh"

#define GR_SCORE_PNL_LEVERAGE 0  // BitMEX, Bybit: pnl% × effective leverage
#define GR_SCORE_BINANCE 1       // max(0, upnl) / max(1, wallet) × margin ratio
#define GR_SCORE_HYPERLIQUID 2   // (P/E)^side × notional / equity
#define GR_SCORE_NONE 3          // no ranking (dYdX): order set by the caller

// Higher score = deleveraged first. pos_equity is the account's equity for cross
// positions and the position's own for isolated ones; ratio likewise.
GR_KERNEL void adl_score(
    long long n, int method, const int* account, const int* symbol, const double* size,
    const double* entry, const signed char* isolated, const double* isolated_margin,
    const double* mark, const double* notional, const double* upnl,
    const double* bankruptcy_price, const double* wallet, const double* pos_equity,
    const double* ratio, double* score) {
    for_each_index(i, n) {
        const double q = size[i];
        const double p = mark[symbol[i]];
        const double e = entry[i];
        const double side = q > 0.0 ? 1.0 : -1.0;
        double sc = 0.0;
        if (method == GR_SCORE_PNL_LEVERAGE) {
            const double aq = fabs(q);
            const double pnl = side * (p - e) / e;
            const double eff_lev = (aq * p) / (aq * fabs(p - bankruptcy_price[i]));
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
        }
        score[i] = sc;
    }
}

// Lights 1..5 (5 = front of the queue) from the cumulative share of the queue ahead of
// and including each position: share ≤ 20% → 5, ≤ 40% → 4, … Shares exactly on a step
// belong to that step. cum and total are size sums (BitMEX rule) or ranks and counts.
GR_KERNEL void adl_lights(long long n, const int* group, const double* cum,
                          const double* group_total, signed char* lights) {
    for_each_index(i, n) {
        const double share = cum[i] / group_total[group[i]];
        signed char l = 1;
        if (share <= 0.2) l = 5;
        else if (share <= 0.4) l = 4;
        else if (share <= 0.6) l = 3;
        else if (share <= 0.8) l = 2;
        lights[i] = l;
    }
}
