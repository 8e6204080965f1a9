// What the cpu backend's native sorts share (radix_sort.cpp, queue_ranking.cpp;
// gpurisk/kernels.py expands this include into each): the ADL queues' sort keys, the split
// of a pass into per-thread slices whose counts are laid out in thread order, so a stable pass
// gives the same result on any thread count, and the insertion sort of short runs.
#pragma once
#include <stdint.h>
#include <string.h>
#if defined(_OPENMP)
#include <omp.h>
#endif

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

// This thread's number in its OpenMP team (0 outside a team or without OpenMP).
inline int thread_id() {
#if defined(_OPENMP)
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// Thread t's contiguous slice [lo, hi) of n items shared by `threads`.
inline void thread_slice(long long n, int t, int threads, long long& lo, long long& hi) {
    lo = n * t / threads;
    hi = n * (t + 1) / threads;
}

// Per-thread counts by bucket (count[t * n_buckets + b], each thread counting its slice) turned
// into each thread's first place in the buckets laid out one after another, bucket by bucket,
// thread by thread within a bucket; start[b] receives each bucket's first place and
// start[n_buckets] the total, where start is given. Returns the total.
inline long long thread_offsets(long long* count, int threads, long long n_buckets, long long* start) {
    long long running = 0;
    for (long long b = 0; b < n_buckets; ++b) {
        if (start) start[b] = running;
        for (int u = 0; u < threads; ++u) {
            long long& c = count[(size_t)u * (size_t)n_buckets + (size_t)b];
            const long long here = c;
            c = running;
            running += here;
        }
    }
    if (start) start[n_buckets] = running;
    return running;
}

// (key, value)[0, m) sorted by key on one thread by insertion: stable (a key moves past greater
// ones only), for the short runs where a radix pass costs more than it saves.
template <class Value>
inline void insertion_sort(long long m, uint64_t* key, Value* value) {
    for (long long i = 1; i < m; ++i) {
        const uint64_t k = key[i];
        const Value v = value[i];
        long long j = i;
        for (; j > 0 && key[j - 1] > k; --j) {
            key[j] = key[j - 1];
            value[j] = value[j - 1];
        }
        key[j] = k;
        value[j] = v;
    }
}

}  // namespace
