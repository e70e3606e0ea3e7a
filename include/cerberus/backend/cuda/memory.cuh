// Device memory: cudaMalloc/cudaFree behind the same CachingAllocator as the CPU. Both calls cost
// tens of microseconds and cudaFree synchronises the whole device, so an op that got fresh memory
// for its output would stall the host on the GPU at every step; cached blocks avoid both.
//
// Reuse is safe without events because each stream has its own pool (StreamPools below) and
// work on one stream runs in order (launch.cuh): a block freed on the host while a kernel still
// reads it is handed out again only to work queued after that kernel.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "cerberus/backend/cuda/error.cuh"
#include "cerberus/backend/cuda/launch.cuh"
#include "cerberus/core/device.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/tensor/caching_allocator.hpp"
#include "cerberus/tensor/storage.hpp"

namespace cerberus {

namespace cuda_backend {

struct DeviceMemory {
  // nullptr when the device is out of memory, so that the allocator can empty its cache and try
  // again; any other failure (no device, no driver, a broken context) throws.
  static void* allocate(std::size_t bytes) {
    void* p = nullptr;
    const cudaError_t status = cudaMalloc(&p, bytes);
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      return nullptr;
    }
    check(status, "allocate", "cudaMalloc of " + std::to_string(bytes) + " bytes");
    return p;
  }
  // A failing cudaFree means the context is already broken (a fault in an earlier kernel); the
  // error is reported rather than hidden, since every later CUDA call would fail the same way.
  static void release(void* p) { check(cudaFree(p), "empty_cache", "cudaFree"); }
};

// One caching pool per stream: a block is handed out again only to work on the stream it was
// allocated on, where it is queued after every kernel that used it. (A tensor made on one stream
// and used on another must be kept alive until that other stream is synchronised, as with
// PyTorch's record_stream; stream.cuh says so where streams are chosen.) A pool is keyed by the
// stream's handle; CudaStream synchronises before it destroys its stream, so a later stream that
// gets the same handle may take the pool over.
class StreamPools {
 public:
  void* allocate(std::size_t bytes) {
    CachingAllocator<DeviceMemory>* pool = pool_for(stream());
    void* p = nullptr;
    try {
      p = pool->allocate(bytes);  // on failure it empties its own cache and tries once more
    } catch (const std::bad_alloc&) {
      empty_cache();  // other streams' cached blocks too (cudaFree waits for the device)
      p = pool->allocate(bytes);
    }
    std::lock_guard lock(mutex_);
    owner_[p] = pool;
    return p;
  }

  void deallocate(void* p, std::size_t bytes) {
    if (!p) return;
    CachingAllocator<DeviceMemory>* pool = nullptr;
    {
      std::lock_guard lock(mutex_);
      const auto it = owner_.find(p);
      if (it == owner_.end()) return;  // not ours: never handed out by allocate
      pool = it->second;
      owner_.erase(it);
    }
    pool->deallocate(p, bytes);
  }

  void empty_cache() {
    for (auto* pool : pools()) pool->empty_cache();
  }

  // Summed over the pools.
  AllocatorStats stats() const {
    AllocatorStats total;
    for (auto* pool : pools()) {
      const AllocatorStats s = pool->stats();
      total.bytes_in_use += s.bytes_in_use;
      total.bytes_cached += s.bytes_cached;
      total.allocations += s.allocations;
      total.cache_hits += s.cache_hits;
      total.system_allocations += s.system_allocations;
    }
    return total;
  }

  std::size_t pool_count() const {
    std::lock_guard lock(mutex_);
    return pools_.size();
  }

 private:
  CachingAllocator<DeviceMemory>* pool_for(cudaStream_t s) {
    std::lock_guard lock(mutex_);
    auto& pool = pools_[s];
    if (!pool) pool = std::make_unique<CachingAllocator<DeviceMemory>>();
    return pool.get();
  }
  std::vector<CachingAllocator<DeviceMemory>*> pools() const {
    std::lock_guard lock(mutex_);
    std::vector<CachingAllocator<DeviceMemory>*> out;
    for (const auto& [s, pool] : pools_) out.push_back(pool.get());
    return out;
  }

  mutable std::mutex mutex_;
  std::map<cudaStream_t, std::unique_ptr<CachingAllocator<DeviceMemory>>> pools_;
  std::unordered_map<void*, CachingAllocator<DeviceMemory>*> owner_;
};

inline StreamPools& allocator() {
  // Never destroyed: tensors may outlive statics, and cudaFree after the runtime has shut down at
  // exit fails. The driver reclaims the memory with the process.
  static auto* instance = new StreamPools();
  return *instance;
}

}  // namespace cuda_backend

namespace cuda_backend {
// Debug hook for tests: while on, every block handed out (fresh or cached) is filled with 0xFF
// bytes first, which read as NaN in float, double and bf16 (and -1 in integers), so an output
// element a kernel never writes shows up as NaN.
inline bool& poison_new_blocks() {
  static bool on = false;
  return on;
}
}  // namespace cuda_backend

// Turns the NaN-filling of every device block handed out on or off (tests only: it costs a memset per allocation).
inline void set_cuda_poison_allocations(bool on) { cuda_backend::poison_new_blocks() = on; }

template <>
struct Memory<cuda> {
  static void* allocate(std::size_t bytes) {
    try {
      void* p = cuda_backend::allocator().allocate(bytes);
      if (p && bytes && cuda_backend::poison_new_blocks())
        cuda_backend::check(cudaMemsetAsync(p, 0xFF, bytes, cuda_backend::stream()), "allocate", "cudaMemsetAsync (NaN poison)");
      return p;
    } catch (const std::bad_alloc&) {  // still out of memory after the cache was emptied
      throw cuda_backend::device_error(cudaErrorMemoryAllocation, "allocate",
                                       "cudaMalloc of " + std::to_string(bytes) + " bytes (after emptying the cache)");
    }
  }
  static void deallocate(void* p, std::size_t bytes) { cuda_backend::allocator().deallocate(p, bytes); }
};

// Statistics of the device caching allocator (summed over its per-stream pools), and a way to
// give cached blocks back to CUDA.
inline AllocatorStats cuda_memory_stats() { return cuda_backend::allocator().stats(); }
inline void empty_cuda_cache() { cuda_backend::allocator().empty_cache(); }

}  // namespace cerberus
