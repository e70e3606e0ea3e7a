// Where and how wide cerberus kernels run: one stream, 256-thread blocks, grid-stride loops.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>

#include "cerberus/backend/cuda/error.cuh"
#include "cerberus/core/config.hpp"

namespace cerberus::cuda_backend {

// The stream every cerberus kernel and copy of the calling thread is queued on: the legacy
// default stream (named explicitly so that nvcc's `--default-stream per-thread` cannot change
// it) unless a CudaStreamGuard (stream.cuh) chose another for this thread. Work on one stream
// runs in order, and the caching allocator keeps a pool per stream (memory.cuh), which is what
// lets it reuse blocks without events.
inline cudaStream_t& current_stream() {
  thread_local cudaStream_t current = cudaStreamLegacy;
  return current;
}
inline cudaStream_t stream() { return current_stream(); }

inline constexpr int block_size = 256;

// Blocks for a grid-stride loop over n > 0 items: one block per 256 items, capped at one full
// wave (2048 resident threads per SM on sm_80/sm_90 = 8 blocks); more blocks would only queue.
inline unsigned grid_size(Index n, const char* op) {
  int device = 0, sms = 0;
  check(cudaGetDevice(&device), op, "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), op, "cudaDeviceGetAttribute");
  const Index wanted = (n + block_size - 1) / block_size;
  return static_cast<unsigned>(std::max<Index>(1, std::min<Index>(wanted, Index{8} * sms)));
}

// The grid-stride loop's start and step for the calling thread (64-bit: tensors may exceed 2^31
// elements).
__device__ inline Index grid_first() { return static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ inline Index grid_step() { return static_cast<Index>(gridDim.x) * blockDim.x; }

}  // namespace cerberus::cuda_backend
