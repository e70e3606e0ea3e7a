// gradcheck for every elementwise functor (fused backward derived from each functor's `d<I>`),
// with broadcast operands, non-contiguous inputs and a tensor used twice; and for every view.
#include <string>
#include <vector>

#include "cerberus/testing/gradcheck.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"

using namespace cerberus;
using cerberus::testing::gradcheck;
using Inputs = std::vector<Tensor<double>>;

namespace {

Tensor<double> rand(const Shape& shape, double lo, double hi, std::uint64_t seed) {
  Generator g(seed);
  return uniform<double>(shape, lo, hi, g);
}

void expect_gradients_match(const char* what, const cerberus::testing::DifferentiableFn& fn, const Inputs& inputs,
                            const cerberus::testing::GradcheckOptions& options = {}) {
  const auto r = gradcheck(fn, inputs, options);
  INFO(what << ": " << r.message);
  CHECK(r.ok);
}

}  // namespace

TEST_CASE("unary functors: fused gradients match finite differences", "[autograd][unary]") {
  struct Case {
    const char* name;
    cerberus::testing::DifferentiableFn fn;
    double lo, hi;
  };
  const std::vector<Case> cases = {
      {"neg", [](const Inputs& x) { return Tensor<double>(-x[0]); }, -2, 2},
      {"exp", [](const Inputs& x) { return Tensor<double>(exp(x[0])); }, -2, 2},
      {"log", [](const Inputs& x) { return Tensor<double>(log(x[0])); }, 0.2, 3},
      {"sqrt", [](const Inputs& x) { return Tensor<double>(sqrt(x[0])); }, 0.2, 3},
      {"rsqrt", [](const Inputs& x) { return Tensor<double>(rsqrt(x[0])); }, 0.2, 3},
      {"abs", [](const Inputs& x) { return Tensor<double>(abs(x[0])); }, 0.1, 2},
      {"abs (negative)", [](const Inputs& x) { return Tensor<double>(abs(x[0])); }, -2, -0.1},
      {"square", [](const Inputs& x) { return Tensor<double>(square(x[0])); }, -2, 2},
      {"tanh", [](const Inputs& x) { return Tensor<double>(tanh(x[0])); }, -2, 2},
      {"sigmoid", [](const Inputs& x) { return Tensor<double>(sigmoid(x[0])); }, -4, 4},
      {"relu", [](const Inputs& x) { return Tensor<double>(relu(x[0])); }, 0.1, 2},
      {"relu (negative side)", [](const Inputs& x) { return Tensor<double>(relu(x[0])); }, -2, -0.1},
      {"gelu_tanh", [](const Inputs& x) { return Tensor<double>(gelu_tanh(x[0])); }, -3, 3},
      {"gelu_erf", [](const Inputs& x) { return Tensor<double>(gelu_erf(x[0])); }, -3, 3},
      {"silu", [](const Inputs& x) { return Tensor<double>(silu(x[0])); }, -4, 4},
      {"pow(x, 2.5)", [](const Inputs& x) { return Tensor<double>(pow(x[0], 2.5)); }, 0.2, 2},
      {"pow(3, x)", [](const Inputs& x) { return Tensor<double>(pow(3.0, x[0])); }, -1, 1},
      {"clamp", [](const Inputs& x) { return Tensor<double>(clamp(x[0], -0.5, 0.5)); }, -1, 1},
      {"a deep chain", [](const Inputs& x) { return Tensor<double>(log(1.0 + exp(tanh(x[0]) * 2.0)) / (x[0] * x[0] + 1.0)); }, -2, 2},
  };
  for (const auto& c : cases) {
    const auto x = rand({3, 7}, c.lo, c.hi, 11);
    // Keep clamp's inputs away from its kinks, where finite differences are meaningless.
    expect_gradients_match(c.name, c.fn, {x});
    expect_gradients_match(c.name, c.fn, {rand({7, 3}, c.lo, c.hi, 12).t()});  // non-contiguous input
  }
}

TEST_CASE("binary and ternary functors: gradients reach every operand, reduced over broadcasts", "[autograd][binary]") {
  struct Case {
    const char* name;
    cerberus::testing::DifferentiableFn fn;
    double lo, hi;
  };
  const std::vector<Case> cases = {
      {"add", [](const Inputs& x) { return Tensor<double>(x[0] + x[1]); }, -2, 2},
      {"sub", [](const Inputs& x) { return Tensor<double>(x[0] - x[1]); }, -2, 2},
      {"mul", [](const Inputs& x) { return Tensor<double>(x[0] * x[1]); }, -2, 2},
      {"div", [](const Inputs& x) { return Tensor<double>(x[0] / x[1]); }, 0.5, 2},
      {"pow", [](const Inputs& x) { return Tensor<double>(pow(x[0], x[1])); }, 0.5, 2},
      {"maximum", [](const Inputs& x) { return Tensor<double>(maximum(x[0], x[1])); }, -2, 2},
      {"minimum", [](const Inputs& x) { return Tensor<double>(minimum(x[0], x[1])); }, -2, 2},
      {"where(a > b, a * b, a - b)", [](const Inputs& x) { return Tensor<double>(where(x[0] > x[1], x[0] * x[1], x[0] - x[1])); }, -2, 2},
      {"clamp with tensor bounds", [](const Inputs& x) { return Tensor<double>(clamp(x[0] * 3.0, x[1] - 1.0, x[1] + 1.0)); }, -1, 1},
      {"gelu(a * b + b)", [](const Inputs& x) { return Tensor<double>(gelu(x[0] * x[1] + x[1])); }, -2, 2},
  };
  struct Shapes {
    Shape a, b;
  };
  const std::vector<Shapes> shapes = {{{4, 5}, {4, 5}}, {{4, 5}, {5}}, {{4, 1}, {1, 5}}, {{2, 3, 4}, {3, 1}}, {{5}, {}}};
  for (const auto& c : cases) {
    for (const auto& s : shapes) {
      INFO(c.name << ": " << s.a.to_string() << " with " << s.b.to_string());
      expect_gradients_match(c.name, c.fn, {rand(s.a, c.lo, c.hi, 21), rand(s.b, c.lo, c.hi, 22)});
    }
    // Non-contiguous operands: a transposed matrix and a strided slice.
    expect_gradients_match(c.name, c.fn, {rand({5, 4}, c.lo, c.hi, 23).t(), rand({4, 10}, c.lo, c.hi, 24).slice(1, 0, 10, 2)});
  }
}

TEST_CASE("a tensor used several times in one graph accumulates every path", "[autograd][accumulate]") {
  expect_gradients_match("x * x + exp(x) * x", [](const Inputs& x) { return Tensor<double>(x[0] * x[0] + exp(x[0]) * x[0]); },
                         {rand({6}, -1, 1, 31)});
  // Used in two separate expressions, then combined.
  expect_gradients_match("two nodes sharing an input",
                         [](const Inputs& x) {
                           const Tensor<double> a = tanh(x[0]) * x[1];
                           const Tensor<double> b = x[0] * 3.0 - x[1];
                           return Tensor<double>(a * b + a);
                         },
                         {rand({3, 4}, -1, 1, 32), rand({4}, -1, 1, 33)});
}

TEST_CASE("views are differentiable", "[autograd][views]") {
  const auto x = rand({2, 3, 4}, -1, 1, 41);
  expect_gradients_match("reshape", [](const Inputs& v) { return Tensor<double>(v[0].reshape({6, 4}) * 2.0); }, {x});
  expect_gradients_match("reshape of a transposed tensor (copies)",
                         [](const Inputs& v) { return Tensor<double>(exp(v[0].transpose(0, 2).reshape({-1}))); }, {x});
  expect_gradients_match("permute", [](const Inputs& v) { return Tensor<double>(v[0].permute({2, 0, 1}) * 1.5); }, {x});
  expect_gradients_match("t", [](const Inputs& v) { return Tensor<double>(v[0].select(0, 1).t() + 0.0); }, {x});
  expect_gradients_match("slice with step",
                         [](const Inputs& v) { return Tensor<double>(square(v[0].slice(2, 1, 4, 2))); }, {x});
  expect_gradients_match("select", [](const Inputs& v) { return Tensor<double>(v[0].select(1, -1) * 3.0); }, {x});
  expect_gradients_match("unsqueeze then squeeze",
                         [](const Inputs& v) { return Tensor<double>(v[0].unsqueeze(1).squeeze(1) * v[0]); }, {x});
  expect_gradients_match("expand sums the gradient back",
                         [](const Inputs& v) { return Tensor<double>(v[0].expand({3, 5, 4}) * 2.0); }, {rand({5, 1}, -1, 1, 42)});
  expect_gradients_match("clone", [](const Inputs& v) { return Tensor<double>(v[0].clone() * v[0]); }, {x});
  // Through float, differences need a step far above float's resolution.
  expect_gradients_match("dtype round trip through float", [](const Inputs& v) { return v[0].to<float>().to<double>(); },
                         {rand({5}, -1, 1, 43)}, {.eps = 1e-2, .atol = 1e-4, .rtol = 1e-4});
}

TEST_CASE("gradcheck reports a wrong gradient with its element", "[autograd][gradcheck]") {
  // An op whose recorded backward is off by a factor 2 on element 2.
  const cerberus::testing::DifferentiableFn wrong = [](const Inputs& v) {
    Tensor<double> out = v[0].detach().clone();
    if (v[0].requires_grad() && is_grad_enabled())
      autograd::record<double, cpu>(out, "wrong", {v[0]}, [](const Tensor<double>& g) {
        Tensor<double> bad = g.clone();
        bad(2) *= 2.0;
        return std::vector<Tensor<double>>{bad};
      });
    return out;
  };
  const auto r = gradcheck(wrong, {from_vector<double>({1, 2, 3, 4})});
  CHECK_FALSE(r.ok);
  CHECK(r.input == 0);
  CHECK(r.coord == std::vector<Index>{2});
  CHECK(r.message.find("[2]") != std::string::npos);
}
