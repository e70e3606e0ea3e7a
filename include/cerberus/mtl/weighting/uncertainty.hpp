// Uncertainty weighting (Kendall, Gal and Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
// Losses for Scene Geometry and Semantics", CVPR 2018).
//
// Each task has a learned log-variance s_i = log sigma_i^2, and, in LibMTL's form (the
// regression form of the paper, with its 1/2 factors, used for every task):
//
//   L = sum_i  exp(-s_i) L_i / 2  +  s_i / 2          dL/ds_i = (1 - exp(-s_i) L_i) / 2
//
// so s_i settles where exp(s_i) = L_i: noisier (larger-loss) tasks get smaller weights
// exp(-s_i) / 2, the weight reported. The s_i start at `initial_log_variance` (LibMTL: -0.5) and
// are one parameter tensor [N] named "uncertainty.log_variance", offered by parameters(): give
// them to the optimizer with the model's parameters. They are float in a bf16 model too (whose
// losses are float): there they get a float optimizer of their own (mtl::Model::weighting_parameters). An absent task's s_i gets no gradient.
// Device: UncertaintyOn<D> keeps s on device D; Uncertainty is UncertaintyOn<cpu>, and a model on
// cuda turns the one it is given into UncertaintyOn<cuda> (on_device, the converting constructor).
#pragma once

#include <cmath>
#include <cstddef>
#include <type_traits>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/mtl/weighting/concept.hpp"
#include "cerberus/mtl/weighting/task_gradients.hpp"
#include "cerberus/nn/parameter.hpp"
#include "cerberus/tensor/factories.hpp"

namespace cerberus::mtl {

struct UncertaintyOptions {
  double initial_log_variance = -0.5;
  bool measure_conflict = false;
};

template <Device D = cpu>
class UncertaintyOn {
 public:
  template <Device D2>
  using on_device = UncertaintyOn<D2>;

  explicit UncertaintyOn(std::size_t task_count, UncertaintyOptions options = {}) : options_(options) {
    if (task_count == 0) throw ValueError("[Uncertainty] needs at least one task");
    if (!std::isfinite(options.initial_log_variance))
      throw ValueError("[Uncertainty] initial_log_variance must be finite");
    log_variance_ = full<float, D>(Shape{static_cast<Index>(task_count)}, static_cast<float>(options.initial_log_variance));
    log_variance_.set_requires_grad(true);
  }
  // The same weighting on device D (its s copied, a fresh leaf; no gradient carried over).
  template <Device D2>
    requires(!std::is_same_v<D2, D>)
  explicit UncertaintyOn(const UncertaintyOn<D2>& other) : options_(other.options_), log_variance_(other.log_variance_.detach().template to<D>()) {
    log_variance_.set_requires_grad(true);
  }

  // s_i, one per task.
  const Tensor<float, D>& log_variance() const { return log_variance_; }
  nn::ParameterList<float, D> parameters() const { return {{"uncertainty.log_variance", log_variance_}}; }

  template <SharedElement T>
  WeightingReport backward(const TaskLossesOn<D>& l, const nn::ParameterList<T, D>& shared) {
    const auto n = static_cast<std::size_t>(log_variance_.numel());
    const std::vector<std::size_t> present = present_tasks(l, "Uncertainty", n);
    const std::vector<float> s = log_variance_.to_vector();
    std::vector<double> weights(n, 0.0);
    std::vector<Tensor<float, D>> terms;
    for (std::size_t i : present) {
      const Tensor<float, D> si = log_variance_.select(0, static_cast<Index>(i));
      terms.push_back(Tensor<float, D>(exp(-si) * *l.losses[i] * 0.5f + si * 0.5f));
      weights[i] = 0.5 * std::exp(-static_cast<double>(s[i]));
    }
    return backward_weighted_terms(l, present, terms, weights, shared, options_.measure_conflict, gradients_);
  }

 private:
  template <Device>
  friend class UncertaintyOn;
  UncertaintyOptions options_;
  Tensor<float, D> log_variance_;
  SharedGradients gradients_;
};

using Uncertainty = UncertaintyOn<cpu>;

}  // namespace cerberus::mtl
