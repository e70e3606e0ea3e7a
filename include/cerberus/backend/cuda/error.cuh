// Checking CUDA calls. Every failure becomes a cerberus::DeviceError whose message names the op,
// the step that failed and CUDA's own words, e.g.
//   [cuda evaluate] kernel launch failed: invalid configuration argument (cudaErrorInvalidConfiguration)
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "cerberus/core/error.hpp"

namespace cerberus::cuda_backend {

// The DeviceError for a failed CUDA call: `op` is the library op ("evaluate"), `what` the step
// ("cudaMalloc of 1024 bytes").
inline DeviceError device_error(cudaError_t status, const char* op, const std::string& what) {
  return DeviceError(std::string("[cuda ") + op + "] " + what + " failed: " + cudaGetErrorString(status) + " (" +
                     cudaGetErrorName(status) + ")");
}

// Throws for anything but cudaSuccess. The runtime also records the failure as its "last error";
// that record is cleared here so it cannot resurface at the next launch check. (Sticky errors,
// such as a fault inside a kernel, keep coming back from every later call, as they should.)
inline void check(cudaError_t status, const char* op, const std::string& what) {
  if (status == cudaSuccess) return;
  (void)cudaGetLastError();
  throw device_error(status, op, what);
}

// After a kernel launch. A bad configuration is reported here at once; a fault while the kernel
// runs surfaces at the next synchronising call (a copy to the host), named after that call.
inline void check_launch(const char* op) { check(cudaGetLastError(), op, "kernel launch"); }

}  // namespace cerberus::cuda_backend
