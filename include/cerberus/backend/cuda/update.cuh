// optim::Kernels<cuda>: the device side of the optimizers (optim/kernels.hpp) and of gradient
// clipping. Included by <cerberus/backend/cuda.cuh>.
//   update_elements(n, fn, arrays...)  a fused kernel over one parameter tensor: thread i loads
//                                      element i of every array into registers, calls the same
//                                      CERBERUS_HOST_DEVICE functor as the CPU (SgdUpdate,
//                                      AdamUpdate, ...) on floats, stores back the non-const arrays
//   UpdateBatch                        while one is open (Optimizer::step opens one), calls to
//                                      update_elements are queued, and flush() launches them per
//                                      functor and array types, up to `capacity` tensors per
//                                      launch (multi_tensor_plan.hpp): a step of a 16-layer model
//                                      is one or two launches instead of ~200. The arrays must
//                                      stay alive until flush(). An UpdateBatch destroyed without
//                                      flush() drops its queue: a step that threw updates nothing.
//   sum_of_squares_many(tensors)       the same over many tensors with one copy to the host:
//                                      per 1024-element chunk (the multi-tensor plan) a double
//                                      partial, then one block adds all partials in a fixed
//                                      order; grad_norm over a model is one synchronisation
//                                      instead of one per parameter
//   sum_of_squares(x, n)               squares summed in double: a fixed grid of at most 1024
//                                      blocks of 256 threads (independent of the device, so the
//                                      result depends on n and the data only), block sums in
//                                      shared memory, the block partials added in order on the host
// The CPU adds its squares in a different order, so norms agree to double rounding, and updates
// agree to float rounding (the CPU may evaluate the same functor with SIMD fused multiply-adds).
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "cerberus/backend/cuda/backend.cuh"
#include "cerberus/backend/cuda/error.cuh"
#include "cerberus/backend/cuda/launch.cuh"
#include "cerberus/backend/cuda/multi_tensor_plan.hpp"
#include "cerberus/backend/cuda/reduce.cuh"
#include "cerberus/core/config.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/optim/kernels.hpp"

namespace cerberus::cuda_backend {

namespace update_detail {

template <class P, class C>
__device__ inline void store(P* p, Index i, const C& v) {
  if constexpr (!std::is_const_v<P>) p[i] = v;
}

template <class C, class Fn, class... P, std::size_t... K>
__device__ inline void apply_at(const Fn& fn, Index i, std::index_sequence<K...>, P*... arrays) {
  C values[sizeof...(P)] = {arrays[i]...};  // constant indices only: registers
  fn(values[K]...);
  (store(arrays, i, values[K]), ...);
}

}  // namespace update_detail

template <class C, class Fn, class... P>
__global__ void update_elements_kernel(Index n, Fn fn, P*... arrays) {
  for (Index i = grid_first(); i < n; i += grid_step())
    update_detail::apply_at<C>(fn, i, std::index_sequence_for<P...>{}, arrays...);
}

// The compute type of an update's arrays: the first array's (check_update_arrays: all agree).
template <class... P>
using update_compute_t = compute_t<std::remove_const_t<std::tuple_element_t<0, std::tuple<P...>>>>;

template <class First, class... Rest>
constexpr void check_update_arrays() {
  // As on the CPU: float, double or bfloat16 arrays of one compute type (bf16 read into float,
  // stored rounded through bfloat16's conversions).
  using C = update_compute_t<First>;
  static_assert((std::is_same_v<C, compute_t<std::remove_const_t<Rest>>> && ...),
                "update_elements: every array must have the same compute type (float and bfloat16 arrays mix, double stays alone).");
  static_assert(std::is_floating_point_v<C>, "update_elements: arrays of float, double or bfloat16 only.");
}

// The bytes of kernel parameters a launch may pass: 32764 since CUDA 12.1 on every device it
// supports (CUDA 13, which this project builds with, needs a driver of R580 or newer, well past
// the R530 that larger parameters need), 4 KiB before. A multi-tensor table fills most of it.
#if CUDART_VERSION >= 12010
inline constexpr std::size_t kernel_parameter_bytes = 32764;
#else
inline constexpr std::size_t kernel_parameter_bytes = 4096;
#endif

namespace update_detail {

template <std::size_t K, class... P>
using array_t = std::tuple_element_t<K, std::tuple<P*...>>;

// One launch's tensors: where each block works (Blocks), and per tensor its functor (the rule's
// per-parameter scalars: learning rate scale, weight decay) and its arrays. Sized to fit the
// kernel parameters (kernel_parameter_bytes: about 350 AdamW tensors, so a whole model is one
// launch); passed __grid_constant__, so blocks read their entry in place instead of copying it.
template <class Fn, std::size_t Arrays>
struct TableLayout {
  static constexpr std::size_t per_tensor = sizeof(Fn) + Arrays * sizeof(void*) + 2 * sizeof(Index);
  static constexpr int capacity = static_cast<int>((kernel_parameter_bytes - 256) / per_tensor);
  static_assert(capacity >= 8, "update_elements: the update functor is too large for a multi-tensor launch");
};

template <class Fn, class... P>
struct Table {
  static constexpr int capacity = TableLayout<Fn, sizeof...(P)>::capacity;
  multi_tensor::Blocks<capacity> blocks;
  Fn fn[capacity];
  void* arrays[capacity][sizeof...(P)];
};

template <class C, class Fn, class... P, std::size_t... K>
__device__ inline void apply_range(const Table<Fn, P...>& table, const multi_tensor::Range& r, std::index_sequence<K...> seq) {
  const Fn& fn = table.fn[r.job];
  for (Index i = r.begin + threadIdx.x; i < r.end; i += blockDim.x)
    apply_at<C>(fn, i, seq, static_cast<array_t<K, P...>>(table.arrays[r.job][K])...);
}

template <class C, class Fn, class... P>
__global__ void multi_update_kernel(const __grid_constant__ Table<Fn, P...> table) {
  static_assert(sizeof(Table<Fn, P...>) <= kernel_parameter_bytes, "a multi-tensor update table must fit in the kernel parameters");
  const multi_tensor::Range r = multi_tensor::block_range(table.blocks, static_cast<Index>(blockIdx.x));
  apply_range<C>(table, r, std::index_sequence_for<P...>{});
}

struct PendingUpdates {
  virtual ~PendingUpdates() = default;
  virtual void launch() = 0;
};

// The queued update_elements calls of one (functor, arrays) type.
template <class Fn, class... P>
struct PendingGroup final : PendingUpdates {
  struct Job {
    Index n;
    Fn fn;
    void* arrays[sizeof...(P)];
  };
  std::vector<Job> jobs;

  void launch() override {
    using C = update_compute_t<P...>;
    using T = Table<Fn, P...>;
    std::vector<Index> sizes;
    sizes.reserve(jobs.size());
    for (const auto& job : jobs) sizes.push_back(job.n);
    std::size_t next = 0;
    for (const auto& blocks : multi_tensor::plan<T::capacity>(sizes)) {
      T table{};
      table.blocks = blocks;
      for (int j = 0; j < blocks.count; ++j, ++next) {
        table.fn[j] = jobs[next].fn;
        for (std::size_t k = 0; k < sizeof...(P); ++k) table.arrays[j][k] = jobs[next].arrays[k];
      }
      const Index grid = blocks.first_block[blocks.count];
      multi_update_kernel<C, Fn, P...><<<static_cast<unsigned>(grid), block_size, 0, stream()>>>(table);
      check(cudaGetLastError(), "optimizer step",
            "multi-tensor update kernel launch (" + std::to_string(blocks.count) + " tensors, " + std::to_string(grid) + " blocks)");
    }
    jobs.clear();
  }
};

template <class... T>
inline constexpr char group_key = 0;  // one address per (functor, arrays) type

}  // namespace update_detail

class UpdateBatch {
 public:
  UpdateBatch() : previous_(active()) { active() = this; }
  ~UpdateBatch() { active() = previous_; }
  UpdateBatch(const UpdateBatch&) = delete;
  UpdateBatch& operator=(const UpdateBatch&) = delete;

  // The batch update_elements queues into on this thread, or nullptr.
  static UpdateBatch*& active() {
    thread_local UpdateBatch* batch = nullptr;
    return batch;
  }

  template <class Fn, class... P>
  void add(Index n, const Fn& fn, P*... arrays) {
    using Group = update_detail::PendingGroup<Fn, P...>;
    const void* key = &update_detail::group_key<Fn, P...>;
    Group* group = nullptr;
    for (auto& [k, g] : groups_)
      if (k == key) group = static_cast<Group*>(g.get());
    if (!group) {
      auto fresh = std::make_unique<Group>();
      group = fresh.get();
      groups_.emplace_back(key, std::move(fresh));
    }
    group->jobs.push_back({n, fn, {const_cast<void*>(static_cast<const void*>(arrays))...}});
  }

  // Launches every queued update, group by group in order of first use (the groups touch
  // disjoint tensors, so the order does not change any result).
  void flush() {
    for (auto& [key, group] : groups_) group->launch();
  }

 private:
  UpdateBatch* previous_;
  std::vector<std::pair<const void*, std::unique_ptr<update_detail::PendingUpdates>>> groups_;
};

template <class Fn, class First, class... Rest>
void update_elements(Index n, const Fn& fn, First* first, Rest*... rest) {
  check_update_arrays<First, Rest...>();
  if (n <= 0) return;
  if (UpdateBatch* batch = UpdateBatch::active()) {
    batch->add(n, fn, first, rest...);
    return;
  }
  using C = update_compute_t<First>;
  update_elements_kernel<C, Fn, First, Rest...><<<grid_size(n, "optimizer step"), block_size, 0, stream()>>>(n, fn, first, rest...);
  check(cudaGetLastError(), "optimizer step", "update kernel launch (" + std::to_string(n) + " elements, " +
                                                  std::to_string(1 + sizeof...(Rest)) + " arrays)");
}

inline constexpr int squares_max_blocks = 1024;

template <class T>
__global__ void sum_of_squares_kernel(const T* x, Index n, double* partial) {
  double s = 0;
  for (Index i = grid_first(); i < n; i += grid_step()) {
    const double v = static_cast<double>(x[i]);
    s += v * v;
  }
  s = block_reduce<ValueReducer<0, double>>(s);  // a fixed tree: the same sum on every device
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

template <class T>
double sum_of_squares(const T* x, Index n) {
  if (n <= 0) return 0.0;
  const Index wanted = (n + block_size - 1) / block_size;
  const int blocks = static_cast<int>(wanted < squares_max_blocks ? wanted : squares_max_blocks);
  const std::string shape = " (" + std::to_string(n) + " elements)";
  double* partial = nullptr;
  const std::size_t bytes = static_cast<std::size_t>(blocks) * sizeof(double);
  partial = static_cast<double*>(Memory<cuda>::allocate(bytes));
  std::vector<double> host(static_cast<std::size_t>(blocks));
  try {
    sum_of_squares_kernel<T><<<blocks, block_size, 0, stream()>>>(x, n, partial);
    check(cudaGetLastError(), "grad_norm", "sum of squares kernel launch" + shape);
    Backend<cuda>::copy_to_host(host.data(), partial, bytes);
  } catch (...) {
    Memory<cuda>::deallocate(partial, bytes);
    throw;
  }
  Memory<cuda>::deallocate(partial, bytes);
  double total = 0;
  for (const double s : host) total += s;
  return total;
}

namespace squares_detail {

template <class T>
struct Table {
  static constexpr int capacity = static_cast<int>((kernel_parameter_bytes - 256) / (sizeof(void*) + 2 * sizeof(Index)));
  multi_tensor::Blocks<capacity> blocks;
  const T* data[capacity];
};

// One double per block: the squares of its chunk, added by a fixed tree over the block's threads.
template <class T>
__global__ void chunk_squares_kernel(const __grid_constant__ Table<T> table, double* partial) {
  static_assert(sizeof(Table<T>) <= kernel_parameter_bytes, "a multi-tensor squares table must fit in the kernel parameters");
  const multi_tensor::Range r = multi_tensor::block_range(table.blocks, static_cast<Index>(blockIdx.x));
  const T* x = table.data[r.job];
  double s = 0;
  for (Index i = r.begin + threadIdx.x; i < r.end; i += blockDim.x) {
    const double v = static_cast<double>(x[i]);
    s += v * v;
  }
  s = block_reduce<ValueReducer<0, double>>(s);  // a fixed tree: the same sum on every device
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// One block adds n partials: each thread a strided run in order, then the same fixed tree.
__global__ inline void add_partials_kernel(const double* partial, Index n, double* total) {
  double s = 0;
  for (Index i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
  s = block_reduce<ValueReducer<0, double>>(s);  // a fixed tree: the same sum on every device
  if (threadIdx.x == 0) *total = s;
}

}  // namespace squares_detail

// The sum of squares of every element of every (pointer, size) pair, in double.
template <class T>
double sum_of_squares_many(const std::vector<std::pair<const T*, Index>>& tensors) {
  std::vector<Index> sizes;
  std::vector<const T*> data;
  for (const auto& [x, n] : tensors)
    if (n > 0) {
      sizes.push_back(n);
      data.push_back(x);
    }
  if (sizes.empty()) return 0.0;
  using Table = squares_detail::Table<T>;
  const auto launches = multi_tensor::plan<Table::capacity>(sizes);
  Index total_blocks = 0;
  for (const auto& l : launches) total_blocks += l.first_block[l.count];
  const std::size_t bytes = static_cast<std::size_t>(total_blocks + 1) * sizeof(double);
  auto* partial = static_cast<double*>(Memory<cuda>::allocate(bytes));
  const std::string what = " (" + std::to_string(sizes.size()) + " tensors, " + std::to_string(total_blocks) + " chunks)";
  double total = 0;
  try {
    Index base = 0;
    std::size_t next = 0;
    for (const auto& blocks : launches) {
      Table table{};
      table.blocks = blocks;
      for (int j = 0; j < blocks.count; ++j) table.data[j] = data[next++];
      const Index grid = blocks.first_block[blocks.count];
      squares_detail::chunk_squares_kernel<T><<<static_cast<unsigned>(grid), block_size, 0, stream()>>>(table, partial + base);
      check(cudaGetLastError(), "grad_norm", "multi-tensor sum of squares kernel launch" + what);
      base += grid;
    }
    squares_detail::add_partials_kernel<<<1, block_size, 0, stream()>>>(partial, total_blocks, partial + total_blocks);
    check(cudaGetLastError(), "grad_norm", "partial sums kernel launch" + what);
    Backend<cuda>::copy_to_host(&total, partial + total_blocks, sizeof(double));
  } catch (...) {
    Memory<cuda>::deallocate(partial, bytes);
    throw;
  }
  Memory<cuda>::deallocate(partial, bytes);
  return total;
}

}  // namespace cerberus::cuda_backend

namespace cerberus::optim {

template <>
struct Kernels<cuda> {
  using UpdateBatch = cuda_backend::UpdateBatch;
  template <class Fn, class... P>
  static void update_elements(Index n, const Fn& fn, P*... arrays) {
    cuda_backend::update_elements(n, fn, arrays...);
  }
  template <class T>
  static double sum_of_squares(const T* x, Index n) { return cuda_backend::sum_of_squares(x, n); }
  template <class T>
  static double sum_of_squares_many(const std::vector<std::pair<const T*, Index>>& tensors) {
    return cuda_backend::sum_of_squares_many(tensors);
  }
};

}  // namespace cerberus::optim
