// Stable LSD radix argsort for the cpu backend's ADL queues (host code, not a kernel).
// Orders positions by (queue, score descending, storage index): scores are mapped to
// unsigned keys whose ascending order is descending score, sorted byte by byte, then by
// queue. Each pass is stable and split into contiguous per-thread chunks whose offsets are
// computed in thread order, so the permutation is the same on any thread count (and, the
// order being total, the same as any other correct sort, e.g. the GPU's).
#include <stdint.h>
#include <math.h>
#include <string.h>
#include <algorithm>  // nth_element, sort: the front of a queue
#include <vector>  // per-thread histograms
// descending_key, thread_count (gpurisk/kernels.py expands local includes)
#include "sort_keys.h"

namespace {

// One stable counting pass on byte `shift/8` of key: (key_in, idx_in) -> (key_out, idx_out).
template <typename K>
void radix_pass(long long n, int shift, const K* key_in, const long long* idx_in, K* key_out,
                long long* idx_out, int threads) {
    std::vector<long long> hist((size_t)threads * 256, 0);
#pragma omp parallel num_threads(threads)
    {
        const int t = thread_id();
        long long lo, hi;
        thread_slice(n, t, threads, lo, hi);
        long long* h = &hist[(size_t)t * 256];
        for (long long i = lo; i < hi; ++i) ++h[(key_in[i] >> shift) & 0xFF];
#pragma omp barrier
#pragma omp single
        thread_offsets(hist.data(), threads, 256, nullptr);
        for (long long i = lo; i < hi; ++i) {
            const long long dst = h[(key_in[i] >> shift) & 0xFF]++;
            key_out[dst] = key_in[i];
            idx_out[dst] = idx_in[i];
        }
    }
}

template <typename K>
bool single_bucket(long long n, int shift, const K* key) {
    if (n == 0) return true;
    const unsigned first = (unsigned)((key[0] >> shift) & 0xFF);
    for (long long i = 1; i < n; ++i)
        if ((unsigned)((key[i] >> shift) & 0xFF) != first) return false;
    return true;
}

// Sorts (key, idx) by n_bytes low bytes of key; returns whether the result ended up in the
// _tmp buffers (the two buffers alternate, so no copy is needed between passes).
template <typename K>
bool sort_bytes(long long n, int n_bytes, K* key, long long* idx, K* key_tmp, long long* idx_tmp,
                int threads) {
    bool swapped = false;
    for (int b = 0; b < n_bytes; ++b) {
        const int shift = 8 * b;
        if (single_bucket(n, shift, key)) continue;  // this byte orders nothing
        radix_pass(n, shift, key, idx, key_tmp, idx_tmp, threads);
        K* k = key; key = key_tmp; key_tmp = k;
        long long* i = idx; idx = idx_tmp; idx_tmp = i;
        swapped = !swapped;
    }
    return swapped;
}

// One queue's segment (key, idx)[0, n) sorted by key on one thread, stably; the sorted
// indices land in `order`. Eight byte histograms are counted in one read pass, and a byte on
// which every key agrees is skipped. A queue of a few hundred thousand positions fits in the
// cache, so its passes run there instead of streaming the whole book through memory.
void sort_segment(long long n, uint64_t* key, long long* idx, uint64_t* key_tmp, long long* idx_tmp,
                  long long* order) {
    if (n < 2) {
        if (n == 1) order[0] = idx[0];
        return;
    }
    if (n <= 32) {  // insertion sort: stable, and (key, idx) pairs are distinct
        insertion_sort(n, key, idx);
        memcpy(order, idx, sizeof(long long) * (size_t)n);
        return;
    }
    long long hist[8][256];
    memset(hist, 0, sizeof hist);
    for (long long i = 0; i < n; ++i) {
        const uint64_t k = key[i];
        for (int b = 0; b < 8; ++b) ++hist[b][(k >> (8 * b)) & 0xFF];
    }
    for (int b = 0; b < 8; ++b) {
        const int shift = 8 * b;
        if (hist[b][(key[0] >> shift) & 0xFF] == n) continue;  // this byte orders nothing
        thread_offsets(hist[b], 1, 256, nullptr);
        for (long long i = 0; i < n; ++i) {
            const long long dst = hist[b][(key[i] >> shift) & 0xFF]++;
            key_tmp[dst] = key[i];
            idx_tmp[dst] = idx[i];
        }
        uint64_t* k = key; key = key_tmp; key_tmp = k;
        long long* x = idx; idx = idx_tmp; idx_tmp = x;
    }
    if (idx != order) memcpy(order, idx, sizeof(long long) * (size_t)n);
}

}  // namespace

// order[k] = the position at place k of the concatenated queues (queue ascending, score
// descending, position index ascending). The caller owns the work buffers (reused between
// calls: first-touching fresh memory costs more than the sort): key and key_tmp hold n
// uint64, idx_tmp n int64.
//
// First one stable counting pass splits the positions by queue (keys computed on the way),
// then each queue is sorted by score on its own: small queues one per thread, in the cache;
// a queue too large to share out that way by the whole team, byte pass after byte pass. The
// order being total, neither the split nor the thread count changes the permutation.
extern "C" void queue_order(long long n, const int* group, const double* score, int n_groups,
                            long long* order, uint64_t* key, uint64_t* key_tmp, long long* idx_tmp) {
    const int threads = n < 65536 ? 1 : thread_count();  // small books: no team to wake
    std::vector<long long> hist((size_t)threads * (size_t)n_groups + 1, 0);
    std::vector<long long> start((size_t)n_groups + 1, 0);
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        const int t = thread_id();
        long long lo, hi;
        thread_slice(n, t, threads, lo, hi);
        long long* h = &hist[(size_t)t * (size_t)n_groups];
        for (long long i = lo; i < hi; ++i) ++h[group[i]];
#pragma omp barrier
#pragma omp single
        thread_offsets(hist.data(), threads, n_groups, start.data());
        for (long long i = lo; i < hi; ++i) {
            const long long dst = h[group[i]]++;
            key_tmp[dst] = descending_key(score[i]);
            idx_tmp[dst] = i;
        }
    }
    // (key_tmp, idx_tmp) now hold the queues one after another, each in storage order.
    const long long team_size = threads > 1 ? n / (2 * threads) : n + 1;
    for (int g = 0; g < n_groups; ++g) {
        const long long lo = start[g], m = start[g + 1] - lo;
        if (m < team_size) continue;
        // The sorted indices end in order's segment or in idx_tmp's, by the count of passes.
        if (!sort_bytes(m, 8, key_tmp + lo, idx_tmp + lo, key + lo, order + lo, threads))
            memcpy(order + lo, idx_tmp + lo, sizeof(long long) * (size_t)m);
    }
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1)
    for (int g = 0; g < n_groups; ++g) {
        const long long lo = start[g], m = start[g + 1] - lo;
        if (m >= team_size) continue;
        // idx_tmp's segment serves as the second index buffer: order receives the result.
        sort_segment(m, key_tmp + lo, idx_tmp + lo, key + lo, order + lo, order + lo);
    }
}

// The front of one ADL queue, as deep as its demand (deleverage.queue_front): members are
// the queue's storage indices (ascending), keep marks the positions that may be filled, and
// out receives the kept members in queue order (score descending, NaN last, ties by index)
// until the running sum of |size| reaches need (every kept member if it never does). Returns
// how many were written. The `first` best are selected in linear time (every tie of the last
// included) and sorted; the selection grows until its supply suffices; past half the queue,
// the queue is sorted whole. key, idx, key_tmp and idx_tmp are work buffers of n entries.
extern "C" long long queue_front(long long n, const long long* members, const double* score, const bool* keep,
                                 const double* size, double need, long long first, uint64_t* key, long long* idx,
                                 uint64_t* key_tmp, long long* idx_tmp, long long* out) {
    struct Entry {
        uint64_t key;
        long long idx;
        bool operator<(const Entry& o) const { return key < o.key || (key == o.key && idx < o.idx); }
    };
    for (long long j = 0; j < n; ++j) {
        key[j] = descending_key(score[members[j]]);
        idx[j] = members[j];
    }
    long long k = first;
    std::vector<Entry> work, picked;
    long long selected = 0;  // work[0, selected): the `selected` best, unordered
    while (k < n / 2) {
        if (work.empty()) {
            work.resize((size_t)n);
            for (long long j = 0; j < n; ++j) work[(size_t)j] = Entry{key[j], idx[j]};
        }
        // Each round selects among what the last one left: linear in the queue overall.
        std::nth_element(work.begin() + selected, work.begin() + (k - 1), work.end());
        selected = k;
        const uint64_t bound = work[(size_t)(k - 1)].key;  // the k-th best key
        if (bound == ~0ULL) break;  // fewer than k numbers: the NaNs are needed too
        picked.assign(work.begin(), work.begin() + k);
        for (long long j = k; j < n; ++j)  // every tie of the bound
            if (work[(size_t)j].key == bound) picked.push_back(work[(size_t)j]);
        std::sort(picked.begin(), picked.end());
        long long m = 0;
        double running = 0.0;
        for (const Entry& e : picked) {
            if (!keep[e.idx]) continue;
            out[m++] = e.idx;
            running += fabs(size[e.idx]);
        }
        // Supplies are sizes of open positions (> 0), so the running sum rises strictly past
        // the cut: no later member can share the cut's sum.
        if (m > 0 && running >= need) return m;
        const double grow = running > 0.0 ? (double)k * 1.5 * need / running : (double)n;
        k = std::max(2 * k, grow >= (double)n ? n : (long long)grow);
    }
    sort_segment(n, key, idx, key_tmp, idx_tmp, idx_tmp);
    long long m = 0;
    for (long long j = 0; j < n; ++j)
        if (keep[idx_tmp[j]]) out[m++] = idx_tmp[j];
    return m;
}

// The fronts of several ADL queues at once, each as deep as its demand (deleverage.
// queue_fronts_to_demand). Position i belongs to queue group[i]; queue g is wanted where
// slot[g] = k >= 0, with its demand demand[demand_begin[k]..demand_end[k]) (sizes, summed in
// that order: the need). out[out_begin[k]..) receives queue k's kept positions (keep[i]) in
// queue order (score descending, NaN last, ties by index) up to and including the first whose
// running sum of |size| (in that order) reaches the need, or every kept position if none does;
// supply the same positions' |size|; n_out[k] how many.
//
// Two sequential passes over the positions (never a gather over a queue's scattered
// members): the first counts each queue's kept positions and their supply by the top 12 bits
// of the key (the score's sign and exponent); the second copies the key, position and |size|
// of those in the buckets the need reaches to the queue's own region, in storage order. Then,
// queue by queue, in the cache: a counting pass splits the copies by bucket (stable: ties stay
// in index order), only those buckets are sorted (sort_segment), and the positions and sizes
// are read back in order. Out holds out_begin[k + 1] - out_begin[k] >= the queue's kept
// positions; key, idx, key_tmp, idx_tmp and size_tmp are work buffers laid out like out;
// margin: see below. The order is total, so any thread count (`threads`: 0 for the team)
// gives the same bits.
extern "C" void queue_fronts_to_demand(long long n, const int* group, const long long* slot, long long n_queues,
                                       const long long* demand_begin, const long long* demand_end,
                                       const double* demand, const double* score, const bool* keep,
                                       const double* size, const long long* out_begin, long long* out,
                                       double* supply, long long* n_out, uint64_t* key, long long* idx,
                                       uint64_t* key_tmp, long long* idx_tmp, double* size_tmp, double margin,
                                       int threads) {
    constexpr int BITS = 12, SHIFT = 64 - BITS, N_BUCKETS = 1 << BITS;
    const int team = threads > 0 ? threads : thread_count();
    std::vector<long long> count((size_t)n_queues * N_BUCKETS, 0), cursor((size_t)n_queues, 0);
    std::vector<double> weight((size_t)n_queues * N_BUCKETS, 0.0), need((size_t)n_queues, 0.0);
    std::vector<int> last((size_t)n_queues, N_BUCKETS - 1);
    std::vector<char> redo((size_t)n_queues, 1);
    for (long long k = 0; k < n_queues; ++k)
        for (long long i = demand_begin[k]; i < demand_end[k]; ++i) need[k] += demand[i];
    for (long long i = 0; i < n; ++i) {
        const long long k = slot[group[i]];
        if (k < 0 || !keep[i]) continue;
        const size_t b = (size_t)k * N_BUCKETS + (descending_key(score[i]) >> SHIFT);
        ++count[b];
        weight[b] += fabs(size[i]);
    }
    // The buckets each need reaches by their sums, with a margin (relative: the sums run in
    // another order than the front's running sum); should a front still fall short, every
    // bucket, once more (a test sets a negative margin to take that road).
    for (long long k = 0; k < n_queues; ++k) {
        double reach = 0.0;
        for (int b = 0; b < N_BUCKETS; ++b) {
            reach += weight[(size_t)k * N_BUCKETS + b];
            if (reach >= need[k] * (1.0 + margin) + 1e-300) {
                last[k] = b;
                break;
            }
        }
    }
    for (int attempt = 0; attempt < 2; ++attempt) {
        for (long long k = 0; k < n_queues; ++k) cursor[k] = out_begin[k];
        for (long long i = 0; i < n; ++i) {
            const long long k = slot[group[i]];
            if (k < 0 || !redo[k] || !keep[i]) continue;
            const uint64_t key_i = descending_key(score[i]);
            if ((int)(key_i >> SHIFT) > last[k]) continue;
            const long long dst = cursor[k]++;
            key[dst] = key_i;
            idx[dst] = i;
            size_tmp[dst] = fabs(size[i]);
        }
#pragma omp parallel for schedule(dynamic, 1) num_threads(team) if (team > 1 && n_queues > 1)
        for (long long k = 0; k < n_queues; ++k) {
            if (!redo[k]) continue;
            const long long base = out_begin[k], m = cursor[k] - base;
            const long long* cnt = &count[(size_t)k * N_BUCKETS];
            std::vector<long long> at((size_t)last[k] + 2, base);
            for (int b = 0; b <= last[k]; ++b) at[(size_t)b + 1] = at[(size_t)b] + cnt[b];
            for (long long j = base; j < base + m; ++j) {  // by bucket; within one, in storage order
                const long long dst = at[(size_t)(key[j] >> SHIFT)]++;
                key_tmp[dst] = key[j];
                idx_tmp[dst] = j;  // the copy's place: its position and size are read back by it
            }
            long long lo = base, end = base;  // sorted: [base, end); written: [base, lo)
            double running = 0.0;
            bool reached = false;
            for (int b = 0; b <= last[k] && !reached; ++b) {
                const long long c = cnt[b];
                if (c == 0) continue;
                // key's and out's segments serve as the second buffers (the copies' keys are
                // in key_tmp by now); out receives the places.
                sort_segment(c, key_tmp + end, idx_tmp + end, key + end, out + end, out + end);
                end += c;
                for (; lo < end; ++lo) {
                    const long long place = out[lo];
                    supply[lo] = size_tmp[place];
                    out[lo] = idx[place];
                    running += supply[lo];
                    if (running >= need[k]) {
                        reached = true;
                        ++lo;
                        break;
                    }
                }
            }
            n_out[k] = lo - base;
            // Short of the need with buckets left unsorted (rounding): every bucket, once more.
            redo[k] = !reached && last[k] < N_BUCKETS - 1;
            if (redo[k]) last[k] = N_BUCKETS - 1;
        }
    }
}

// Indices 0..n-1 ordered by (group, rank, index), both keys small non-negative integers
// (group < n_groups, rank < n_ranks): two stable counting sorts, by rank and then by group.
// The order deleverage.demand_by_queue gives the bankrupt demand (queue, settlement rank of
// the unit, position). tmp: n entries of work; count: max(n_groups, n_ranks) + 1 entries.
extern "C" void order_by_group_rank(long long n, const long long* group, const long long* rank, long long n_groups,
                                    long long n_ranks, long long* order, long long* tmp, long long* count) {
    memset(count, 0, sizeof(long long) * (size_t)(n_ranks + 1));
    for (long long i = 0; i < n; ++i) ++count[rank[i] + 1];
    for (long long r = 0; r < n_ranks; ++r) count[r + 1] += count[r];
    for (long long i = 0; i < n; ++i) tmp[count[rank[i]]++] = i;
    memset(count, 0, sizeof(long long) * (size_t)(n_groups + 1));
    for (long long i = 0; i < n; ++i) ++count[group[i] + 1];
    for (long long g = 0; g < n_groups; ++g) count[g + 1] += count[g];
    for (long long j = 0; j < n; ++j) {
        const long long i = tmp[j];
        order[count[group[i]]++] = i;
    }
}
