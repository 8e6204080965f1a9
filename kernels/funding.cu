// Funding (README "Funding"): per symbol a rate r; each open position pays r × its notional
// at the mark, longs paying and shorts receiving when r > 0 (a negative payment is money
// received). Cross positions settle against the account's wallet, isolated ones against
// their own margin.
#include "common.cuh"

// payment_i = side · (r_s · N_i), N_i = |q|·P·cs (position_margin's notional; inverse: |q|·cs/P,
// in the coin, as BitMEX charges funding on the position's value); 0 when closed.
GR_KERNEL void funding_payments(
    long long n, const int* symbol, const double* size, const double* mark,
    const double* contract_size, const double* rate, const signed char* inverse, double* payment) {
    for_each_index(i, n) {
        const int s = symbol[i];
        const double q = size[i];
        const double notional = notional_at(fabs(q), mark[s], contract_size[s], inverse[s]);
        const double pay = rate[s] * notional;
        payment[i] = q > 0.0 ? pay : (q < 0.0 ? -pay : 0.0);
    }
}

// a + b = s + err exactly (Knuth's TwoSum; needs round-to-nearest and no FMA contraction,
// which both builds guarantee).
GR_DEVICE double two_sum(double a, double b, double* err) {
    const double s = a + b;
    const double bb = s - a;
    *err = (a - (s - bb)) + (b - bb);
    return s;
}

// One thread per account, positions in storage order: the wallet pays the sum of its cross
// positions' payments, each isolated margin its own position's. rounding[a]: the money the
// float64 additions lost (+) or made (−) for this account, exactly up to the rounding of
// the tiny error terms themselves: (wallet − Σ payments + Σ isolated changes, all exact)
// minus what was booked. paid[a]: what the account paid in all (cross and isolated).
GR_KERNEL void settle_funding(
    long long n_accounts, const long long* pos_start, const signed char* isolated,
    const double* payment, const double* wallet, const double* isolated_margin,
    double* wallet_out, double* isolated_margin_out, double* paid, double* rounding) {
    for_each_index(a, n_accounts) {
        double cross = 0.0, all = 0.0, lost = 0.0, err = 0.0;
        for (long long j = pos_start[a]; j < pos_start[a + 1]; ++j) {
            const double pay = payment[j];
            all += pay;
            if (isolated[j]) {
                // margin_out = margin − pay, up to err: the margin should hold err more
                isolated_margin_out[j] = two_sum(isolated_margin[j], -pay, &err);
                lost += err;
            } else {
                isolated_margin_out[j] = isolated_margin[j];
                cross = two_sum(cross, pay, &err);
                lost -= err;  // the sum fell err short of the exact payments: the wallet keeps too much
            }
        }
        wallet_out[a] = two_sum(wallet[a], -cross, &err);
        lost += err;
        paid[a] = all;
        rounding[a] = lost;
    }
}
