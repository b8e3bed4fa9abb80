/* Vectorisable float32 elementary functions shared by the bioplaus kernels.
 *
 * exp2 and log1p are written out because the C library's versions do not vectorise without -ffast-math:
 *   2^x   = 2^n e^{g}, n = rint(x), g = (x - n) ln 2, |g| <= ln2 / 2, e^g by its Taylor series to g^6
 *           (truncation error < 1.2e-7 relative, one float32 ulp); 2^n is applied as two normal factors, so
 *           the result overflows to +inf and underflows through the subnormals to 0 as IEEE arithmetic does,
 *           and NaN stays NaN.
 *   ln(1+y) for y >= 0: w = 1 + y = m 2^e with m in [1/sqrt2, sqrt2), ln m = 2 atanh(s), s = (m-1)/(m+1),
 *           |s| <= 0.172, odd series to s^9 (error < 2e-9), plus the rounding correction (y - (w-1)) / w
 *           that makes it a log1p rather than a log; y = inf gives inf, NaN stays NaN.
 *   tanh u: a rational function (see tanh_f32), absolute error below 5e-7.
 */
#ifndef BIOPLAUS_VECMATH_H
#define BIOPLAUS_VECMATH_H

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

/* tanh u = u P(u²) / Q(u²) on |u| <= 9 (beyond, tanh rounds to ±1 in float32), P and Q of degree 4 fitted
 * here (iteratively reweighted least squares towards the minimax error, 3.5e-8 in exact arithmetic; about 4e-7
 * evaluated in float32), then clamped to [-1, 1]. One division, no exponential; NaN stays NaN. */
INLINE float tanh_f32(float u) {
    float x = u > 9.0f ? 9.0f : (u < -9.0f ? -9.0f : u);
    float s = x * x;
    float p = 9.999999295e-01f + s * (1.338170670e-01f + s * (3.496594816e-03f + s * (2.063296434e-05f
              + s * 1.340063647e-08f)));
    float q = 1.0f + s * (4.671501062e-01f + s * (2.588031025e-02f + s * (3.287603173e-04f + s * 7.792693566e-07f)));
    float t = x * p / q;
    return t > 1.0f ? 1.0f : (t < -1.0f ? -1.0f : t);
}

#endif
