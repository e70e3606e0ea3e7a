// MGDA-UB style min-norm weighting (Sener and Koltun, "Multi-Task Learning as Multi-Objective
// Optimization", NeurIPS 2018), on the gradients of the shared parameters (not the
// representation: the exact MGDA step, not the upper bound).
//
// With g_i each present task's gradient on the shared parameters and n_i a normaliser,
// gh_i = g_i / n_i:
//
//   alpha = argmin_{alpha in simplex} || sum_i alpha_i gh_i ||^2      shared gradient d = sum_i alpha_i gh_i
//
// d is the min-norm point of the convex hull of the gh_i, so <d, gh_i> >= ||d||^2 >= 0 for every
// task: a common descent direction (d = 0 at a Pareto-stationary point). The solver
// (simplex.hpp, min_norm_coefficients) starts from the best pair and runs Frank-Wolfe with away
// steps and exact line search, on the K x K Gram matrix.
//
// Normalisation (`normalization`, the official code's and LibMTL's choices; default none):
//   none       n_i = 1
//   l2         n_i = ||g_i||             (every task's unit direction counts equally)
//   loss       n_i = L_i
//   loss_plus  n_i = L_i ||g_i||
// A zero normaliser counts as 1. The report's weights are c_i = alpha_i / n_i (d = sum_i c_i g_i).
// Task-specific parameters get their own task's plain gradient, as in the paper (Section 3.2).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "cerberus/mtl/weighting/concept.hpp"
#include "cerberus/mtl/weighting/simplex.hpp"
#include "cerberus/mtl/weighting/task_gradients.hpp"

namespace cerberus::mtl {

enum class MGDANormalization { none, l2, loss, loss_plus };

struct MGDAOptions {
  MGDANormalization normalization = MGDANormalization::none;
  MinNormOptions solver = {};
};

// The MGDA coefficients c (shared gradient = sum_i c_i g_i) for Gram matrix G and task losses.
inline std::vector<double> mgda_coefficients(const GramMatrix& G, const std::vector<double>& losses, const MGDAOptions& options = {}) {
  const std::size_t K = G.size();
  std::vector<double> n(K, 1.0);
  for (std::size_t i = 0; i < K; ++i) {
    const double norm = std::sqrt(std::max(G[i][i], 0.0));
    switch (options.normalization) {
      case MGDANormalization::none: break;
      case MGDANormalization::l2: n[i] = norm; break;
      case MGDANormalization::loss: n[i] = losses[i]; break;
      case MGDANormalization::loss_plus: n[i] = losses[i] * norm; break;
    }
    if (!(n[i] != 0) || !std::isfinite(n[i])) n[i] = 1.0;
  }
  GramMatrix Gh = G;
  for (std::size_t i = 0; i < K; ++i)
    for (std::size_t j = 0; j < K; ++j) Gh[i][j] = G[i][j] / (n[i] * n[j]);
  std::vector<double> c = min_norm_coefficients(Gh, options.solver);
  for (std::size_t i = 0; i < K; ++i) c[i] /= n[i];
  return c;
}

class MGDA {
 public:
  explicit MGDA(MGDAOptions options = {}) : options_(options) {}

  template <SharedElement T, Device D>
  WeightingReport backward(const TaskLossesOn<D>& l, const nn::ParameterList<T, D>& shared) {
    return surgery_backward(l, shared, "MGDA", gradients_, [&](const GramMatrix& G, const std::vector<std::size_t>& present) {
      std::vector<double> losses;
      for (std::size_t i : present) losses.push_back(static_cast<double>(l.losses[i]->item()));
      return mgda_coefficients(G, losses, options_);
    });
  }

 private:
  MGDAOptions options_;
  SharedGradients gradients_;
};

}  // namespace cerberus::mtl
