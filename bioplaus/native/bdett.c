/* BDETT threshold kernels (Ding et al., NeurIPS 2022), float32, row-major.
 *
 * The same arithmetic as the eager path of bioplaus.nets.thresholds.BDETT, one pass over memory instead of
 * about twenty tensor operations, with the memory P of a step computed where the next step uses it. Compiled on first use by bioplaus.native with -O3 -march=native
 * -fno-trapping-math -fopenmp-simd, so every loop here vectorises (no -ffast-math: infinities and NaNs
 * must propagate exactly as in the eager path, which is the faithful overflow behaviour).
 *
 * exp2 and log1p are vectorisable polynomials from vecmath.h.
 */
#include "vecmath.h"

/* The scalar parameters of a BDETT layer, from bioplaus.native.bdett.constants. */
typedef struct {
    float k_rate;       /* log2(e) / C */
    float half_a;       /* a / 2 */
    float max_x;        /* largest rate exponent (+inf: the faithful, unclamped rule) */
    float range_factor; /* weight of the range in V_m and V_θ */
    float k_soft;       /* log2(e) / ψ */
    float eta_per_u;    /* η ψ ln 2 */
    float half_b;       /* b / 2 */
    float base0;        /* ½ (p0 + b): the memory before the first step */
} bdett_params;

/* x = (V[t-1] - V[t]) log2(e) / C, clamped above at max_x (+inf: no clamp; NaN stays NaN). */
INLINE float rate_exponent(float v, float v_prev, const bdett_params *p) {
    float x = (v_prev - v) * p->k_rate;
    return x > p->max_x ? p->max_x : x;
}

/* The memory ½ (P + b) of one neuron, P = η z + V_θ + ln(1 + e^{z/ψ}), z = V - V_m, from its potential V
 * and its group's statistics V_m and offset = ½ (V_θ + b). With u = z log2(e) / ψ,
 * ln(1 + e^{z/ψ}) = log1p(2^u) and η z = (η ψ ln 2) u. */
INLINE float memory(float v, float v_m, float offset, const bdett_params *p) {
    float u = (v - v_m) * p->k_soft;
    return offset + 0.5f * (log1p_f32(exp2_f32(u)) + p->eta_per_u * u);
}

/* mean(x) - range_factor (max(x) - min(x)) over n values; NaN in, NaN out (through the sum). */
static float low_statistic(const float *x, int64_t n, float range_factor) {
    float high = -INFINITY, low = INFINITY, sum = 0.0f;
#pragma omp simd reduction(max : high) reduction(min : low) reduction(+ : sum)
    for (int64_t i = 0; i < n; i++) {
        float a = x[i];
        high = a > high ? a : high;
        low = a < low ? a : low;
        sum += a;
    }
    return sum / (float)n - range_factor * (high - low);
}

/* One BDETT step, for `groups` groups of `size` neurons (a sample's layer, or the whole tensor when the
 * statistics are batch-pooled):
 *   Θ[t] = ½ (P[t-1] + b) + (a/2) 2^x, x = rate_exponent(V[t], V[t-1]),
 * where the memory ½ (P[t-1] + b) is, by the first non-NULL of
 *   base:                stored per neuron;
 *   v_last, last_stats:  computed here, by memory(), from the potentials V[t-1] the last step saw and that
 *                        step's (V_m, ½ (V_θ + b)) per group, so a memory that no step uses is never computed;
 *   neither:             base0 (the first step).
 * Writes Θ[t] and, per group, stats = (V_m[t], ½ (V_θ[t] + b)), V_m and V_θ = mean - range_factor (max - min)
 * of the group's V[t] and Θ[t]: with V[t] they define the next memory. */
void bdett_step(const float *v, const float *v_prev, const float *base, const float *v_last,
                const float *last_stats, float *theta, float *stats, int64_t groups, int64_t size,
                const bdett_params *p) {
    for (int64_t g = 0; g < groups; g++) {
        const float *vg = v + g * size, *vpg = v_prev + g * size;
        float *tg = theta + g * size;
        if (base) { /* separate loops, not a select inside one: each vectorises */
            const float *bg = base + g * size;
            for (int64_t i = 0; i < size; i++)
                tg[i] = bg[i] + p->half_a * exp2_f32(rate_exponent(vg[i], vpg[i], p));
        } else if (v_last) {
            const float *lg = v_last + g * size;
            float v_m = last_stats[2 * g], offset = last_stats[2 * g + 1];
            for (int64_t i = 0; i < size; i++)
                tg[i] = memory(lg[i], v_m, offset, p) + p->half_a * exp2_f32(rate_exponent(vg[i], vpg[i], p));
        } else {
            for (int64_t i = 0; i < size; i++)
                tg[i] = p->base0 + p->half_a * exp2_f32(rate_exponent(vg[i], vpg[i], p));
        }
        stats[2 * g] = low_statistic(vg, size, p->range_factor);
        stats[2 * g + 1] = 0.5f * low_statistic(tg, size, p->range_factor) + p->half_b;
    }
}

/* The memory ½ (P + b) of every neuron from its potential and its group's stats, written out. */
void bdett_memory(const float *v, const float *stats, float *out, int64_t groups, int64_t size,
                  const bdett_params *p) {
    for (int64_t g = 0; g < groups; g++) {
        const float *vg = v + g * size;
        float *og = out + g * size;
        float v_m = stats[2 * g], offset = stats[2 * g + 1];
        for (int64_t i = 0; i < size; i++)
            og[i] = memory(vg[i], v_m, offset, p);
    }
}
