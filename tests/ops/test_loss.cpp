// cross_entropy (ops/loss.hpp) against a naive double reference for V = 1, 7, 33, 1000 with
// ignore_index rows, label smoothing, per-token weights and every reduction; gradcheck in double
// for all of them; float and bf16 gradients against the double op; logits around 1e4; fully
// ignored batches; thread-count independence; errors naming the op, the row and the value.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cerberus/ops/loss.hpp"
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


// Targets in [0, v) with every third row (from `first_ignored`) set to -100.
Tensor<std::int64_t> make_targets(Index rows, Index v, std::uint64_t seed, Index first_ignored = 1) {
  Generator g(seed);
  std::vector<std::int64_t> t(static_cast<std::size_t>(rows));
  for (Index r = 0; r < rows; ++r)
    t[static_cast<std::size_t>(r)] = (r % 3 == first_ignored % 3) ? -100 : static_cast<std::int64_t>(g.uniform() * static_cast<double>(v));
  return from_vector<std::int64_t>(t);
}

// The definition, in double: loss_r = (1 - e)(lse - x_t) + e (lse - mean x), then weights and
// the reduction over non-ignored rows.
std::vector<double> reference(const std::vector<double>& x, const std::vector<std::int64_t>& t, const std::vector<double>& w, Index v,
                              double e, Reduction reduction) {
  const Index rows = static_cast<Index>(t.size());
  std::vector<double> per_row(static_cast<std::size_t>(rows), 0.0);
  double total = 0, weight = 0;
  for (Index r = 0; r < rows; ++r) {
    const std::size_t ri = static_cast<std::size_t>(r);
    if (t[ri] == -100) continue;
    const double* xr = x.data() + r * v;
    double m = xr[0], s = 0, mean = 0;
    for (Index j = 0; j < v; ++j) m = std::max(m, xr[j]);
    for (Index j = 0; j < v; ++j) s += std::exp(xr[j] - m), mean += xr[j] - m;
    mean /= static_cast<double>(v);
    const double nll = (m - xr[t[ri]]) + std::log(s), smooth = -mean + std::log(s);
    const double wr = w.empty() ? 1.0 : w[ri];
    per_row[ri] = wr * ((1 - e) * nll + e * smooth);
    total += per_row[ri];
    weight += wr;
  }
  if (reduction == Reduction::none) return per_row;
  if (reduction == Reduction::sum) return {total};
  return {weight == 0 ? 0.0 : total / weight};
}

const char* name(Reduction r) { return r == Reduction::none ? "none" : r == Reduction::sum ? "sum" : "mean"; }

}  // namespace

TEMPLATE_TEST_CASE("cross_entropy forward matches a double reference", "[loss]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  const Index rows = 13;
  for (const Index v : {1, 7, 16, 33, 1000}) {
    const auto x = random_uniform<T>({rows, v}, -4, 4, 100 + static_cast<std::uint64_t>(v));
    const auto t = make_targets(rows, v, 7);
    const auto w = random_uniform<float>({rows}, 0.2, 2, 8);
    for (const double e : {0.0, 0.1})
      for (const bool weighted : {false, true})
        for (const Reduction red : {Reduction::none, Reduction::mean, Reduction::sum}) {
          CrossEntropyOptions o;
          o.label_smoothing = e;
          o.reduction = red;
          if (weighted) o.weights = w;
          const auto loss = cross_entropy(x, t, o);
          CHECK(loss.shape() == (red == Reduction::none ? Shape{rows} : Shape{}));
          const auto want = reference(values(x), t.to_vector(), weighted ? values(w) : std::vector<double>{}, v, e, red);
          const auto c = compare(values(loss), want, tol, tol);
          INFO("V " << v << ", smoothing " << e << ", weighted " << weighted << ", reduction " << name(red) << ": " << c.describe());
          CHECK(c.ok());
        }
  }
}

TEST_CASE("cross_entropy accepts [B, T, V] logits with [B, T] or flat targets", "[loss]") {
  const auto x = random_uniform<double>({2, 3, 5}, -1, 1, 11);
  const auto t_flat = make_targets(6, 5, 12);
  const auto t_bt = t_flat.reshape({2, 3});
  const auto a = cross_entropy(x, t_bt, {.reduction = Reduction::none});
  CHECK(a.shape() == Shape{2, 3});
  const auto b = cross_entropy(x, t_flat);
  const auto want = reference(values(x), t_flat.to_vector(), {}, 5, 0.0, Reduction::mean);
  CHECK(compare(values(b), want, 1e-12, 1e-12).ok());
  CHECK(compare(values(a), reference(values(x), t_flat.to_vector(), {}, 5, 0.0, Reduction::none), 1e-12, 1e-12).ok());
}

TEST_CASE("cross_entropy: gradients match finite differences in double", "[loss][grad]") {
  const Index rows = 7;
  for (const Index v : {1, 7, 33}) {
    const auto x = random_uniform<double>({rows, v}, -3, 3, 21);
    const auto t = make_targets(rows, v, 22);
    const auto w = random_uniform<float>({rows}, 0.2, 2, 23);
    for (const double e : {0.0, 0.2})
      for (const bool weighted : {false, true})
        for (const Reduction red : {Reduction::none, Reduction::mean, Reduction::sum}) {
          CrossEntropyOptions o;
          o.label_smoothing = e;
          o.reduction = red;
          if (weighted) o.weights = w;
          const auto r = gradcheck([&](const Inputs& in) { return cross_entropy(in[0], t, o); }, {x});
          INFO("V " << v << ", smoothing " << e << ", weighted " << weighted << ", reduction " << name(red) << ": " << r.message);
          CHECK(r.ok);
        }
  }
  // Non-contiguous [B, T, V] logits, through an elementwise op.
  const auto t = make_targets(6, 4, 24);
  const auto r = gradcheck(
      [&](const Inputs& in) { return cross_entropy(Tensor<double>(in[0].transpose(0, 1) * 2.0), t.reshape({3, 2}), {.label_smoothing = 0.1}); },
      {random_uniform<double>({2, 3, 4}, -1, 1, 25)});
  INFO(r.message);
  CHECK(r.ok);
}

TEST_CASE("cross_entropy: float and bf16 gradients agree with the double op, whatever the thread count", "[loss][grad]") {
  const Index rows = 64, v = 1000;
  const auto xd = random_uniform<double>({rows, v}, -5, 5, 31);
  const auto t = make_targets(rows, v, 32);
  const auto w = random_uniform<float>({rows}, 0.5, 1.5, 33);
  const CrossEntropyOptions o{.label_smoothing = 0.1, .weights = w};
  auto run = [&](auto tag) {
    using T = decltype(tag);
    Tensor<T> x = xd.to<T>();
    x.set_requires_grad();
    const auto loss = cross_entropy(x, t, o);
    loss.backward();
    return std::pair{values(loss), values(x.grad())};
  };
  const auto want = run(double{});
  const auto got = run(float{});
  CHECK(compare(got.first, want.first, 1e-5, 1e-6).ok());
  const auto c = compare(got.second, want.second, 1e-5, 1e-8);
  INFO("float dlogits: " << c.describe());
  CHECK(c.ok());
  const auto half = run(bfloat16{});
  CHECK(compare(half.first, want.first, 2e-2, 2e-2).ok());
  CHECK(compare(half.second, want.second, 2e-2, 2e-6).ok());

  const auto run_float = [&] { return run(float{}); };
  const auto one = testing_support::with_threads(1, run_float), two = testing_support::with_threads(2, run_float);
  CHECK(one == two);  // bitwise
}

TEST_CASE("cross_entropy: logits around 1e4 give finite, accurate losses and gradients", "[loss][stability]") {
  const Index rows = 16, v = 1000;
  const auto x = random_uniform<float>({rows, v}, 1e4 - 8, 1e4 + 8, 41);
  const auto t = make_targets(rows, v, 42);
  for (const double e : {0.0, 0.1}) {
    Tensor<float> leaf = x.clone();
    leaf.set_requires_grad();
    const auto loss = cross_entropy(leaf, t, {.label_smoothing = e, .reduction = Reduction::none});
    const auto want = reference(values(x), t.to_vector(), {}, v, e, Reduction::none);
    const auto c = compare(values(loss), want, 1e-5, 1e-5);
    INFO("smoothing " << e << ": " << c.describe());
    CHECK(c.ok());
    loss.backward(ones<float>(loss.shape()));
    const auto g = values(leaf.grad());
    for (Index r = 0; r < rows; ++r) {
      double row_sum = 0;
      for (Index j = 0; j < v; ++j) {
        REQUIRE(std::isfinite(g[static_cast<std::size_t>(r * v + j)]));
        row_sum += g[static_cast<std::size_t>(r * v + j)];
      }
      CHECK(std::abs(row_sum) < 1e-5);  // softmax sums to 1, the smoothed one-hot too (or the row is ignored)
    }
  }
}

TEST_CASE("cross_entropy: a batch whose targets are all ignored has loss 0 and zero gradients", "[loss]") {
  Tensor<float> x = random_uniform<float>({3, 5}, -1, 1, 51);
  x.set_requires_grad();
  const auto t = from_vector<std::int64_t>({-100, -100, -100});
  const auto loss = cross_entropy(x, t);
  CHECK(loss.item() == 0.0f);
  loss.backward();
  for (const float g : x.grad().to_vector()) CHECK(g == 0.0f);
  CHECK(cross_entropy(x.detach(), from_vector<std::int64_t>({7, 7, 7}), {.ignore_index = 7}).item() == 0.0f);
  // A custom ignore_index leaves -100 an ordinary (out of range) target.
  CHECK_THROWS_AS(cross_entropy(x.detach(), t, {.ignore_index = 0}), IndexError);
}

TEST_CASE("cross_entropy names the op, the row and the value in its errors", "[loss][errors]") {
  const auto x = zeros<float>({4, 8});
  try {
    (void)cross_entropy(x, from_vector<std::int64_t>({1, -100, 9, 2}));
    FAIL("no exception");
  } catch (const IndexError& e) {
    const std::string m = e.what();
    INFO(m);
    CHECK(m.find("[cross_entropy]") != std::string::npos);
    CHECK(m.find("row 2") != std::string::npos);
    CHECK(m.find("target 9") != std::string::npos);
  }
  CHECK_THROWS_AS(cross_entropy(x, from_vector<std::int64_t>({1, -1, 0, 0})), IndexError);
  try {
    (void)cross_entropy(x, from_vector<std::int64_t>({1, 2, 3}));
    FAIL("no exception");
  } catch (const ShapeError& e) {
    const std::string m = e.what();
    CHECK(m.find("[cross_entropy]") != std::string::npos);
    CHECK(m.find("[3]") != std::string::npos);
    CHECK(m.find("[4, 8]") != std::string::npos);
  }
  CHECK_THROWS_AS(cross_entropy(x, from_vector<std::int64_t>({1, 2, 3, 4}), {.weights = ones<float>({3})}), ShapeError);
  CHECK_THROWS_AS(cross_entropy(zeros<float>({8}), from_vector<std::int64_t>({1})), ShapeError);
  CHECK_THROWS_AS(cross_entropy(x, from_vector<std::int64_t>({1, 2, 3, 4}), {.label_smoothing = 1.5}), ValueError);
}
