// A caching allocator: freed blocks go to a free list per size class and are handed out again,
// never returned to the system until empty_cache(). On these machines the first touch of a fresh
// 4 KiB page costs about 12 us, so a training step that got fresh memory for every temporary would
// spend most of its time in page faults. The same class serves CUDA with cudaMalloc/cudaFree.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <new>
#include <vector>

namespace cerberus {

struct AllocatorStats {
  std::size_t bytes_in_use = 0;     // handed out and not yet freed
  std::size_t bytes_cached = 0;     // freed, kept for reuse
  std::size_t allocations = 0;      // calls to allocate()
  std::size_t cache_hits = 0;       // allocate() calls served from the cache
  std::size_t system_allocations = 0;
};

// RawMemory provides `static void* allocate(std::size_t)` (nullptr on failure) and
// `static void release(void*)`.
template <class RawMemory>
class CachingAllocator {
 public:
  ~CachingAllocator() { empty_cache(); }

  // Size classes: powers of two split into four steps (at most 19% slack); small requests
  // round up to 256 bytes.
  static std::size_t size_class(std::size_t bytes) {
    if (bytes <= 256) return 256;
    const std::size_t top = std::bit_floor(bytes - 1);  // highest power of two below bytes
    const std::size_t step = top / 4;
    return (bytes + step - 1) / step * step;
  }

  void* allocate(std::size_t bytes) {
    const std::size_t cls = size_class(bytes);
    {
      std::lock_guard lock(mutex_);
      ++stats_.allocations;
      auto it = free_.find(cls);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        ++stats_.cache_hits;
        stats_.bytes_cached -= cls;
        stats_.bytes_in_use += cls;
        return p;
      }
    }
    void* p = RawMemory::allocate(cls);
    if (!p) {  // out of memory: drop the cache and try once more
      empty_cache();
      p = RawMemory::allocate(cls);
      if (!p) throw std::bad_alloc();
    }
    std::lock_guard lock(mutex_);
    ++stats_.system_allocations;
    stats_.bytes_in_use += cls;
    return p;
  }

  void deallocate(void* p, std::size_t bytes) {
    if (!p) return;
    const std::size_t cls = size_class(bytes);
    std::lock_guard lock(mutex_);
    free_[cls].push_back(p);
    stats_.bytes_in_use -= cls;
    stats_.bytes_cached += cls;
  }

  // Gives every cached block back to the system.
  void empty_cache() {
    std::lock_guard lock(mutex_);
    for (auto& [cls, blocks] : free_)
      for (void* p : blocks) RawMemory::release(p);
    free_.clear();
    stats_.bytes_cached = 0;
  }

  AllocatorStats stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::size_t, std::vector<void*>> free_;
  AllocatorStats stats_;
};

}  // namespace cerberus
