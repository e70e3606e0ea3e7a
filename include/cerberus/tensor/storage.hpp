// Storage: one allocation shared by a tensor and all of its views. Each device's backend says
// how to get memory (Memory<D>); Storage only owns it.
#pragma once

#include <cstddef>
#include <memory>

#include "cerberus/core/device.hpp"

namespace cerberus {

// Specialised by each backend: `static void* allocate(std::size_t)`, `static void deallocate(void*, std::size_t)`.
template <class D>
struct Memory {
  static_assert(sizeof(D) == 0,
                "No backend for this device is included: include <cerberus/backend/cuda.cuh> and compile with nvcc to use cuda tensors.");
};

// Per-device kernels that need no expression: strided copies and conversions, fills, host
// transfers, and evaluation of an expression's kernel view. Specialised by each backend.
template <class D>
struct Backend {
  static_assert(sizeof(D) == 0,
                "No backend for this device is included: include <cerberus/backend/cuda.cuh> and compile with nvcc to use cuda tensors.");
};

template <class D>
class Storage {
 public:
  explicit Storage(std::size_t bytes) : data_(bytes ? Memory<D>::allocate(bytes) : nullptr), bytes_(bytes) {}
  ~Storage() { Memory<D>::deallocate(data_, bytes_); }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* data_;
  std::size_t bytes_;
};

}  // namespace cerberus
