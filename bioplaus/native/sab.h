/* SAB's attention-step kernels (sab.c): the plan every call takes and the functions the Python binding
 * (bioplaus.native.sab, ctypes) and the C++ autograd node (sab_step.cpp) call. */
#ifndef BIOPLAUS_SAB_H
#define BIOPLAUS_SAB_H

#include <stdint.h>

/* Everything the steps of one sequence share, set by the caller (bioplaus.nets.sab_memory.SlotStore and
 * bioplaus.nets.sab_read.ReadPlan) and updated when the memory grows or the weights change, so that a step passes
 * only its own tensors and sizes. */
typedef struct {
    float *data;         /* the slots [m_j; κ_j], B × capacity × (H + K) */
    float *aux;          /* per slot e^{2κ_j} and max |κ_j|, B × capacity × (K + 1) (see key_exponentials) */
    float *g_data;       /* the slots' gradient buffer, laid out as data (NULL until a backward needs it) */
    const float *w_q;    /* scorer query weight W_q, K × H */
    const float *w_q_t;  /* its transpose, H × K */
    const float *b_q;    /* query bias (K), or NULL */
    const float *v;      /* scorer output weight (K) */
    const float *w_m;    /* key weight W_m, K × H (NULL unless steps write) */
    const float *w_m_t;  /* its transpose, H × K */
    float *g_params;     /* accumulated [∂L/∂W_q (K × H); ∂L/∂b_q (K); ∂L/∂v (K); ∂L/∂W_m (K × H)] */
    int64_t batch;       /* B rows */
    int64_t capacity;    /* slots allocated per row (stride of the memory buffer) */
    int64_t hidden;      /* H, size of m_j */
    int64_t key_size;    /* K, size of κ_j and q */
    float shift;         /* δ added to the threshold */
    float eps;           /* ε added to the normaliser (0: floor it at tiny) */
    float tiny;          /* floor of the normaliser when ε = 0 */
} sab_plan;

/* Each row's saved state: ĥ (H), the winners' weights w (R), the normaliser Z. The query q = W_q ĥ + b_q is not
 * saved: the backward recomputes it (B·K·H multiply-adds, a tenth of the step's), which halves what a step keeps. */
#define STATE_SIZE(H, R) ((H) + (R) + 1)

int sab_step_forward(const sab_plan *p, const float *h_hat, int64_t n, int64_t R, int64_t j, float *h_new,
                     float *out, float *state, int32_t *idx);
int sab_step_backward(const sab_plan *p, const float *state, const int32_t *idx, int64_t n, int64_t R, int64_t j,
                      const float *g_out, int64_t out_stride, const float *g_h, int64_t h_stride, float *g_h_hat);
int sab_write(const sab_plan *p, const float *m, const float *w_m, int64_t j);
int sab_write_backward(const sab_plan *p, const float *w_m, int64_t j, float *g_m, float *g_w_m);
void sab_key_aux(const sab_plan *p, int64_t j);

#endif
