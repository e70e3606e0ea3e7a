// Fixed loss weights: L = sum_i lambda_i L_i over the tasks present in the batch.
//
//   Static<1.0, 1.0, 0.5>  the weights are compile-time doubles, one per task, in task order;
//                          mtl::weighting_task_count<Static<...>> is their count, so the model can
//                          check it against its task list at compile time
//   RuntimeStatic({...})   the same with weights chosen at run time (count checked per step)
//   Equal                  lambda_i = 1
//
// The total is built in float in task order, (lambda_0 L_0 + lambda_1 L_1) + ..., exactly the
// seed's formula, and one backward runs through it. With `measure_conflict` each task is
// backpropagated on its own instead (K backward passes) to report gradient cosines; a task of
// weight 0 then has a zero gradient and cosine 0. Weights must be finite and >= 0.
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/mtl/weighting/concept.hpp"
#include "cerberus/mtl/weighting/task_gradients.hpp"

namespace cerberus::mtl {

struct ConflictOptions {
  bool measure_conflict = false;  // one backward per task to report gradient cosines
};

namespace detail {
inline void check_weights(const std::vector<double>& w, const char* op) {
  for (std::size_t i = 0; i < w.size(); ++i)
    if (!std::isfinite(w[i]) || w[i] < 0)
      throw ValueError(std::string("[") + op + "] weight " + std::to_string(i) + " is " + std::to_string(w[i]) +
                       "; loss weights must be finite and >= 0");
}

// sum_i w_i L_i over the present tasks.
template <SharedElement T, Device D>
WeightingReport backward_static(const TaskLossesOn<D>& l, const std::vector<double>& w, const nn::ParameterList<T, D>& shared, bool measure_conflict,
                                SharedGradients& gradients, const char* op, std::size_t expected) {
  const std::vector<std::size_t> present = present_tasks(l, op, expected);
  std::vector<Tensor<float, D>> terms;
  for (std::size_t i : present) terms.push_back(Tensor<float, D>(*l.losses[i] * static_cast<float>(w[i])));
  return backward_weighted_terms(l, present, terms, w, shared, measure_conflict, gradients);
}
}  // namespace detail

template <double... W>
class Static {
  static_assert(sizeof...(W) > 0, "Static needs one weight per task.");
  static_assert(((W >= 0.0 && W <= std::numeric_limits<double>::max()) && ...), "Static weights must be finite and >= 0.");

 public:
  static constexpr std::size_t task_count = sizeof...(W);
  static constexpr double weights[sizeof...(W)] = {W...};

  explicit Static(ConflictOptions options = {}) : options_(options) {}

  template <SharedElement T, Device D>
  WeightingReport backward(const TaskLossesOn<D>& l, const nn::ParameterList<T, D>& shared) {
    return detail::backward_static(l, std::vector<double>{W...}, shared, options_.measure_conflict, gradients_, "Static", task_count);
  }

 private:
  ConflictOptions options_;
  SharedGradients gradients_;
};

template <double... W>
inline constexpr std::size_t weighting_task_count<Static<W...>> = sizeof...(W);

class RuntimeStatic {
 public:
  RuntimeStatic() = default;  // set_weights() before the first backward
  explicit RuntimeStatic(std::vector<double> weights, ConflictOptions options = {}) : options_(options) {
    set_weights(std::move(weights));
  }
  void set_weights(std::vector<double> weights) {
    detail::check_weights(weights, "RuntimeStatic");
    weights_ = std::move(weights);
  }
  const std::vector<double>& weights() const { return weights_; }

  template <SharedElement T, Device D>
  WeightingReport backward(const TaskLossesOn<D>& l, const nn::ParameterList<T, D>& shared) {
    if (weights_.empty()) throw ValueError("[RuntimeStatic] no weights set; pass one weight per task to the constructor or set_weights()");
    if (weights_.size() != l.losses.size())
      throw ValueError("[RuntimeStatic] " + std::to_string(weights_.size()) + " weights for " + std::to_string(l.losses.size()) +
                       " tasks; give one weight per task, in task order");
    return detail::backward_static(l, weights_, shared, options_.measure_conflict, gradients_, "RuntimeStatic", 0);
  }

 private:
  std::vector<double> weights_;
  ConflictOptions options_;
  SharedGradients gradients_;
};

class Equal {
 public:
  explicit Equal(ConflictOptions options = {}) : options_(options) {}
  template <SharedElement T, Device D>
  WeightingReport backward(const TaskLossesOn<D>& l, const nn::ParameterList<T, D>& shared) {
    return detail::backward_static(l, std::vector<double>(l.losses.size(), 1.0), shared, options_.measure_conflict, gradients_, "Equal", 0);
  }

 private:
  ConflictOptions options_;
  SharedGradients gradients_;
};

}  // namespace cerberus::mtl
