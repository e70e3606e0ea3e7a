// Reductions (ops/reduce.hpp) against a naive double-precision reference: every op, sizes that
// cross the SIMD widths, the block and piece sizes and the threading threshold, each axis of
// rank-3/4 inputs, keepdim, non-contiguous views, bf16, empty inputs, NaN, errors, threads.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/expr/ops.hpp"
#include "cerberus/tensor/factories.hpp"
#include "cerberus/ops/reduce.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"
#include "support/threads.hpp"

using namespace cerberus;
using cerberus::testing_support::message_of;

namespace {

enum class Op { sum, mean, max, min, argmax, argmin };

const char* op_name(Op op) {
  switch (op) {
    case Op::sum: return "sum";
    case Op::mean: return "mean";
    case Op::max: return "max";
    case Op::min: return "min";
    case Op::argmax: return "argmax";
    case Op::argmin: return "argmin";
  }
  return "?";
}

template <class T>
std::vector<double> as_doubles(const Tensor<T>& t) {
  const auto v = t.to_vector();
  std::vector<double> d(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) d[i] = static_cast<double>(static_cast<compute_t<T>>(v[i]));
  return d;
}

std::uint32_t mask_of(const std::vector<int>& axes, int rank) {
  if (axes.empty()) return rank == 0 ? 0u : (~0u >> (32 - rank));
  std::uint32_t m = 0;
  for (int a : axes) m |= 1u << (a < 0 ? a + rank : a);
  return m;
}

Shape expected_shape(const Shape& in, std::uint32_t mask, bool keepdim) {
  Shape out;
  for (int d = 0; d < in.rank(); ++d) {
    if (!(mask >> d & 1u)) out.push_back(in[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

// The naive reference: one pass over the elements in row-major order, everything in double.
struct Reference {
  std::vector<double> value;    // the op's result per output
  std::vector<double> abs_sum;  // sum |x| per output: the scale rounding errors are relative to
  Index count = 0;              // elements per output
};

Reference reference(const std::vector<double>& x, const Shape& shape, std::uint32_t mask, Op op) {
  const int rank = shape.rank();
  Index outputs = 1, count = 1;
  for (int d = 0; d < rank; ++d) ((mask >> d & 1u) ? count : outputs) *= shape[d];
  Reference ref;
  ref.count = count;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  ref.value.assign(static_cast<std::size_t>(outputs), 0.0);
  ref.abs_sum.assign(static_cast<std::size_t>(outputs), 0.0);
  std::vector<double> best(static_cast<std::size_t>(outputs), 0.0);
  std::vector<bool> seen(static_cast<std::size_t>(outputs), false);
  std::vector<Index> coord(static_cast<std::size_t>(rank), 0);
  for (std::size_t e = 0; e < x.size(); ++e) {
    Index out = 0, red = 0;
    for (int d = 0; d < rank; ++d) {
      if (mask >> d & 1u) red = red * shape[d] + coord[static_cast<std::size_t>(d)];
      else out = out * shape[d] + coord[static_cast<std::size_t>(d)];
    }
    const auto o = static_cast<std::size_t>(out);
    const double v = x[e];
    ref.abs_sum[o] += std::fabs(v);
    switch (op) {
      case Op::sum:
      case Op::mean: ref.value[o] += v; break;
      case Op::max:
      case Op::min:
        if (!seen[o] || std::isnan(v)) ref.value[o] = v;
        else if (!std::isnan(ref.value[o])) ref.value[o] = op == Op::max ? std::max(ref.value[o], v) : std::min(ref.value[o], v);
        break;
      case Op::argmax:
      case Op::argmin: {
        const bool better = !seen[o] || (std::isnan(v) && !std::isnan(best[o])) ||
                            (!std::isnan(best[o]) && (op == Op::argmax ? v > best[o] : v < best[o]));
        if (better) best[o] = v, ref.value[o] = static_cast<double>(red);
        break;
      }
    }
    seen[o] = true;
    for (int d = rank - 1; d >= 0; --d) {
      if (++coord[static_cast<std::size_t>(d)] < shape[d]) break;
      coord[static_cast<std::size_t>(d)] = 0;
    }
  }
  if (op == Op::mean)
    for (auto& v : ref.value) v = count ? v / static_cast<double>(count) : nan;
  return ref;
}

// Allowed error of a sum or mean: the rounding of T's result plus accumulation error relative
// to sum |x| (a naive float loop over 10^5+ elements misses this by an order of magnitude).
template <class T>
double tolerance(double ref, double abs_sum) {
  if constexpr (std::is_same_v<T, double>) return 1e-13 * abs_sum + 1e-15 * std::fabs(ref);
  else if constexpr (std::is_same_v<T, float>) return 2e-6 * abs_sum + 1.2e-7 * std::fabs(ref) + 1e-30;
  else return 1e-6 * abs_sum + 4e-3 * std::fabs(ref) + 1e-30;  // bf16: the result's own rounding
}

bool same_value(double a, double b) { return a == b || (std::isnan(a) && std::isnan(b)); }

// Runs `op` on x over `axes` and compares shape and values with the reference.
template <class T>
void check_op(const Tensor<T>& x, Op op, const std::vector<int>& axes, bool keepdim) {
  const std::uint32_t mask = mask_of(axes, x.rank());
  INFO(op_name(op) << " of shape " << x.shape().to_string() << " strides " << x.strides().to_string() << " over "
                   << (axes.empty() ? std::string("all axes") : "axis mask " + std::to_string(mask)) << (keepdim ? ", keepdim" : ""));
  const Reference ref = reference(as_doubles(x), x.shape(), mask, op);
  const Axes which = axes.empty() ? Axes::all() : Axes(axes);
  std::vector<double> got;
  Shape got_shape;
  switch (op) {
    case Op::sum: { auto r = sum(x, which, keepdim); got = as_doubles(r), got_shape = r.shape(); break; }
    case Op::mean: { auto r = mean(x, which, keepdim); got = as_doubles(r), got_shape = r.shape(); break; }
    case Op::max: { auto r = max(x, which, keepdim); got = as_doubles(r), got_shape = r.shape(); break; }
    case Op::min: { auto r = min(x, which, keepdim); got = as_doubles(r), got_shape = r.shape(); break; }
    case Op::argmax:
    case Op::argmin: {
      REQUIRE(axes.size() == 1);
      auto r = op == Op::argmax ? argmax(x, axes[0], keepdim) : argmin(x, axes[0], keepdim);
      for (auto i : r.to_vector()) got.push_back(static_cast<double>(i));
      got_shape = r.shape();
      break;
    }
  }
  REQUIRE(got_shape == expected_shape(x.shape(), mask, keepdim));
  REQUIRE(got.size() == ref.value.size());
  std::size_t bad = got.size();
  for (std::size_t i = 0; i < got.size() && bad == got.size(); ++i) {
    const double want = ref.value[i];
    if (op == Op::sum || op == Op::mean) {
      const double scale = op == Op::mean ? static_cast<double>(ref.count) : 1.0;
      const bool ok = std::isnan(want) ? std::isnan(got[i]) : std::fabs(got[i] - want) <= tolerance<T>(want, ref.abs_sum[i] / scale);
      if (!ok) bad = i;
    } else if (!same_value(got[i], want)) {
      bad = i;
    }
  }
  if (bad != got.size()) {
    INFO("output " << bad << ": got " << got[bad] << ", want " << ref.value[bad]);
    CHECK(false);
  } else {
    CHECK(true);
  }
}

template <class T>
void check_all_ops(const Tensor<T>& x, const std::vector<int>& axes, bool keepdim) {
  for (Op op : {Op::sum, Op::mean, Op::max, Op::min}) check_op(x, op, axes, keepdim);
  if (axes.size() == 1)
    for (Op op : {Op::argmax, Op::argmin}) check_op(x, op, axes, keepdim);
}

// Every single axis, every pair of axes, and all axes, with keepdim on and off.
template <class T>
void check_every_axis(const Tensor<T>& x) {
  for (bool keepdim : {false, true}) {
    check_all_ops(x, {}, keepdim);
    for (int a = 0; a < x.rank(); ++a) {
      check_all_ops(x, {a}, keepdim);
      check_all_ops(x, {a - x.rank()}, keepdim);  // the same axis, counted from the end
      for (int b = a + 1; b < x.rank(); ++b) check_all_ops(x, {a, b}, keepdim);
    }
  }
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("1-D reductions match the double reference at sizes across SIMD widths and pieces", "[ops][reduce]") {
  Generator gen(1);
  for (Index n : {Index(1), Index(7), Index(33), Index(1000), Index(100003), Index(300007)}) {
    check_all_ops(uniform<float>({n}, -1.0, 1.0, gen), {}, false);
    check_all_ops(normal<float>({n}, 0.5, 2.0, gen), {0}, false);
    check_all_ops(normal<float>({n}, 0.0, 1.0, gen), {0}, true);
  }
}

TEST_CASE("every axis of rank-3 and rank-4 tensors, keepdim on and off", "[ops][reduce]") {
  Generator gen(2);
  check_every_axis(uniform<float>({3, 7, 33}, -2.0, 2.0, gen));
  check_every_axis(normal<float>({2, 5, 7, 33}, 0.0, 1.0, gen));
  check_every_axis(normal<float>({33, 1, 7}, 0.0, 1.0, gen));
  check_every_axis(normal<double>({4, 3, 17, 9}, 1.0, 3.0, gen));
  check_every_axis(normal<float>({1, 1, 1}, 0.0, 1.0, gen));
}

TEST_CASE("outer-axis and long-row reductions cross the strip, period and piece sizes", "[ops][reduce]") {
  Generator gen(3);
  // Narrow dense columns (the lcm-period stream), long enough to be cut into pieces.
  for (Index inner : {Index(2), Index(3), Index(5), Index(8), Index(15)}) check_all_ops(normal<float>({100003, inner}, 0.0, 1.0, gen), {0}, false);
  // Columns wider than a SIMD batch and than one strip; rows long enough for pieces.
  check_all_ops(normal<float>({4099, 33}, 0.0, 1.0, gen), {0}, false);
  check_all_ops(normal<float>({2, 300, 1500}, 0.0, 1.0, gen), {1}, true);
  check_all_ops(normal<float>({3, 100003}, 0.0, 1.0, gen), {1}, false);
  check_all_ops(normal<float>({3, 100003}, 0.0, 1.0, gen), {0}, false);
  check_all_ops(normal<double>({70001, 3}, 0.0, 1.0, gen), {0}, false);
  check_all_ops(normal<double>({5, 70001}, 0.0, 1.0, gen), {1}, false);
}

TEST_CASE("many short rows (transposed tiles), including a partial tile and strided rows", "[ops][reduce]") {
  Generator gen(9);
  for (Index n : {Index(2), Index(3), Index(7), Index(17), Index(31)}) {
    check_all_ops(normal<float>({1000, n}, 0.0, 1.0, gen), {1}, false);
    check_all_ops(normal<float>({2 * 300 + 1, n}, 0.0, 1.0, gen).slice(0, 0, 601, 2), {1}, true);
  }
  check_all_ops(normal<double>({500, 15}, 0.0, 1.0, gen), {1}, false);
  check_all_ops(normal<float>({600, 5}, 0.0, 1.0, gen).to<bfloat16>(), {1}, false);
  check_all_ops(normal<float>({4, 300, 6}, 0.0, 1.0, gen).permute({0, 2, 1}), {1}, false);
  // Ties and NaN inside short rows.
  auto x = zeros<float>({300, 5});
  x(7, 1) = 2.0f, x(7, 3) = 2.0f, x(8, 2) = std::numeric_limits<float>::quiet_NaN(), x(8, 4) = 5.0f;
  const auto am = argmax(x, 1).to_vector();
  CHECK(am[7] == 1);
  CHECK(am[8] == 2);
  CHECK(am[9] == 0);
  CHECK(std::isnan(max(x, 1).to_vector()[8]));
  CHECK(std::isnan(min(x, 1).to_vector()[8]));
}

TEST_CASE("non-contiguous views: transposed, permuted, sliced with step 2, broadcast", "[ops][reduce]") {
  Generator gen(4);
  const auto m = normal<float>({33, 70}, 0.0, 1.0, gen);
  check_every_axis(m.t());
  check_every_axis(m.slice(0, 0, 33, 2));
  check_every_axis(m.slice(1, 1, 70, 2));
  check_every_axis(m.slice(0, 0, 33, 2).slice(1, 0, 70, 2));
  const auto cube = normal<float>({5, 7, 33}, 0.0, 1.0, gen);
  check_every_axis(cube.permute({2, 0, 1}));
  check_every_axis(cube.permute({1, 2, 0}).slice(1, 0, 33, 2));
  check_every_axis(normal<float>({1, 33}, 0.0, 1.0, gen).expand(Shape{9, 33}));
  // A large transposed matrix: the reduced axis is the contiguous one, read in place.
  const auto big = normal<float>({300, 1001}, 0.0, 1.0, gen).t();
  check_all_ops(big, {0}, false);
  check_all_ops(big, {1}, false);
}

TEST_CASE("bfloat16 inputs accumulate in float and match the reference", "[ops][reduce][bf16]") {
  Generator gen(5);
  check_every_axis(normal<float>({7, 33}, 0.0, 1.0, gen).to<bfloat16>());
  check_every_axis(normal<float>({3, 5, 17}, 0.0, 1.0, gen).to<bfloat16>().permute({2, 1, 0}));
  const auto long_row = uniform<float>({100003}, 0.0, 1.0, gen).to<bfloat16>();
  check_all_ops(long_row, {}, false);
  check_all_ops(long_row, {0}, true);
  check_all_ops(normal<float>({100003, 3}, 0.0, 1.0, gen).to<bfloat16>(), {0}, false);
  static_assert(std::is_same_v<decltype(sum(long_row)), Tensor<bfloat16>>);
}

TEST_CASE("float sums are accurate far beyond a naive float loop", "[ops][reduce]") {
  Generator gen(6);
  const Index n = (Index(1) << 22) + 4;
  const auto x = uniform<float>({n}, 0.0, 1.0, gen);
  const auto v = x.to_vector();
  double exact = 0.0;
  float naive = 0.0f;
  for (float f : v) exact += f, naive += f;
  const double got = sum(x).item();
  // A sequential float loop is off by ~1e-4 relative here; the blocked sum by ~1e-8.
  CHECK(std::fabs(got - exact) / exact < 5e-7);
  CHECK(std::fabs(mean(x).item() - exact / static_cast<double>(n)) / (exact / static_cast<double>(n)) < 5e-7);
  INFO("naive float error " << std::fabs(naive - exact) / exact);
  CHECK(std::fabs(got - exact) <= std::fabs(static_cast<double>(naive) - exact));
  // Down the rows of a tall matrix too (column accumulators).
  const auto tall = x.view({n / 4, 4});
  const auto cols = sum(tall, 0).to_vector();
  std::vector<double> want(4, 0.0);
  for (std::size_t i = 0; i < v.size(); ++i) want[i % 4] += v[i];
  for (int c = 0; c < 4; ++c) CHECK(std::fabs(cols[static_cast<std::size_t>(c)] - want[static_cast<std::size_t>(c)]) / want[static_cast<std::size_t>(c)] < 5e-7);
}

TEST_CASE("expressions are evaluated first and results are tensors", "[ops][reduce]") {
  Generator gen(7);
  const auto a = normal<float>({6, 35}, 0.0, 1.0, gen), b = normal<float>({35}, 0.0, 1.0, gen);
  const Tensor<float> e = a * 2.0f + b;
  static_assert(std::is_same_v<decltype(sum(a * 2.0f + b, 1)), Tensor<float>>);
  static_assert(std::is_same_v<decltype(argmax(a + b, 0)), Tensor<std::int64_t>>);
  CHECK(sum(a * 2.0f + b, 1).to_vector() == sum(e, 1).to_vector());
  CHECK(max(exp(a), {0, 1}).item() == max(Tensor<float>(exp(a))).item());
  CHECK(argmin(a - b, 1).to_vector() == argmin(Tensor<float>(a - b), 1).to_vector());
}

TEST_CASE("argmax and argmin return the first extreme, the first NaN, and flat indices", "[ops][reduce]") {
  // Ties: every lane of every SIMD batch holds the same value; the first index wins.
  for (Index n : {Index(1), Index(7), Index(100), Index(100003)}) {
    const auto same = full<float>({n}, 3.0f);
    CHECK(argmax(same, 0).item() == 0);
    CHECK(argmin(same, 0).item() == 0);
    const auto cols = full<float>({n, 37}, -1.0f);
    for (auto i : argmax(cols, 0).to_vector()) REQUIRE(i == 0);
  }
  auto x = zeros<float>({3, 100});
  x(0, 40) = 5.0f, x(0, 70) = 5.0f;                                    // tie: 40
  x(1, 10) = std::numeric_limits<float>::quiet_NaN(), x(1, 20) = 9.0f;  // NaN wins
  x(1, 90) = std::numeric_limits<float>::quiet_NaN();
  x(2, 99) = -2.0f;
  CHECK(argmax(x, 1).to_vector() == std::vector<std::int64_t>{40, 10, 0});
  CHECK(argmin(x, 1).to_vector() == std::vector<std::int64_t>{0, 10, 99});
  CHECK(argmax(x.t(), 0).to_vector() == std::vector<std::int64_t>{40, 10, 0});
  CHECK(argmax(x, 0, true).shape() == Shape{1, 100});
  // Flat: row-major index into the logical tensor, whatever its memory order.
  auto y = zeros<float>({4, 5});
  y(2, 1) = 7.0f;
  CHECK(argmax(y).item() == 11);
  CHECK(argmax(y.t()).item() == 1 * 4 + 2);
  CHECK(argmax(y).rank() == 0);
  CHECK(argmin(y - 10.0f * y).item() == 11);
}

TEST_CASE("NaN propagates through sum, mean, max and min", "[ops][reduce]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (Index n : {Index(1), Index(33), Index(100003)}) {
    auto x = ones<float>({n});
    x(n / 2) = nan;
    CHECK(std::isnan(sum(x).item()));
    CHECK(std::isnan(mean(x).item()));
    CHECK(std::isnan(max(x).item()));
    CHECK(std::isnan(min(x).item()));
    auto cols = ones<float>({n, 5});
    cols(n - 1, 3) = nan;
    const auto mx = max(cols, 0).to_vector(), mn = min(cols, 0).to_vector();
    for (int c = 0; c < 5; ++c) {
      CHECK(std::isnan(mx[static_cast<std::size_t>(c)]) == (c == 3));
      CHECK(std::isnan(mn[static_cast<std::size_t>(c)]) == (c == 3));
    }
  }
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(max(full<float>({40}, -inf)).item() == -inf);
  CHECK(min(full<float>({40}, inf)).item() == inf);
}

TEST_CASE("empty reductions: the sum of nothing is 0, the rest throw naming op and shape", "[ops][reduce]") {
  const auto none = zeros<float>({0});
  CHECK(sum(none).item() == 0.0f);
  CHECK(sum(none).rank() == 0);
  CHECK(sum(zeros<float>({0, 3}), 0).to_vector() == std::vector<float>{0, 0, 0});
  CHECK(sum(zeros<float>({0, 3}), 0, true).shape() == Shape{1, 3});
  CHECK(sum(zeros<float>({3, 0}), 0).shape() == Shape{0});
  // Reducing a non-empty axis of an empty tensor is fine: there is nothing to compute.
  CHECK(max(zeros<float>({0, 5}), 1).shape() == Shape{0});
  CHECK(argmax(zeros<float>({0, 5}), 1).shape() == Shape{0});

  CHECK_THROWS_AS(mean(none), ValueError);
  CHECK_THROWS_AS(max(none), ValueError);
  CHECK_THROWS_AS(min(none), ValueError);
  CHECK_THROWS_AS(argmax(none), ValueError);
  CHECK_THROWS_AS(argmin(none, 0), ValueError);
  CHECK_THROWS_AS(max(zeros<float>({0, 5}), 0), ValueError);
  const std::string msg = message_of([&] { max(zeros<float>({0, 5}), 0); });
  CHECK(msg.rfind("[max]", 0) == 0);
  CHECK(contains(msg, "[0, 5]"));
  CHECK(message_of([&] { mean(none); }).rfind("[mean]", 0) == 0);
  CHECK(message_of([&] { min(none); }).rfind("[min]", 0) == 0);
  CHECK(message_of([&] { argmax(zeros<float>({2, 0}), 1); }).rfind("[argmax]", 0) == 0);
  CHECK(contains(message_of([&] { argmin(zeros<float>({2, 0}), -1); }), "[2, 0]"));
}

TEST_CASE("bad axes throw IndexError naming the op and the shape", "[ops][reduce]") {
  const auto x = zeros<float>({2, 3});
  CHECK_THROWS_AS(sum(x, 2), IndexError);
  CHECK_THROWS_AS(mean(x, -3), IndexError);
  CHECK_THROWS_AS(max(x, {0, 0}), IndexError);
  CHECK_THROWS_AS(min(x, {1, -1}), IndexError);
  CHECK_THROWS_AS(argmax(x, 5), IndexError);
  const std::string msg = message_of([&] { sum(x, 2); });
  CHECK(msg.rfind("[sum]", 0) == 0);
  CHECK(contains(msg, "[2, 3]"));
  CHECK(message_of([&] { max(x, {1, -1}); }).rfind("[max]", 0) == 0);
  CHECK(contains(message_of([&] { argmin(x, -4); }), "[argmin]"));
}

TEST_CASE("scalars and single-element reductions copy, never alias", "[ops][reduce]") {
  auto s = full<float>(Shape{}, 2.5f);
  CHECK(sum(s).item() == 2.5f);
  CHECK(mean(s).rank() == 0);
  CHECK(argmax(s).item() == 0);
  auto x = normal<float>({4, 1, 3}, 0.0, 1.0);
  auto r = sum(x, 1);
  CHECK(r.shape() == Shape{4, 3});
  CHECK(r.to_vector() == x.to_vector());
  r.fill(0.0f);
  CHECK(x.to_vector() != r.to_vector());
}

TEST_CASE("every axis by default or with {}; an empty run-time list reduces none", "[ops][reduce]") {
  Generator gen(10);
  const auto x = normal<float>({3, 4, 5}, 0.0, 1.0, gen);
  CHECK(sum(x).rank() == 0);
  CHECK(sum(x, {}).rank() == 0);
  CHECK(sum(x, Axes::all(), true).shape() == Shape{1, 1, 1});
  CHECK(sum(x, {}).item() == sum(x).item());
  const std::vector<int> none;
  const auto same = sum(x, none);
  CHECK(same.shape() == x.shape());
  CHECK(same.to_vector() == x.to_vector());
  CHECK(max(x, std::vector<int>{2, 0}).shape() == Shape{4});
}

TEST_CASE("results do not depend on the thread count", "[ops][reduce][threads]") {
  Generator gen(8);
  const auto a = normal<float>({3, 300007}, 0.0, 1.0, gen);
  const auto b = normal<float>({300007, 3}, 0.0, 1.0, gen);
  const auto c = normal<float>({700, 900}, 0.0, 1.0, gen);
  const auto d = normal<float>({64, 3000}, 0.0, 1.0, gen).to<bfloat16>();
  auto run = [&] {
    std::vector<std::vector<double>> out;
    out.push_back(as_doubles(sum(a)));
    out.push_back(as_doubles(sum(a, 1)));
    out.push_back(as_doubles(mean(b, 0)));
    out.push_back(as_doubles(sum(c, 0)));
    out.push_back(as_doubles(sum(c.t(), 0)));
    out.push_back(as_doubles(max(c, 1)));
    out.push_back(as_doubles(sum(d, 1)));
    out.push_back(as_doubles(sum(c, {0, 1})));
    for (auto i : argmax(b, 0).to_vector()) out.push_back({static_cast<double>(i)});
    for (auto i : argmin(c, 1).to_vector()) out.push_back({static_cast<double>(i)});
    return out;
  };
  const auto one = testing_support::with_threads(1, run), three = testing_support::with_threads(3, run);
  REQUIRE(one.size() == three.size());
  for (std::size_t i = 0; i < one.size(); ++i) REQUIRE(one[i] == three[i]);
}
