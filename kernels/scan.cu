// Deterministic segmented inclusive prefix sum, hierarchical. Segments are cut into fixed
// blocks of indices (block_start[b] .. block_start[b+1]-1, never crossing a segment); each
// block is summed left to right from 0.0 (block_sum); the block totals, a shorter segmented
// sequence (one segment of blocks per segment), get their inclusive scan by the same scheme
// one level up (gpurisk/scan.py recurses until every segment fits in one block); each block's
// offset is the inclusive scan of the block before it in its segment, 0.0 for a segment's
// first block, gathered, never recovered by a subtraction (segment_block_offsets); then each
// block is rescanned left to right from its offset (block_scan). The order of additions
// depends only on the layout (segment boundaries and the block length), never on the
// hardware or thread count, so every backend gives the same bits.
#include "common.cuh"

GR_KERNEL void block_sum(long long n_blocks, const long long* block_start,
                         const double* values, double* block_total) {
    for_each_index(b, n_blocks) {
        double s = 0.0;
        for (long long j = block_start[b]; j < block_start[b + 1]; ++j) s += values[j];
        block_total[b] = s;
    }
}

// Offset of each block: 0.0 for the first block of its segment, else the inclusive scan of
// the previous block's total. A gather: no arithmetic touches the values.
GR_KERNEL void segment_block_offsets(long long n_blocks, const long long* block_segment,
                                     const long long* segment_block_start,
                                     const double* block_inclusive, double* block_offset) {
    for_each_index(b, n_blocks) {
        block_offset[b] = b == segment_block_start[block_segment[b]] ? 0.0 : block_inclusive[b - 1];
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
