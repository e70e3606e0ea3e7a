// A tiny multi-task problem with gradients written out by hand, for the weighting tests.
//
// Shared parameter theta [D], one head h_i [D] per task, constants a_i [D]:
//   L_i = sum_d 0.5 (theta_d - a_id)^2 + h_id theta_d
//   dL_i/dtheta = theta - a_i + h_i          dL_i/dh_i = theta
#pragma once

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "cerberus/mtl/weighting.hpp"
#include "cerberus/ops/reduce.hpp"
#include "cerberus/tensor/factories.hpp"
#include "support/catch.hpp"

namespace weighting_test {

using cerberus::Shape;
using cerberus::Tensor;
using Vec = std::vector<double>;

inline Tensor<float> parameter(const std::vector<float>& v) {
  Tensor<float> t = cerberus::from_vector<float>(v);
  t.set_requires_grad(true);
  return t;
}

struct Problem {
  Tensor<float> theta;
  std::vector<Tensor<float>> heads;
  std::vector<std::vector<float>> a;

  Problem(std::vector<float> theta0, std::vector<std::vector<float>> heads0, std::vector<std::vector<float>> targets)
      : theta(parameter(theta0)), a(std::move(targets)) {
    for (const auto& h : heads0) heads.push_back(parameter(h));
  }
  std::size_t tasks() const { return a.size(); }

  Tensor<float> loss(std::size_t i) const {
    const Tensor<float> ai = cerberus::from_vector<float>(a[i]);
    return cerberus::sum((theta - ai) * (theta - ai) * 0.5f + heads[i] * theta);
  }
  // The losses, with the tasks where present[i] is false absent.
  cerberus::mtl::TaskLosses losses(std::vector<bool> present = {}) const {
    cerberus::mtl::TaskLosses l;
    for (std::size_t i = 0; i < tasks(); ++i) {
      l.names.push_back("task" + std::to_string(i));
      if (present.empty() || present[i]) l.losses.emplace_back(loss(i));
      else l.losses.emplace_back(std::nullopt);
    }
    return l;
  }
  cerberus::nn::ParameterList<float> shared() const { return {{"theta", theta}}; }

  // Hand-written values and gradients, in double from the float parameters.
  double loss_value(std::size_t i) const {
    const auto t = theta.to_vector(), h = heads[i].to_vector();
    double s = 0;
    for (std::size_t d = 0; d < t.size(); ++d) s += 0.5 * (t[d] - a[i][d]) * (t[d] - a[i][d]) + h[d] * t[d];
    return s;
  }
  Vec grad_theta(std::size_t i) const {
    const auto t = theta.to_vector(), h = heads[i].to_vector();
    Vec g(t.size());
    for (std::size_t d = 0; d < t.size(); ++d) g[d] = t[d] - a[i][d] + h[d];
    return g;
  }
  Vec grad_head(std::size_t) const {
    const auto t = theta.to_vector();
    return Vec(t.begin(), t.end());
  }
  void clear_grads() const {
    theta.clear_grad();
    for (const auto& h : heads) h.clear_grad();
  }
};

inline Vec as_vec(const Tensor<float>& t) {
  const auto v = t.to_vector();
  return Vec(v.begin(), v.end());
}
inline double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}
inline double norm(const Vec& a) { return std::sqrt(dot(a, a)); }
inline Vec axpy(double s, const Vec& x, const Vec& y) {  // s x + y
  Vec out(y);
  for (std::size_t i = 0; i < x.size(); ++i) out[i] += s * x[i];
  return out;
}
inline double cosine(const Vec& a, const Vec& b) { return dot(a, b) / (norm(a) * norm(b)); }

// Element-wise closeness with a relative tolerance suited to float gradients.
inline void check_close(const Vec& got, const Vec& want, double tol = 1e-5) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", want " << want[i]);
    CHECK(std::abs(got[i] - want[i]) <= tol * (1 + std::abs(want[i])));
  }
}

}  // namespace weighting_test
