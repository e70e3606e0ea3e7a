// GradNorm (Chen, Badrinarayanan, Lee and Rabinovich, "GradNorm: Gradient Normalization for
// Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018).
//
// Learned weights w_i scale the losses, L = sum_i w_i L_i. On one shared parameter tensor W (by
// name, `layer`; default: the last entry of `shared`) the weighted task gradients have norms
// G_i = ||grad_W w_i L_i||. GradNorm pulls them towards a common norm scaled by each task's
// relative inverse training rate:
//
//   Lt_i = L_i / L_i(0)    r_i = Lt_i / mean_j Lt_j    target_i = mean_j G_j * r_i^alpha   (constant)
//   L_grad = sum_i |G_i - target_i|                    dL_grad/dw_i = sign(G_i - target_i) ||grad_W L_i||
//
// L_i(0) is task i's loss at the first step it was present. The weights are one parameter tensor
// [N] named "gradnorm.weights" (start: 1), offered by parameters(): give them to the optimizer,
// whose step applies dL_grad/dw (backward() adds it to their .grad(); the task losses do not
// reach w). They are float in a bf16 model too (mtl::Model::weighting_parameters: a float
// optimizer of their own); the norms G_i are then those of W's bf16 gradients, read in double. At the start of each backward the weights are clamped to >= min_weight and
// renormalised to sum to N (the paper renormalises after each update; same weights in force).
// Sums and means run over the tasks present in the batch; an absent task's weight gets no
// gradient. Cost: one backward per present task (the norms need each task's own gradient on W).
// Device: GradNormOn<D> keeps w on device D; GradNorm is GradNormOn<cpu>, and a model on cuda
// turns the one it is given into GradNormOn<cuda> (on_device, the converting constructor). The
// norms G_i are read on the host (task_gradients.hpp); only W's gradients are copied unless
// measure_conflict asks for every shared one.
// State (state.hpp): the initial losses L_i(0) and the last backward's norms, targets and L_grad,
// saved by save_state as "gradnorm.*" entries (the weights themselves are a parameter, saved with
// the model's); a resumed run restores them and measures its training rates from the same L_i(0).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cerberus/autograd/grad_mode.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/mtl/weighting/concept.hpp"
#include "cerberus/mtl/weighting/state.hpp"
#include "cerberus/mtl/weighting/task_gradients.hpp"
#include "cerberus/nn/parameter.hpp"
#include "cerberus/ops/reduce.hpp"
#include "cerberus/tensor/factories.hpp"

namespace cerberus::mtl {

struct GradNormOptions {
  double alpha = 1.5;        // strength of the pull towards equal training rates (paper: 0.12 to 3)
  std::string layer = {};    // the shared parameter whose gradient norms are balanced; "" = the last one
  double min_weight = 1e-4;  // weights are clamped to at least this before renormalising
  bool measure_conflict = false;
};

template <Device D = cpu>
class GradNormOn {
 public:
  template <Device D2>
  using on_device = GradNormOn<D2>;

  explicit GradNormOn(std::size_t task_count, GradNormOptions options = {}) : options_(std::move(options)) {
    if (task_count == 0) throw ValueError("[GradNorm] needs at least one task");
    if (!(options_.alpha >= 0) || !std::isfinite(options_.alpha)) throw ValueError("[GradNorm] alpha must be finite and >= 0");
    if (!(options_.min_weight > 0)) throw ValueError("[GradNorm] min_weight must be > 0");
    weights_ = ones<float, D>(Shape{static_cast<Index>(task_count)});
    weights_.set_requires_grad(true);
    initial_loss_.assign(task_count, std::numeric_limits<double>::quiet_NaN());
  }
  // The same weighting on device D: its weights copied (a fresh leaf, no gradient carried over)
  // with its statistics (initial losses, last norms).
  template <Device D2>
    requires(!std::is_same_v<D2, D>)
  explicit GradNormOn(const GradNormOn<D2>& other)
      : options_(other.options_), weights_(other.weights_.detach().template to<D>()), initial_loss_(other.initial_loss_),
        grad_norms_(other.grad_norms_), targets_(other.targets_), gradnorm_loss_(other.gradnorm_loss_) {
    weights_.set_requires_grad(true);
  }

  const Tensor<float, D>& weights() const { return weights_; }
  nn::ParameterList<float, D> parameters() const { return {{"gradnorm.weights", weights_}}; }
  // Of the last backward, per task (NaN for absent tasks): G_i = ||grad_W w_i L_i|| and the target.
  const std::vector<double>& grad_norms() const { return grad_norms_; }
  const std::vector<double>& target_norms() const { return targets_; }
  double gradnorm_loss() const { return gradnorm_loss_; }

  template <SharedElement T>
  WeightingReport backward(const TaskLossesOn<D>& l, const nn::ParameterList<T, D>& shared) {
    const auto n = static_cast<std::size_t>(weights_.numel());
    const std::vector<std::size_t> present = present_tasks(l, "GradNorm", n);
    const Tensor<T, D> layer = find_layer(shared);
    const std::vector<double> w = renormalise();
    const double nan = std::numeric_limits<double>::quiet_NaN();
    grad_norms_.assign(n, nan);
    targets_.assign(n, nan);
    gradnorm_loss_ = 0;

    WeightingReport r = empty_report(n, options_.measure_conflict);
    if (present.empty()) return r;
    std::vector<Tensor<float, D>> terms;
    for (std::size_t i : present) {
      terms.push_back(Tensor<float, D>(*l.losses[i] * static_cast<float>(w[i])));
      r.losses[i] = static_cast<double>(l.losses[i]->item());
      r.weights[i] = w[i];
      r.total += w[i] * r.losses[i];
      if (std::isnan(initial_loss_[i])) initial_loss_[i] = r.losses[i];
    }

    // Each task's own gradient on W (and on every shared parameter when measuring conflict).
    gradients_.bind(options_.measure_conflict ? shared : nn::ParameterList<T, D>{{"layer", layer}});
    per_task_backward(terms, gradients_);
    const auto [offset, count] = gradients_.range_of(layer);
    std::vector<double> G(present.size(), 0.0), lt(present.size(), 1.0);
    double mean_g = 0, mean_lt = 0;
    for (std::size_t k = 0; k < present.size(); ++k) {
      double s = 0;
      for (std::size_t e = offset; e < offset + count; ++e) s += gradients_.task(k)[e] * gradients_.task(k)[e];
      G[k] = std::sqrt(s);
      const double l0 = initial_loss_[present[k]];
      lt[k] = (l0 != 0 && std::isfinite(l0)) ? r.losses[present[k]] / l0 : 1.0;
      mean_g += G[k] / static_cast<double>(present.size());
      mean_lt += lt[k] / static_cast<double>(present.size());
    }
    std::vector<float> unit_norm(n, 0.0f), target(n, 0.0f);  // ||grad_W L_i|| and target_i
    for (std::size_t k = 0; k < present.size(); ++k) {
      const std::size_t i = present[k];
      const double ratio = mean_lt > 0 ? lt[k] / mean_lt : 1.0;
      grad_norms_[i] = G[k];
      targets_[i] = mean_g * std::pow(ratio, options_.alpha);
      unit_norm[i] = static_cast<float>(G[k] / w[i]);
      target[i] = static_cast<float>(targets_[i]);
      gradnorm_loss_ += std::abs(G[k] - targets_[i]);
    }
    if (options_.measure_conflict) r.gradient_cosine = cosine_matrix(n, present, gradients_.gram(present.size()));
    gradients_.restore(std::vector<double>(present.size(), 1.0));

    // dL_grad/dw through the tape, so the weights' .grad() accumulates like any parameter's.
    const Tensor<float, D> lgrad = sum(abs(weights_ * to_device(from_vector<float>(unit_norm)) - to_device(from_vector<float>(target))));
    lgrad.backward();
    return r;
  }

  void save_state(WeightingState& out, const std::string& prefix = "") const {
    out[prefix + "gradnorm.initial_loss"] = detail::encode_doubles(initial_loss_);
    out[prefix + "gradnorm.grad_norms"] = detail::encode_doubles(grad_norms_);
    out[prefix + "gradnorm.target_norms"] = detail::encode_doubles(targets_);
    out[prefix + "gradnorm.loss"] = detail::encode_double(gradnorm_loss_);
  }
  // Every entry is read and checked (one value per task; the last norms none before the first
  // backward) before any statistic changes.
  void restore_state(const WeightingState& in, const std::string& prefix = "") {
    const detail::WeightingStateReader read(in, prefix, "GradNorm");
    const auto n = static_cast<std::size_t>(weights_.numel());
    std::vector<double> initial = read.numbers("gradnorm.initial_loss", n);
    std::vector<double> norms = read.numbers("gradnorm.grad_norms"), targets = read.numbers("gradnorm.target_norms");
    if (!norms.empty() && norms.size() != n) read.fail("gradnorm.grad_norms", "expected " + std::to_string(n) + " values (one per task) or none");
    if (!targets.empty() && targets.size() != n) read.fail("gradnorm.target_norms", "expected " + std::to_string(n) + " values (one per task) or none");
    const double loss = read.number("gradnorm.loss");
    initial_loss_ = std::move(initial);
    grad_norms_ = std::move(norms);
    targets_ = std::move(targets);
    gradnorm_loss_ = loss;
  }

 private:
  template <SharedElement T>
  Tensor<T, D> find_layer(const nn::ParameterList<T, D>& shared) const {
    if (shared.empty()) throw ValueError("[GradNorm] needs at least one shared parameter to measure gradient norms on");
    if (options_.layer.empty()) return shared.back().tensor;
    std::string names;
    for (const auto& p : shared) {
      if (p.name == options_.layer) return p.tensor;
      names += (names.empty() ? "" : ", ") + p.name;
    }
    throw ValueError("[GradNorm] layer '" + options_.layer + "' is not among the shared parameters (" + names + ")");
  }
  static Tensor<float, D> to_device(const Tensor<float>& host) {
    if constexpr (std::is_same_v<D, cpu>) return host;
    else return host.template to<D>();
  }
  // Clamps the weights to >= min_weight and rescales them to sum to N; returns them.
  std::vector<double> renormalise() {
    std::vector<float> v = weights_.to_vector();
    double total = 0;
    for (float& x : v) {
      if (!std::isfinite(x)) throw ValueError("[GradNorm] a task weight is not finite; lower the learning rate of gradnorm.weights");
      x = std::max(x, static_cast<float>(options_.min_weight));
      total += x;
    }
    std::vector<double> w(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) {
      w[i] = static_cast<double>(v[i]) * static_cast<double>(v.size()) / total;
      v[i] = static_cast<float>(w[i]);
    }
    NoGradGuard no_grad;
    weights_.assign(to_device(from_vector<float>(v)));
    return w;
  }

  template <Device>
  friend class GradNormOn;
  GradNormOptions options_;
  Tensor<float, D> weights_;
  std::vector<double> initial_loss_, grad_norms_, targets_;
  double gradnorm_loss_ = 0;
  SharedGradients gradients_;
};

using GradNorm = GradNormOn<cpu>;

}  // namespace cerberus::mtl
