// gradcheck of the reductions and the softmax family over every axis choice, keepdim on and off,
// non-contiguous inputs, ties in max/min, and fused expressions as inputs.
#include <limits>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "cerberus/testing/gradcheck.hpp"
#include "support/catch.hpp"

using namespace cerberus;
using Inputs = std::vector<Tensor<double>>;

namespace {
Tensor<double> rand(const Shape& s, std::uint64_t seed) {
  Generator g(seed);
  return uniform<double>(s, -2, 2, g);
}
void expect_ok(const char* what, const cerberus::testing::DifferentiableFn& fn, const Inputs& in) {
  const auto r = cerberus::testing::gradcheck(fn, in);
  INFO(what << ": " << r.message);
  CHECK(r.ok);
}
}  // namespace

TEST_CASE("reductions are differentiable over any axes", "[ops][reduce][grad]") {
  const auto x = rand({3, 4, 5}, 1);
  const auto xt = rand({5, 4, 3}, 2).permute({2, 1, 0});  // non-contiguous
  for (bool keep : {false, true}) {
    for (const auto& axes : std::vector<std::vector<int>>{{}, {0}, {-1}, {0, 2}, {1}}) {
      INFO("axes of size " << axes.size() << " keepdim " << keep);
      expect_ok("sum", [&](const Inputs& v) { return sum(v[0], Axes(axes), keep); }, {x});
      expect_ok("mean", [&](const Inputs& v) { return mean(v[0], Axes(axes), keep); }, {xt});
      expect_ok("max", [&](const Inputs& v) { return max(v[0], Axes(axes), keep); }, {x});
      expect_ok("min", [&](const Inputs& v) { return min(v[0], Axes(axes), keep); }, {xt});
    }
    expect_ok("sum over all axes", [&](const Inputs& v) { return sum(v[0], Axes::all(), keep); }, {xt});
    expect_ok("max over all axes", [&](const Inputs& v) { return max(v[0], Axes::all(), keep); }, {x});
  }
  expect_ok("sum of a fused expression", [](const Inputs& v) { return sum(exp(v[0]) * v[1], 1); }, {rand({4, 6}, 3), rand({6}, 4)});
  expect_ok("mean of squares (a loss)", [](const Inputs& v) { return mean(square(v[0] - 1.0)); }, {rand({7, 3}, 5)});
}

TEST_CASE("tied maxima share the gradient", "[ops][reduce][grad]") {
  auto x = from_vector<double>({1, 3, 3, 2});
  x.set_requires_grad();
  max(x).backward();
  CHECK(x.grad().to_vector() == std::vector<double>{0, 0.5, 0.5, 0});
}

TEST_CASE("softmax, log_softmax and logsumexp are differentiable along any axis", "[ops][softmax][grad]") {
  const auto x = rand({3, 4, 5}, 6);
  for (int axis : {0, 1, -1}) {
    INFO("axis " << axis);
    expect_ok("softmax", [&](const Inputs& v) { return softmax(v[0], axis); }, {x});
    expect_ok("log_softmax", [&](const Inputs& v) { return log_softmax(v[0], axis); }, {x});
    expect_ok("logsumexp", [&](const Inputs& v) { return logsumexp(v[0], axis); }, {x});
    expect_ok("logsumexp keepdim", [&](const Inputs& v) { return logsumexp(v[0], axis, true); }, {x.transpose(0, 2)});
  }
  // Around 1e4 the gradients stay finite and right.
  expect_ok("softmax at 1e4", [](const Inputs& v) { return softmax(v[0] + 1e4, -1); }, {rand({2, 6}, 7)});
}

TEST_CASE("logsumexp of a fully masked row has a zero gradient, not NaN", "[ops][softmax][grad]") {
  const double inf = std::numeric_limits<double>::infinity();
  auto x = from_vector<double>({-inf, -inf, 1.0, 2.0}, {2, 2});
  x.set_requires_grad();
  sum(logsumexp(x, -1) * from_vector<double>({0.0, 1.0})).backward();
  const auto g = x.grad().to_vector();
  CHECK(g[0] == 0.0);
  CHECK(g[1] == 0.0);
  CHECK(g[2] + g[3] == Approx(1.0));
}
