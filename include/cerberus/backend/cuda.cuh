// Everything for CUDA work in one include: the CPU library plus Tensor<T, cuda> and the device
// kernels of every op (reductions, softmax, matmul through cuBLAS, norms, cross-entropy,
// attention, indexing, dropout). Compile with nvcc (C++20: -std=c++20) and link cuBLAS
// (CMake: cerberus::cuda). Without a device, cuda_available() is false and the first device
// allocation throws DeviceError.
#pragma once

#if !defined(__CUDACC__)
#error "cerberus/backend/cuda.cuh holds CUDA kernels: compile this file with nvcc (a .cu file, or LANGUAGE CUDA in CMake)."
#endif

#include "cerberus/cerberus.hpp"

#include "cerberus/backend/cuda/device.cuh"
#include "cerberus/backend/cuda/memory.cuh"
#include "cerberus/backend/cuda/stream.cuh"
#include "cerberus/backend/cuda/backend.cuh"
#include "cerberus/backend/cuda/indexing.cuh"
#include "cerberus/backend/cuda/op_kernels.cuh"
#include "cerberus/backend/cuda/update.cuh"
