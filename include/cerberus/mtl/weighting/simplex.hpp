// Small solvers over the probability simplex {x : x_i >= 0, sum_i x_i = 1}, in double, working
// on a K x K Gram matrix G (G_ij = <g_i, g_j>), never on the long gradients themselves. Used by
// MGDA (min-norm point of the convex hull of the task gradients) and CAGrad (its dual).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <vector>

namespace cerberus::mtl {

using GramMatrix = std::vector<std::vector<double>>;

// x^T G y.
inline double quadratic_form(const GramMatrix& G, const std::vector<double>& x, const std::vector<double>& y) {
  double s = 0;
  for (std::size_t i = 0; i < x.size(); ++i)
    for (std::size_t j = 0; j < y.size(); ++j) s += x[i] * G[i][j] * y[j];
  return s;
}

// The Euclidean projection of y onto the simplex (sort and threshold: Held, Wolfe and Crowder
// 1974; Duchi et al. 2008).
inline std::vector<double> project_to_simplex(const std::vector<double>& y) {
  std::vector<double> u = y;
  std::sort(u.begin(), u.end(), std::greater<>());
  double cumulative = 0, theta = 0;
  for (std::size_t k = 0; k < u.size(); ++k) {
    cumulative += u[k];
    const double t = (cumulative - 1.0) / static_cast<double>(k + 1);
    if (u[k] - t > 0) theta = t;
  }
  std::vector<double> x(y.size());
  for (std::size_t i = 0; i < y.size(); ++i) x[i] = std::max(y[i] - theta, 0.0);
  return x;
}

// The weight gamma in [0, 1] minimising ||gamma a + (1 - gamma) b||^2 given <a,a>, <a,b>, <b,b>.
inline double min_norm_of_two(double aa, double ab, double bb) {
  const double denom = aa - 2 * ab + bb;  // ||a - b||^2
  if (!(denom > 0)) return aa <= bb ? 1.0 : 0.0;
  return std::clamp((bb - ab) / denom, 0.0, 1.0);
}

struct MinNormOptions {
  int max_iterations = 1000;
  double tolerance = 1e-10;  // stop when the Frank-Wolfe gap <= tolerance * (x^T G x + tiny)
};

// argmin over the simplex of x^T G x: the coefficients of the min-norm point of the convex hull of
// the gradients. Starts from the best pair (exact for K = 2, as in Sener and Koltun's Algorithm 2),
// then runs Frank-Wolfe with away steps and exact line search (linear convergence on the simplex,
// Lacoste-Julien and Jaggi 2015).
inline std::vector<double> min_norm_coefficients(const GramMatrix& G, const MinNormOptions& options = {}) {
  const std::size_t K = G.size();
  if (K == 0) return {};
  std::vector<double> x(K, 0.0);
  if (K == 1) {
    x[0] = 1;
    return x;
  }
  double best = std::numeric_limits<double>::infinity();
  for (std::size_t i = 0; i < K; ++i)
    for (std::size_t j = i + 1; j < K; ++j) {
      const double gamma = min_norm_of_two(G[i][i], G[i][j], G[j][j]);
      const double cost = gamma * gamma * G[i][i] + 2 * gamma * (1 - gamma) * G[i][j] + (1 - gamma) * (1 - gamma) * G[j][j];
      if (cost < best) {
        best = cost;
        std::fill(x.begin(), x.end(), 0.0);
        x[i] = gamma;
        x[j] = 1 - gamma;
      }
    }
  if (K == 2) return x;
  std::vector<double> Gx(K), d(K);
  for (int it = 0; it < options.max_iterations; ++it) {
    for (std::size_t i = 0; i < K; ++i) {
      Gx[i] = 0;
      for (std::size_t j = 0; j < K; ++j) Gx[i] += G[i][j] * x[j];
    }
    double xGx = 0;
    for (std::size_t i = 0; i < K; ++i) xGx += x[i] * Gx[i];
    std::size_t toward = 0, away = K;
    for (std::size_t i = 1; i < K; ++i)
      if (Gx[i] < Gx[toward]) toward = i;
    for (std::size_t i = 0; i < K; ++i)
      if (x[i] > 0 && (away == K || Gx[i] > Gx[away])) away = i;
    const double fw_gap = xGx - Gx[toward], away_gap = Gx[away] - xGx;
    if (fw_gap <= options.tolerance * (std::abs(xGx) + 1e-300)) break;
    double gamma_max = 1;
    if (fw_gap >= away_gap) {  // move toward vertex `toward`
      for (std::size_t i = 0; i < K; ++i) d[i] = -x[i];
      d[toward] += 1;
    } else {                   // move away from vertex `away`
      for (std::size_t i = 0; i < K; ++i) d[i] = x[i];
      d[away] -= 1;
      gamma_max = x[away] < 1 ? x[away] / (1 - x[away]) : std::numeric_limits<double>::infinity();
    }
    // f(x + gamma d) = xGx + 2 gamma d^T G x + gamma^2 d^T G d
    double dGx = 0;
    for (std::size_t i = 0; i < K; ++i) dGx += d[i] * Gx[i];
    const double dGd = quadratic_form(G, d, d);
    if (!(dGd > 0) || !(dGx < 0)) break;
    const double gamma = std::min(-dGx / dGd, gamma_max);
    for (std::size_t i = 0; i < K; ++i) x[i] = std::max(x[i] + gamma * d[i], 0.0);
    double total = 0;
    for (double v : x) total += v;
    for (double& v : x) v /= total;
  }
  return x;
}

struct SimplexSolverOptions {
  int max_iterations = 5000;
  double tolerance = 1e-13;  // stop when an accepted step moves x by less than this (max norm)
};

// argmin over the simplex of f (convex, smooth) with gradient grad_f: projected gradient descent
// from the uniform point, step found by backtracking on the projection arc (Armijo sufficient
// decrease), grown by 2 after each accepted step.
template <class F, class Grad>
std::vector<double> minimize_on_simplex(std::size_t K, F&& f, Grad&& grad_f, const SimplexSolverOptions& options = {}) {
  std::vector<double> x(K, 1.0 / static_cast<double>(K));
  if (K <= 1) return x;
  double fx = f(x), step = 1.0;
  for (int it = 0; it < options.max_iterations; ++it) {
    const std::vector<double> g = grad_f(x);
    bool moved = false;
    for (int tries = 0; tries < 60; ++tries) {
      std::vector<double> y(K);
      for (std::size_t i = 0; i < K; ++i) y[i] = x[i] - step * g[i];
      const std::vector<double> z = project_to_simplex(y);
      double lin = 0, sq = 0, change = 0;
      for (std::size_t i = 0; i < K; ++i) {
        lin += g[i] * (z[i] - x[i]);
        sq += (z[i] - x[i]) * (z[i] - x[i]);
        change = std::max(change, std::abs(z[i] - x[i]));
      }
      if (change < options.tolerance) return x;
      const double fz = f(z);
      if (fz <= fx + lin + sq / (2 * step)) {
        x = z;
        fx = fz;
        step *= 2;
        moved = true;
        break;
      }
      step /= 2;
    }
    if (!moved) break;
  }
  return x;
}

}  // namespace cerberus::mtl
