// The GEMM's path for a few rows against a weight read in place (backend/cpu/gemm.hpp,
// dot_rows_kernel): C [M, N] = A [M, K] W^T for 2 <= M <= 16 with A's and W's rows contiguous in
// K, as a decoding step's projections are. Against double sums for row counts on both sides of
// each kernel block (4 and 8 rows), weight counts that leave partial blocks of 3 and 4, depths
// below, at and past a vector (K % 16 != 0), with alpha, beta, bias and GELU; float and double;
// the same bits on 1 and 2 threads; linear() on a [B, 1, C] decoding input against the packed
// product of the same rows inside a larger batch.
#include <cmath>
#include <cstring>
#include <vector>

#include "cerberus/backend/cpu/gemm.hpp"
#include "cerberus/ops/linear.hpp"
#include "cerberus/tensor/factories.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"
#include "support/threads.hpp"

using namespace cerberus;
using cerberus::testing_support::compare;
using cpu_backend::GemmActivation;
using cpu_backend::GemmEpilogue;

namespace {

double gelu_tanh_ref(double x) { return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }

// C = act(alpha A W^T + beta C + bias) with W [N, K] row-major seen as B = W^T (b_rs = 1).
template <class T>
std::vector<T> check(Index m, Index n, Index k, double beta, bool bias, bool gelu, double tolerance) {
  Generator gen(static_cast<std::uint64_t>(m * 1000003 + n * 1009 + k));
  const auto a = uniform<T>(Shape{m, k}, -1.0, 1.0, gen);
  const auto w = uniform<T>(Shape{n, k}, -1.0, 1.0, gen);
  const auto b = uniform<T>(Shape{n}, -1.0, 1.0, gen);
  const auto c0 = uniform<T>(Shape{m, n}, -1.0, 1.0, gen);
  const auto c = c0.clone();
  cpu_backend::gemm<T>(m, n, k, T(0.75), a.data(), k, 1, w.data(), 1, k, T(beta), c.data(), n, 1,
                       GemmEpilogue<T>{bias ? b.data() : nullptr, gelu ? GemmActivation::gelu_tanh : GemmActivation::none});
  std::vector<double> got, want;
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j) {
      double sum = 0.0;
      for (Index p = 0; p < k; ++p) sum += static_cast<double>(a.data()[i * k + p]) * static_cast<double>(w.data()[j * k + p]);
      double r = 0.75 * sum + beta * static_cast<double>(c0.data()[i * n + j]) + (bias ? static_cast<double>(b.data()[j]) : 0.0);
      want.push_back(gelu ? gelu_tanh_ref(r) : r);
      got.push_back(static_cast<double>(c.data()[i * n + j]));
    }
  const auto result = compare(got, want, tolerance, tolerance);
  INFO("m " << m << " n " << n << " k " << k << ", beta " << beta << ", bias " << bias << ", gelu " << gelu << ": " << result.describe());
  CHECK(result.ok());
  return std::vector<T>(c.data(), c.data() + m * n);
}

}  // namespace

TEST_CASE("a few rows against a weight read in place match double sums", "[backend][gemm]") {
  for (const Index m : {Index{2}, Index{3}, Index{4}, Index{5}, Index{8}, Index{9}, Index{16}})
    for (const Index n : {Index{2}, Index{7}, Index{37}, Index{300}})
      for (const Index k : {Index{60}, Index{64}, Index{100}, Index{513}}) check<float>(m, n, k, 0.0, false, false, 2e-5);
  // The epilogue and beta on both kernel shapes.
  for (const Index m : {Index{3}, Index{11}}) {
    check<float>(m, 37, 100, 0.5, true, false, 2e-5);
    check<float>(m, 37, 100, 0.0, true, true, 2e-5);
    check<double>(m, 37, 100, 0.5, true, true, 1e-12);
  }
}

TEST_CASE("a few rows against a weight read in place give the same bits on 1 and 2 threads", "[backend][gemm]") {
  const auto product = [] { return check<float>(6, 4001, 256, 0.0, true, false, 2e-5); };
  const auto one = testing_support::with_threads(1, product), two = testing_support::with_threads(2, product);
  CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
}

TEST_CASE("linear on a decoding step's few rows matches the same rows in a large batch", "[ops][linear][gemm]") {
  // A [3, 1, 96] step (3 sequences, one new token each) goes through the in-place path, the same
  // rows among 40 through the packed one: the two agree to float rounding.
  Generator gen(5);
  const auto x = uniform<float>(Shape{40, 96}, -1.0, 1.0, gen);
  const auto w = uniform<float>(Shape{200, 96}, -0.3, 0.3, gen);
  const auto bias = uniform<float>(Shape{200}, -1.0, 1.0, gen);
  const Tensor<float> big = linear(x, w, bias);
  const Tensor<float> few = linear(x.slice(0, 0, 3).reshape({3, 1, 96}), w, bias);
  REQUIRE(few.shape() == Shape{3, 1, 200});
  std::vector<double> got, want;
  for (Index i = 0; i < 3 * 200; ++i) {
    got.push_back(few.contiguous().data()[i]);
    want.push_back(big.data()[i]);
  }
  const auto result = compare(got, want, 1e-5, 1e-5);
  INFO(result.describe());
  CHECK(result.ok());
}
