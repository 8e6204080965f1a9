// The ADL queues' sort keys, shared by the cpu backend's native sorts (radix_sort.cpp,
// queue_ranking.cpp; gpurisk/kernels.py expands this include into each).
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

}  // namespace
