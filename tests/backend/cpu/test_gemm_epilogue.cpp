// The GEMM's epilogue (backend/cpu/gemm.hpp): C = act(alpha A B + beta C + bias) with the bias
// and the tanh GELU applied by the kernel's store, against the unfused product followed by the
// same bias and GELU in double. Every path of the entry point: packed products (one and several
// K slices, edge tiles, both A layouts), matrix-vector (M = 1, N = 1), tiny products, a
// column-major C, beta != 0, bfloat16; the same bits on 1 and 2 threads. Then linear() (bias
// fused on the CPU) and linear_gelu_tanh against the unfused ops.
#include <cmath>
#include <vector>

#include "cerberus/backend/cpu/gemm.hpp"
#include "cerberus/expr/ops.hpp"
#include "cerberus/ops/linear.hpp"
#include "cerberus/tensor/factories.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"

using namespace cerberus;
using cerberus::testing_support::compare;
using cerberus::testing_support::values;
using cpu_backend::GemmActivation;
using cpu_backend::GemmEpilogue;

namespace {

double gelu_tanh_ref(double x) { return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }

struct Case {
  Index m, n, k;
};

// One product with the epilogue, checked against double sums + bias + GELU. Returns C's values.
template <class T>
std::vector<double> check_case(const Case& s, bool a_transposed, bool c_col_major, double beta, bool with_bias, bool gelu,
                               double tolerance) {
  Generator gen(static_cast<std::uint64_t>(s.m * 131 + s.n * 7 + s.k));
  // A is M x K, stored row-major or as the transpose of a K x M row-major matrix.
  const auto a_store = uniform<T>(a_transposed ? Shape{s.k, s.m} : Shape{s.m, s.k}, -1.0, 1.0, gen);
  const auto b = uniform<T>(Shape{s.k, s.n}, -1.0, 1.0, gen);
  const auto bias = uniform<T>(Shape{s.n}, -1.0, 1.0, gen);
  const auto c0 = uniform<T>(c_col_major ? Shape{s.n, s.m} : Shape{s.m, s.n}, -1.0, 1.0, gen);
  const auto c = c0.clone();
  const Index a_rs = a_transposed ? 1 : s.k, a_cs = a_transposed ? s.m : 1;
  const Index c_rs = c_col_major ? 1 : s.n, c_cs = c_col_major ? s.m : 1;
  const auto at = [](const Tensor<T>& t, Index i) { return static_cast<double>(static_cast<compute_t<T>>(t.data()[i])); };
  cpu_backend::gemm<T>(s.m, s.n, s.k, compute_t<T>(0.75), a_store.data(), a_rs, a_cs, b.data(), s.n, 1,
                       compute_t<T>(beta), c.data(), c_rs, c_cs,
                       GemmEpilogue<T>{with_bias ? bias.data() : nullptr, gelu ? GemmActivation::gelu_tanh : GemmActivation::none});
  std::vector<double> got, want;
  for (Index i = 0; i < s.m; ++i)
    for (Index j = 0; j < s.n; ++j) {
      double sum = 0.0;
      for (Index p = 0; p < s.k; ++p) sum += at(a_store, i * a_rs + p * a_cs) * at(b, p * s.n + j);
      double r = 0.75 * sum + (beta != 0.0 ? beta * at(c0, i * c_rs + j * c_cs) : 0.0) + (with_bias ? at(bias, j) : 0.0);
      want.push_back(gelu ? gelu_tanh_ref(r) : r);
      got.push_back(at(c, i * c_rs + j * c_cs));
    }
  const auto result = compare(got, want, tolerance, tolerance);
  INFO("m " << s.m << " n " << s.n << " k " << s.k << ", A transposed " << a_transposed << ", C column-major " << c_col_major
            << ", beta " << beta << ", bias " << with_bias << ", gelu " << gelu << ": " << result.describe());
  CHECK(result.ok());
  return got;
}

}  // namespace

TEST_CASE("the GEMM epilogue adds the bias and applies GELU on every path", "[backend][gemm][epilogue]") {
  // Packed: one K slice, several K slices (1100 > 512), edge tiles (M, N not multiples of 14 /
  // 32), N above one tile of B panels; matrix-vector: M = 1, N = 1; tiny: below 512 multiply-adds.
  const std::vector<Case> cases = {{45, 50, 70}, {100, 67, 1100}, {29, 700, 40}, {1, 37, 20}, {33, 1, 20}, {3, 4, 5}};
  for (const Case& s : cases)
    for (int layout = 0; layout < 4; ++layout)
      for (int variant = 0; variant < 4; ++variant) {
        const bool a_t = layout & 1, c_cm = layout & 2, bias = variant != 1, gelu = variant >= 1;
        const double beta = variant == 3 ? 0.5 : 0.0;
        check_case<float>(s, a_t, c_cm, beta, bias, gelu, 2e-5);
      }
  check_case<double>({45, 50, 70}, false, false, 0.0, true, true, 1e-12);
  check_case<double>({100, 67, 1100}, true, false, 0.5, true, false, 1e-12);
  // bfloat16 operands and result: sums, bias and GELU in float, one rounding at the end.
  check_case<bfloat16>({45, 50, 70}, false, false, 0.0, true, true, 2e-2);
}

TEST_CASE("the GEMM epilogue gives the same bits on 1 and 2 threads", "[backend][gemm][epilogue]") {
  const int threads = num_threads();
  for (const Case& s : {Case{300, 200, 1100}, Case{512, 96, 256}}) {
    set_num_threads(1);
    const auto one = check_case<float>(s, false, false, 0.0, true, true, 2e-5);
    const auto one_t = check_case<float>(s, true, false, 0.0, true, false, 2e-5);
    set_num_threads(2);
    CHECK(check_case<float>(s, false, false, 0.0, true, true, 2e-5) == one);
    CHECK(check_case<float>(s, true, false, 0.0, true, false, 2e-5) == one_t);
  }
  set_num_threads(threads);
}

TEST_CASE("linear and linear_gelu_tanh match the unfused ops", "[ops][linear][epilogue]") {
  Generator gen(3);
  const auto w = uniform<float>(Shape{70, 48}, -0.5, 0.5, gen);
  const auto b = uniform<float>(Shape{70}, -0.5, 0.5, gen);
  for (const Shape& s : {Shape{48}, Shape{3, 48}, Shape{4, 33, 48}}) {
    const auto x = uniform<float>(s, -1.0, 1.0, gen);
    Tensor<float> y_ref = matmul(x, w.t());
    y_ref = y_ref + b;
    CHECK(compare(values(linear(x, w, b)), values(y_ref), 1e-5, 1e-5).ok());
    const Tensor<float> g_ref = gelu_tanh(y_ref);
    {
      NoGradGuard inference;
      CHECK(compare(values(linear_gelu_tanh(x, w, b)), values(g_ref), 1e-5, 1e-5).ok());
      CHECK(compare(values(linear_gelu_tanh(x, w)), values(Tensor<float>(gelu_tanh(matmul(x, w.t())))), 1e-5, 1e-5).ok());
    }
  }
  // With autodiff on it records the two ops: gradients as through linear then gelu_tanh.
  Tensor<double> wd = uniform<double>(Shape{5, 4}, -1.0, 1.0, gen), bd = uniform<double>(Shape{5}, -1.0, 1.0, gen);
  const auto xd = uniform<double>(Shape{3, 4}, -1.0, 1.0, gen);
  wd.set_requires_grad(true);
  bd.set_requires_grad(true);
  sum(linear_gelu_tanh(xd, wd, bd)).backward();
  const auto gw = values(wd.grad()), gb = values(bd.grad());
  wd.clear_grad();
  bd.clear_grad();
  Tensor<double> ref = gelu_tanh(linear(xd, wd, bd));
  sum(ref).backward();
  CHECK(compare(gw, values(wd.grad()), 1e-12, 1e-12).ok());
  CHECK(compare(gb, values(bd.grad()), 1e-12, 1e-12).ok());
}
