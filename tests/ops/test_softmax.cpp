// Softmax family (ops/softmax.hpp) against a double-precision reference: rows of 1, 7, 33 and
// 10^5+ elements, each axis of rank-3/4 inputs, inputs around +-1e4, -inf / NaN / +inf rows,
// non-contiguous views, bf16, expressions, errors and the thread count.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/expr/ops.hpp"
#include "cerberus/tensor/factories.hpp"
#include "cerberus/ops/softmax.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"
#include "support/threads.hpp"

using namespace cerberus;
using cerberus::testing_support::message_of;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();
constexpr float nan_f = std::numeric_limits<float>::quiet_NaN();

template <class T>
std::vector<double> as_doubles(const Tensor<T>& t) {
  const auto v = t.to_vector();
  std::vector<double> d(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) d[i] = static_cast<double>(static_cast<compute_t<T>>(v[i]));
  return d;
}

// Reference over x seen as [outer, n, inner] (row-major), in double, in the textbook form.
struct Reference {
  std::vector<double> softmax, log_softmax, logsumexp;
};

Reference reference(const std::vector<double>& x, const Shape& shape, int axis) {
  Index outer = 1, inner = 1;
  const Index n = shape[axis];
  for (int d = 0; d < axis; ++d) outer *= shape[d];
  for (int d = axis + 1; d < shape.rank(); ++d) inner *= shape[d];
  Reference ref;
  ref.softmax.resize(x.size());
  ref.log_softmax.resize(x.size());
  ref.logsumexp.resize(static_cast<std::size_t>(outer * inner));
  for (Index o = 0; o < outer; ++o)
    for (Index i = 0; i < inner; ++i) {
      auto at = [&](Index r) { return static_cast<std::size_t>((o * n + r) * inner + i); };
      double m = -std::numeric_limits<double>::infinity();
      for (Index r = 0; r < n; ++r) m = std::max(m, x[at(r)]);
      double s = 0.0;
      for (Index r = 0; r < n; ++r) s += std::exp(x[at(r)] - m);
      const double lse = m + std::log(s);
      for (Index r = 0; r < n; ++r) {
        ref.softmax[at(r)] = std::exp(x[at(r)] - m) / s;
        ref.log_softmax[at(r)] = (x[at(r)] - m) - std::log(s);
      }
      ref.logsumexp[static_cast<std::size_t>(o * inner + i)] = lse;
    }
  return ref;
}

// Tolerances. float: exp is good to ~2 ulp, and x - max is rounded to float, an absolute error
// of up to |x - max| 2^-24 in the exponent, i.e. |log y| 2^-24 relative in y. bf16 rounds its
// outputs to 8 significant bits.
template <class T>
double soft_tol(double ref) {
  if constexpr (std::is_same_v<T, double>) return 1e-13 * std::fabs(ref) + 1e-300;
  else if constexpr (std::is_same_v<T, float>) return std::fabs(ref) * (1e-6 + 1.2e-7 * std::fabs(std::log(ref))) + 1e-37;
  else return 8e-3 * std::fabs(ref) + 1e-30;
}
template <class T>
double log_tol(double ref) {
  if constexpr (std::is_same_v<T, double>) return 1e-12 * (1.0 + std::fabs(ref));
  else if constexpr (std::is_same_v<T, float>) return 2e-6 + 4e-7 * std::fabs(ref);
  else return 2e-2 + 8e-3 * std::fabs(ref);
}

template <class Tol>
void expect_close(const std::vector<double>& got, const std::vector<double>& want, Tol tol, const char* what) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    const bool ok = std::isnan(want[i]) ? std::isnan(got[i]) : (got[i] == want[i] || std::fabs(got[i] - want[i]) <= tol(want[i]));
    if (!ok) {
      INFO(what << " element " << i << ": got " << got[i] << ", want " << want[i] << " (error " << got[i] - want[i] << ", allowed " << tol(want[i]) << ")");
      CHECK(false);
      return;
    }
  }
  CHECK(true);
}

// All three ops along `axis` of x (any layout) against the reference.
template <class T>
void check_axis(const Tensor<T>& x, int axis) {
  const int a = axis < 0 ? axis + x.rank() : axis;
  INFO("shape " << x.shape().to_string() << " strides " << x.strides().to_string() << " axis " << axis);
  const Reference ref = reference(as_doubles(x), x.shape(), a);
  const auto y = softmax(x, axis);
  const auto ly = log_softmax(x, axis);
  const auto lse = logsumexp(x, axis);
  const auto lse_keep = logsumexp(x, axis, true);
  CHECK(y.shape() == x.shape());
  CHECK(ly.shape() == x.shape());
  Shape reduced = x.shape(), kept = x.shape();
  reduced.erase(a);
  kept[a] = 1;
  CHECK(lse.shape() == reduced);
  CHECK(lse_keep.shape() == kept);
  expect_close(as_doubles(y), ref.softmax, soft_tol<T>, "softmax");
  expect_close(as_doubles(ly), ref.log_softmax, log_tol<T>, "log_softmax");
  expect_close(as_doubles(lse), ref.logsumexp, log_tol<T>, "logsumexp");
  CHECK(as_doubles(lse_keep) == as_doubles(lse));
}

template <class T>
void check_every_axis(const Tensor<T>& x) {
  for (int a = 0; a < x.rank(); ++a) {
    check_axis(x, a);
    check_axis(x, a - x.rank());
  }
}

// Sum along the last axis of a softmax of shape [rows, n].
std::vector<double> row_sums(const Tensor<float>& y) {
  const auto v = as_doubles(y);
  const Index n = y.shape()[y.rank() - 1];
  std::vector<double> s(static_cast<std::size_t>(y.numel() / n), 0.0);
  for (std::size_t i = 0; i < v.size(); ++i) s[i / static_cast<std::size_t>(n)] += v[i];
  return s;
}

}  // namespace

TEST_CASE("rows of 1, 7, 33 and 10^5+ elements match the reference", "[ops][softmax]") {
  Generator gen(11);
  for (Index n : {Index(1), Index(7), Index(33), Index(100003)}) {
    check_axis(normal<float>({3, n}, 0.0, 3.0, gen), -1);
    check_axis(uniform<float>({n}, -20.0, 20.0, gen), 0);
  }
  check_axis(normal<double>({5, 100003}, 0.0, 3.0, gen), 1);
  // Many short rows (transposed tiles, a partial last tile), spread over the pool.
  check_axis(normal<float>({20000, 7}, 0.0, 2.0, gen), 1);
  check_axis(normal<float>({1000, 31}, 0.0, 2.0, gen), 1);
  check_axis(normal<float>({601, 3}, 0.0, 2.0, gen).slice(0, 0, 601, 2), 1);
  check_axis(normal<double>({300, 15}, 0.0, 2.0, gen), 1);
  check_axis(normal<float>({500, 9}, 0.0, 2.0, gen).to<bfloat16>(), 1);
  // Rows of a few batches plus a ragged end (padded last batch).
  for (Index n : {Index(40), Index(47), Index(63), Index(65), Index(129)}) check_axis(normal<float>({50, n}, 0.0, 2.0, gen), 1);
  for (double s : row_sums(softmax(normal<float>({4, 100003}, 0.0, 5.0, gen)))) CHECK(std::fabs(s - 1.0) < 1e-5);
}

TEST_CASE("every axis of rank-3 and rank-4 tensors", "[ops][softmax]") {
  Generator gen(12);
  check_every_axis(normal<float>({3, 7, 33}, 0.0, 2.0, gen));
  check_every_axis(normal<float>({2, 5, 7, 33}, 0.0, 2.0, gen));
  check_every_axis(normal<float>({1, 300, 1}, 0.0, 2.0, gen));
  check_every_axis(normal<double>({4, 9, 17}, 0.0, 2.0, gen));
  // Columns wider than one strip, and a long axis down the rows.
  check_axis(normal<float>({2, 5, 600}, 0.0, 2.0, gen), 1);
  check_axis(normal<float>({2000, 37}, 0.0, 2.0, gen), 0);
}

TEST_CASE("inputs around 1e4 and -1e4 give finite, exact results", "[ops][softmax]") {
  Generator gen(13);
  for (double centre : {1e4, -1e4}) {
    for (Index n : {Index(7), Index(33), Index(100003)}) {
      const auto x = uniform<float>({2, n}, centre - 30.0, centre + 30.0, gen);
      check_axis(x, 1);
      check_axis(x, 0);
      for (double s : row_sums(softmax(x, 1))) CHECK(std::fabs(s - 1.0) < 1e-5);
      for (double v : as_doubles(logsumexp(x, 1))) CHECK(std::isfinite(v));
    }
  }
  // Far-apart values: the small one underflows to exactly 0, nothing overflows.
  const auto x = from_vector<float>({1e4f, -1e4f, 0.0f});
  CHECK(softmax(x).to_vector() == std::vector<float>{1.0f, 0.0f, 0.0f});
  CHECK(logsumexp(x).item() == 1e4f);
  CHECK(log_softmax(x).to_vector() == std::vector<float>{0.0f, -2e4f, -1e4f});
}

TEST_CASE("-inf, NaN and +inf rows follow the documented choice", "[ops][softmax]") {
  for (Index n : {Index(1), Index(7), Index(40), Index(100003)}) {
    INFO("row of " << n);
    // All -inf: softmax 0, log_softmax -inf, logsumexp -inf. Along the last and the first axis.
    const auto masked = full<float>({2, n}, -inf);
    for (double v : as_doubles(softmax(masked, 1))) REQUIRE(v == 0.0);
    for (double v : as_doubles(log_softmax(masked, 1))) REQUIRE(v == -inf);
    for (double v : as_doubles(logsumexp(masked, 1))) REQUIRE(v == -inf);
    const auto masked_t = full<float>({n, 3}, -inf);
    for (double v : as_doubles(softmax(masked_t, 0))) REQUIRE(v == 0.0);
    for (double v : as_doubles(log_softmax(masked_t, 0))) REQUIRE(v == -inf);
    for (double v : as_doubles(logsumexp(masked_t, 0))) REQUIRE(v == -inf);

    // Some -inf: exactly 0 / -inf there, the rest a finite distribution.
    auto partial = zeros<float>({n, 2});
    for (Index r = 0; r < n; r += 2) partial(r, 0) = -inf, partial(r, 1) = -inf;
    const Index live = n / 2;  // rows 1, 3, ... stay 0
    if (live > 0) {
      const auto y = as_doubles(softmax(partial, 0)), ly = as_doubles(log_softmax(partial, 0));
      for (Index r = 0; r < n; ++r)
        for (Index c = 0; c < 2; ++c) {
          const auto k = static_cast<std::size_t>(r * 2 + c);
          if (r % 2 == 0) REQUIRE((y[k] == 0.0 && ly[k] == -inf));
          else REQUIRE((std::fabs(y[k] - 1.0 / static_cast<double>(live)) < 1e-6 && std::isfinite(ly[k])));
        }
    }

    // A NaN anywhere: the row is NaN.
    auto with_nan = zeros<float>({2, n});
    with_nan(1, n - 1) = nan_f;
    const auto y = as_doubles(softmax(with_nan, 1)), ly = as_doubles(log_softmax(with_nan, 1));
    const auto lse = as_doubles(logsumexp(with_nan, 1));
    for (Index i = 0; i < n; ++i) {
      REQUIRE(std::fabs(y[static_cast<std::size_t>(i)] - 1.0 / static_cast<double>(n)) < 1e-6);
      REQUIRE(std::isnan(y[static_cast<std::size_t>(n + i)]));
      REQUIRE(std::isnan(ly[static_cast<std::size_t>(n + i)]));
    }
    CHECK(std::isfinite(lse[0]));
    CHECK(std::isnan(lse[1]));

    // +inf: logsumexp +inf; softmax NaN at the +inf entry, 0 elsewhere.
    auto with_inf = zeros<float>({n});
    with_inf(0) = inf;
    CHECK(logsumexp(with_inf).item() == inf);
    const auto yi = as_doubles(softmax(with_inf));
    CHECK(std::isnan(yi[0]));
    for (Index i = 1; i < n; ++i) REQUIRE(yi[static_cast<std::size_t>(i)] == 0.0);
  }
}

TEST_CASE("non-contiguous views: transposed, permuted, sliced with step 2", "[ops][softmax]") {
  Generator gen(14);
  const auto m = normal<float>({33, 70}, 0.0, 2.0, gen);
  check_every_axis(m.t());
  check_every_axis(m.slice(0, 0, 33, 2));
  check_every_axis(m.slice(1, 1, 70, 2));
  check_every_axis(normal<float>({5, 7, 33}, 0.0, 2.0, gen).permute({2, 0, 1}).slice(0, 0, 33, 2));
  check_every_axis(normal<float>({1, 33}, 0.0, 2.0, gen).expand(Shape{4, 33}));
}

TEST_CASE("bfloat16 computes in float and rounds once", "[ops][softmax][bf16]") {
  Generator gen(15);
  check_every_axis(normal<float>({3, 7, 33}, 0.0, 2.0, gen).to<bfloat16>());
  check_axis(normal<float>({2, 100003}, 0.0, 2.0, gen).to<bfloat16>(), 1);
  check_axis(uniform<float>({3, 40}, 1e4 - 30.0, 1e4 + 30.0, gen).to<bfloat16>(), 1);
  static_assert(std::is_same_v<decltype(softmax(Tensor<bfloat16>())), Tensor<bfloat16>>);
}

TEST_CASE("bf16 results are the float results rounded once, bit for bit", "[ops][softmax][bf16]") {
  Generator gen(18);
  auto bits_of = [](const Tensor<bfloat16>& t) {
    std::vector<std::uint16_t> b;
    for (const bfloat16 v : t.to_vector()) b.push_back(v.bits);
    return b;
  };
  auto x = normal<float>({6, 77}, 0.0, 4.0, gen).to<bfloat16>();
  x(1, 5) = bfloat16(nan_f);
  x(2, 0) = bfloat16(inf);
  for (Index i = 0; i < 77; ++i) x(3, i) = bfloat16(-inf);
  const auto xf = x.to<float>();
  for (int axis : {0, 1}) {  // columns and rows (rows of 77: whole batches and a ragged end)
    CHECK(bits_of(softmax(x, axis)) == bits_of(softmax(xf, axis).to<bfloat16>()));
    CHECK(bits_of(log_softmax(x, axis)) == bits_of(log_softmax(xf, axis).to<bfloat16>()));
  }
  const auto short_rows = normal<float>({300, 5}, 0.0, 4.0, gen).to<bfloat16>();
  CHECK(bits_of(softmax(short_rows)) == bits_of(softmax(short_rows.to<float>()).to<bfloat16>()));
}

TEST_CASE("expressions are evaluated first and results are tensors", "[ops][softmax]") {
  Generator gen(16);
  const auto a = normal<float>({4, 35}, 0.0, 1.0, gen), b = normal<float>({35}, 0.0, 1.0, gen);
  const Tensor<float> e = a * 0.5f + b;
  static_assert(std::is_same_v<decltype(softmax(a * 0.5f + b, 1)), Tensor<float>>);
  static_assert(std::is_same_v<decltype(logsumexp(a + b)), Tensor<float>>);
  CHECK(softmax(a * 0.5f + b).to_vector() == softmax(e).to_vector());
  CHECK(log_softmax(a * 0.5f + b, 0).to_vector() == log_softmax(e, 0).to_vector());
  CHECK(logsumexp(a * 0.5f + b, 0, true).to_vector() == logsumexp(e, 0, true).to_vector());
}

TEST_CASE("empty tensors and bad axes", "[ops][softmax]") {
  CHECK(softmax(zeros<float>({0, 5})).shape() == Shape{0, 5});
  CHECK(log_softmax(zeros<float>({3, 0}), 1).shape() == Shape{3, 0});
  CHECK(logsumexp(zeros<float>({3, 0}), 1).to_vector() == std::vector<float>{-inf, -inf, -inf});
  CHECK(logsumexp(zeros<float>({0, 3}), 1).shape() == Shape{0});

  const auto x = zeros<float>({2, 3});
  CHECK_THROWS_AS(softmax(x, 2), IndexError);
  CHECK_THROWS_AS(log_softmax(x, -3), IndexError);
  CHECK_THROWS_AS(logsumexp(x, 7), IndexError);
  const std::string msg = message_of([&] { softmax(x, 2); });
  CHECK(msg.rfind("[softmax]", 0) == 0);
  CHECK(msg.find("[2, 3]") != std::string::npos);
  CHECK(message_of([&] { log_softmax(x, -3); }).rfind("[log_softmax]", 0) == 0);
  CHECK(message_of([&] { logsumexp(x, 7); }).rfind("[logsumexp]", 0) == 0);
}

TEST_CASE("results do not depend on the thread count", "[ops][softmax][threads]") {
  Generator gen(17);
  const auto rows = normal<float>({300, 1000}, 0.0, 3.0, gen);
  const auto cube = normal<float>({8, 300, 64}, 0.0, 3.0, gen);
  const auto wide = normal<float>({2, 200003}, 0.0, 3.0, gen).to<bfloat16>();
  auto run = [&] {
    return std::vector<std::vector<double>>{as_doubles(softmax(rows)),      as_doubles(log_softmax(rows, 0)),
                                            as_doubles(logsumexp(rows, 1)), as_doubles(softmax(cube, 1)),
                                            as_doubles(logsumexp(cube, 0)), as_doubles(softmax(wide))};
  };
  const auto one = testing_support::with_threads(1, run), three = testing_support::with_threads(3, run);
  for (std::size_t i = 0; i < one.size(); ++i) REQUIRE(one[i] == three[i]);
}
