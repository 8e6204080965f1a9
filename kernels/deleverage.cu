// Deleveraging kernels (DESIGN §5): the fills of queue ADL, bankrupt demand merged with the
// ranked opposite queue.
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
