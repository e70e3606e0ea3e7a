// OpKernels<D>: the kernels of the ops that are not elementwise expressions (reductions,
// softmax, matmul, norms, cross-entropy, attention) for devices other than the host. Each op
// keeps its CPU code in its own header and, for another device, calls OpKernels<D> with raw
// pointers and extents; the specialisation lives with that device's backend
// (backend/cuda/op_kernels.cuh for cuda, nvcc only).
//
// Using a cuda tensor with one of these ops in a translation unit that did not include
// <cerberus/backend/cuda.cuh> stops at the static_assert below: never a silent CPU fallback.
// (Indexing and dropout have their own per-device structs: IndexingKernels<D>, DropoutKernels<D>.)
#pragma once

#include "cerberus/core/device.hpp"

namespace cerberus {

template <class D>
struct OpKernels {
  static_assert(sizeof(D) == 0,
                "No op kernels for this device are included: include <cerberus/backend/cuda.cuh> and compile with nvcc to use ops "
                "(sum, softmax, matmul, layer_norm, cross_entropy, attention, ...) on cuda tensors.");
};

}  // namespace cerberus
