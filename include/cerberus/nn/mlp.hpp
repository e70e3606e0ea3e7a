// nn::MLP: the position-wise feed-forward block of a Transformer, GELU or SwiGLU.
//
// Legend: C = d_model, F = d_ff, N = rows (B * T).
//   gelu:   up_proj [F, C](+[F]), down_proj [C, F](+[C]);   y = down(gelu(up(x)))
//   swiglu: gate_proj [F, C], up_proj [F, C], down_proj [C, F] (biases when config.bias);
//           y = down(silu(gate(x)) * up(x))   (Shazeer 2020)
//   forward(x [..., C]) -> [..., C]
// Each projection is one GEMM over [N, C]; the activation (and SwiGLU's product) is one fused
// elementwise pass whose gradient is derived by the expression engine, never an op per step.
// GELU is the tanh approximation unless config.gelu_approximation is none (exact erf form).
// down_proj is a residual projection: initialised with std 0.02 / sqrt(2 * n_layers) (GPT-2).
#pragma once

#include <cmath>
#include <optional>

#include "cerberus/expr/ops.hpp"
#include "cerberus/nn/config.hpp"
#include "cerberus/nn/linear.hpp"
#include "cerberus/nn/module.hpp"

namespace cerberus::nn {

template <Element T = float, Device D = cpu>
class MLP : public Module<MLP<T, D>, T, D> {
 public:
  std::optional<Linear<T, D>> gate_proj;  // swiglu only
  Linear<T, D> up_proj;
  Linear<T, D> down_proj;

  MLP() = default;
  // n_layers sets the residual scaling of down_proj's initialisation.
  MLP(const TransformerConfig& c, Index n_layers, Generator& gen)
      : kind_(c.mlp), approximation_(c.gelu_approximation) {
    const double residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(n_layers));
    if (kind_ == MlpKind::swiglu) gate_proj.emplace(c.d_model, c.d_ff, c.bias, gen);
    up_proj = Linear<T, D>(c.d_model, c.d_ff, c.bias, gen);
    down_proj = Linear<T, D>(c.d_ff, c.d_model, c.bias, gen, residual_std);
  }

  MlpKind kind() const { return kind_; }

  Tensor<T, D> forward(const Tensor<T, D>& x) const {
    if (kind_ == MlpKind::gelu && approximation_ == GeluApproximation::tanh &&
        !autograd::any_requires_grad(x, up_proj.weight, up_proj.bias)) {
      // Inference, tanh GELU: applied by the up projection's GEMM as it stores (on the CPU; see
      // linear_gelu_tanh), one [N, F] pass fewer.
      return down_proj(linear_gelu_tanh(x, up_proj.weight, up_proj.bias));
    }
    Tensor<T, D> up = up_proj(x);
    Tensor<T, D> hidden;
    if (kind_ != MlpKind::swiglu && !autograd::any_requires_grad(up)) {
      // Nothing to record (inference, exact GELU): the activation overwrites the projection in
      // place, so the [N, F] temporary is not allocated twice (peak memory of a forward pass).
      up.assign(gelu_erf(up));
      return down_proj(up);
    }
    if (kind_ == MlpKind::swiglu) hidden = silu((*gate_proj)(x)) * up;
    else if (approximation_ == GeluApproximation::tanh) hidden = gelu_tanh(up);
    else hidden = gelu_erf(up);
    return down_proj(hidden);
  }
  Tensor<T, D> operator()(const Tensor<T, D>& x) const { return forward(x); }

  template <class F>
  void visit_children(F&& f) {
    if (gate_proj) f("gate_proj", *gate_proj);
    f("up_proj", up_proj);
    f("down_proj", down_proj);
  }

 private:
  MlpKind kind_ = MlpKind::gelu;
  GeluApproximation approximation_ = GeluApproximation::tanh;
};

}  // namespace cerberus::nn
