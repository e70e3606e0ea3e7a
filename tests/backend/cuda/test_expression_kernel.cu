// The CUDA expression kernel against the CPU backend, on the same random inputs: broadcasting,
// non-contiguous operands and outputs, scalars, bf16 and double, fused chains, conversions and
// fills. Every device output is filled with NaN before the kernel runs, so an element the kernel
// never writes fails (NaN never passes a comparison).
//
// Self-contained (no Catch2, which is awkward under nvcc): one line per check, exit 1 on any
// failure, and exit 77 (ctest's SKIP_RETURN_CODE) when there is no usable device.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <string>
#include <vector>

#include "cerberus/backend/cuda.cuh"

namespace {

using namespace cerberus;

int failures = 0;

void report(bool ok, const std::string& name, const std::string& detail = "") {
  std::printf("%s %s%s%s\n", ok ? "[pass]" : "[FAIL]", name.c_str(), detail.empty() ? "" : ": ", detail.c_str());
  if (!ok) ++failures;
}

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

// Largest error of `got` against `want`, relative to max(|want|, 1) so that values near zero are
// judged on absolute error (GELU's 1 + tanh(...) cancels for negative inputs, and the CPU and
// GPU tanh may differ in the last bit). A NaN on either side, or a length mismatch, is infinite.
template <class T>
double max_error(const std::vector<T>& got, const std::vector<T>& want, std::size_t* worst = nullptr) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  double err = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = static_cast<double>(static_cast<compute_t<T>>(got[i]));
    const double w = static_cast<double>(static_cast<compute_t<T>>(want[i]));
    const double e = (std::isnan(g) || std::isnan(w)) ? std::numeric_limits<double>::infinity()
                                                      : std::fabs(g - w) / std::max(std::fabs(w), 1.0);
    if (!(e <= err)) {
      err = e;
      if (worst) *worst = i;
    }
  }
  return err;
}

// The tolerance for each element type: float and double to a few ulps of their compute type;
// bf16 results may differ by one bf16 ulp (2^-7 relative) when CPU and GPU float results round
// to different sides.
template <class T>
double tolerance() {
  if constexpr (std::is_same_v<T, double>) return 1e-12;
  else if constexpr (std::is_same_v<T, float>) return 1e-5;
  else return 1e-2;
}

template <class T>
void expect_close(const std::string& name, const Tensor<T, cuda>& got, const Tensor<T, cpu>& want) {
  if (!(got.shape() == want.shape())) {
    report(false, name, "shape " + got.shape().to_string() + " vs CPU " + want.shape().to_string());
    return;
  }
  const auto g = got.to_vector(), w = want.to_vector();
  std::size_t worst = 0;
  const double err = max_error(g, w, &worst);
  std::string detail = "max error " + fmt(err) + " (tolerance " + fmt(tolerance<T>()) + ") over " + std::to_string(g.size()) + " elements";
  if (!(err < tolerance<T>()) && worst < g.size())
    detail += "; worst: element " + std::to_string(worst) + ", cuda " + fmt(static_cast<double>(static_cast<compute_t<T>>(g[worst]))) +
              ", cpu " + fmt(static_cast<double>(static_cast<compute_t<T>>(w[worst])));
  report(err < tolerance<T>(), name, detail);
}

template <class T>
void expect_equal(const std::string& name, const Tensor<T, cuda>& got, const Tensor<T, cpu>& want) {
  const auto g = got.to_vector(), w = want.to_vector();
  bool same = got.shape() == want.shape() && g.size() == w.size();
  for (std::size_t i = 0; same && i < g.size(); ++i) same = std::memcmp(&g[i], &w[i], sizeof(T)) == 0;
  report(same, name, same ? "bitwise equal, " + std::to_string(g.size()) + " elements" : "differs from the CPU result");
}

template <class T>
T nan_value() {
  return static_cast<T>(std::numeric_limits<float>::quiet_NaN());
}

// A new tensor holding e's values, written by assign(). Unlike the converting constructor
// (`Tensor y = e;`), assign() records nothing for autodiff, so the references below leave the
// autodiff nodes and their backward kernels uninstantiated, which keeps this file's build time
// down. The constructor path itself is checked once, in check_constructor_path().
template <class E>
auto values_of(const E& e) {
  const auto out = Tensor<expr_value_t<E>, expr_device_t<E>>::empty(expr_shape(e));
  out.assign(e);
  return out;
}

// f(operands...) on the CPU, and on the GPU into an output filled with NaN first. `f` builds the
// same expression for either device (views such as .t() are taken inside it, on each device).
template <class T, class F, class... Hosts>
void check_expression(const std::string& name, F f, const Hosts&... host) {
  const Tensor<T, cpu> want = values_of(f(host...));
  const auto got = Tensor<T, cuda>::empty(want.shape());
  got.fill(nan_value<T>());
  got.assign(f(host.template to<cuda>()...));
  expect_close(name, got, want);
}

template <class T>
Tensor<T, cpu> random(const Shape& shape, Generator& gen, double low = -3.0, double high = 3.0) {
  return uniform<T>(shape, low, high, gen);
}

// ---- the checks -------------------------------------------------------------------------------

// The checker itself: NaN where the reference is finite, or a NaN reference, never passes.
void check_checker() {
  const std::vector<float> nan_got{1.0f, std::numeric_limits<float>::quiet_NaN()}, finite{1.0f, 2.0f};
  const bool rejects = !(max_error(nan_got, finite) < 1.0) && !(max_error(finite, nan_got) < 1.0) &&
                       !(max_error(nan_got, nan_got) < 1.0);
  report(rejects, "checker rejects NaN on either side");
}

// Error messages name the op and CUDA's description (host-only: runs without a device too).
void check_error_message() {
  try {
    cuda_backend::check(cudaErrorInvalidValue, "evaluate", "kernel launch");
    report(false, "check() throws DeviceError", "no exception");
  } catch (const DeviceError& e) {
    const std::string msg = e.what();
    const bool ok = msg.rfind("[cuda evaluate] kernel launch failed: ", 0) == 0 &&
                    msg.find(cudaGetErrorString(cudaErrorInvalidValue)) != std::string::npos &&
                    msg.find("cudaErrorInvalidValue") != std::string::npos;
    report(ok, "check() throws DeviceError naming op and CUDA error", msg);
  }
}

// Without a device: cuda_available() answers false, and a device allocation throws DeviceError.
void check_no_device_path() {
  bool answered = false, available = true;
  try {
    available = cuda_available();
    answered = true;
  } catch (...) {
  }
  report(answered && !available, "cuda_available() is false without throwing");
  try {
    const auto t = Tensor<float, cuda>::empty({4});
    report(false, "device allocation without a device throws DeviceError", "allocation succeeded");
  } catch (const DeviceError& e) {
    const std::string msg = e.what();
    report(msg.rfind("[cuda allocate] cudaMalloc of ", 0) == 0, "device allocation without a device throws DeviceError", msg);
  }
}

void check_constructor_path(Generator& gen) {
  const Shape shape{37, 129};
  const auto a = random<float>(shape, gen), b = random<float>(shape, gen);
  const Tensor<float, cpu> want = values_of(exp(a) * 2.0f + b);
  const auto da = a.to<cuda>(), db = b.to<cuda>();
  {  // a NaN block of the output's size goes back to the cache; the constructor gets it next
    const auto poison = Tensor<float, cuda>::empty(shape);
    poison.fill(nan_value<float>());
  }
  const auto hits = cuda_memory_stats().cache_hits;
  Tensor<float, cuda> y = exp(da) * 2.0f + db;
  report(cuda_memory_stats().cache_hits == hits + 1, "constructor output reuses the NaN-filled cached block");
  expect_close("Tensor<float, cuda> y = exp(a) * 2 + b", y, want);
}

void check_broadcasting(Generator& gen) {
  check_expression<float>("broadcast [4,1,33] * [5,33] + [33]", [](const auto& a, const auto& b, const auto& c) { return a * b + c; },
                          random<float>({4, 1, 33}, gen), random<float>({5, 33}, gen), random<float>({33}, gen));
  check_expression<float>("broadcast against rank-0 and [1] tensors",
                          [](const auto& x, const auto& m, const auto& r) { return (x - m) * r; }, random<float>({3, 7, 11}, gen),
                          random<float>(Shape{}, gen), random<float>({1}, gen));
  check_expression<float>("broadcast column [6,1] against row [1,257]", [](const auto& a, const auto& b) { return maximum(a, b) - b; },
                          random<float>({6, 1}, gen), random<float>({1, 257}, gen));
}

void check_non_contiguous(Generator& gen) {
  check_expression<float>("transposed operand x.t() * y", [](const auto& x, const auto& y) { return x.t() * y; },
                          random<float>({64, 48}, gen), random<float>({48, 64}, gen));
  check_expression<float>("permuted 3-D operand and strided slice",
                          [](const auto& x, const auto& y) { return x.permute({2, 0, 1}) + y.slice(2, 0, 18, 3); },
                          random<float>({5, 6, 7}, gen), random<float>({7, 5, 18}, gen));
  // Writing through a transposed view: the kernel's output strides are not row-major.
  const auto y = random<float>({24, 40}, gen);
  const Tensor<float, cpu> want = values_of(exp(y) - 1.0f);
  const auto base = Tensor<float, cuda>::empty({40, 24});
  base.fill(nan_value<float>());
  base.t().assign(exp(y.to<cuda>()) - 1.0f);
  expect_close("output written through a transposed view", base.t().contiguous(), want);
  // In-place with aliasing: x = x.t() + 1 reads memory it overwrites, so it goes through a
  // temporary and the strided convert kernel.
  const auto sq = random<float>({33, 33}, gen);
  const Tensor<float, cpu> sq_want = values_of(sq.t() + 1.0f);
  const auto dsq = sq.to<cuda>();
  dsq.assign(dsq.t() + 1.0f);
  expect_close("aliased in-place x.assign(x.t() + 1)", dsq, sq_want);
}

void check_scalars(Generator& gen) {
  check_expression<float>("clamp(x, -0.5, 0.5) + where(x > 0, x, 0.1 * x)",
                          [](const auto& x) { return clamp(x, -0.5f, 0.5f) + where(x > 0.0f, x, 0.1f * x); },
                          random<float>({17, 65}, gen));
  check_expression<float>("pow(abs(x) + 1, 1.5) / (2 + x * x)", [](const auto& x) { return pow(abs(x) + 1.0f, 1.5f) / (2.0f + x * x); },
                          random<float>({1000}, gen));
  check_expression<float>("comparisons as masks", [](const auto& a, const auto& b) { return (a < b) + (a >= b) * 2.0f + equal(a, a) * 4.0f; },
                          random<float>({9, 31}, gen), random<float>({31}, gen));
}

void check_chains(Generator& gen) {
  check_expression<float>("gelu(x * a + b)", [](const auto& x, const auto& a, const auto& b) { return gelu(x * a + b); },
                          random<float>({32, 256}, gen), random<float>({256}, gen, 0.5, 1.5), random<float>({256}, gen, -0.5, 0.5));
  check_expression<float>("unary functors: gelu_erf, silu, sigmoid, tanh, rsqrt, log, sqrt, relu, square, -x",
                          [](const auto& x) {
                            return gelu_erf(x) + silu(x) + sigmoid(x) + tanh(x) + rsqrt(x * x + 1.0f) + log(x * x + 1.0f) +
                                   sqrt(abs(x)) + relu(x) + square(x) * 0.01f - x;
                          },
                          random<float>({3, 5, 7, 11}, gen));
  check_expression<float>("large tensor, several grid-stride iterations", [](const auto& x, const auto& b) { return gelu(x) * b; },
                          random<float>({4096, 1031}, gen), random<float>({1031}, gen));
}

void check_other_types(Generator& gen) {
  check_expression<bfloat16>("bf16 exp(a) * 2 + b with broadcasting",
                             [](const auto& a, const auto& b) { return exp(a) * 2.0f + b; }, random<bfloat16>({13, 77}, gen),
                             random<bfloat16>({77}, gen));
  check_expression<bfloat16>("bf16 gelu(x * a + b), transposed x",
                             [](const auto& x, const auto& a, const auto& b) { return gelu(x.t() * a + b); },
                             random<bfloat16>({64, 40}, gen), random<bfloat16>({64}, gen), random<bfloat16>({64}, gen));
  check_expression<double>("double exp(a) * 2 + b / c", [](const auto& a, const auto& b, const auto& c) { return exp(a) * 2.0 + b / c; },
                           random<double>({50, 50}, gen), random<double>({50}, gen), random<double>({50, 1}, gen, 1.0, 2.0));
}

void check_copies(Generator& gen) {
  const auto x = random<float>({6, 7, 8}, gen);
  const auto dx = x.to<cuda>();
  expect_equal("to<cuda>().to<cpu>() round trip", dx, x);
  expect_equal("contiguous() of a permuted tensor (convert kernel)", dx.permute({2, 0, 1}).contiguous(),
               x.permute({2, 0, 1}).contiguous());
  expect_equal("clone() of a strided slice", dx.slice(2, 1, 8, 2).clone(), x.slice(2, 1, 8, 2).clone());
  expect_equal("float -> bf16 on the device", dx.to<bfloat16>(), x.to<bfloat16>());
  expect_equal("bf16 -> float on the device", dx.to<bfloat16>().to<float>(), x.to<bfloat16>().to<float>());
  expect_equal("float -> double of a transposed view", dx.transpose(0, 2).to<double>(), x.transpose(0, 2).to<double>());
  expect_equal("float -> int32 (truncation)", values_of(dx * 10.0f).to<std::int32_t>(),
               values_of(x * 10.0f).to<std::int32_t>());

  // fill through strides: every other column of a NaN-free tensor.
  const auto host = random<float>({5, 12}, gen);
  const auto dev = host.to<cuda>();
  host.slice(1, 0, 12, 2).fill(7.5f);
  dev.slice(1, 0, 12, 2).fill(7.5f);
  expect_equal("fill() of a strided slice", dev, host);
  expect_equal("zeros<float, cuda>", zeros<float, cuda>({3, 4}), zeros<float, cpu>({3, 4}));
}

}  // namespace

int main() {
  try {
    check_checker();
    check_error_message();

    int devices = 0;
    const cudaError_t status = cudaGetDeviceCount(&devices);
    if (status != cudaSuccess || devices == 0) {
      const std::string why = status != cudaSuccess
                                  ? "cudaGetDeviceCount failed: " + std::string(cudaGetErrorString(status)) + " (" + cudaGetErrorName(status) + ")"
                                  : "cudaGetDeviceCount found no devices";
      std::printf("no usable CUDA device (%s)\n", why.c_str());
      (void)cudaGetLastError();
      check_no_device_path();
      if (failures) return 1;
      std::printf("skipping the device comparisons (exit 77)\n");
      return 77;
    }
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) std::printf("device 0: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    report(cuda_available(), "cuda_available() with a device");

    Generator gen(20240611);
    check_constructor_path(gen);
    check_broadcasting(gen);
    check_non_contiguous(gen);
    check_scalars(gen);
    check_chains(gen);
    check_other_types(gen);
    check_copies(gen);
  } catch (const std::exception& e) {
    report(false, "uncaught exception", e.what());
  }
  if (failures) {
    std::printf("%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("all checks passed\n");
  return 0;
}
