// Whether CUDA work can run at all in this process.
#pragma once

#include <cuda_runtime.h>

namespace cerberus {

// True when the runtime finds a driver and at least one device. Never throws: on a machine
// without a GPU or driver this is the normal answer, not an error.
inline bool cuda_available() noexcept {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();  // keep the failure from being blamed on a later call
    return false;
  }
  return count > 0;
}

}  // namespace cerberus
