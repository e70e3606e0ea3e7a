// nn::Norm (LayerNorm or RMSNorm over the last axis), with LayerNorm and RMSNorm as fixed-kind
// spellings of it.
//
// Legend: C = normalized size (d_model).
//   parameters: weight [C] (ones); bias [C] (zeros) for LayerNorm with bias, never for RMSNorm
//   forward(x [..., C]) -> [..., C]
//     layer: (x - mean) / sqrt(var + eps) * weight + bias
//     rms:   x / sqrt(mean(x^2) + eps) * weight
// One fused kernel per call (ops/norm.hpp). The kind is a run-time choice (TransformerConfig::norm)
// so that one block type serves both; the parameter names are the same either way.
#pragma once

#include "cerberus/nn/config.hpp"
#include "cerberus/nn/module.hpp"
#include "cerberus/ops/norm.hpp"
#include "cerberus/tensor/factories.hpp"

namespace cerberus::nn {

template <Element T = float, Device D = cpu>
class Norm : public Module<Norm<T, D>, T, D> {
 public:
  Tensor<T, D> weight;  // [C]
  Tensor<T, D> bias;    // [C], LayerNorm with bias only

  Norm() = default;
  Norm(NormKind kind, Index size, double eps, bool with_bias = true) : weight(detail::make_parameter(ones<T, D>(Shape{size}))), kind_(kind), eps_(eps) {
    if (!(eps > 0)) throw ValueError("[Norm] eps must be positive, got " + std::to_string(eps));
    if (kind == NormKind::layer && with_bias) bias = detail::make_parameter(zeros<T, D>(Shape{size}));
  }

  NormKind kind() const { return kind_; }
  double eps() const { return eps_; }

  Tensor<T, D> forward(const Tensor<T, D>& x) const {
    return kind_ == NormKind::layer ? layer_norm(x, weight, bias, eps_) : rms_norm(x, weight, eps_);
  }
  Tensor<T, D> operator()(const Tensor<T, D>& x) const { return forward(x); }

  template <class F>
  void visit_own_parameters(F&& f) {
    f("weight", weight);
    f("bias", bias);
  }

 private:
  NormKind kind_ = NormKind::layer;
  double eps_ = 1e-5;
};

template <Element T = float, Device D = cpu>
class LayerNorm : public Norm<T, D> {
 public:
  LayerNorm() = default;
  explicit LayerNorm(Index size, double eps = 1e-5, bool with_bias = true) : Norm<T, D>(NormKind::layer, size, eps, with_bias) {}
};

template <Element T = float, Device D = cpu>
class RMSNorm : public Norm<T, D> {
 public:
  RMSNorm() = default;
  explicit RMSNorm(Index size, double eps = 1e-6) : Norm<T, D>(NormKind::rms, size, eps, false) {}
};

}  // namespace cerberus::nn
