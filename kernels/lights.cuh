// ADL indicator lights from a queue share (kernels/adl.cu, and the cpu backend's one-call
// ranking in gpurisk/native/queue_ranking.cpp, which includes this file).
#pragma once
#include "common.cuh"

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
