// Every elementwise op against a naive double reference: broadcasting, scalar operands,
// non-contiguous views, sizes that cross SIMD widths (1, 7, 33) and the threading threshold
// (> 10^5), float / double / bfloat16, fused chains, laziness, aliasing and error messages.
#include <cmath>
#include <limits>
#include <functional>
#include <string>
#include <vector>

#include "support/catch.hpp"
#include "support/reference.hpp"
#include "support/threads.hpp"

using namespace cerberus;
using namespace cerberus::testing_support;

namespace {

struct UnaryCase {
  const char* name;
  std::function<Tensor<float>(const Tensor<float>&)> op;
  std::function<Tensor<double>(const Tensor<double>&)> op_double;
  double (*ref)(double);
  double lo, hi;
};

double ref_sigmoid(double x) { return 1 / (1 + std::exp(-x)); }
double ref_relu(double x) { return x > 0 ? x : 0; }
double ref_gelu_tanh(double x) { return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
double ref_gelu_erf(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }
double ref_silu(double x) { return x / (1 + std::exp(-x)); }

#define UNARY(NAME, EXPR, REF, LO, HI)                                                             \
  UnaryCase {                                                                                      \
    NAME, [](const Tensor<float>& x) { return Tensor<float>(EXPR); },                               \
        [](const Tensor<double>& x) { return Tensor<double>(EXPR); }, REF, LO, HI                  \
  }

std::vector<UnaryCase> unary_cases() {
  return {
      UNARY("neg", -x, [](double v) { return -v; }, -5, 5),
      UNARY("exp", exp(x), [](double v) { return std::exp(v); }, -20, 20),
      UNARY("log", log(x), [](double v) { return std::log(v); }, 1e-3, 100),
      UNARY("sqrt", sqrt(x), [](double v) { return std::sqrt(v); }, 0, 100),
      UNARY("rsqrt", rsqrt(x), [](double v) { return 1 / std::sqrt(v); }, 1e-2, 100),
      UNARY("abs", abs(x), [](double v) { return std::abs(v); }, -5, 5),
      UNARY("square", square(x), [](double v) { return v * v; }, -5, 5),
      UNARY("tanh", tanh(x), [](double v) { return std::tanh(v); }, -6, 6),
      UNARY("sigmoid", sigmoid(x), ref_sigmoid, -30, 30),
      UNARY("relu", relu(x), ref_relu, -5, 5),
      UNARY("gelu_tanh", gelu_tanh(x), ref_gelu_tanh, -6, 6),
      UNARY("gelu (tanh form)", gelu(x), ref_gelu_tanh, -6, 6),
      UNARY("gelu_erf", gelu_erf(x), ref_gelu_erf, -6, 6),
      UNARY("silu", silu(x), ref_silu, -20, 20),
      UNARY("pow(x, 3)", pow(x, 3.0), [](double v) { return v * v * v; }, 0.1, 4),
      UNARY("pow(2, x)", pow(2.0f, x), [](double v) { return std::pow(2.0, v); }, -4, 4),
      UNARY("clamp", clamp(x, -1.0, 0.5), [](double v) { return std::min(std::max(v, -1.0), 0.5); }, -3, 3),
      UNARY("x * 2 + 1", x * 2.0f + 1, [](double v) { return v * 2 + 1; }, -3, 3),
      UNARY("1 / x", 1.0 / x, [](double v) { return 1 / v; }, 0.5, 3),
      UNARY("3 - x", 3 - x, [](double v) { return 3 - v; }, -3, 3),
  };
}

struct BinaryCase {
  const char* name;
  std::function<Tensor<float>(const Tensor<float>&, const Tensor<float>&)> op;
  double (*ref)(double, double);
  double lo, hi;
};

#define BINARY(NAME, EXPR, REF, LO, HI) \
  BinaryCase { NAME, [](const Tensor<float>& a, const Tensor<float>& b) { return Tensor<float>(EXPR); }, REF, LO, HI }

std::vector<BinaryCase> binary_cases() {
  return {
      BINARY("add", a + b, [](double x, double y) { return x + y; }, -5, 5),
      BINARY("sub", a - b, [](double x, double y) { return x - y; }, -5, 5),
      BINARY("mul", a * b, [](double x, double y) { return x * y; }, -5, 5),
      BINARY("div", a / b, [](double x, double y) { return x / y; }, 0.5, 5),
      BINARY("pow", pow(a, b), [](double x, double y) { return std::pow(x, y); }, 0.5, 3),
      BINARY("maximum", maximum(a, b), [](double x, double y) { return std::max(x, y); }, -5, 5),
      BINARY("minimum", minimum(a, b), [](double x, double y) { return std::min(x, y); }, -5, 5),
      BINARY("less", a < b, [](double x, double y) { return x < y ? 1.0 : 0.0; }, -2, 2),
      BINARY("less_equal", a <= b, [](double x, double y) { return x <= y ? 1.0 : 0.0; }, -2, 2),
      BINARY("greater", a > b, [](double x, double y) { return x > y ? 1.0 : 0.0; }, -2, 2),
      BINARY("greater_equal", a >= b, [](double x, double y) { return x >= y ? 1.0 : 0.0; }, -2, 2),
      BINARY("equal", equal(a, b), [](double x, double y) { return x == y ? 1.0 : 0.0; }, -2, 2),
      BINARY("not_equal", not_equal(a, b), [](double x, double y) { return x != y ? 1.0 : 0.0; }, -2, 2),
      BINARY("where(a > b, a, b * 2)", where(a > b, a, b * 2.0f), [](double x, double y) { return x > y ? x : y * 2; }, -2, 2),
      BINARY("fused chain", gelu(a * b + b) / (1.0f + exp(-a)),
             [](double x, double y) { return ref_gelu_tanh(x * y + y) / (1 + std::exp(-x)); }, -3, 3),
  };
}

// Rounds small integer-valued inputs for comparisons, so that equal/not_equal see ties.
Tensor<float> coarse(const Tensor<float>& t) {
  auto v = t.to_vector();
  for (auto& x : v) x = std::round(x * 2) / 2;
  return from_vector<float>(v, t.shape());
}

}  // namespace

TEST_CASE("unary ops match a double reference at SIMD and threading boundaries", "[expr][unary]") {
  Generator gen(1);
  for (const auto& c : unary_cases()) {
    for (Index n : {Index(1), Index(7), Index(33), Index(100003)}) {
      INFO(c.name << " n=" << n);
      const auto x = uniform<float>({n}, c.lo, c.hi, gen);
      std::vector<double> want;
      for (double v : values(x)) want.push_back(c.ref(v));
      const auto r = compare(values(c.op(x)), want, 2e-6, 1e-6);
      CHECK(r.ok());
      if (!r.ok()) WARN(r.describe());
      // double tensors run the same functors at double precision
      const auto xd = x.to<double>();
      const auto rd = compare(values(c.op_double(xd)), want, 1e-13, 1e-13);
      CHECK(rd.ok());
      if (!rd.ok()) WARN(rd.describe());
    }
  }
}

TEST_CASE("binary ops broadcast like NumPy and accept non-contiguous operands", "[expr][binary]") {
  Generator gen(2);
  struct Shapes {
    Shape a, b;
  };
  const std::vector<Shapes> shapes = {
      {{1}, {1}},         {{7}, {7}},          {{33}, {1}},           {{1}, {33}},     {{5, 33}, {33}},
      {{5, 1, 7}, {4, 1}}, {{3, 1}, {1, 7}},    {{100003}, {100003}}, {{320, 400}, {400}}, {{320, 1}, {320, 400}},
      {{2, 3, 4, 5}, {3, 1, 5}},
  };
  for (const auto& c : binary_cases()) {
    for (const auto& s : shapes) {
      INFO(c.name << " " << s.a.to_string() << " op " << s.b.to_string());
      const auto a = coarse(uniform<float>(s.a, c.lo, c.hi, gen));
      const auto b = coarse(uniform<float>(s.b, c.lo, c.hi, gen));
      const auto got = c.op(a, b);
      const Shape out = broadcast_shapes(s.a, s.b, "test");
      REQUIRE(got.shape() == out);
      std::vector<double> want;
      for_each_coord(out, [&](const std::vector<Index>& k) { want.push_back(c.ref(broadcast_at(a, k), broadcast_at(b, k))); });
      const auto r = compare(values(got), want, 2e-6, 1e-6);
      CHECK(r.ok());
      if (!r.ok()) WARN(r.describe());
    }
    // Transposed and strided (step 2) operands take the strided path.
    const auto base = uniform<float>({66, 40}, c.lo, c.hi, gen);
    const auto a = base.slice(0, 0, 66, 2).t();  // [40, 33], non-contiguous
    const auto b = uniform<float>({40, 33}, c.lo, c.hi, gen).slice(1, 1, 33);  // [40, 32]
    const auto a2 = a.slice(1, 0, 32);
    std::vector<double> want;
    for_each_coord(a2.shape(), [&](const std::vector<Index>& k) { want.push_back(c.ref(broadcast_at(a2, k), broadcast_at(b, k))); });
    const auto r = compare(values(c.op(a2, b)), want, 2e-6, 1e-6);
    INFO(c.name << " on non-contiguous views");
    CHECK(r.ok());
  }
}

TEST_CASE("ternary ops take tensors or numbers in any position", "[expr][ternary]") {
  Generator gen(3);
  const auto x = uniform<float>({4, 9}, -2, 2, gen);
  const auto lo = uniform<float>({9}, -1, 0, gen);
  const auto hi = uniform<float>({4, 1}, 0, 1, gen);
  const Tensor<float> clamped = clamp(x, lo, hi);
  const Tensor<float> picked = where(x, 1.0f, hi);  // nonzero x everywhere -> 1
  for_each_coord(x.shape(), [&](const std::vector<Index>& k) {
    const double v = broadcast_at(x, k);
    const double want = std::min(std::max(v, broadcast_at(lo, k)), broadcast_at(hi, k));
    REQUIRE(broadcast_at(clamped, k) == Approx(want));
    REQUIRE(broadcast_at(picked, k) == (v != 0 ? 1.0 : broadcast_at(hi, k)));
  });
}

TEST_CASE("bfloat16 tensors compute in float and round once on store", "[expr][bf16]") {
  Generator gen(4);
  const auto xf = uniform<float>({1000}, -3, 3, gen);
  const auto x = xf.to<bfloat16>();
  const Tensor<bfloat16> y = gelu(x * 2.0f) + x;
  const auto xv = values(x);
  const auto yv = values(y);
  for (std::size_t i = 0; i < xv.size(); ++i) {
    const float want = static_cast<float>(ref_gelu_tanh(xv[i] * 2) + xv[i]);
    REQUIRE(yv[i] == static_cast<double>(static_cast<float>(bfloat16(want))));
  }
  // Round trip float -> bf16 -> float loses at most half a bf16 ulp (8 significant bits: at
  // most 2^-8 relative).
  const auto back = x.to<float>().to_vector();
  const auto orig = xf.to_vector();
  for (std::size_t i = 0; i < back.size(); ++i) REQUIRE(std::abs(back[i] - orig[i]) <= std::abs(orig[i]) * (1.0 / 256));
}

TEST_CASE("expressions are lazy, hold their operands, and never dangle", "[expr][lazy]") {
  auto make = [] {
    const auto a = full<float>({3}, 2.0f);
    const auto b = full<float>({3}, 5.0f);
    return a * b + 1;  // a and b go out of scope; the expression keeps them alive
  };
  const auto e = make();
  const Tensor<float> r = e;
  CHECK(r.to_vector() == std::vector<float>{11, 11, 11});

  const auto a = zeros<float>({2});
  const auto lazy = a + 1;
  a.fill(41.0f);  // evaluation reads the data as it is when assigned
  CHECK(eval(lazy).to_vector() == std::vector<float>{42, 42});
}

TEST_CASE("assignment writes through views and survives aliasing", "[expr][assign]") {
  auto m = arange<float>(12).reshape({3, 4});
  m.slice(1, 0, 4, 2).assign(-1.0f);  // every other column
  CHECK(m.to_vector() == std::vector<float>{-1, 1, -1, 3, -1, 5, -1, 7, -1, 9, -1, 11});

  // In-place update through the same layout: no copy needed, still right.
  auto v = arange<float>(5);
  v += v * 2.0f;
  CHECK(v.to_vector() == std::vector<float>{0, 3, 6, 9, 12});

  // Reading the tensor through a transposed layout while writing it: evaluated via a temporary.
  auto sq = arange<float>(9).reshape({3, 3});
  sq.assign(sq.t() + 0.0f);
  CHECK(sq.to_vector() == std::vector<float>{0, 3, 6, 1, 4, 7, 2, 5, 8});

  // A row broadcast into a matrix.
  auto out = zeros<float>({2, 3});
  out.assign(from_vector<float>({1, 2, 3}) * 2.0f);
  CHECK(out.to_vector() == std::vector<float>{2, 4, 6, 2, 4, 6});
}

TEST_CASE("shape errors name the op and both shapes", "[expr][errors]") {
  const auto a = zeros<float>({2, 3});
  const auto b = zeros<float>({4});
  auto message_of = [](auto&& fn) {
    try {
      fn();
    } catch (const ShapeError& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  const auto add = message_of([&] { Tensor<float> c = a + b; });
  CHECK(add.find("[add]") != std::string::npos);
  CHECK(add.find("[2, 3]") != std::string::npos);
  CHECK(add.find("[4]") != std::string::npos);

  const auto nested = message_of([&] { Tensor<float> c = exp(a) * (b + 1); });
  CHECK(nested.find("[mul]") != std::string::npos);

  const auto into = message_of([&] { zeros<float>({3}).assign(a + 1); });
  CHECK(into.find("[assign]") != std::string::npos);
  CHECK(into.find("[2, 3]") != std::string::npos);
  CHECK(into.find("[3]") != std::string::npos);

  try {
    Tensor<float> c = a + Tensor<float>();
    FAIL("expected an Error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("undefined tensor") != std::string::npos);
  }

  const auto expanded = message_of([&] { zeros<float>({1, 3}).expand({4, 3}).assign(1.0f + a.slice(0, 0, 1)); });
  CHECK(expanded.find("broadcast view") != std::string::npos);
}

TEST_CASE("threaded evaluation gives the same bits as one thread", "[expr][threads]") {
  Generator gen(5);
  const auto x = uniform<float>({300001}, -3, 3, gen);
  // Evaluated inside the lambda, so on the thread count set around it.
  const auto eval = [&]() -> Tensor<float> { return gelu_erf(x) * sigmoid(x); };
  const Tensor<float> one = with_threads(1, eval), many = with_threads(std::max(num_threads(), 2), eval);
  CHECK(one.to_vector() == many.to_vector());
}

TEST_CASE("NaN propagates the same way in SIMD lanes and the scalar tail", "[expr][nan]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> a(37, 1.0f), b(37, 0.0f);
  for (std::size_t i = 0; i < a.size(); i += 3) a[i] = nan;  // in every lane position, and in the tail
  const auto ta = from_vector<float>(a), tb = from_vector<float>(b);
  const auto mx = Tensor<float>(maximum(ta, tb)).to_vector();
  const auto mn = Tensor<float>(minimum(tb, ta)).to_vector();
  const auto ne = Tensor<float>(not_equal(ta, ta)).to_vector();
  const auto wh = Tensor<float>(where(ta, 2.0f, 3.0f)).to_vector();
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO("element " << i);
    CHECK(std::isnan(mx[i]) == std::isnan(a[i]));
    CHECK(std::isnan(mn[i]) == std::isnan(a[i]));
    CHECK(ne[i] == (std::isnan(a[i]) ? 1.0f : 0.0f));
    CHECK(wh[i] == 2.0f);  // NaN is nonzero
  }
}
