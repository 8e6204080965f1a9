// The cpu backend's ADL ranking in one call (host code, not a kernel): queue order, ranks
// and lights, the same bits as radix_sort.cpp's queue_order followed by kernels/adl.cu's
// queue_places (and adl.rotate_queues where queues are turned).
#include <stdint.h>
#include <math.h>
#include <string.h>
#include <algorithm>  // stable_sort: the queues, longest first
#include <vector>  // per-thread cursors
// descending_key, thread_count, the per-thread slices; lights_of, shared with kernels/adl.cu
// (gpurisk/kernels.py expands these from gpurisk/native/ and kernels/)
#include "sort_keys.h"
#include "lights.cuh"

namespace {

// Runs of up to this many keys are sorted by insertion (stable: a key moves past greater ones).
constexpr long long SHORT_RUN = 32;

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
    if (first) {
        // The whole queue, out of L2, into a few dozen buckets (sign and exponent): each
        // bucket's lines are fetched for writing 256 bytes ahead, as in the counting pass.
        for (long long i = 0; i < m; ++i) {
            const uint32_t dst = at[(key[i] >> shift) & mask]++;
            __builtin_prefetch(key_tmp + dst + 32, 1);
            __builtin_prefetch(place_tmp + dst + 64, 1);
            key_tmp[dst] = key[i];
            place_tmp[dst] = (uint32_t)i;
        }
    } else {
        for (long long i = 0; i < m; ++i) {
            const uint32_t dst = at[(key[i] >> shift) & mask]++;
            key_tmp[dst] = key[i];
            place_tmp[dst] = place[i];
        }
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
        const int t = thread_id();
        long long lo, hi;
        thread_slice(n, t, threads, lo, hi);
        long long* h = &cursor[(size_t)t * (size_t)n_groups];
        for (long long i = lo; i < hi; ++i) ++h[group[i]];
    }
    thread_offsets(cursor.data(), threads, n_groups, start.data());
    long long longest = 0;
    for (int g = 0; g < n_groups; ++g) longest = std::max(longest, start[(size_t)g + 1] - start[(size_t)g]);
    if (threads > 1 && longest > n / 2) return 1;
    // Storage indices and sorted places as 32-bit halves of slot; |size| in rank (written last).
    uint32_t* index = (uint32_t*)slot;
    uint32_t* sorted = index + n;
    double* abs_size = (double*)rank;
    std::vector<long long> first_cursor(cursor);
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        const int t = thread_id();
        long long lo, hi;
        thread_slice(n, t, threads, lo, hi);
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
        const long long turn = rotation ? rotation[g] % m : 0;  // rotation: in [0, m)
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
        const int t = thread_id();
        long long lo, hi;
        thread_slice(n, t, threads, lo, hi);
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

// Each position's ADL queue, group[i] = 2·symbol[i] + (size[i] < 0) (adl.queue_group), and the
// first place of each queue in queue order, group_start[g] (n_groups + 1 entries: the counts'
// running sum, as adl.queue_starts). One pass, each thread counting its contiguous slice;
// integer counts, so the same values on any thread count.
extern "C" void queue_groups(long long n, const int* symbol, const double* size, int n_groups, int* group,
                             long long* group_start) {
    const int threads = n < 65536 ? 1 : thread_count();
    std::vector<long long> hist((size_t)threads * (size_t)n_groups, 0);
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        const int t = thread_id();
        long long lo, hi;
        thread_slice(n, t, threads, lo, hi);
        long long* h = &hist[(size_t)t * (size_t)n_groups];
        for (long long i = lo; i < hi; ++i) {
            const int g = 2 * symbol[i] + (size[i] < 0.0 ? 1 : 0);
            group[i] = g;
            ++h[g];
        }
    }
    thread_offsets(hist.data(), threads, n_groups, group_start);
}
