/* SAB's attention step with the MLP scorer (Ke et al., NeurIPS 2018, Section 3), float32.
 *
 * The same functions and gradients as the PyTorch paths of bioplaus.nets.sab_read (AttentionStep) and
 * bioplaus.nets.sab_memory (WriteSlot with a projected key): one C call per step and direction instead of
 * about twenty-five tensor operations. A read, per batch row, with the provisional state ĥ (H), the query
 * q = W_q ĥ + b_q (K), the slots [m_j; κ_j] (H + K values each, κ_j = W_m m_j the key stored by the write) and
 * the scorer weight v (K):
 *
 *   a_j = vᵀ tanh(q + κ_j) for every slot; the R best (sorted, the threshold's last) are kept;
 *   τ = a_(R) + δ, r_j = relu(a_j - τ), Z = Σ r_j + ε (ε = 0: Z floored at `tiny`), w_j = r_j / Z;
 *   h = ĥ + s and out = [h; s], s = Σ_j w_j m_j (h is also returned on its own: the next state).
 *
 * With R = 0 ("uniform": a memory of at most k_top slots) every slot gets w_j = 1/n and no score is computed.
 * The backward, from g = ∂L/∂s = ∂L/∂h + both halves of ∂L/∂out:
 *
 *   ḡw_j = g·m_j, r̄_j = (ḡw_j - Σ_l w_l ḡw_l) / Z, ā_j = r̄_j [w_j > 0], ā_R -= Σ_l ā_l (τ is not detached),
 *   ū_j = ā_j v ⊙ (1 - t_j²), q̄ = Σ_j ū_j, v̄ = Σ_j ā_j t_j, and into the slots' gradient buffer
 *   ∂L/∂m_j += w_j g, ∂L/∂κ_j += ū_j, where t_j = tanh(q + κ_j) is recomputed from the memory (which the
 *   model never overwrites), so the forward saves no per-winner tensor; then ∂L/∂ĥ = ∂L/∂h + ∂L/∂out[:H] +
 *   W_qᵀ q̄, ∂L/∂W_q = q̄ ĥᵀ and ∂L/∂b_q = q̄, summed over the rows. The parameters' gradients are accumulated over
 *   the steps into the plan's buffer (bioplaus.nets.sab_read.ParamGrads hands the sums on once per backward).
 *
 * A write copies m (H) into slot j with its key κ = W_m m; its backward hands the slot's accumulated gradient
 * (ḡm, ḡκ) on: ∂L/∂m = ḡm + W_mᵀ ḡκ, ∂L/∂W_m = Σ_rows ḡκ mᵀ, and clears the slot's gradient.
 *
 * Every function takes the sequence's sab_plan (buffers, weights and their transposes, sizes), so a step's call
 * passes only its own tensors. A NaN score (a diverged model) makes the row's output and weights NaN, as on the
 * PyTorch path. Rows are independent; loops over K and H vectorise (compiled with -fopenmp-simd, no -ffast-math),
 * and the products with W_q and W_m use GCC/Clang vector types so that four independent accumulators hide the FMA
 * latency.
 */
#include <stdlib.h>

#include "vecmath.h"
#include "sab.h"

typedef float vec16 __attribute__((vector_size(64)));

INLINE vec16 load16(const float *p) {
    vec16 r;
    memcpy(&r, p, sizeof r);
    return r;
}

INLINE void store16(float *p, vec16 x) { memcpy(p, &x, sizeof x); }

/* y_r += Σ_i x[r, i] wt[i, :] for r < rows: x rows of stride xs, y rows of stride ys, wt (I × O) rows of stride ws.
 * Each x[r, i] broadcasts into 16 outputs at a time, four rows at once, so that four independent accumulators
 * hide the FMA latency; the last rows and the last O mod 16 outputs take a plain loop. */
static void matmul_add(const float *x, int64_t xs, const float *wt, int64_t ws, float *y, int64_t ys, int64_t rows,
                       int64_t I, int64_t O) {
    int64_t o16 = O - O % 16, b = 0;
    for (; b + 4 <= rows; b += 4) {
        const float *x0 = x + b * xs, *x1 = x0 + xs, *x2 = x1 + xs, *x3 = x2 + xs;
        float *y0 = y + b * ys, *y1 = y0 + ys, *y2 = y1 + ys, *y3 = y2 + ys;
        for (int64_t o0 = 0; o0 < o16; o0 += 16) {
            vec16 a0 = load16(y0 + o0), a1 = load16(y1 + o0), a2 = load16(y2 + o0), a3 = load16(y3 + o0);
            for (int64_t i = 0; i < I; i++) {
                vec16 wi = load16(wt + i * ws + o0);
                a0 += x0[i] * wi;
                a1 += x1[i] * wi;
                a2 += x2[i] * wi;
                a3 += x3[i] * wi;
            }
            store16(y0 + o0, a0);
            store16(y1 + o0, a1);
            store16(y2 + o0, a2);
            store16(y3 + o0, a3);
        }
    }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = r < b ? o16 : 0; o < O; o++) {
            float acc = y[r * ys + o];
            for (int64_t i = 0; i < I; i++)
                acc += x[r * xs + i] * wt[i * ws + o];
            y[r * ys + o] = acc;
        }
}

/* dst (cols × rows) = srcᵀ for src (rows × cols, row stride ss). */
static void transpose(const float *src, int64_t ss, float *dst, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            dst[c * rows + r] = src[r * ss + c];
}

/* y_b = W x_b + bias (bias may be NULL) for `rows` rows x_b of length I (row stride xs), from wt = Wᵀ (I × O);
 * y rows of stride ys. */
static void linear(const float *x, int64_t xs, const float *wt, const float *bias, float *y, int64_t ys, int64_t rows,
                   int64_t I, int64_t O) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < O; o++)
            y[r * ys + o] = bias ? bias[o] : 0.0f;
    matmul_add(x, xs, wt, O, y, ys, rows, I, O);
}

/* The fast score uses tanh(q + κ) = 1 - 2 / (1 + e^{2q} e^{2κ}), with e^{2κ} kept per slot (aux, from the write)
 * and e^{2q} per read: four operations per element instead of a rational function. Where |q| or |κ| exceeds
 * FAST_RANGE the product could overflow or underflow, and that row or slot takes tanh_f32 instead. Both are
 * accurate to about 2e-7 absolute. */
#define FAST_RANGE 20.0f
#define TWO_LOG2E 2.8853900817779268f /* 2 log2(e) */

/* aux of one slot (K + 1 floats): e^{2 κ_k}, then max_k |κ_k| (NaN if a κ_k is NaN). */
static void key_exponentials(const float *key, float *aux, int64_t K) {
    float big = 0.0f;
    for (int64_t k = 0; k < K; k++) {
        float a = fabsf(key[k]);
        big = a > big || a != a ? a : big;
    }
#pragma omp simd
    for (int64_t k = 0; k < K; k++)
        aux[k] = exp2_f32(TWO_LOG2E * key[k]);
    aux[K] = big;
}

/* e^{2 q_k} into a; returns whether the fast score applies to this query (every |q_k| <= FAST_RANGE). */
static int query_exponentials(const float *q, float *a, int64_t K) {
    int fast = 1;
    for (int64_t k = 0; k < K; k++)
        fast &= fabsf(q[k]) <= FAST_RANGE;
#pragma omp simd
    for (int64_t k = 0; k < K; k++)
        a[k] = exp2_f32(TWO_LOG2E * q[k]);
    return fast;
}

INLINE float tanh_from_exponentials(float a, float e) { return 1.0f - 2.0f / (1.0f + a * e); }

/* vᵀ tanh(q + κ), exactly (tanh_f32) or by the exponentials; the common K are unrolled (known to the compiler). */
INLINE float score_exact_any(const float *q, const float *key, const float *v, int64_t K) {
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t k = 0; k < K; k++)
        acc += v[k] * tanh_f32(q[k] + key[k]);
    return acc;
}

INLINE float score_fast_any(const float *a, const float *e, const float *v, int64_t K) {
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t k = 0; k < K; k++)
        acc += v[k] * tanh_from_exponentials(a[k], e[k]);
    return acc;
}

static float score_exact(const float *q, const float *key, const float *v, int64_t K) {
    switch (K) {
    case 32: return score_exact_any(q, key, v, 32);
    case 64: return score_exact_any(q, key, v, 64);
    case 128: return score_exact_any(q, key, v, 128);
    default: return score_exact_any(q, key, v, K);
    }
}

static float score_fast(const float *a, const float *e, const float *v, int64_t K) {
    switch (K) {
    case 32: return score_fast_any(a, e, v, 32);
    case 64: return score_fast_any(a, e, v, 64);
    case 128: return score_fast_any(a, e, v, 128);
    default: return score_fast_any(a, e, v, K);
    }
}

/* One row of a read: its slots [m_j; κ_j] (stride H + K), their aux (stride K + 1), the query q and its
 * exponentials a (when fast). */
typedef struct {
    const float *slots, *aux, *q, *a;
    int fast;
} row_view;

INLINE int slot_is_fast(const row_view *r, int64_t j, int64_t K) { return r->fast && r->aux[j * (K + 1) + K] <= FAST_RANGE; }

/* The scores of the n slots of one row into sc; returns 1 if one is NaN. No branch depends on a score here, so
 * that the processor overlaps the slots' computations (ranking while scoring made each mispredicted comparison
 * wait for a whole score, and cost more than the scores themselves). */
static int score_row(const row_view *r, const float *v, const sab_plan *p, int64_t n, float *sc) {
    int64_t H = p->hidden, K = p->key_size, D = H + K;
    int nan = 0;
    for (int64_t j = 0; j < n; j++) {
        float a = slot_is_fast(r, j, K) ? score_fast(r->a, r->aux + j * (K + 1), v, K)
                                        : score_exact(r->q, r->slots + j * D + H, v, K);
        nan |= a != a;
        sc[j] = a;
    }
    return nan;
}

/* The R best of the n scores sc, sorted in decreasing order into (top, idx); earlier slots win ties. */
static void rank_row(const float *sc, int64_t n, int64_t R, float *top, int32_t *idx) {
    int64_t kept = 0;
    for (int64_t j = 0; j < n; j++) {
        float a = sc[j];
        if (kept == R && !(a > top[R - 1]))
            continue;
        int64_t i = kept < R ? kept++ : R - 1; /* insertion: shift the smaller ones down */
        while (i > 0 && a > top[i - 1]) {
            top[i] = top[i - 1];
            idx[i] = idx[i - 1];
            i--;
        }
        top[i] = a;
        idx[i] = (int32_t)j;
    }
}

/* Write m (B × H) into slot j with its key κ = W_m m (w_m_t = W_mᵀ, H × K) and the key's aux. */
static void write_slot(const sab_plan *p, const float *m, const float *w_m_t, int64_t j) {
    int64_t B = p->batch, H = p->hidden, K = p->key_size, D = H + K, stride = p->capacity * D;
    linear(m, H, w_m_t, NULL, p->data + j * D + H, stride, B, H, K);
    for (int64_t b = 0; b < B; b++) {
        memcpy(p->data + b * stride + j * D, m + b * H, sizeof(float) * H);
        key_exponentials(p->data + b * stride + j * D + H, p->aux + (b * p->capacity + j) * (K + 1), K);
    }
}

/* Backward of the write of slot j: from the slot's accumulated gradient (ḡm, ḡκ) in g_data, g_m (B × H) =
 * ḡm + ḡκ W_m and g_w_m (K × H) += ḡκᵀ m, m read back from the slot; then the slot's gradient is cleared. */
static int write_backward(const sab_plan *p, const float *w_m, int64_t j, float *g_m, float *g_w_m) {
    int64_t B = p->batch, H = p->hidden, K = p->key_size, D = H + K, stride = p->capacity * D;
    float *scratch = malloc(sizeof(float) * (K * B + B * H));
    if (!scratch)
        return -1;
    float *g_key_t = scratch, *m = scratch + K * B, *g = p->g_data + j * D;
    for (int64_t b = 0; b < B; b++) {
        memcpy(g_m + b * H, g + b * stride, sizeof(float) * H);
        memcpy(m + b * H, p->data + b * stride + j * D, sizeof(float) * H);
    }
    matmul_add(g + H, stride, w_m, H, g_m, H, B, K, H);
    transpose(g + H, stride, g_key_t, B, K);
    matmul_add(g_key_t, B, m, H, g_w_m, H, K, B, H);
    free(scratch);
    for (int64_t b = 0; b < B; b++)
        memset(g + b * stride, 0, sizeof(float) * D);
    return 0;
}

/* One step, forward: a read of the first n slots, h (B × H) = ĥ + s and out (B × 2H) = [h; s]. Unless uniform
 * (R = 0; then state and idx are unused), each row's state (STATE_SIZE floats) and the winners' slots idx (R, int32).
 * Then, if j >= 0, the write of h into slot j with its key W_m h. */
int sab_step_forward(const sab_plan *p, const float *h_hat, int64_t n, int64_t R, int64_t j, float *h_new,
                     float *out, float *state, int32_t *idx) {
    int64_t H = p->hidden, K = p->key_size, D = H + K, S = STATE_SIZE(H, R);
    float a[K], *sc = NULL, *queries = NULL;
    if (R) {
        sc = malloc(sizeof(float) * (n + p->batch * K)); /* the scores of a row, then q (B × K) */
        if (!sc)
            return -1;
        queries = sc + n;
        linear(h_hat, H, p->w_q_t, p->b_q, queries, K, p->batch, H, K);
    }
    for (int64_t b = 0; b < p->batch; b++) {
        const float *slots = p->data + b * p->capacity * D, *hb = h_hat + b * H;
        float *ob = out + b * 2 * H, *s = ob + H;
        for (int64_t h = 0; h < H; h++)
            s[h] = 0.0f;
        if (!R) {
            for (int64_t i = 0; i < n; i++) {
                const float *m = slots + i * D;
#pragma omp simd
                for (int64_t h = 0; h < H; h++)
                    s[h] += m[h];
            }
#pragma omp simd
            for (int64_t h = 0; h < H; h++)
                s[h] /= (float)n;
        } else {
            float *sb = state + b * S, *wb = sb + H, *q = queries + b * K;
            int32_t *ib = idx + b * R;
            memcpy(sb, hb, sizeof(float) * H);
            row_view r = {slots, p->aux + b * p->capacity * (K + 1), q, a, query_exponentials(q, a, K)};
            int nan = score_row(&r, p->v, p, n, sc);
            rank_row(sc, n, R, wb, ib);
            float tau = wb[R - 1] + p->shift, sum = 0.0f;
            for (int64_t i = 0; i < R; i++) {
                float x = wb[i] - tau;
                wb[i] = x > 0.0f ? x : 0.0f;
                sum += wb[i];
            }
            sum = p->eps != 0.0f ? sum + p->eps : (sum > p->tiny ? sum : p->tiny);
            for (int64_t i = 0; i < R; i++)
                wb[i] = nan ? NAN : wb[i] / sum;
            wb[R] = sum;
            for (int64_t i = 0; i < R; i++) {
                const float *m = slots + ib[i] * D;
                float wi = wb[i];
#pragma omp simd
                for (int64_t h = 0; h < H; h++)
                    s[h] += wi * m[h];
            }
        }
        float *nb = h_new + b * H;
#pragma omp simd
        for (int64_t h = 0; h < H; h++)
            nb[h] = ob[h] = hb[h] + s[h];
    }
    free(sc);
    if (j >= 0)
        write_slot(p, h_new, p->w_m_t, j);
    return 0;
}

/* One step, backward, from g_out (rows of stride out_stride, 2H used) and g_h (stride h_stride, the gradient of
 * the separate output h). If j >= 0 the step wrote h into slot j: the slot's accumulated gradient is added to
 * ∂L/∂h first (write_backward, accumulating ∂L/∂W_m). Writes g_h_hat (B × H); unless uniform, accumulates
 * ∂L/∂W_q, ∂L/∂b_q and ∂L/∂v into g_params; adds into g_data. Returns 0, or -1 if out of memory. */
int sab_step_backward(const sab_plan *p, const float *state, const int32_t *idx, int64_t n, int64_t R, int64_t j,
                      const float *g_out, int64_t out_stride, const float *g_h, int64_t h_stride, float *g_h_hat) {
    int64_t B = p->batch, H = p->hidden, K = p->key_size, D = H + K, S = STATE_SIZE(H, R);
    const float *v = p->v;
    if (j >= 0) {
        if (write_backward(p, p->w_m, j, g_h_hat, p->g_params + K * H + 2 * K))
            return -1;
    } else {
        memset(g_h_hat, 0, sizeof(float) * B * H);
    }
    float *g_q = NULL, *queries = NULL, g_a[R + 1], a[K];
    if (R) {
        g_q = malloc(sizeof(float) * 3 * B * K); /* q̄ (B × K, accumulated: zeroed), its transpose, then q */
        if (!g_q)
            return -1;
        memset(g_q, 0, sizeof(float) * B * K);
        queries = g_q + 2 * B * K;
        linear(state, S, p->w_q_t, p->b_q, queries, K, B, H, K);
    }
    float *g_b_q = p->g_params + K * H, *g_v = g_b_q + K;
    for (int64_t b = 0; b < B; b++) {
        const float *slots = p->data + b * p->capacity * D, *go = g_out + b * out_stride, *ghb = g_h + b * h_stride;
        float *grads = p->g_data + b * p->capacity * D, *gh = g_h_hat + b * H;
#pragma omp simd
        for (int64_t h = 0; h < H; h++) /* ∂L/∂h, then gh holds g = ∂L/∂s until the state's gradient replaces it */
            gh[h] += go[h] + ghb[h];
        float base[H];
        memcpy(base, gh, sizeof base);
#pragma omp simd
        for (int64_t h = 0; h < H; h++)
            gh[h] += go[H + h];
        if (!R) {
            float share = 1.0f / (float)n;
            for (int64_t i = 0; i < n; i++) {
                float *gm = grads + i * D;
#pragma omp simd
                for (int64_t h = 0; h < H; h++)
                    gm[h] += share * gh[h];
            }
            memcpy(gh, base, sizeof base);
            continue;
        }
        const float *q = queries + b * K, *wb = state + b * S + H;
        const int32_t *ib = idx + b * R;
        float total = wb[R], weighted = 0.0f;
        for (int64_t i = 0; i < R; i++) { /* ∂L/∂m_i += w_i g; ḡw_i = g·m_i */
            const float *m = slots + ib[i] * D;
            float *gm = grads + ib[i] * D, wi = wb[i], dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int64_t h = 0; h < H; h++) {
                gm[h] += wi * gh[h];
                dot += gh[h] * m[h];
            }
            g_a[i] = dot;
            weighted += wi * dot;
        }
        memcpy(gh, base, sizeof base);
        float sum_a = 0.0f;
        for (int64_t i = 0; i < R; i++) {
            g_a[i] = wb[i] > 0.0f ? (g_a[i] - weighted) / total : 0.0f;
            sum_a += g_a[i];
        }
        g_a[R - 1] -= sum_a;
        float *gq = g_q + b * K;
        row_view r = {slots, p->aux + b * p->capacity * (K + 1), q, a, query_exponentials(q, a, K)};
        for (int64_t i = 0; i < R; i++) {
            const float *key = slots + ib[i] * D + H, *e = r.aux + ib[i] * (K + 1);
            float *gkey = grads + ib[i] * D + H, ai = g_a[i];
            float t[K];
            if (slot_is_fast(&r, ib[i], K)) { /* two loops, not a select in one: each computes one tanh */
#pragma omp simd
                for (int64_t k = 0; k < K; k++)
                    t[k] = tanh_from_exponentials(a[k], e[k]);
            } else {
#pragma omp simd
                for (int64_t k = 0; k < K; k++)
                    t[k] = tanh_f32(q[k] + key[k]);
            }
#pragma omp simd
            for (int64_t k = 0; k < K; k++) {
                float gu = ai * v[k] * (1.0f - t[k] * t[k]);
                gkey[k] += gu;
                gq[k] += gu;
                g_v[k] += ai * t[k];
            }
        }
#pragma omp simd
        for (int64_t k = 0; k < K; k++)
            g_b_q[k] += gq[k];
    }
    if (R) { /* ∂L/∂ĥ += q̄ W_q, ∂L/∂W_q += q̄ᵀ ĥ (ĥ from the state) */
        float *g_q_t = g_q + B * K;
        matmul_add(g_q, K, p->w_q, H, g_h_hat, H, B, K, H);
        transpose(g_q, K, g_q_t, B, K);
        matmul_add(g_q_t, B, state, S, p->g_params, H, K, B, H);
        free(g_q);
    }
    return 0;
}

/* A write on its own (the first state, or deferred credit): m (B × H) into slot j with its key W_m m (w_m: K × H).
 * Returns 0, or -1 if out of memory. */
int sab_write(const sab_plan *p, const float *m, const float *w_m, int64_t j) {
    int64_t H = p->hidden, K = p->key_size;
    float *w_m_t = malloc(sizeof(float) * H * K);
    if (!w_m_t)
        return -1;
    transpose(w_m, H, w_m_t, K, H);
    write_slot(p, m, w_m_t, j);
    free(w_m_t);
    return 0;
}

/* Its backward: g_m = ḡm + ḡκ W_m, g_w_m += ḡκᵀ m, and slot j's gradient cleared. */
int sab_write_backward(const sab_plan *p, const float *w_m, int64_t j, float *g_m, float *g_w_m) {
    return write_backward(p, w_m, j, g_m, g_w_m);
}

/* The aux of slot j for every row, when its key was written by PyTorch. */
void sab_key_aux(const sab_plan *p, int64_t j) {
    int64_t H = p->hidden, K = p->key_size, D = H + K;
    for (int64_t b = 0; b < p->batch; b++)
        key_exponentials(p->data + (b * p->capacity + j) * D + H, p->aux + (b * p->capacity + j) * (K + 1), K);
}
