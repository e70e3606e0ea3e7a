// Random Loss Weighting (Lin et al., "Reasonable Effectiveness of Random
// Weighting: A Litmus Test for Multi-Task Learning", TMLR 2022; arXiv 2111.10603, 2021).
//
// Each step draws z_i ~ N(0, 1) for every task from a seeded Philox Generator and weighs the
// present tasks by a softmax over their z: w_i = exp(z_i) / sum_{j present} exp(z_j), so the
// weights sum to 1 (the paper's and LibMTL's scale; multiply the learning rate by N to compare
// with Equal). N normals are drawn every step whichever tasks are present, so the stream of
// weights depends only on the seed and the step count. State (state.hpp): the generator's
// (seed, offset), saved by save_state as "rlw.generator.*" entries, so that a resumed run draws
// the uninterrupted run's weights.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "cerberus/core/random.hpp"
#include "cerberus/mtl/weighting/concept.hpp"
#include "cerberus/mtl/weighting/state.hpp"
#include "cerberus/mtl/weighting/task_gradients.hpp"
#include "cerberus/tensor/factories.hpp"

namespace cerberus::mtl {

struct RLWOptions {
  std::uint64_t seed = 0x5eed;
  bool measure_conflict = false;
};

class RLW {
 public:
  explicit RLW(RLWOptions options = {}) : options_(options), generator_(options.seed) {}

  Generator& generator() { return generator_; }
  void save_state(WeightingState& out, const std::string& prefix = "") const { detail::save_generator(out, prefix + "rlw.generator", generator_); }
  void restore_state(const WeightingState& in, const std::string& prefix = "") {
    detail::WeightingStateReader(in, prefix, "RLW").restore_generator("rlw.generator", generator_);
  }

  template <SharedElement T, Device D>
  WeightingReport backward(const TaskLossesOn<D>& l, const nn::ParameterList<T, D>& shared) {
    const std::vector<std::size_t> present = present_tasks(l, "RLW");
    const std::size_t n = l.losses.size();
    std::vector<double> w(n, 0.0);
    if (n > 0) {
      const std::vector<double> z = normal<double>(Shape{static_cast<Index>(n)}, 0.0, 1.0, generator_).to_vector();
      double zmax = -std::numeric_limits<double>::infinity(), total = 0;
      for (std::size_t i : present) zmax = std::max(zmax, z[i]);
      for (std::size_t i : present) total += (w[i] = std::exp(z[i] - zmax));
      for (std::size_t i : present) w[i] /= total;
    }
    std::vector<Tensor<float, D>> terms;
    for (std::size_t i : present) terms.push_back(Tensor<float, D>(*l.losses[i] * static_cast<float>(w[i])));
    return backward_weighted_terms(l, present, terms, w, shared, options_.measure_conflict, gradients_);
  }

 private:
  RLWOptions options_;
  Generator generator_;
  SharedGradients gradients_;
};

}  // namespace cerberus::mtl
