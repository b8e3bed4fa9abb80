/* BDETT threshold kernels (Ding et al., NeurIPS 2022; shared/research/bdett.md §1.3), float32, row-major.
 *
 * The same arithmetic as the eager path of bioplaus.nets.thresholds.BDETT, one pass over memory instead of
 * about twenty tensor operations. Compiled on first use by bioplaus.native with -O3 -march=native
 * -fno-trapping-math -fopenmp-simd, so every loop here vectorises (no -ffast-math: infinities and NaNs
 * must propagate exactly as in the eager path, which is the faithful overflow behaviour).
 *
 * exp2 and log1p are written out because the C library's versions do not vectorise without -ffast-math:
 *   2^x   = 2^n e^{g}, n = rint(x), g = (x - n) ln 2, |g| <= ln2 / 2, e^g by its Taylor series to g^6
 *           (truncation error < 1.2e-7 relative, one float32 ulp); 2^n is applied as two normal factors, so
 *           the result overflows to +inf and underflows through the subnormals to 0 as IEEE arithmetic does,
 *           and NaN stays NaN.
 *   ln(1+y) for y >= 0: w = 1 + y = m 2^e with m in [1/sqrt2, sqrt2), ln m = 2 atanh(s), s = (m-1)/(m+1),
 *           |s| <= 0.172, odd series to s^9 (error < 2e-9), plus the rounding correction (y - (w-1)) / w
 *           that makes it a log1p rather than a log; y = inf gives inf, NaN stays NaN.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define LN2 0.6931471805599453f
#define INLINE static inline __attribute__((always_inline))

INLINE float scale_by_power_of_two(int32_t n) { /* 2^n for -126 <= n <= 127 */
    int32_t bits = (n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return scale;
}

INLINE float exp2_f32(float x) {
    float xc = x < -160.0f ? -160.0f : (x > 160.0f ? 160.0f : x); /* NaN passes through */
    float n = rintf(xc);
    float g = (xc - n) * LN2;
    float p = 1.0f + g * (1.0f + g * (1.0f / 2 + g * (1.0f / 6 + g * (1.0f / 24 + g * (1.0f / 120
              + g * (1.0f / 720))))));
    int32_t half = (int32_t)n >> 1; /* 2^n = 2^half 2^(n - half), both factors normal floats */
    return p * scale_by_power_of_two(half) * scale_by_power_of_two((int32_t)n - half);
}

INLINE float log1p_f32(float y) {
    float w = 1.0f + y;
    int32_t bits;
    memcpy(&bits, &w, sizeof bits);
    int32_t e = ((bits >> 23) & 0xff) - 127;
    int32_t mantissa_bits = (bits & 0x007fffff) | 0x3f800000;
    float m;
    memcpy(&m, &mantissa_bits, sizeof m);
    int high = m > 1.41421356f;
    m = high ? 0.5f * m : m;
    e = high ? e + 1 : e;
    float s = (m - 1.0f) / (m + 1.0f);
    float s2 = s * s;
    float ln_m = 2.0f * s * (1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9)))));
    float r = (float)e * LN2 + ln_m + (y - (w - 1.0f)) / w;
    r = w == INFINITY ? INFINITY : r;
    return y != y ? y : r;
}

/* Θ[t] = base + (a/2) 2^{x}, x = (V[t-1] - V[t]) log2(e) / C, clamped above at max_x (+inf: no clamp).
 * base is the stored ½ (P[t-1] + b) per element, or NULL for the first step (then base0 = ½ (p0 + b)). */
INLINE float rate_exponent(float v, float v_prev, float k_rate, float max_x) {
    float x = (v_prev - v) * k_rate;
    return x > max_x ? max_x : x; /* max_x = +inf when unclamped; NaN stays NaN */
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

/* One BDETT step for `groups` groups of `size` values (a sample's layer, or the whole tensor when the
 * statistics are batch-pooled):
 *   Θ[t] = base + (a/2) 2^x,  x = (V[t-1] - V[t]) log2(e) / C, clamped above at max_x (+inf: no clamp),
 *   where base is the stored ½ (P[t-1] + b), or base0 = ½ (p0 + b) at the first step (base == NULL);
 *   next_base = ½ (P[t] + b),  P = η z + V_θ + ln(1 + e^{z/ψ}),  z = V - V_m,
 *   V_m, V_θ = mean - range_factor (max - min) of the group's V[t] and Θ[t].
 * With u = z log2(e) / ψ: ln(1 + e^{z/ψ}) = log1p(2^u) and η z = (η ψ ln 2) u = eta_per_u u. */
void bdett_step(const float *v, const float *v_prev, const float *base, float base0, float *theta, float *next_base,
                int64_t groups, int64_t size, float k_rate, float half_a, float max_x, float range_factor,
                float k_soft, float eta_per_u, float half_b) {
    for (int64_t g = 0; g < groups; g++) {
        const float *vg = v + g * size, *vpg = v_prev + g * size;
        float *tg = theta + g * size, *ng = next_base + g * size;
        if (base) { /* two loops, not a select inside one: each vectorises */
            const float *bg = base + g * size;
            for (int64_t i = 0; i < size; i++)
                tg[i] = bg[i] + half_a * exp2_f32(rate_exponent(vg[i], vpg[i], k_rate, max_x));
        } else {
            for (int64_t i = 0; i < size; i++)
                tg[i] = base0 + half_a * exp2_f32(rate_exponent(vg[i], vpg[i], k_rate, max_x));
        }
        float v_m = low_statistic(vg, size, range_factor);
        float offset = 0.5f * low_statistic(tg, size, range_factor) + half_b;
        for (int64_t i = 0; i < size; i++) {
            float u = (vg[i] - v_m) * k_soft;
            ng[i] = offset + 0.5f * (log1p_f32(exp2_f32(u)) + eta_per_u * u);
        }
    }
}
