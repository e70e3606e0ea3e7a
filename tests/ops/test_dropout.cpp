// Dropout (ops/dropout.hpp): the dropped fraction, inverted scaling, reproducibility from the
// seed, independence of the thread count and of the input's layout, eval mode, and a gradient
// equal to the mask times the scale.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cerberus/ops/dropout.hpp"
#include "cerberus/testing/gradcheck.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"
#include "support/threads.hpp"

using namespace cerberus;
using cerberus::testing_support::values;

namespace {

template <class T = float>
Tensor<T> rand(const Shape& shape, std::uint64_t seed) {
  Generator g(seed);
  return uniform<T>(shape, 0.5, 2.0, g);  // no zeros: a zero output means a dropped element
}

}  // namespace

TEMPLATE_TEST_CASE("dropout drops a fraction p and scales the rest by 1 / (1 - p)", "[dropout]", float, double, bfloat16) {
  using T = TestType;
  const Index n = 100000;
  const Tensor<T> x = rand<T>({100, 1000}, 1);
  for (const double p : {0.1, 0.5, 0.9}) {
    Generator g(42);
    const Tensor<T> y = dropout(x, p, true, g);
    CHECK(y.shape() == x.shape());
    const auto xs = values(x), ys = values(y);
    const auto scale = static_cast<compute_t<T>>(1.0 / (1.0 - p));
    Index dropped = 0, wrong = 0;
    for (std::size_t i = 0; i < ys.size(); ++i) {
      if (ys[i] == 0.0) ++dropped;
      else if (ys[i] != static_cast<double>(static_cast<compute_t<T>>(static_cast<T>(static_cast<compute_t<T>>(xs[i]) * scale)))) ++wrong;
    }
    INFO("p = " << p);
    // Binomial standard deviation sqrt(p (1 - p) / n) <= 0.0016: 0.01 is more than 6 of them.
    CHECK(std::abs(static_cast<double>(dropped) / static_cast<double>(n) - p) < 0.01);
    CHECK(wrong == 0);
    CHECK(g.offset() == static_cast<std::uint64_t>(n / 4));  // one Philox block per 4 elements
  }
}

TEST_CASE("dropout is reproducible from the seed and fresh on every call", "[dropout]") {
  const auto x = rand({257, 129}, 1);
  Generator a(7), b(7), c(8);
  const auto ya = dropout(x, 0.3, true, a).to_vector();
  CHECK(ya == dropout(x, 0.3, true, b).to_vector());
  CHECK(ya != dropout(x, 0.3, true, c).to_vector());
  // The next call continues the stream: a different mask.
  CHECK(dropout(x, 0.3, true, a).to_vector() != ya);
  // Restoring (seed, offset) replays it.
  Generator d(1);
  d.set_state(7, 0);
  CHECK(dropout(x, 0.3, true, d).to_vector() == ya);
}

TEST_CASE("dropout draws element i from Philox block first + i / 4, lane i % 4", "[dropout]") {
  // The documented contract a CUDA kernel must reproduce.
  const Index n = 1001;  // a partial last block
  const auto x = ones<float>({n});
  Generator g(77);
  g.reserve(5);  // start mid-stream
  const std::uint64_t first = g.offset();
  const auto y = dropout(x, 0.35, true, g).to_vector();
  CHECK(g.offset() == first + static_cast<std::uint64_t>((n + 3) / 4));
  Index mismatches = 0;
  for (Index i = 0; i < n; ++i) {
    const auto block = Philox::generate(77, first + static_cast<std::uint64_t>(i / 4));
    const bool dropped = Philox::to_unit_float(block.v[i % 4]) < 0.35f;
    mismatches += dropped != (y[static_cast<std::size_t>(i)] == 0.0f);
  }
  CHECK(mismatches == 0);
}

TEST_CASE("dropout masks are identical for 1 and 2 threads and for any input layout", "[dropout][threads]") {
  const auto x = rand({300, 400}, 2);
  const auto mask = [&] {
    Generator g(9);
    return dropout(x, 0.25, true, g).to_vector();
  };
  const auto one = testing_support::with_threads(1, mask), two = testing_support::with_threads(2, mask);
  CHECK(one == two);
  // The mask follows the logical element order: a transposed view gets the same mask as its
  // contiguous copy.
  const auto xt = rand({400, 300}, 3).t();
  Generator g3(10), g4(10);
  CHECK(dropout(xt, 0.25, true, g3).to_vector() == dropout(xt.contiguous(), 0.25, true, g4).to_vector());
}

TEST_CASE("dropout is the identity in eval mode and for p = 0; p = 1 zeroes everything", "[dropout]") {
  const auto x = rand({10, 10}, 3);
  Generator g(1);
  const auto eval = dropout(x, 0.5, false, g);
  CHECK(eval.data() == x.data());
  CHECK(g.offset() == 0);  // eval draws nothing
  CHECK(dropout(x, 0.0, true, g).data() == x.data());
  const auto all = dropout(x, 1.0, true, g).to_vector();
  CHECK(std::all_of(all.begin(), all.end(), [](float v) { return v == 0.0f; }));
  CHECK_THROWS_AS(dropout(x, -0.1, true, g), ValueError);
  CHECK_THROWS_AS(dropout(x, 1.5, true, g), ValueError);
  CHECK_THROWS_AS(dropout(x, std::nan(""), true, g), ValueError);
  // Gradients pass through eval mode untouched.
  auto leaf = rand({4}, 4).set_requires_grad(true);
  dropout(leaf, 0.5, false, g).backward(ones<float>({4}));
  CHECK(leaf.grad().to_vector() == std::vector<float>{1, 1, 1, 1});
}

TEMPLATE_TEST_CASE("dropout's gradient is the same mask times the scale", "[dropout][grad]", float, double, bfloat16) {
  using T = TestType;
  // With x = 1 the output is mask * scale itself.
  auto x = ones<T>({64, 513}).set_requires_grad(true);
  Generator g(11);
  const Tensor<T> y = dropout(x, 0.4, true, g);
  Generator gw(12);
  const Tensor<T> dy = uniform<T>({64, 513}, -1, 1, gw);
  y.backward(dy);
  const auto m = values(y), w = values(dy), got = values(x.grad());
  Index wrong = 0;
  // dx = dy * (mask * scale), with the scale in the compute type (for bf16 the forward's
  // output is the rounded scale, the gradient uses the exact one).
  using C = compute_t<T>;
  const C scale = static_cast<C>(1.0 / (1.0 - 0.4));
  for (std::size_t i = 0; i < m.size(); ++i) {
    const C factor = m[i] == 0.0 ? C(0) : scale;
    const double want = static_cast<double>(static_cast<C>(static_cast<T>(static_cast<C>(w[i]) * factor)));
    if (got[i] != want) ++wrong;
  }
  CHECK(wrong == 0);
  // A non-contiguous upstream gradient meets the same mask.
  auto x2 = ones<T>({64, 513}).set_requires_grad(true);
  Generator g2(11);
  dropout(x2, 0.4, true, g2).backward(uniform<T>({513, 64}, -1, 1, gw).t().contiguous());
  const auto got2 = values(x2.grad());
  Index dropped_mismatch = 0;
  for (std::size_t i = 0; i < m.size(); ++i) dropped_mismatch += (m[i] == 0.0) != (got2[i] == 0.0);
  CHECK(dropped_mismatch == 0);
}

TEST_CASE("dropout passes gradcheck (a fixed seed fixes the mask)", "[dropout][grad]") {
  const auto fn = [](const std::vector<Tensor<double>>& v) {
    Generator g(5);  // the same mask on every evaluation
    const Tensor<double> h = v[0] * v[1];
    return dropout(Tensor<double>(h * h), 0.3, true, g);
  };
  Generator g(1);
  const auto r = cerberus::testing::gradcheck(fn, {uniform<double>({7, 9}, -1, 1, g), uniform<double>({9}, -1, 1, g)});
  INFO(r.message);
  CHECK(r.ok);
  const auto r2 = cerberus::testing::gradcheck(
      [](const std::vector<Tensor<double>>& v) {
        Generator g(6);
        return dropout(v[0].t(), 0.5, true, g);
      },
      {uniform<double>({5, 8}, -1, 1, g)});
  INFO(r2.message);
  CHECK(r2.ok);
}
