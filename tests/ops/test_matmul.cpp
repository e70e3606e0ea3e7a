// matmul and the CPU GEMM: every product checked against a naive double-precision reference on
// random inputs (small, odd and edge-tile sizes, all four transpositions, strided and broadcast
// views, batches, bfloat16, alpha/beta), the error messages, and that results do not depend on
// the thread count.
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "cerberus/ops/matmul.hpp"
#include "support/catch.hpp"
#include "support/threads.hpp"

using namespace cerberus;

namespace {

template <class T>
double value(T x) {
  return static_cast<double>(static_cast<compute_t<T>>(x));
}

// Largest tolerated |got - want| given sum_p |a_ip * b_pj| (bounds the rounding of any order of
// summation) and |want| (bfloat16 rounds the result once more).
template <class T>
double tolerance(double abs_sum, double want) {
  if constexpr (std::is_same_v<T, double>) return 1e-13 * abs_sum + 1e-300;
  else if constexpr (std::is_same_v<T, float>) return 2e-6 * abs_sum + 1e-30;
  else return std::ldexp(std::abs(want), -8) + 2e-6 * abs_sum + 1e-30;
}

// Element (i, j) of a 2-D tensor of any strides.
template <class T>
T at(const Tensor<T>& t, Index i, Index j) {
  return t.data()[i * t.strides()[0] + j * t.strides()[1]];
}

// Compares c (2-D) with the double product a . b (2-D, any strides) at every element, or at
// `samples` random elements when given. Returns the number of mismatches (and reports the first).
template <class T>
int compare_2d(const Tensor<T>& c, const Tensor<T>& a, const Tensor<T>& b, double alpha = 1, double beta = 0,
               const std::vector<double>* c_before = nullptr, int samples = 0) {
  const Index m = a.size(0), k = a.size(1), n = b.size(1);
  REQUIRE(c.shape() == (Shape{m, n}));
  int bad = 0;
  Generator pick(99);
  const auto check = [&](Index i, Index j) {
    double sum = 0, abs_sum = 0;
    for (Index p = 0; p < k; ++p) {
      const double x = value(at(a, i, p)) * value(at(b, p, j));
      sum += x;
      abs_sum += std::abs(x);
    }
    double want = alpha * sum;
    if (beta != 0) want += beta * (*c_before)[static_cast<std::size_t>(i * n + j)];
    const double got = value(at(c, i, j));
    if (!(std::abs(got - want) <= tolerance<T>(std::abs(alpha) * abs_sum + std::abs(want), want))) {
      if (bad == 0) {
        UNSCOPED_INFO("first mismatch at (" << i << ", " << j << ") of " << m << "x" << k << "x" << n << ": got " << got
                                            << ", want " << want);
      }
      ++bad;
    }
  };
  if (samples > 0) {
    for (int s = 0; s < samples; ++s)
      check(static_cast<Index>(pick.next_u32() % static_cast<std::uint32_t>(m)), static_cast<Index>(pick.next_u32() % static_cast<std::uint32_t>(n)));
  } else {
    for (Index i = 0; i < m; ++i)
      for (Index j = 0; j < n; ++j) check(i, j);
  }
  return bad;
}

// A random m x k matrix, stored as is or as the transpose of a k x m matrix.
template <class T>
Tensor<T> random_matrix(Index rows, Index cols, bool transposed, Generator& gen) {
  if (transposed) return uniform<T>(Shape{cols, rows}, -1.0, 1.0, gen).t();
  return uniform<T>(Shape{rows, cols}, -1.0, 1.0, gen);
}

// Selects the leading (batch) coordinates of flat batch index e from t (already expanded to the
// batch shape), leaving the last `keep` dimensions.
template <class T>
Tensor<T> batch_entry(Tensor<T> t, const Shape& batch, Index e) {
  for (int d = batch.rank() - 1; d >= 0; --d) {
    const Index i = e % batch[d];
    e /= batch[d];
    t = t.select(d, i);
  }
  return t;
}

template <class T>
std::vector<T> bits_of(const Tensor<T>& t) {
  return t.contiguous().to_vector();
}

template <class T>
bool same_bits(const Tensor<T>& x, const Tensor<T>& y) {
  const auto a = bits_of(x), b = bits_of(y);
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

std::string error_of(const auto& fn) {
  try {
    fn();
  } catch (const ShapeError& e) {
    return e.what();
  }
  return "(no ShapeError)";
}

}  // namespace

TEMPLATE_TEST_CASE("matmul matches a double reference for every size and transposition", "[ops][matmul]", float, double) {
  Generator gen(1);
  const std::vector<Index> sizes{1, 7, 33, 65};
  for (const Index m : sizes)
    for (const Index k : sizes)
      for (const Index n : sizes)
        for (int t = 0; t < 4; ++t) {
          const auto a = random_matrix<TestType>(m, k, t & 1, gen);
          const auto b = random_matrix<TestType>(k, n, t & 2, gen);
          INFO(m << "x" << k << "x" << n << ", transposed a " << (t & 1) << ", b " << (t >> 1));
          CHECK(compare_2d(matmul(a, b), a, b) == 0);
        }
}

TEMPLATE_TEST_CASE("matmul handles large and odd shapes in all transpositions", "[ops][matmul]", float, double) {
  Generator gen(2);
  const Index shapes[][3] = {{257, 257, 257}, {1, 1000, 3}, {97, 13, 301}, {3, 1000, 1}, {301, 2, 97}, {15, 700, 33}, {129, 31, 1}};
  for (const auto& s : shapes)
    for (int t = 0; t < 4; ++t) {
      const auto a = random_matrix<TestType>(s[0], s[1], t & 1, gen);
      const auto b = random_matrix<TestType>(s[1], s[2], t & 2, gen);
      INFO(s[0] << "x" << s[1] << "x" << s[2] << ", transposed a " << (t & 1) << ", b " << (t >> 1));
      CHECK(compare_2d(matmul(a, b), a, b) == 0);
    }
}

TEST_CASE("matmul over several packing chunks of K, M and N", "[ops][matmul]") {
  // Big enough that K is cut into chunks (and N, then M, in the last two), checked at samples.
  Generator gen(3);
  const Index shapes[][3] = {{1100, 1000, 1100}, {40, 4000, 3000}, {3000, 400, 40}};
  for (const auto& s : shapes) {
    const auto a = random_matrix<float>(s[0], s[1], false, gen);
    const auto b = random_matrix<float>(s[1], s[2], true, gen);
    INFO(s[0] << "x" << s[1] << "x" << s[2]);
    CHECK(compare_2d(matmul(a, b), a, b, 1, 0, nullptr, 400) == 0);
  }
}

TEST_CASE("matmul reads strided, sliced and broadcast views in place", "[ops][matmul]") {
  Generator gen(4);
  const auto big = uniform<float>(Shape{120, 150}, -1.0, 1.0, gen);
  // Every other row, every third column: neither stride is 1.
  const auto a = big.slice(0, 1, 101, 2).slice(1, 0, 150, 3);  // [50, 50]
  const auto b = big.slice(0, 3, 53).slice(1, 7, 77);           // [50, 70], rows 150 apart
  CHECK(compare_2d(matmul(a, b), a, b) == 0);
  CHECK(compare_2d(matmul(a.t(), b), a.t(), b) == 0);
  CHECK(compare_2d(matmul(b.t(), a.t()), b.t(), a.t()) == 0);
  // A row broadcast down the rows (stride 0) times a column-sliced matrix.
  const auto row = uniform<float>(Shape{1, 64}, -1.0, 1.0, gen).expand(Shape{40, 64});
  const auto c = big.slice(0, 0, 64).slice(1, 1, 150, 2);  // [64, 75]
  CHECK(compare_2d(matmul(row, c), row, c) == 0);
  // A view starting inside its storage.
  const auto d = big.slice(0, 17, 57).slice(1, 20, 110);  // [40, 90]
  const auto e = big.slice(0, 30, 120).slice(1, 3, 33);   // [90, 30]
  CHECK(compare_2d(matmul(d, e), d, e) == 0);
}

TEST_CASE("matmul does not copy transposed operands", "[ops][matmul]") {
  Generator gen(5);
  const auto a = uniform<float>(Shape{200, 300}, -1.0, 1.0, gen);
  const auto b = uniform<float>(Shape{200, 300}, -1.0, 1.0, gen);
  const auto bt = b.t().contiguous();
  // Same allocations (the result plus the GEMM's packing scratch) whether b is transposed in
  // memory or a transposed view: the view is read in place.
  (void)matmul(a, bt);
  const auto before = cpu_memory_stats().allocations;
  (void)matmul(a, bt);
  const auto contiguous_cost = cpu_memory_stats().allocations - before;
  const auto before_view = cpu_memory_stats().allocations;
  const auto c = matmul(a, b.t());
  CHECK(cpu_memory_stats().allocations - before_view == contiguous_cost);
  CHECK(compare_2d(c, a, b.t()) == 0);
}

TEST_CASE("matmul follows NumPy for 1-D operands", "[ops][matmul]") {
  Generator gen(6);
  const auto x = uniform<double>(Shape{37}, -1.0, 1.0, gen);
  const auto y = uniform<double>(Shape{37}, -1.0, 1.0, gen);
  const auto dot = matmul(x, y);
  CHECK(dot.rank() == 0);
  double want = 0;
  for (Index i = 0; i < 37; ++i) want += x(i) * y(i);
  CHECK(dot.item() == Approx(want).epsilon(1e-12));

  const auto m = uniform<double>(Shape{37, 23}, -1.0, 1.0, gen);
  const auto xm = matmul(x, m);  // [37] x [37, 23] -> [23]
  REQUIRE(xm.shape() == Shape{23});
  const auto mx = matmul(m.t(), x);  // [23, 37] x [37] -> [23]
  REQUIRE(mx.shape() == Shape{23});
  for (Index j = 0; j < 23; ++j) {
    double s = 0;
    for (Index i = 0; i < 37; ++i) s += x(i) * m(i, j);
    CHECK(xm(j) == Approx(s).epsilon(1e-12));
    CHECK(mx(j) == Approx(s).epsilon(1e-12));
  }
  // Empty inner dimension: zeros. Empty outer: an empty result.
  CHECK(matmul(zeros<float>(Shape{3, 0}), zeros<float>(Shape{0, 4})).to_vector() == std::vector<float>(12, 0.0f));
  CHECK(matmul(zeros<float>(Shape{0, 5}), zeros<float>(Shape{5, 4})).shape() == (Shape{0, 4}));
}

TEMPLATE_TEST_CASE("batched matmul broadcasts the batch dimensions", "[ops][matmul]", float, double) {
  Generator gen(7);
  struct Case {
    Shape a, b;
  };
  const std::vector<Case> cases{
      {{2, 3, 5, 7}, {3, 7, 4}},    // b broadcast over the leading batch dim
      {{4, 9, 6}, {6, 11}},         // shared b: one folded [36, 6] x [6, 11] product
      {{1, 5, 7}, {6, 7, 4}},       // a's batch extent 1 repeats
      {{5, 7}, {6, 7, 4}},          // 2-D a repeats
      {{7}, {3, 7, 4}},             // 1-D a: [3, 4]
      {{3, 5, 7}, {7}},             // 1-D b: [3, 5]
      {{2, 1, 33, 17}, {1, 3, 17, 40}},
      {{8, 40, 70}, {8, 70, 50}},  // big enough for the packed GEMM
  };
  for (const auto& cs : cases) {
    const auto a = uniform<TestType>(cs.a, -1.0, 1.0, gen);
    const auto b = uniform<TestType>(cs.b, -1.0, 1.0, gen);
    const auto c = matmul(a, b);
    INFO("a " << cs.a.to_string() << ", b " << cs.b.to_string() << " -> " << c.shape().to_string());
    // Reference: lift 1-D operands to matrices, expand both to the broadcast batch, compare
    // entry by entry.
    const auto a2 = a.rank() == 1 ? a.unsqueeze(0) : a;
    const auto b2 = b.rank() == 1 ? b.unsqueeze(1) : b;
    Shape ab, bb;
    for (int d = 0; d + 2 < a2.rank(); ++d) ab.push_back(a2.size(d));
    for (int d = 0; d + 2 < b2.rank(); ++d) bb.push_back(b2.size(d));
    const Shape batch = broadcast_shapes(ab, bb, "test");
    Shape as = batch, bs = batch, full = batch;
    as.push_back(a2.size(-2)), as.push_back(a2.size(-1));
    bs.push_back(b2.size(-2)), bs.push_back(b2.size(-1));
    full.push_back(a2.size(-2)), full.push_back(b2.size(-1));
    Shape expected = batch;
    if (a.rank() > 1) expected.push_back(a2.size(-2));
    if (b.rank() > 1) expected.push_back(b2.size(-1));
    REQUIRE(c.shape() == expected);
    const auto ae = a2.expand(as), be = b2.expand(bs), ce = c.reshape(full);
    for (Index e = 0; e < batch.numel(); ++e) {
      CHECK(compare_2d(batch_entry(ce, batch, e), batch_entry(ae, batch, e), batch_entry(be, batch, e)) == 0);
    }
  }
  // Transposed batch views: a [4, 7, 5] seen as [4, 5, 7], b [4, 6, 7] seen as [4, 7, 6].
  const auto a = uniform<TestType>(Shape{4, 7, 5}, -1.0, 1.0, gen).transpose(1, 2);
  const auto b = uniform<TestType>(Shape{4, 6, 7}, -1.0, 1.0, gen).transpose(-1, -2);
  const auto c = matmul(a, b);
  REQUIRE(c.shape() == (Shape{4, 5, 6}));
  for (Index e = 0; e < 4; ++e) CHECK(compare_2d(c.select(0, e), a.select(0, e), b.select(0, e)) == 0);
  // A batch of rows that are not evenly strided (a slice of the time axis) cannot be folded.
  const auto x = uniform<TestType>(Shape{3, 10, 8}, -1.0, 1.0, gen).slice(1, 2, 9);
  const auto w = uniform<TestType>(Shape{8, 5}, -1.0, 1.0, gen);
  const auto xw = matmul(x, w);
  for (Index e = 0; e < 3; ++e) CHECK(compare_2d(xw.select(0, e), x.select(0, e), w) == 0);
}

TEST_CASE("bfloat16 matmul sums in float and rounds once", "[ops][matmul][bf16]") {
  Generator gen(8);
  const Index shapes[][3] = {{7, 7, 7}, {65, 129, 33}, {1, 300, 17}, {40, 257, 1}, {100, 64, 100}};
  for (const auto& s : shapes)
    for (int t = 0; t < 4; ++t) {
      const auto a = random_matrix<bfloat16>(s[0], s[1], t & 1, gen);
      const auto b = random_matrix<bfloat16>(s[1], s[2], t & 2, gen);
      INFO(s[0] << "x" << s[1] << "x" << s[2] << ", transposed a " << (t & 1) << ", b " << (t >> 1));
      CHECK(compare_2d(matmul(a, b), a, b) == 0);
    }
  const auto a = uniform<bfloat16>(Shape{3, 20, 30}, -1.0, 1.0, gen);
  const auto b = uniform<bfloat16>(Shape{30, 25}, -1.0, 1.0, gen);
  const auto c = matmul(a, b);
  for (Index e = 0; e < 3; ++e) CHECK(compare_2d(c.select(0, e), a.select(0, e), b) == 0);
}

TEMPLATE_TEST_CASE("matmul_into scales by alpha and accumulates with beta", "[ops][matmul]", float, double, bfloat16) {
  Generator gen(9);
  const Index shapes[][3] = {{7, 9, 5}, {65, 70, 80}, {1, 50, 40}, {40, 50, 1}};
  for (const auto& s : shapes)
    for (const double beta : {0.0, 1.0, -0.5}) {
      const auto a = random_matrix<TestType>(s[0], s[1], false, gen);
      const auto b = random_matrix<TestType>(s[1], s[2], true, gen);
      auto out = uniform<TestType>(Shape{s[0], s[2]}, -1.0, 1.0, gen);
      std::vector<double> before;
      for (Index i = 0; i < s[0]; ++i)
        for (Index j = 0; j < s[2]; ++j) before.push_back(value(out(i, j)));
      matmul_into(out, a, b, 1.5, beta);
      INFO(s[0] << "x" << s[1] << "x" << s[2] << ", beta " << beta);
      CHECK(compare_2d(out, a, b, 1.5, beta, &before) == 0);
    }
  // beta = 0 overwrites: NaNs already in out do not leak into the result.
  const auto a = uniform<TestType>(Shape{20, 30}, -1.0, 1.0, gen);
  const auto b = uniform<TestType>(Shape{30, 40}, -1.0, 1.0, gen);
  const auto nan_out = full<TestType>(Shape{20, 40}, TestType(std::numeric_limits<float>::quiet_NaN()));
  matmul_into(nan_out, a, b);
  CHECK(compare_2d(nan_out, a, b) == 0);
  // A column-major destination (a transposed view) is written in place.
  const auto storage = zeros<TestType>(Shape{40, 20});
  matmul_into(storage.t(), a, b);
  CHECK(compare_2d(storage.t(), a, b) == 0);
}

TEST_CASE("matmul_into copies operands that share memory with out", "[ops][matmul]") {
  Generator gen(10);
  const auto x = uniform<double>(Shape{30, 30}, -1.0, 1.0, gen);
  const auto w = uniform<double>(Shape{30, 30}, -1.0, 1.0, gen);
  const auto x0 = x.clone();
  std::vector<double> before;
  for (Index i = 0; i < 30; ++i)
    for (Index j = 0; j < 30; ++j) before.push_back(x(i, j));
  matmul_into(x, x, w, 1.0, 1.0);  // x += x . w
  CHECK(compare_2d(x, x0, w, 1.0, 1.0, &before) == 0);
}

TEST_CASE("the raw GEMM takes BLAS-style flags, leading dimensions and edge cases", "[ops][matmul][gemm]") {
  Generator gen(11);
  const Index m = 45, n = 50, k = 70, lda = 80, ldb = 90, ldc = 60;
  const auto abuf = uniform<float>(Shape{k, lda}, -1.0, 1.0, gen);  // room for A or A^T with padding
  const auto bbuf = uniform<float>(Shape{k, ldb}, -1.0, 1.0, gen);
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    // op(A) is m x k: stored m x k with leading dimension lda, or k x m when transposed.
    const auto a = ta ? abuf.slice(1, 0, m).t() : Tensor<float>(abuf.storage(), 0, Shape{m, k}, Strides{lda, 1});
    const auto b = tb ? Tensor<float>(bbuf.storage(), 0, Shape{k, n}, Strides{1, ldb}) : bbuf.slice(1, 0, n);
    const auto cbuf = uniform<float>(Shape{m, ldc}, -1.0, 1.0, gen);
    const auto c = cbuf.slice(1, 0, n);
    std::vector<double> before;
    for (Index i = 0; i < m; ++i)
      for (Index j = 0; j < n; ++j) before.push_back(c(i, j));
    cpu_backend::gemm<float>(ta ? cpu_backend::Transpose::yes : cpu_backend::Transpose::no,
                             tb ? cpu_backend::Transpose::yes : cpu_backend::Transpose::no, m, n, k, 0.5f, abuf.data(), lda,
                             bbuf.data(), ldb, 2.0f, cbuf.data(), ldc);
    INFO("transposed a " << ta << ", b " << tb);
    CHECK(compare_2d(c, a, b, 0.5, 2.0, &before) == 0);
  }
  // K = 0 and alpha = 0: C = beta * C, A and B are not read (null pointers here).
  std::vector<float> c(6, 2.0f);
  cpu_backend::gemm<float>(2, 3, 0, 1.0f, nullptr, 0, 1, nullptr, 3, 1, 0.5f, c.data(), 3, 1);
  CHECK(c == std::vector<float>(6, 1.0f));
  cpu_backend::gemm<float>(2, 3, 4, 0.0f, nullptr, 4, 1, nullptr, 3, 1, 0.0f, c.data(), 3, 1);
  CHECK(c == std::vector<float>(6, 0.0f));
  // Strides everywhere, C with neither stride 1.
  const auto a = uniform<double>(Shape{30, 40}, -1.0, 1.0, gen);
  const auto b = uniform<double>(Shape{40, 50}, -1.0, 1.0, gen);
  const auto cs = zeros<double>(Shape{60, 150});
  const auto cv = cs.slice(0, 0, 60, 2).slice(1, 0, 150, 3);  // [30, 50], strides (300, 3)
  cpu_backend::gemm<double>(30, 50, 40, 1.0, a.data(), 40, 1, b.data(), 50, 1, 0.0, cv.data(), 300, 3);
  CHECK(compare_2d(cv, a, b) == 0);
}

TEST_CASE("matmul errors name the op and both shapes", "[ops][matmul]") {
  const auto a = zeros<float>(Shape{2, 3});
  const auto b = zeros<float>(Shape{4, 5});
  const std::string inner = error_of([&] { (void)matmul(a, b); });
  CHECK(inner == "[matmul] shapes [2, 3] and [4, 5] do not match: inner dimensions 3 and 4 differ");
  const std::string batch = error_of([] { (void)matmul(zeros<float>(Shape{2, 3, 4}), zeros<float>(Shape{5, 4, 6})); });
  CHECK(batch.rfind("[matmul] shapes [2, 3, 4] and [5, 4, 6] do not match: batch dimensions [2] and [5]", 0) == 0);
  const std::string scalar = error_of([] { (void)matmul(zeros<float>(Shape{}), zeros<float>(Shape{3})); });
  CHECK(scalar.rfind("[matmul] shapes [] and [3]", 0) == 0);
  const std::string vec = error_of([] { (void)matmul(zeros<float>(Shape{3}), zeros<float>(Shape{4})); });
  CHECK(vec == "[matmul] shapes [3] and [4] do not match: inner dimensions 3 and 4 differ");
  const std::string out = error_of([&] { matmul_into(zeros<float>(Shape{2, 4}), a, zeros<float>(Shape{3, 5})); });
  CHECK(out.rfind("[matmul] out has shape [2, 4], but shapes [2, 3] and [3, 5] give [2, 5]", 0) == 0);
  const std::string bcast = error_of([&] {
    matmul_into(zeros<float>(Shape{1, 5}).expand(Shape{2, 5}), a, zeros<float>(Shape{3, 5}));
  });
  CHECK(bcast.rfind("[matmul] cannot write into a broadcast view", 0) == 0);
}

TEST_CASE("matmul results are the same bits for any thread count", "[ops][matmul][threads]") {
  Generator gen(12);
  struct Case {
    Shape a, b;
    bool ta;
  };
  const std::vector<Case> cases{{{257, 257}, {257, 257}, false}, {{1, 1000}, {1000, 3}, false}, {{97, 13}, {13, 301}, true},
                                {{600, 300}, {300, 1}, false},   {{16, 33, 65}, {65, 40}, false}, {{16, 33, 65}, {16, 65, 40}, true},
                                {{300, 200}, {200, 500}, true},
                                // K cut into several slices (and A packed per panel / per group)
                                {{150, 1100}, {1100, 90}, false}, {{150, 1100}, {1100, 90}, true}};
  for (const auto& cs : cases) {
    auto a = uniform<float>(cs.a, -1.0, 1.0, gen);
    if (cs.ta) a = a.transpose(-1, -2).contiguous().transpose(-1, -2);  // same values, column-major
    const auto b = uniform<float>(cs.b, -1.0, 1.0, gen);
    const auto ab = uniform<bfloat16>(cs.a, -1.0, 1.0, gen);
    const auto bb = uniform<bfloat16>(cs.b, -1.0, 1.0, gen);
    const auto products = [&] { return std::pair{matmul(a, b), matmul(ab, bb)}; };
    const auto one = testing_support::with_threads(1, products);
    for (const int threads : {2, 3}) {
      const auto many = testing_support::with_threads(threads, products);
      INFO("a " << cs.a.to_string() << ", b " << cs.b.to_string() << ", " << threads << " threads");
      CHECK(same_bits(many.first, one.first));
      CHECK(same_bits(many.second, one.second));
    }
  }
}
