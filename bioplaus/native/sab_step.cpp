/* SAB's attention step as one C++ autograd node over the kernels of sab.c (bioplaus.native.sab.operator).
 *
 * The step is the same function with the same hand-written gradient as bioplaus.nets.sab_read.AttentionStep
 * (equations there and in sab.c): a read of the memory's first n slots by the provisional state ĥ, the new state
 * h = ĥ + s, the readout's input out = [h; s] and, if slot >= 0, the write of h and its key into that slot. What
 * differs is the bookkeeping around the kernels: a Python autograd.Function costs tens of microseconds per step
 * in interpreter and binding work (its forward, the engine's call of its backward, the context), as much as the
 * kernels' arithmetic at B = 32, H = 64; this node does the same bookkeeping in C++.
 *
 * Registered as the operator bioplaus::sab_step (CompositeImplicitAutograd: the autograd node is made here):
 *
 *   sab_step(h_hat, link, plan, n, rank, slot, params) -> [h, out, state, idx] (+ [token] if slot >= 0)
 *
 * - h_hat: (B × H), float32, contiguous.
 * - link: the memory's token, an input only (no gradient) that orders this node before the earlier writes'
 *   backward. Through it the node reaches the sequence's root, whose context keeps every buffer the plan points
 *   at alive (bioplaus.nets.sab_read.ReadPlan.root).
 * - plan: the sequence's sab_plan, as a byte tensor sharing the ctypes structure's memory
 *   (bioplaus.native.sab.plan_bytes); n: slots read; rank: R winners kept (0: a uniform read).
 * - params: the scorer's parameters, whose version counters the backward checks (an optimiser step between
 *   forward and backward raises, as it does for PyTorch's own operations).
 * - state (B × STATE_SIZE(H, R)) and idx (B × R, int32; both with 0 rows if R = 0) are saved for the backward
 *   (saved-tensor hooks see them) and returned, not differentiable, for logging; a writing step also returns the
 *   memory's new token (a zero scalar).
 *
 * The backward returns ∂L/∂ĥ (first adding the gradient the written slot gathered to ∂L/∂h); the slots' and the
 * scorer's gradients go into the plan's buffers.
 */
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

extern "C" {
#include "sab.h"
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr const char *kOutOfMemory = "the SAB kernel could not allocate its scratch buffer (out of memory)";

template <typename Tensors> int64_t version_of(const Tensors &params) {
    int64_t version = 0;
    for (const at::Tensor &p : params)
        version += p._version();
    return version;
}

const sab_plan *plan_of(const at::Tensor &plan) {
    TORCH_CHECK(plan.nbytes() == sizeof(sab_plan), "sab_step: plan must hold one sab_plan (", sizeof(sab_plan),
                " bytes), got ", plan.nbytes());
    return static_cast<const sab_plan *>(plan.data_ptr());
}

struct Step : public torch::autograd::Function<Step> {
    static variable_list forward(AutogradContext *ctx, const at::Tensor &h_hat, const std::optional<at::Tensor> &link,
                                 const at::Tensor &plan, int64_t n, int64_t rank, int64_t slot,
                                 std::vector<at::Tensor> params) {  // not a TensorList: that would be an input
        const sab_plan *p = plan_of(plan);
        const int64_t B = p->batch, H = p->hidden;
        TORCH_CHECK(h_hat.scalar_type() == at::kFloat && h_hat.device().is_cpu() && h_hat.is_contiguous() &&
                        h_hat.dim() == 2 && h_hat.size(0) == B && h_hat.size(1) == H,
                    "sab_step: h_hat must be a contiguous float32 CPU tensor of shape (", B, ", ", H, "), got ",
                    h_hat.sizes(), " ", h_hat.scalar_type());
        TORCH_CHECK(n >= 1 && n <= p->capacity && rank >= 0 && rank <= n &&
                        (slot == -1 || (slot == n && slot < p->capacity)),
                    "sab_step: a read of n = ", n, " slots keeping ", rank, " writing slot ", slot,
                    " does not fit a memory of ", p->capacity, " slots");
        const auto options = h_hat.options();
        at::Tensor h = at::empty({B, H}, options), out = at::empty({B, 2 * H}, options);
        at::Tensor state = at::empty({rank ? B : 0, STATE_SIZE(H, rank)}, options);
        at::Tensor idx = at::empty({rank ? B : 0, rank}, options.dtype(at::kInt));
        TORCH_CHECK(sab_step_forward(p, h_hat.data_ptr<float>(), n, rank, slot, h.data_ptr<float>(),
                                     out.data_ptr<float>(), rank ? state.data_ptr<float>() : nullptr,
                                     rank ? idx.data_ptr<int32_t>() : nullptr) == 0,
                    kOutOfMemory);
        ctx->save_for_backward({state, idx});
        ctx->saved_data["version"] = version_of(params);
        ctx->saved_data["plan"] = plan;
        ctx->saved_data["n"] = n;
        ctx->saved_data["rank"] = rank;
        ctx->saved_data["slot"] = slot;
        ctx->saved_data["params"] = std::move(params);
        ctx->mark_non_differentiable({state, idx});
        ctx->set_materialize_grads(false);
        if (slot < 0)
            return {h, out, state, idx};
        return {h, out, state, idx, at::zeros({}, options)};  // the write's token
    }

    static variable_list backward(AutogradContext *ctx, variable_list grads) {
        const variable_list saved = ctx->get_saved_variables();  // raises on a second backward, before any use
        const at::Tensor &state = saved[0], &idx = saved[1];
        TORCH_CHECK(version_of(ctx->saved_data["params"].toTensorList()) == ctx->saved_data["version"].toInt(),
                    "a parameter of the SAB scorer was modified in place between a step's forward and its backward: "
                    "call backward before the optimiser step");
        const sab_plan *p = plan_of(ctx->saved_data["plan"].toTensor());
        TORCH_CHECK(p->g_data != nullptr, "sab_step: the memory has no gradient buffer (SlotStore.grad_buffer)");
        const int64_t rank = ctx->saved_data["rank"].toInt();
        // not materialised (set_materialize_grads(false): the logging outputs and the token would get zeros too)
        at::Tensor g_h = grads[0], g_out = grads[1];
        if (!g_h.defined())
            g_h = at::zeros({p->batch, p->hidden}, state.options());
        else if (g_h.stride(1) != 1)
            g_h = g_h.contiguous();
        if (!g_out.defined())
            g_out = at::zeros({p->batch, 2 * p->hidden}, state.options());
        else if (g_out.stride(1) != 1)
            g_out = g_out.contiguous();
        at::Tensor g_h_hat = at::empty({p->batch, p->hidden}, g_h.options());
        TORCH_CHECK(sab_step_backward(p, rank ? state.data_ptr<float>() : nullptr,
                                      rank ? idx.data_ptr<int32_t>() : nullptr, ctx->saved_data["n"].toInt(), rank,
                                      ctx->saved_data["slot"].toInt(), g_out.data_ptr<float>(), g_out.stride(0),
                                      g_h.data_ptr<float>(), g_h.stride(0), g_h_hat.data_ptr<float>()) == 0,
                    kOutOfMemory);
        return {g_h_hat, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    }
};

std::vector<at::Tensor> sab_step(const at::Tensor &h_hat, const std::optional<at::Tensor> &link,
                                 const at::Tensor &plan, int64_t n, int64_t rank, int64_t slot,
                                 at::TensorList params) {
    return Step::apply(h_hat, link, plan, n, rank, slot, params.vec());
}

}  // namespace

TORCH_LIBRARY(bioplaus, m) {
    m.def("sab_step(Tensor h_hat, Tensor? link, Tensor plan, int n, int rank, int slot, Tensor[] params) -> "
          "Tensor[]");
    m.impl("sab_step", c10::DispatchKey::CompositeImplicitAutograd, TORCH_FN(sab_step));
}
