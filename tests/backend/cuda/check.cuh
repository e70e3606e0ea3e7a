// Shared checker for the CUDA op tests (no Catch2): one line per check with its largest error,
// a failure count, and exit 77 (ctest's SKIP_RETURN_CODE) when there is no usable device.
//
// Every device block is filled with NaN when it is handed out (set_cuda_poison_allocations), so
// an output element a kernel never writes stays NaN, and NaN never passes a comparison.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <limits>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/backend/cuda.cuh"

namespace check {

using namespace cerberus;

inline int failures = 0;

inline void report(bool ok, const std::string& name, const std::string& detail = "") {
  std::printf("%s %s%s%s\n", ok ? "[pass]" : "[FAIL]", name.c_str(), detail.empty() ? "" : ": ", detail.c_str());
  std::fflush(stdout);
  if (!ok) ++failures;
}

inline std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

template <class T>
double tolerance() {
  if constexpr (std::is_same_v<T, double>) return 1e-10;
  else if constexpr (std::is_same_v<T, float>) return 1e-5;
  else return 1e-2;
}

// Largest |got - want| / max(|want|, 1); NaN on either side, or a size mismatch, is infinite.
template <class T>
double max_error(const std::vector<T>& got, const std::vector<T>& want, std::size_t* worst = nullptr) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  double err = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = static_cast<double>(static_cast<compute_t<T>>(got[i]));
    const double w = static_cast<double>(static_cast<compute_t<T>>(want[i]));
    double e;
    if (std::isnan(g) || std::isnan(w)) e = std::numeric_limits<double>::infinity();
    else if (std::isinf(w) || std::isinf(g)) e = (g == w) ? 0.0 : std::numeric_limits<double>::infinity();
    else e = std::fabs(g - w) / std::max(std::fabs(w), 1.0);
    if (!(e <= err)) {
      err = e;
      if (worst) *worst = i;
    }
  }
  return err;
}

template <class T>
void expect_close(const std::string& name, const Tensor<T, cuda>& got, const Tensor<T, cpu>& want, double tol = tolerance<T>()) {
  if (!got.defined() || !want.defined()) {
    report(got.defined() == want.defined(), name, "defined: cuda " + std::to_string(got.defined()) + ", cpu " + std::to_string(want.defined()));
    return;
  }
  if (!(got.shape() == want.shape())) {
    report(false, name, "shape " + got.shape().to_string() + " vs CPU " + want.shape().to_string());
    return;
  }
  const auto g = got.to_vector(), w = want.to_vector();
  std::size_t worst = 0;
  const double err = max_error(g, w, &worst);
  std::string detail = "max rel error " + fmt(err) + " (tol " + fmt(tol) + ", " + std::to_string(g.size()) + " elements)";
  if (!(err < tol) && worst < g.size())
    detail += "; worst element " + std::to_string(worst) + ": cuda " + fmt(static_cast<double>(static_cast<compute_t<T>>(g[worst]))) + ", cpu " +
              fmt(static_cast<double>(static_cast<compute_t<T>>(w[worst])));
  report(err < tol, name, detail);
}

inline void expect_equal_ids(const std::string& name, const Tensor<std::int64_t, cuda>& got, const Tensor<std::int64_t, cpu>& want) {
  const auto g = got.to_vector(), w = want.to_vector();
  const bool same = got.shape() == want.shape() && g == w;
  report(same, name, same ? "equal, " + std::to_string(g.size()) + " indices" : "indices differ from the CPU's");
}

template <class T>
void expect_bitwise(const std::string& name, const Tensor<T, cuda>& got, const Tensor<T, cpu>& want) {
  const auto g = got.to_vector(), w = want.to_vector();
  bool same = got.shape() == want.shape() && g.size() == w.size();
  for (std::size_t i = 0; same && i < g.size(); ++i) same = std::memcmp(&g[i], &w[i], sizeof(T)) == 0;
  report(same, name, same ? "bitwise equal, " + std::to_string(g.size()) + " elements" : "differs from the CPU result");
}

template <class T>
Tensor<T, cpu> random(const Shape& shape, Generator& gen, double low = -3.0, double high = 3.0) {
  return uniform<T>(shape, low, high, gen);
}

// A leaf on each device holding the same values, both requiring grad.
template <class T>
struct Pair {
  Tensor<T, cpu> h;
  Tensor<T, cuda> d;
};
template <class T>
Pair<T> leaf_pair(const Tensor<T, cpu>& values) {
  Pair<T> p{values.clone().detach(), values.template to<cuda>()};
  p.h.set_requires_grad();
  p.d.set_requires_grad();
  return p;
}

// Gives every parameter of `device` (a module on cuda) the value of the same-named parameter of
// `host` (the same module on the CPU), as a fresh leaf requiring grad.
template <class HostModule, class DeviceModule>
void copy_weights(const HostModule& host, DeviceModule& device) {
  std::map<std::string, std::remove_cvref_t<decltype(host.named_parameters().front().tensor)>> weights;
  for (const auto& p : host.named_parameters()) weights[p.name] = p.tensor;
  device.visit_parameters("", [&](const std::string& name, auto& p) {
    p = weights.at(name).template to<cuda>();
    p.set_requires_grad();
  });
}

// Runs main_body with the device checks, or reports the skip. Returns the process exit code.
template <class F>
int run(const char* title, F main_body) {
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess || devices == 0) {
    (void)cudaGetLastError();
    std::printf("%s: no usable CUDA device (%s); skipping (exit 77)\n", title,
                status != cudaSuccess ? cudaGetErrorString(status) : "no devices");
    return 77;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) std::printf("%s on %s (sm_%d%d)\n", title, prop.name, prop.major, prop.minor);
  set_cuda_poison_allocations(true);
  try {
    main_body();
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

}  // namespace check
