// PCGrad, projecting conflicting gradients (Yu, Kumar, Gupta, Levine, Hausman and Finn,
// "Gradient Surgery for Multi-Task Learning", NeurIPS 2020).
//
// With g_i each present task's gradient on the shared parameters: for each task i, for every other
// task j in a random order (a fresh shuffle per i, from a seeded Philox Generator),
//
//   if <pc_i, g_j> < 0:   pc_i -= <pc_i, g_j> / ||g_j||^2  g_j          (pc_i starts as g_i)
//
// and the shared gradient is sum_i pc_i. Projections are against the original g_j, as in the
// paper. Every pc_i is a combination of the g_j, so the work runs on the K x K Gram matrix and the
// report's weights are the exact coefficients c_j with sum_i pc_i = sum_j c_j g_j (all 1 when no
// pair conflicts). Task-specific parameters get their own task's plain gradient. Cost: one
// backward per present task (see task_gradients.hpp). State (state.hpp): the generator's
// (seed, offset), saved by save_state as "pcgrad.generator.*" entries, so that a resumed run
// shuffles as the uninterrupted run would.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "cerberus/core/random.hpp"
#include "cerberus/mtl/weighting/concept.hpp"
#include "cerberus/mtl/weighting/simplex.hpp"
#include "cerberus/mtl/weighting/state.hpp"
#include "cerberus/mtl/weighting/task_gradients.hpp"

namespace cerberus::mtl {

struct PCGradOptions {
  std::uint64_t seed = 0x5eed;
};

// The PCGrad coefficients for Gram matrix G, shuffling with `gen`.
inline std::vector<double> pcgrad_coefficients(const GramMatrix& G, Generator& gen) {
  const std::size_t K = G.size();
  std::vector<double> total(K, 0.0);
  for (std::size_t i = 0; i < K; ++i) {
    std::vector<std::size_t> order;
    for (std::size_t j = 0; j < K; ++j)
      if (j != i) order.push_back(j);
    for (std::size_t m = order.size(); m > 1; --m) {  // Fisher-Yates
      const auto pick = static_cast<std::size_t>(gen.uniform() * static_cast<double>(m));
      std::swap(order[m - 1], order[std::min(pick, m - 1)]);
    }
    std::vector<double> c(K, 0.0);  // pc_i = sum_k c[k] g_k
    c[i] = 1;
    for (std::size_t j : order) {
      double inner = 0;  // <pc_i, g_j>
      for (std::size_t k = 0; k < K; ++k) inner += c[k] * G[k][j];
      if (inner < 0 && G[j][j] > 0) c[j] -= inner / G[j][j];
    }
    for (std::size_t k = 0; k < K; ++k) total[k] += c[k];
  }
  return total;
}

class PCGrad {
 public:
  explicit PCGrad(PCGradOptions options = {}) : generator_(options.seed) {}
  Generator& generator() { return generator_; }
  void save_state(WeightingState& out, const std::string& prefix = "") const { detail::save_generator(out, prefix + "pcgrad.generator", generator_); }
  void restore_state(const WeightingState& in, const std::string& prefix = "") {
    detail::WeightingStateReader(in, prefix, "PCGrad").restore_generator("pcgrad.generator", generator_);
  }

  template <SharedElement T, Device D>
  WeightingReport backward(const TaskLossesOn<D>& l, const nn::ParameterList<T, D>& shared) {
    return surgery_backward(l, shared, "PCGrad", gradients_,
                            [&](const GramMatrix& G, const std::vector<std::size_t>&) { return pcgrad_coefficients(G, generator_); });
  }

 private:
  Generator generator_;
  SharedGradients gradients_;
};

}  // namespace cerberus::mtl
