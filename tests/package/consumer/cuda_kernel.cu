// Consumer of the `cuda` component compiled by nvcc: Tensor<float, cuda> through the installed
// headers, one fused expression on the device, checked on the host. Exits 77 (skipped) when no
// CUDA device is usable.
#include <cerberus/backend/cuda.cuh>

#include <cstdio>
#include <vector>

int main() {
  using namespace cerberus;
  if (!cuda_available()) {
    std::printf("cuda kernel consumer: no usable CUDA device, skipped\n");
    return 77;
  }
  const Tensor<float, cuda> a = arange<float>(6).reshape({2, 3}).to<cuda>();
  const Tensor<float, cuda> b = from_vector<float>({10.0f, 20.0f, 30.0f}).to<cuda>();
  const Tensor<float, cuda> y = a * 2.0f + b;  // y[r][j] = 2 * (3r + j) + 10 * (j + 1)
  const std::vector<float> host = y.to_vector();
  for (int r = 0; r < 2; ++r)
    for (int j = 0; j < 3; ++j)
      if (host[static_cast<std::size_t>(3 * r + j)] != static_cast<float>(2 * (3 * r + j) + 10 * (j + 1))) {
        std::fprintf(stderr, "cuda kernel consumer: y[%d][%d] = %g\n", r, j, static_cast<double>(host[3 * r + j]));
        return 1;
      }
  std::printf("cuda kernel consumer: ok\n");
  return 0;
}
