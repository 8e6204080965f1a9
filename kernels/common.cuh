// Shared by every kernel: one source, compiled by NVRTC/nvcc for the GPU and by the
// host C++ compiler for the CPU. Kernels are element-wise grid-stride loops with no
// shared memory, atomics or warp intrinsics, so the CPU build runs the same loop body.
#pragma once

#if defined(__CUDACC__)
#define GR_KERNEL extern "C" __global__
#define GR_DEVICE static __device__ __forceinline__
// A rare path kept out of line, so that its code and register needs stay out of the hot loop.
#define GR_DEVICE_COLD static __device__ __noinline__
// NVRTC has no <cmath>: build the constants from their bit patterns.
#define GR_INF __longlong_as_double(0x7ff0000000000000LL)
#define GR_NAN __longlong_as_double(0x7ff8000000000000LL)
// A double's bit pattern and back (positive doubles order as their bits do).
#define GR_BITS(x) __double_as_longlong(x)
#define GR_FROM_BITS(b) __longlong_as_double(b)
#define for_each_index(i, n)                                                   \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;       \
         i < (long long)(n); i += (long long)blockDim.x * gridDim.x)
#else
#include <math.h>
#if defined(_OPENMP)
#include <omp.h>
#endif
#define GR_KERNEL extern "C"
#define GR_DEVICE static inline
#define GR_DEVICE_COLD static __attribute__((noinline, cold))
#define GR_INF (__builtin_inf())
#define GR_NAN (__builtin_nan(""))
static inline long long gr_bits_host(double x) {
    long long b;
    __builtin_memcpy(&b, &x, sizeof b);
    return b;
}
static inline double gr_from_bits_host(long long b) {
    double x;
    __builtin_memcpy(&x, &b, sizeof x);
    return x;
}
#define GR_BITS(x) gr_bits_host(x)
#define GR_FROM_BITS(b) gr_from_bits_host(b)
// The grid-stride loop becomes one OpenMP loop over contiguous chunks of indices; small
// loops stay on the calling thread (waking a team costs more than they do).
#define GR_PRAGMA(x) _Pragma(#x)
#define for_each_index(i, n)                                                   \
    GR_PRAGMA(omp parallel for schedule(static) if ((long long)(n) > 8192))   \
    for (long long i = 0; i < (long long)(n); ++i)
extern "C" void gr_set_num_threads(int n) {
#if defined(_OPENMP)
    omp_set_num_threads(n);
#endif
}
extern "C" int gr_max_threads(void) {
#if defined(_OPENMP)
    return omp_get_max_threads();
#else
    return 1;
#endif
}
#endif

// c ? a : b by bit masks, for doubles whose case books mix at random: compilers turn a plain
// select of doubles into a branch, which would then be mispredicted.
GR_DEVICE double pick(bool c, double a, double b) {
    const long long m = -(long long)c;
    return GR_FROM_BITS((GR_BITS(a) & m) | (GR_BITS(b) & ~m));
}

// Status codes, in order of severity (gpurisk/schema.py names them).
#define GR_HEALTHY 0
#define GR_MARGIN_CALL 1
#define GR_LIQUIDATABLE 2
#define GR_BANKRUPT 3

// Tier tables are stored per symbol, contiguous: tiers of symbol s are
// tier_start[s] .. tier_start[s+1]-1, with floors strictly increasing from 0. The engine
// pads every symbol's ladder to one length of at least GR_LOOKAHEAD + 1 tiers with +inf
// floors (gpurisk/engine.py padded_tiers), so the first GR_LOOKAHEAD boundaries can be read
// with no bounds check and padding is never counted.
#define GR_LOOKAHEAD 3

// Returns the last tier whose floor is <= notional. Nearly every notional sits in the first
// few tiers: those boundaries are counted without branches, and the walk beyond them is a
// branch taken so rarely that the CPU predicts it.
GR_DEVICE int tier_of(const int* tier_start, const double* tier_floor, int s,
                      double notional) {
    const int first = tier_start[s];
    int k = first;
    for (int j = 1; j <= GR_LOOKAHEAD; ++j) k += tier_floor[first + j] <= notional ? 1 : 0;
    if (k == first + GR_LOOKAHEAD) {
        const int last = tier_start[s + 1] - 1;
        while (k < last && tier_floor[k + 1] <= notional) ++k;
    }
    return k;
}

// The per-position formulas of DESIGN §4, defined once for every kernel that needs them.
GR_DEVICE double upnl_of(double q, double p, double e, double cs) { return q * (p - e) * cs; }

// Inverse (coin-margined) contracts, `inv` = 1 (markets.contract_type = inverse): a contract
// is worth cs in the quote currency, PnL and margin are in the coin. Notional in coin
// N = |q|·cs/P, upnl = q·cs·(1/E − 1/P). In the price x = 1/P this is a linear contract of
// size −q and entry 1/E (upnl = (−q)·(x − 1/E)·cs, N = |q|·x·cs), so every closed form of
// the linear case (liquidation and bankruptcy prices, tiers on the coin notional) is solved
// in x with size −q and entry 1/E, and P = 1/x (kernels/liquidation.cu). Linear: the same
// bits as upnl_of and |q|·P·cs.
GR_DEVICE double notional_at(double aq, double p, double cs, int inv) {
    return inv ? aq * cs / p : aq * p * cs;
}
GR_DEVICE double upnl_at(double q, double p, double e, double cs, int inv) {
    return inv ? q * cs * (1.0 / e - 1.0 / p) : upnl_of(q, p, e, cs);
}

// The entry after adding dq at price px to a position q0 at entry e0 on the same side (q0 != 0):
// linear, the size-weighted mean (q0·E0 + Δq·px) / (q0 + Δq); inverse, the harmonic one,
// contracts over Σ contracts/price, (q0 + Δq) / (q0/E0 + Δq/px), which keeps the position's coin
// value (its value in x = 1/P averages linearly). gpurisk/book_updates.py's fills use the same
// expressions.
GR_DEVICE double entry_after_add(double q0, double e0, double dq, double px, int inv) {
    const double q1 = q0 + dq;
    return inv ? q1 / (q0 / e0 + dq / px) : (q0 * e0 + dq * px) / q1;
}

// Maintenance margin on notional n_mm (mark or entry notional) in tier k: n_mm·mmr_k − cum_k.
GR_DEVICE double maint_margin_in(const double* tier_mmr, const double* tier_cum, int k,
                                 double n_mm) {
    return n_mm * tier_mmr[k] - tier_cum[k];
}

// The same, in the tier of n_mm.
GR_DEVICE double maint_margin_of(const int* tier_start, const double* tier_floor,
                                 const double* tier_mmr, const double* tier_cum, int s,
                                 double n_mm) {
    return maint_margin_in(tier_mmr, tier_cum, tier_of(tier_start, tier_floor, s, n_mm), n_mm);
}

GR_DEVICE signed char status_of(double equity, double ratio, double margin_call_ratio,
                                double liquidation_ratio) {
    const signed char by_ratio = ratio >= liquidation_ratio ? GR_LIQUIDATABLE
                                 : (ratio >= margin_call_ratio ? GR_MARGIN_CALL : GR_HEALTHY);
    return equity <= 0.0 ? (signed char)GR_BANKRUPT : by_ratio;
}

// Maintenance margin over equity; +inf once equity is gone.
GR_DEVICE double margin_ratio_of(double maint, double equity) {
    if (equity <= 0.0) return maint > 0.0 ? GR_INF : 0.0;
    return maint / equity;
}

// Available-balance rules (gpurisk/venue.py AVAILABLE_RULES).
#define GR_AVAILABLE_EQUITY 0
#define GR_AVAILABLE_LOSSES 1
#define GR_AVAILABLE_WALLET 2

// One position's margin figures at mark p under the venue's conventions (position_margin's
// per-position formula; the what-if kernel evaluates a hypothetical position with it).
struct PositionFigures {
    double notional, upnl, maint, init, fee, leverage;
};

// notional N = |q|·P·cs, upnl = q·(P − E)·cs (inverse: N = |q|·cs/P, upnl = q·cs·(1/E − 1/P),
// in the coin: notional_at / upnl_at; tiers on the coin notional), MM = N_mm·mmr_k − cum_k with k the tier of
// N_mm (N_mm is the mark notional, or the entry notional when mm_on_entry; k the tier of |q|
// when tiers_by_contracts; cum_k = 0 for a whole-position rate, gpurisk/tier_rules.py),
// IM = N / leverage (N at entry when im_on_entry), leverage defaulting (given <= 0) to the
// max leverage of the tier of N, close fee = close_fee_rate·N.
GR_DEVICE PositionFigures position_figures(
    double q, double e, double given_leverage, double p, double cs, int s,
    const int* tier_start, const double* tier_floor, const double* tier_mmr, const double* tier_cum,
    const double* tier_max_leverage, int mm_on_entry, int tiers_by_contracts, int im_on_entry,
    double close_fee_rate, int inv) {
    const double aq = fabs(q);
    const double n_mark = notional_at(aq, p, cs, inv);
    const double n_entry = notional_at(aq, e, cs, inv);
    const double n_mm = mm_on_entry ? n_entry : n_mark;
    // One tier scan serves both the MM (on mark notional) and the default leverage. Tiers
    // counted in contracts (OKX) do not move with the price: one scan on |q| serves both.
    const double x_mark = tiers_by_contracts ? aq : n_mark;
    const int k_mark = tier_of(tier_start, tier_floor, s, x_mark);
    const int k_mm = (mm_on_entry && !tiers_by_contracts) ? tier_of(tier_start, tier_floor, s, n_mm) : k_mark;
    // Given leverage, else the tier's maximum. Both loaded, then a select that compiles
    // without a branch (books mix both, and a branch here would be mispredicted).
    const double tier_lev = tier_max_leverage[k_mark];
    const double lev = given_leverage > 0.0 ? given_leverage : tier_lev;
    PositionFigures f;
    f.notional = n_mark;
    f.upnl = upnl_at(q, p, e, cs, inv);
    f.maint = maint_margin_in(tier_mmr, tier_cum, k_mm, n_mm);
    f.init = (im_on_entry ? n_entry : n_mark) / lev;
    f.fee = close_fee_rate * n_mark;
    f.leverage = lev;
    return f;
}

// An account's figures from its cross sums (account_margin's per-account formula): equity,
// available balance by the venue's rule (GR_AVAILABLE_*: equity − IM, the wallet with
// unrealised losses only, or none), the margin ratio on the requirement MM + close fee, and
// the status (0 and healthy with no open cross position).
struct AccountFigures {
    double equity, available, ratio;
    signed char status;
};

GR_DEVICE AccountFigures account_figures(double wallet, double su, double sm, double si, double sf, int nc,
                                         int available_rule, double margin_call_ratio,
                                         double liquidation_ratio) {
    AccountFigures f;
    f.equity = wallet + su;
    f.available = available_rule == GR_AVAILABLE_EQUITY ? f.equity - si
                  : (available_rule == GR_AVAILABLE_LOSSES ? wallet + (su < 0.0 ? su : 0.0) - si : wallet - si);
    if (nc == 0) {
        f.ratio = 0.0;
        f.status = GR_HEALTHY;
    } else {
        f.ratio = margin_ratio_of(sm + sf, f.equity);  // the requirement: MM + close fee
        f.status = status_of(f.equity, f.ratio, margin_call_ratio, liquidation_ratio);
    }
    return f;
}
