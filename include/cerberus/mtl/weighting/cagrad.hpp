// CAGrad, conflict-averse gradient descent (Liu, Liu, Jin, Stone and Liu, "Conflict-Averse
// Gradient Descent for Multi-task Learning", NeurIPS 2021).
//
// With g_i each present task's gradient on the shared parameters (K tasks), g0 = mean_i g_i and
// c = calpha ||g0||, CAGrad takes the update d that maximises the worst task's improvement
// within a ball around the average gradient:
//
//   max_d min_i <g_i, d>   subject to   ||d - g0|| <= c
//
// Its dual is a small problem over the simplex, solved on the K x K Gram matrix:
//
//   w = argmin_{w in simplex}  <g_w, g0> + c ||g_w||,   g_w = sum_i w_i g_i
//   d = g0 + (c / ||g_w||) g_w                        (d = g0 when g_w = 0)
//
// Solver (simplex.hpp, minimize_on_simplex): projected gradient descent from the uniform point
// with backtracking (Armijo) steps, on G scaled to unit largest diagonal (the answer is scale
// free) with sqrt(w^T G w + 1e-8) as in the official code and LibMTL. The result is then divided
// by 1 + calpha^2 (`rescale` 1, the official default), 1 + calpha (2) or 1 (0). The report's
// weights are c_i = (1/K + lambda w_i) / rescale, so that d = sum_i c_i g_i. calpha = 0 gives
// the average gradient; larger calpha moves toward the min-norm (MGDA) direction. Task-specific
// parameters get their own task's plain gradient.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/mtl/weighting/concept.hpp"
#include "cerberus/mtl/weighting/simplex.hpp"
#include "cerberus/mtl/weighting/task_gradients.hpp"

namespace cerberus::mtl {

struct CAGradOptions {
  double calpha = 0.5;  // the radius c = calpha ||g0||; LibMTL's default
  int rescale = 1;      // 0: none, 1: divide by 1 + calpha^2, 2: divide by 1 + calpha
  SimplexSolverOptions solver = {};
};

// The dual weights w of CAGrad for Gram matrix G.
inline std::vector<double> cagrad_dual_weights(const GramMatrix& G, double calpha, const SimplexSolverOptions& solver = {}) {
  const std::size_t K = G.size();
  double scale = 0;
  for (std::size_t i = 0; i < K; ++i) scale = std::max(scale, G[i][i]);
  if (!(scale > 0)) return std::vector<double>(K, 1.0 / static_cast<double>(K));
  GramMatrix A = G;
  for (auto& row : A)
    for (double& v : row) v /= scale;
  std::vector<double> Ab(K, 0.0);  // A b, b = 1/K
  double bAb = 0;
  for (std::size_t i = 0; i < K; ++i) {
    for (std::size_t j = 0; j < K; ++j) Ab[i] += A[i][j] / static_cast<double>(K);
    bAb += Ab[i] / static_cast<double>(K);
  }
  const double c = calpha * std::sqrt(std::max(bAb, 0.0));
  auto f = [&](const std::vector<double>& w) {
    double lin = 0;
    for (std::size_t i = 0; i < K; ++i) lin += w[i] * Ab[i];
    return lin + c * std::sqrt(std::max(quadratic_form(A, w, w), 0.0) + 1e-8);
  };
  auto grad = [&](const std::vector<double>& w) {
    std::vector<double> Aw(K, 0.0);
    double wAw = 0;
    for (std::size_t i = 0; i < K; ++i) {
      for (std::size_t j = 0; j < K; ++j) Aw[i] += A[i][j] * w[j];
      wAw += w[i] * Aw[i];
    }
    const double root = std::sqrt(std::max(wAw, 0.0) + 1e-8);
    std::vector<double> g(K);
    for (std::size_t i = 0; i < K; ++i) g[i] = Ab[i] + c * Aw[i] / root;
    return g;
  };
  return minimize_on_simplex(K, f, grad, solver);
}

// The CAGrad coefficients c (shared gradient = sum_i c_i g_i) for Gram matrix G.
inline std::vector<double> cagrad_coefficients(const GramMatrix& G, const CAGradOptions& options = {}) {
  const std::size_t K = G.size();
  if (K == 0) return {};
  const std::vector<double> w = cagrad_dual_weights(G, options.calpha, options.solver);
  double g0_sq = 0;
  for (std::size_t i = 0; i < K; ++i)
    for (std::size_t j = 0; j < K; ++j) g0_sq += G[i][j];
  g0_sq /= static_cast<double>(K * K);
  const double c = options.calpha * std::sqrt(std::max(g0_sq, 0.0));
  const double gw_norm = std::sqrt(std::max(quadratic_form(G, w, w), 0.0));
  const double lambda = gw_norm > 0 ? c / gw_norm : 0.0;
  const double divide = options.rescale == 0 ? 1.0 : options.rescale == 1 ? 1 + options.calpha * options.calpha : 1 + options.calpha;
  std::vector<double> coef(K);
  for (std::size_t i = 0; i < K; ++i) coef[i] = (1.0 / static_cast<double>(K) + lambda * w[i]) / divide;
  return coef;
}

class CAGrad {
 public:
  explicit CAGrad(CAGradOptions options = {}) : options_(options) {
    if (!(options.calpha >= 0) || !std::isfinite(options.calpha)) throw ValueError("[CAGrad] calpha must be finite and >= 0");
    if (options.rescale < 0 || options.rescale > 2)
      throw ValueError("[CAGrad] rescale must be 0, 1 or 2, got " + std::to_string(options.rescale));
  }

  template <SharedElement T, Device D>
  WeightingReport backward(const TaskLossesOn<D>& l, const nn::ParameterList<T, D>& shared) {
    return surgery_backward(l, shared, "CAGrad", gradients_,
                            [&](const GramMatrix& G, const std::vector<std::size_t>&) { return cagrad_coefficients(G, options_); });
  }

 private:
  CAGradOptions options_;
  SharedGradients gradients_;
};

}  // namespace cerberus::mtl
