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
#if defined(_OPENMP)
#include <omp.h>
#endif
// lights_of, shared with kernels/adl.cu (gpurisk/kernels.py expands this from kernels/)
#include "lights.cuh"

namespace {

inline uint64_t descending_key(double score) {
    // NaN (any sign or payload) ranks after every number, all NaNs tied: the order NumPy's
    // and CuPy's sorts give, so every backend agrees.
    if (score != score) return ~0ULL;
    double s = score + 0.0;  // -0.0 -> +0.0: equal scores must have equal keys
    uint64_t bits;
    memcpy(&bits, &s, sizeof bits);
    const uint64_t ascending = (bits & 0x8000000000000000ULL) ? ~bits : (bits | 0x8000000000000000ULL);
    return ~ascending;
}

int thread_count() {
#if defined(_OPENMP)
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// One stable counting pass on byte `shift/8` of key: (key_in, idx_in) -> (key_out, idx_out).
template <typename K>
void radix_pass(long long n, int shift, const K* key_in, const long long* idx_in, K* key_out,
                long long* idx_out, int threads) {
    std::vector<long long> hist((size_t)threads * 256, 0);
#pragma omp parallel num_threads(threads)
    {
#if defined(_OPENMP)
        const int t = omp_get_thread_num();
#else
        const int t = 0;
#endif
        const long long lo = n * t / threads, hi = n * (t + 1) / threads;
        long long* h = &hist[(size_t)t * 256];
        for (long long i = lo; i < hi; ++i) ++h[(key_in[i] >> shift) & 0xFF];
#pragma omp barrier
#pragma omp single
        {
            long long running = 0;
            for (int d = 0; d < 256; ++d)
                for (int u = 0; u < threads; ++u) {
                    const long long c = hist[(size_t)u * 256 + d];
                    hist[(size_t)u * 256 + d] = running;
                    running += c;
                }
        }
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
        for (long long i = 1; i < n; ++i) {
            const uint64_t k = key[i];
            const long long v = idx[i];
            long long j = i;
            for (; j > 0 && key[j - 1] > k; --j) {
                key[j] = key[j - 1];
                idx[j] = idx[j - 1];
            }
            key[j] = k;
            idx[j] = v;
        }
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
        long long running = 0;
        for (int d = 0; d < 256; ++d) {
            const long long c = hist[b][d];
            hist[b][d] = running;
            running += c;
        }
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

// Runs of up to this many keys are sorted by insertion (stable: a key moves past greater ones).
constexpr long long SHORT_RUN = 32;

void insertion_sort(long long m, uint64_t* key, uint32_t* place) {
    for (long long i = 1; i < m; ++i) {
        const uint64_t k = key[i];
        const uint32_t v = place[i];
        long long j = i;
        for (; j > 0 && key[j - 1] > k; --j) {
            key[j] = key[j - 1];
            place[j] = place[j - 1];
        }
        key[j] = k;
        place[j] = v;
    }
}

// Stable sort of (key, place)[0, m) by key, m > SHORT_RUN, on one thread; the places in key
// order land in out (m entries). Most significant digit first: each level reads the keys'
// min and max and splits on the top bits of those in which they differ (12 at the first
// level: a score's sign and exponent; below it m to 2m buckets, at most 2^11, so that most
// keys end alone in a bucket), so a level never finds a single bucket; a run of equal keys
// (the many scores of 0) ends its branch after one read, short runs end in insertion sort.
// Every split is stable, so equal keys keep their places' order. key_tmp and place_tmp: m
// entries of work (the levels alternate between the pairs). At the first level (WIDTH 12)
// the places are 0 .. m-1 and are not read from `place`. Each level takes at least 6 bits
// (m > 32), so the recursion is at most 10 deep.
template <int WIDTH>
void sort_places(long long m, uint64_t* key, uint32_t* place, uint64_t* key_tmp, uint32_t* place_tmp,
                 uint32_t* out) {
    uint64_t lo = key[0], hi = key[0];
    for (long long i = 1; i < m; ++i) {
        lo = key[i] < lo ? key[i] : lo;
        hi = key[i] > hi ? key[i] : hi;
    }
    constexpr bool first = WIDTH == 12;
    if (lo == hi) {
        if (first)
            for (long long i = 0; i < m; ++i) out[i] = (uint32_t)i;
        else
            memcpy(out, place, sizeof(uint32_t) * (size_t)m);
        return;
    }
    const int top = 64 - __builtin_clzll(lo ^ hi);  // keys agree on every bit from `top` up
    int width = WIDTH;
    if (WIDTH < 12) width = std::min(WIDTH, 64 - __builtin_clzll((uint64_t)m));  // m to 2m buckets
    width = std::min(width, top);
    const int shift = top - width;
    const uint64_t mask = (1ULL << width) - 1;
    const int buckets = 1 << width;
    uint32_t at[(1 << WIDTH) + 1];
    memset(at, 0, sizeof(uint32_t) * ((size_t)buckets + 1));
    for (long long i = 0; i < m; ++i) ++at[((key[i] >> shift) & mask) + 1];
    for (int d = 0; d < buckets; ++d) at[d + 1] += at[d];
    uint32_t bucket_end[1 << WIDTH];
    for (int d = 0; d < buckets; ++d) bucket_end[d] = at[d + 1];
    for (long long i = 0; i < m; ++i) {
        const uint32_t dst = at[(key[i] >> shift) & mask]++;
        key_tmp[dst] = key[i];
        place_tmp[dst] = first ? (uint32_t)i : place[i];
    }
    uint32_t begin = 0;
    for (int d = 0; d < buckets; ++d) {
        const uint32_t end = bucket_end[d];
        const long long c = (long long)end - begin;
        if (c > SHORT_RUN) {
            sort_places<11>(c, key_tmp + begin, place_tmp + begin, key + begin, place + begin, out + begin);
        } else if (c == 1) {
            out[begin] = place_tmp[begin];
        } else if (c > 0) {
            insertion_sort(c, key_tmp + begin, place_tmp + begin);
            for (long long j = 0; j < c; ++j) out[begin + j] = place_tmp[begin + j];
        }
        begin = end;
    }
}

// sort_places for any m, of the places 0 .. m-1.
void sort_run(long long m, uint64_t* key, uint32_t* place, uint64_t* key_tmp, uint32_t* place_tmp, uint32_t* out) {
    if (m > SHORT_RUN) {
        sort_places<12>(m, key, place, key_tmp, place_tmp, out);
        return;
    }
    for (long long j = 0; j < m; ++j) place[j] = (uint32_t)j;
    insertion_sort(m, key, place);
    for (long long j = 0; j < m; ++j) out[j] = place[j];
}

// Inclusive prefix sum of values[0, m) into out (out may be values), with the additions in
// the order gpurisk/scan.py's segmented_cumsum makes them for one segment (blocks of `block`
// summed left to right from 0.0, their totals scanned by the same rule, each block rescanned
// from the previous block's inclusive total): the same bits as that function.
void block_cumsum(long long m, const double* values, double* out, long long block) {
    if (m <= block) {
        double s = 0.0;
        for (long long j = 0; j < m; ++j) {
            s += values[j];
            out[j] = s;
        }
        return;
    }
    const long long n_blocks = (m + block - 1) / block;
    std::vector<double> total((size_t)n_blocks);
    for (long long b = 0; b < n_blocks; ++b) {
        const long long end = (b + 1) * block < m ? (b + 1) * block : m;
        double s = 0.0;
        for (long long j = b * block; j < end; ++j) s += values[j];
        total[(size_t)b] = s;
    }
    block_cumsum(n_blocks, total.data(), total.data(), block);
    for (long long b = 0; b < n_blocks; ++b) {
        const long long end = (b + 1) * block < m ? (b + 1) * block : m;
        double s = b == 0 ? 0.0 : total[(size_t)b - 1];
        for (long long j = b * block; j < end; ++j) {
            s += values[j];
            out[j] = s;
        }
    }
}

}  // namespace

// Queue order, rank and lights of every position in one call (the cpu backend's adl_queues:
// the same bits as queue_order, rotate_queues and kernels/adl.cu queue_places). Position i
// belongs to queue group[i]; order[k] = the position at place k (queues one after another,
// score descending, NaN last, ties by index, then each queue turned by rotation[g] places
// where rotation is not null); rank[i] = its place in its queue + 1; lights[i] by the share
// of |size| up to and including it in queue order (by_size, summed as segmented_cumsum sums
// with `scan_block`) or by rank / count.
//
// Three passes: a counting pass copies each queue's keys (and |size|) into its own region, in
// storage order; each queue is then sorted in the cache on one thread (sort_places, largest
// queues first), which writes the queue's part of order and, per member, its place and
// lights, in that region; a last pass in storage order writes rank and lights, so neither is
// scattered over the book. key, key_tmp and slot: n entries of work each (slot holds the
// storage indices and the sorted places; the places being sorted use the queue's region of
// order, which is written after them; once a queue is sorted its key region holds its
// members' places and lights). Returns 1 without ranking (the caller uses queue_order and
// queue_places) where n >= 2^29, or one queue holds more than half of a book the team
// shares out.
extern "C" int queue_ranking(long long n, const int* group, const double* score, int n_groups, const double* size,
                             int by_size, const long long* rotation, long long scan_block, long long* order,
                             long long* rank, signed char* lights, uint64_t* key, uint64_t* key_tmp, uint64_t* slot) {
    if (n >= (1LL << 29)) return 1;  // places are packed in 29 bits
    const int threads = n < 65536 ? 1 : thread_count();
    std::vector<long long> cursor((size_t)threads * (size_t)n_groups, 0), start((size_t)n_groups + 1, 0);
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
#if defined(_OPENMP)
        const int t = omp_get_thread_num();
#else
        const int t = 0;
#endif
        const long long lo = n * t / threads, hi = n * (t + 1) / threads;
        long long* h = &cursor[(size_t)t * (size_t)n_groups];
        for (long long i = lo; i < hi; ++i) ++h[group[i]];
    }
    long long running = 0, longest = 0;
    for (int g = 0; g < n_groups; ++g) {
        start[(size_t)g] = running;
        for (int u = 0; u < threads; ++u) {
            const long long c = cursor[(size_t)u * (size_t)n_groups + g];
            cursor[(size_t)u * (size_t)n_groups + g] = running;
            running += c;
        }
        longest = std::max(longest, running - start[(size_t)g]);
    }
    start[(size_t)n_groups] = running;
    if (threads > 1 && longest > n / 2) return 1;
    // Storage indices and sorted places as 32-bit halves of slot; |size| in rank (written last).
    uint32_t* index = (uint32_t*)slot;
    uint32_t* sorted = index + n;
    double* abs_size = (double*)rank;
    std::vector<long long> first_cursor(cursor);
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
#if defined(_OPENMP)
        const int t = omp_get_thread_num();
#else
        const int t = 0;
#endif
        const long long lo = n * t / threads, hi = n * (t + 1) / threads;
        long long* h = &cursor[(size_t)t * (size_t)n_groups];
        for (long long i = lo; i < hi; ++i) {
            const long long dst = h[group[i]]++;
            // A queue's next lines, fetched for writing ahead of its stores: the stores go to
            // as many places as there are queues, too many for the hardware to foresee.
            __builtin_prefetch(key + dst + 16, 1);
            __builtin_prefetch(index + dst + 32, 1);
            key[dst] = descending_key(score[i]);
            index[dst] = (uint32_t)i;
            if (by_size) {
                __builtin_prefetch(abs_size + dst + 16, 1);
                abs_size[dst] = fabs(size[i]);
            }
        }
    }
    std::vector<int> by_length((size_t)n_groups);
    for (int g = 0; g < n_groups; ++g) by_length[(size_t)g] = g;
    std::stable_sort(by_length.begin(), by_length.end(), [&](int a, int b) {
        return start[(size_t)a + 1] - start[(size_t)a] > start[(size_t)b + 1] - start[(size_t)b];
    });
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1)
    for (int q = 0; q < n_groups; ++q) {
        const int g = by_length[(size_t)q];
        const long long lo = start[(size_t)g], m = start[(size_t)g + 1] - lo;
        if (m == 0) continue;
        uint32_t* place = (uint32_t*)(order + lo);  // the two place buffers: the region's halves
        sort_run(m, key + lo, place, key_tmp + lo, place + m, sorted + lo);
        // Each member's place and lights, packed (place << 3 | lights), in the key region.
        uint32_t* member = (uint32_t*)(key + lo);
        const long long turn = rotation ? rotation[g] : 0;
        const uint32_t* seg = sorted + lo;
        double* cum = (double*)(key_tmp + lo);
        // The members are read and written in sorted order, so at random in the queue's
        // region: the member AHEAD places on is fetched while this one is handled.
        constexpr long long AHEAD = 16;
        for (long long p = 0; p < m; ++p) {  // place p holds the member sorted at p + turn
            const long long s = p + turn < m ? p + turn : p + turn - m;
            long long s_ahead = s + AHEAD;
            while (s_ahead >= m) s_ahead -= m;
            const uint32_t j_ahead = seg[s_ahead];
            __builtin_prefetch(index + lo + j_ahead);
            if (by_size)
                __builtin_prefetch(abs_size + lo + j_ahead);
            else
                __builtin_prefetch(member + j_ahead, 1);
            const uint32_t j = seg[s];
            order[lo + p] = (long long)index[lo + j];
            if (by_size)
                cum[p] = abs_size[lo + j];
            else
                member[j] = (uint32_t)p << 3 | (uint32_t)lights_of((double)(p + 1) / (double)m);
        }
        if (by_size) {
            block_cumsum(m, cum, cum, scan_block);
            const double total = cum[m - 1];
            for (long long p = 0; p < m; ++p) {
                const long long s = p + turn < m ? p + turn : p + turn - m;
                long long s_ahead = s + AHEAD;
                while (s_ahead >= m) s_ahead -= m;
                __builtin_prefetch(member + seg[s_ahead], 1);
                member[seg[s]] = (uint32_t)p << 3 | (uint32_t)lights_of(cum[p] / total);
            }
        }
    }
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
#if defined(_OPENMP)
        const int t = omp_get_thread_num();
#else
        const int t = 0;
#endif
        const long long lo = n * t / threads, hi = n * (t + 1) / threads;
        long long* h = &first_cursor[(size_t)t * (size_t)n_groups];
        for (long long i = lo; i < hi; ++i) {
            const int g = group[i];
            const long long slot_i = h[g]++;
            const uint32_t* member = (const uint32_t*)(key + start[(size_t)g]) + (slot_i - start[(size_t)g]);
            __builtin_prefetch(member + 64);  // as in the counting pass: one stream per queue
            const uint32_t packed = *member;
            rank[i] = (long long)(packed >> 3) + 1;
            lights[i] = (signed char)(packed & 7);
        }
    }
    return 0;
}

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
#if defined(_OPENMP)
        const int t = omp_get_thread_num();
#else
        const int t = 0;
#endif
        const long long lo = n * t / threads, hi = n * (t + 1) / threads;
        long long* h = &hist[(size_t)t * (size_t)n_groups];
        for (long long i = lo; i < hi; ++i) ++h[group[i]];
#pragma omp barrier
#pragma omp single
        {
            long long running = 0;
            for (int g = 0; g < n_groups; ++g) {
                start[g] = running;
                for (int u = 0; u < threads; ++u) {
                    const long long c = hist[(size_t)u * (size_t)n_groups + g];
                    hist[(size_t)u * (size_t)n_groups + g] = running;
                    running += c;
                }
            }
            start[n_groups] = running;
        }
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
// positions; key, idx, key_tmp, idx_tmp and size_tmp are work buffers laid out like out. The
// order is total, so any thread count (`threads`: 0 for the team) gives the same bits.
extern "C" void queue_fronts_to_demand(long long n, const int* group, const long long* slot, long long n_queues,
                                       const long long* demand_begin, const long long* demand_end,
                                       const double* demand, const double* score, const bool* keep,
                                       const double* size, const long long* out_begin, long long* out,
                                       double* supply, long long* n_out, uint64_t* key, long long* idx,
                                       uint64_t* key_tmp, long long* idx_tmp, double* size_tmp, int threads) {
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
    // The buckets each need reaches by their sums, with a margin (the sums run in another
    // order than the front's running sum); should a front still fall short, every bucket.
    for (long long k = 0; k < n_queues; ++k) {
        double reach = 0.0;
        for (int b = 0; b < N_BUCKETS; ++b) {
            reach += weight[(size_t)k * N_BUCKETS + b];
            if (reach >= need[k] * (1.0 + 1e-9) + 1e-300) {
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
