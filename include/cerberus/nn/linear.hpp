// nn::Linear: y = x W^T + b on any leading dimensions, PyTorch's weight layout.
//
// Legend: N = rows (product of the leading dims, e.g. B * T), I = in_features, O = out_features.
//   parameters: weight [O, I], bias [O] (absent when built without bias)
//   forward(x [..., I]) -> [..., O]
// One GEMM over the 2-D view [N, I] with the bias fused (ops/linear.hpp).
// Initialisation (GPT-2): weight ~ normal(0, std), std = 0.02 unless given; bias = 0.
#pragma once

#include "cerberus/core/random.hpp"
#include "cerberus/nn/module.hpp"
#include "cerberus/ops/linear.hpp"
#include "cerberus/tensor/factories.hpp"

namespace cerberus::nn {

template <Element T = float, Device D = cpu>
class Linear : public Module<Linear<T, D>, T, D> {
 public:
  Tensor<T, D> weight;  // [O, I]
  Tensor<T, D> bias;    // [O] or undefined

  Linear() = default;
  Linear(Index in_features, Index out_features, bool with_bias, Generator& gen, double init_std = 0.02)
      : weight(detail::make_parameter(normal<T, D>(Shape{out_features, in_features}, 0.0, init_std, gen))) {
    if (with_bias) bias = detail::make_parameter(zeros<T, D>(Shape{out_features}));
  }

  Index in_features() const { return weight.size(1); }
  Index out_features() const { return weight.size(0); }

  Tensor<T, D> forward(const Tensor<T, D>& x) const { return linear(x, weight, bias); }
  Tensor<T, D> operator()(const Tensor<T, D>& x) const { return forward(x); }

  template <class F>
  void visit_own_parameters(F&& f) {
    f("weight", weight);
    f("bias", bias);
  }
};

}  // namespace cerberus::nn
