// layer_norm and rms_norm (ops/norm.hpp): forward against a naive double reference for rows of
// C = 1, 7, 33, 1000 (crossing every SIMD width), gradcheck in double for x, weight and bias,
// float and bf16 gradients against the double op, thread-count independence of dweight, large
// offsets, non-contiguous inputs and shape errors.
#include <cmath>
#include <string>
#include <vector>

#include "cerberus/ops/norm.hpp"
#include "cerberus/tensor/factories.hpp"
#include "cerberus/testing/gradcheck.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"
#include "support/threads.hpp"

using namespace cerberus;
using cerberus::testing::gradcheck;
using cerberus::testing_support::compare;
using cerberus::testing_support::random_uniform;
using cerberus::testing_support::values;
using Inputs = std::vector<Tensor<double>>;

namespace {


// The textbook formulas, in double, over x seen as [rows, n].
std::vector<double> reference(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b, Index n,
                              double eps, bool center) {
  std::vector<double> y(x.size());
  const Index rows = static_cast<Index>(x.size()) / n;
  for (Index r = 0; r < rows; ++r) {
    const double* xr = x.data() + r * n;
    double mean = 0, var = 0;
    if (center) {
      for (Index i = 0; i < n; ++i) mean += xr[i];
      mean /= static_cast<double>(n);
    }
    for (Index i = 0; i < n; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= static_cast<double>(n);
    for (Index i = 0; i < n; ++i) {
      double v = (xr[i] - mean) / std::sqrt(var + eps);
      if (!w.empty()) v *= w[static_cast<std::size_t>(i)];
      if (!b.empty()) v += b[static_cast<std::size_t>(i)];
      y[static_cast<std::size_t>(r * n + i)] = v;
    }
  }
  return y;
}

template <class T>
std::vector<double> maybe_values(const Tensor<T>& t) {
  return t.defined() ? values(t) : std::vector<double>{};
}

void expect_gradients_match(const std::string& what, const cerberus::testing::DifferentiableFn& fn, const Inputs& inputs) {
  const auto r = gradcheck(fn, inputs);
  INFO(what << ": " << r.message);
  CHECK(r.ok);
}

}  // namespace

TEMPLATE_TEST_CASE("layer_norm and rms_norm forward match a double reference", "[norm]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  for (const Index n : {1, 7, 16, 33, 1000}) {
    for (const Index rows : {1, 5, 70}) {
      const auto x = random_uniform<T>({rows, n}, -2, 3, 10 + static_cast<std::uint64_t>(n));
      const auto w = random_uniform<T>({n}, 0.5, 1.5, 11);
      const auto b = random_uniform<T>({n}, -1, 1, 12);
      INFO("rows " << rows << ", C " << n);
      for (const bool use_w : {false, true})
        for (const bool use_b : {false, true}) {
          const Tensor<T> wt = use_w ? w : Tensor<T>(), bt = use_b ? b : Tensor<T>();
          const auto y = layer_norm(x, wt, bt, 1e-5);
          CHECK(y.shape() == x.shape());
          const auto c = compare(values(y), reference(values(x), maybe_values(wt), maybe_values(bt), n, 1e-5, true), tol, tol);
          INFO("layer_norm weight " << use_w << " bias " << use_b << ": " << c.describe());
          CHECK(c.ok());
        }
      for (const bool use_w : {false, true}) {
        const Tensor<T> wt = use_w ? w : Tensor<T>();
        const auto y = rms_norm(x, wt, 1e-6);
        const auto c = compare(values(y), reference(values(x), maybe_values(wt), {}, n, 1e-6, false), tol, tol);
        INFO("rms_norm weight " << use_w << ": " << c.describe());
        CHECK(c.ok());
      }
    }
  }
}

TEST_CASE("layer_norm: rank-3 input, non-contiguous input, large offsets, bf16", "[norm]") {
  SECTION("[B, T, C] normalises the last axis") {
    const auto x = random_uniform<float>({2, 3, 33}, -1, 1, 21);
    const auto w = random_uniform<float>({33}, 0.5, 1.5, 22);
    const auto y = layer_norm(x, w, Tensor<float>());
    CHECK(y.shape() == x.shape());
    CHECK(compare(values(y), reference(values(x), values(w), {}, 33, 1e-5, true), 2e-5, 2e-5).ok());
  }
  SECTION("a transposed input is read through its strides") {
    const auto xt = random_uniform<double>({40, 6}, -1, 1, 23).t();  // [6, 40], not contiguous
    const auto y = layer_norm(xt);
    CHECK(compare(values(y), reference(values(xt), {}, {}, 40, 1e-5, true), 1e-12, 1e-12).ok());
  }
  SECTION("rows around 1e4 with unit spread keep their variance (two-sweep statistics)") {
    const auto x = random_uniform<float>({8, 1000}, 1e4 - 1, 1e4 + 1, 24);
    const auto y = layer_norm(x);
    // x - mean is rounded to float at 1e4 (half an ulp = 2^-11) and scaled by rstd ~ 1.7.
    const auto c = compare(values(y), reference(values(x), {}, {}, 1000, 1e-5, true), 1e-4, 1.5e-3);
    INFO(c.describe());
    CHECK(c.ok());
  }
  SECTION("bf16 computes in float and rounds once") {
    const auto xf = random_uniform<float>({9, 100}, -2, 2, 25);
    const auto wf = random_uniform<float>({100}, 0.5, 1.5, 26);
    const auto bf = random_uniform<float>({100}, -1, 1, 27);
    const auto x = xf.to<bfloat16>(), w = wf.to<bfloat16>(), b = bf.to<bfloat16>();
    const auto y = layer_norm(x, w, b);
    // The reference sees the same bf16-rounded inputs; only the output rounding differs.
    const auto c = compare(values(y), reference(values(x), values(w), values(b), 100, 1e-5, true), 8e-3, 8e-3);
    INFO(c.describe());
    CHECK(c.ok());
    const auto r = rms_norm(x, w);
    CHECK(compare(values(r), reference(values(x), values(w), {}, 100, 1e-6, false), 8e-3, 8e-3).ok());
  }
  SECTION("empty inputs give empty outputs") {
    CHECK(layer_norm(zeros<float>({0, 8})).numel() == 0);
    CHECK(rms_norm(zeros<float>({3, 0})).numel() == 0);
  }
}

TEST_CASE("layer_norm and rms_norm: gradients match finite differences in double", "[norm][grad]") {
  for (const Index n : {1, 7, 33}) {
    const auto x = random_uniform<double>({4, n}, -2, 2, 31);
    const auto w = random_uniform<double>({n}, 0.5, 1.5, 32);
    const auto b = random_uniform<double>({n}, -1, 1, 33);
    const std::string c = " (C = " + std::to_string(n) + ")";
    expect_gradients_match("layer_norm x, weight, bias" + c,
                           [](const Inputs& v) { return layer_norm(v[0], v[1], v[2], 1e-5); }, {x, w, b});
    expect_gradients_match("layer_norm without weight and bias" + c, [](const Inputs& v) { return layer_norm(v[0]); }, {x});
    expect_gradients_match("layer_norm weight only" + c, [](const Inputs& v) { return layer_norm(v[0], v[1], Tensor<double>()); },
                           {x, w});
    expect_gradients_match("rms_norm x, weight" + c, [](const Inputs& v) { return rms_norm(v[0], v[1], 1e-6); }, {x, w});
    expect_gradients_match("rms_norm without weight" + c, [](const Inputs& v) { return rms_norm(v[0]); }, {x});
  }
  expect_gradients_match("layer_norm of a [2, 3, 5] transposed input",
                         [](const Inputs& v) { return layer_norm(v[0].transpose(0, 2), v[1], v[2]); },
                         {random_uniform<double>({5, 3, 2}, -1, 1, 34), random_uniform<double>({5}, 0.5, 1.5, 35), random_uniform<double>({5}, -1, 1, 36)});
  expect_gradients_match("layer_norm feeding an elementwise chain",
                         [](const Inputs& v) { return Tensor<double>(tanh(layer_norm(v[0], v[1], v[2])) * v[0]); },
                         {random_uniform<double>({3, 9}, -1, 1, 37), random_uniform<double>({9}, 0.5, 1.5, 38), random_uniform<double>({9}, -1, 1, 39)});
}

TEST_CASE("float and bf16 gradients agree with the double op; dweight does not depend on the thread count", "[norm][grad]") {
  const Index rows = 300, n = 1000;
  const auto xd = random_uniform<double>({rows, n}, -2, 2, 41), wd = random_uniform<double>({n}, 0.5, 1.5, 42), bd = random_uniform<double>({n}, -1, 1, 43);
  const auto gd = random_uniform<double>({rows, n}, -1, 1, 44);
  auto run = [&](auto tag, bool center) {
    using T = decltype(tag);
    Tensor<T> x = xd.to<T>(), w = wd.to<T>(), b = bd.to<T>();
    x.set_requires_grad();
    w.set_requires_grad();
    b.set_requires_grad();
    const auto y = center ? layer_norm(x, w, b) : rms_norm(x, w);
    y.backward(gd.to<T>());
    return std::vector<std::vector<double>>{values(x.grad()), values(w.grad()), center ? values(b.grad()) : std::vector<double>{}};
  };
  for (const bool center : {true, false}) {
    INFO((center ? "layer_norm" : "rms_norm"));
    const auto want = run(double{}, center);
    const auto got = run(float{}, center);
    const char* names[] = {"dx", "dweight", "dbias"};
    for (int k = 0; k < (center ? 3 : 2); ++k) {
      // dweight and dbias sum 300 rows: their absolute error grows with the row count.
      const double tol = k == 0 ? 2e-5 : 2e-4;
      const auto c = compare(got[static_cast<std::size_t>(k)], want[static_cast<std::size_t>(k)], tol, tol);
      INFO("float " << names[k] << ": " << c.describe());
      CHECK(c.ok());
    }
    const auto half = run(bfloat16{}, center);
    const auto c = compare(half[0], want[0], 5e-2, 5e-2);
    INFO("bf16 dx: " << c.describe());
    CHECK(c.ok());

    const auto run_float = [&] { return run(float{}, center); };
    const auto one = testing_support::with_threads(1, run_float), two = testing_support::with_threads(2, run_float);
    CHECK(one == two);  // bitwise
  }
}

TEST_CASE("norms name the op and the shapes in their errors", "[norm][errors]") {
  const auto x = zeros<float>({4, 8});
  try {
    (void)layer_norm(x, zeros<float>({7}), Tensor<float>());
    FAIL("no exception");
  } catch (const ShapeError& e) {
    const std::string m = e.what();
    CHECK(m.find("[layer_norm]") != std::string::npos);
    CHECK(m.find("[7]") != std::string::npos);
    CHECK(m.find("[4, 8]") != std::string::npos);
  }
  CHECK_THROWS_AS(layer_norm(x, Tensor<float>(), zeros<float>({8, 1})), ShapeError);
  CHECK_THROWS_AS(rms_norm(x, zeros<float>({2, 8})), ShapeError);
  CHECK_THROWS_AS(rms_norm(zeros<float>({})), ShapeError);
  CHECK_THROWS_AS(layer_norm(x, Tensor<float>(), Tensor<float>(), -1.0), ValueError);
}
