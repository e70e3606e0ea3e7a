// Consumer of the `cuda` component, compiled by the host compiler: cerberus::cuda must bring the
// CUDA runtime and cuBLAS headers and libraries. Needs no GPU: it asks both libraries for their
// versions and compares them with the headers it was compiled against.
#include <cerberus/cerberus.hpp>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <library_types.h>

#include <cstdio>
#include <string>

int main() {
  int runtime = 0;
  if (cudaRuntimeGetVersion(&runtime) != cudaSuccess || runtime != CUDART_VERSION) {
    std::fprintf(stderr, "cuda consumer: runtime version %d, headers say %d\n", runtime, CUDART_VERSION);
    return 1;
  }
  int major = -1;
  if (cublasGetProperty(MAJOR_VERSION, &major) != CUBLAS_STATUS_SUCCESS || major != CUBLAS_VER_MAJOR) {
    std::fprintf(stderr, "cuda consumer: cuBLAS major version %d, headers say %d\n", major, CUBLAS_VER_MAJOR);
    return 1;
  }
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  // The core still works alongside: 2 * ones + 1 == 3 everywhere.
  const cerberus::Tensor<float> host = cerberus::ones<float>(cerberus::Shape{4}) * 2.0f + 1.0f;
  for (float v : host.to_vector())
    if (v != 3.0f) {
      std::fprintf(stderr, "cuda consumer: host expression gave %g\n", static_cast<double>(v));
      return 1;
    }
  std::printf("cuda consumer: runtime %d, cuBLAS %d, devices: %s: ok\n", runtime, major,
              status == cudaSuccess ? std::to_string(devices).c_str() : cudaGetErrorName(status));
  return 0;
}
