// Deterministic segmented inclusive prefix sum. Segments are cut into fixed blocks of
// indices (block_start[b] .. block_start[b+1]-1, never crossing a segment); each block is
// summed left to right, block totals are accumulated left to right per segment, then each
// block is rescanned from its offset. The order of additions depends only on the block
// layout, never on the hardware or thread count, so every backend gives the same bits.
#include "common.cuh"

GR_KERNEL void block_sum(long long n_blocks, const long long* block_start,
                         const double* values, double* block_total) {
    for_each_index(b, n_blocks) {
        double s = 0.0;
        for (long long j = block_start[b]; j < block_start[b + 1]; ++j) s += values[j];
        block_total[b] = s;
    }
}

// Exclusive running sum of block totals within each segment of blocks.
GR_KERNEL void segment_block_offsets(long long n_segments, const long long* segment_block_start,
                                     const double* block_total, double* block_offset) {
    for_each_index(g, n_segments) {
        double s = 0.0;
        for (long long b = segment_block_start[g]; b < segment_block_start[g + 1]; ++b) {
            block_offset[b] = s;
            s += block_total[b];
        }
    }
}

GR_KERNEL void block_scan(long long n_blocks, const long long* block_start,
                          const double* block_offset, const double* values, double* out) {
    for_each_index(b, n_blocks) {
        double s = block_offset[b];
        for (long long j = block_start[b]; j < block_start[b + 1]; ++j) {
            s += values[j];
            out[j] = s;
        }
    }
}
