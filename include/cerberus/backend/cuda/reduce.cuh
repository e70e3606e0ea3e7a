// Reductions and the softmax family on the device, over a contiguous [outer, n, inner] layout
// (ops/reduce.hpp and ops/softmax.hpp bring every input to it).
//
//   inner == 1: rows. One warp per row when the row is short (n <= rows_per_warp_limit), else one
//     256-thread block per row; partial results meet through warp shuffles (and, for blocks, a
//     32-entry shared array). Grid-stride over rows.
//   inner > 1:  columns. A 32 x 8 block covers 32 neighbouring outputs (coalesced reads along
//     inner); its 8 thread rows walk n in steps of 8 and meet in shared memory.
//
// Accumulators: sums (and means) in double for every element type, as the CPU folds its float
// lanes into double totals; max/min in the compute type (bf16 -> float), NaN propagating;
// argmax/argmin return the first NaN, else the first extreme (lowest index on ties), as on the CPU.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "cerberus/backend/cuda/error.cuh"
#include "cerberus/backend/cuda/launch.cuh"
#include "cerberus/core/config.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/math.hpp"

namespace cerberus::cuda_backend {

inline constexpr Index rows_per_warp_limit = 1024;

// ---- combining partial results -----------------------------------------------------------------
// Kind: 0 sum, 1 mean, 2 max, 3 min (ops/reduce.hpp's ReduceKind).
template <int Kind, class C>
struct ValueReducer {
  using Acc = std::conditional_t<(Kind <= 1), double, C>;
  __device__ static Acc identity() {
    if constexpr (Kind <= 1) return 0.0;
    else if constexpr (Kind == 2) return -INFINITY;
    else return INFINITY;
  }
  __device__ static Acc combine(Acc a, Acc b) {
    if constexpr (Kind <= 1) {
      return a + b;
    } else {
      if (a != a) return a;  // NaN propagates
      if (b != b) return b;
      if constexpr (Kind == 2) return b > a ? b : a;
      else return b < a ? b : a;
    }
  }
  __device__ static Acc shuffle_down(Acc v, int offset) { return __shfl_down_sync(0xffffffffu, v, offset); }
};

template <class C>
struct ArgPair {
  C value;
  Index index;  // -1: nothing seen yet
};

template <bool Greater, class C>
struct ArgReducer {
  using Acc = ArgPair<C>;
  __device__ static Acc identity() { return {C(0), Index(-1)}; }
  __device__ static Acc combine(Acc a, Acc b) {
    if (a.index < 0) return b;
    if (b.index < 0) return a;
    const bool an = a.value != a.value, bn = b.value != b.value;
    if (an || bn) {
      if (an && bn) return a.index <= b.index ? a : b;
      return an ? a : b;
    }
    if (Greater ? b.value > a.value : b.value < a.value) return b;
    if (b.value == a.value && b.index < a.index) return b;
    return a;
  }
  __device__ static Acc shuffle_down(Acc v, int offset) {
    return {__shfl_down_sync(0xffffffffu, v.value, offset), __shfl_down_sync(0xffffffffu, v.index, offset)};
  }
};

template <class R>
__device__ typename R::Acc warp_reduce(typename R::Acc v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = R::combine(v, R::shuffle_down(v, offset));
  return v;  // complete in lane 0
}

// Every thread of the block passes its partial; the block's total is returned to all threads.
// Ends with a barrier, so the shared scratch can be reused by the next call.
template <class R>
__device__ typename R::Acc block_reduce(typename R::Acc v) {
  using Acc = typename R::Acc;
  __shared__ alignas(16) unsigned char raw[33 * sizeof(Acc)];
  Acc* part = reinterpret_cast<Acc*>(raw);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_reduce<R>(v);
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    Acc w = lane < warps ? part[lane] : R::identity();
    w = warp_reduce<R>(w);
    if (lane == 0) part[32] = w;
  }
  __syncthreads();
  const Acc total = part[32];
  __syncthreads();
  return total;
}

template <class T>
__device__ inline compute_t<T> load(const T* p, Index i) {
  return static_cast<compute_t<T>>(p[i]);
}

// ---- value reductions ---------------------------------------------------------------------------
template <int Kind, class T>
__device__ inline T finish_value(typename ValueReducer<Kind, compute_t<T>>::Acc acc, Index n) {
  using C = compute_t<T>;
  if constexpr (Kind == 1) return static_cast<T>(static_cast<C>(acc / static_cast<double>(n)));
  else return static_cast<T>(static_cast<C>(acc));
}

template <int Kind, class T>
__global__ void reduce_rows_warp_kernel(const T* x, T* out, Index outer, Index n) {
  using R = ValueReducer<Kind, compute_t<T>>;
  const int lane = threadIdx.x & 31;
  const Index warps_per_block = blockDim.x >> 5;
  for (Index row = blockIdx.x * warps_per_block + (threadIdx.x >> 5); row < outer; row += static_cast<Index>(gridDim.x) * warps_per_block) {
    const T* xr = x + row * n;
    typename R::Acc acc = R::identity();
    for (Index j = lane; j < n; j += 32) acc = R::combine(acc, static_cast<typename R::Acc>(load(xr, j)));
    acc = warp_reduce<R>(acc);
    if (lane == 0) out[row] = finish_value<Kind, T>(acc, n);
  }
}

template <int Kind, class T>
__global__ void reduce_rows_block_kernel(const T* x, T* out, Index outer, Index n) {
  using R = ValueReducer<Kind, compute_t<T>>;
  for (Index row = blockIdx.x; row < outer; row += gridDim.x) {
    const T* xr = x + row * n;
    typename R::Acc acc = R::identity();
    for (Index j = threadIdx.x; j < n; j += blockDim.x) acc = R::combine(acc, static_cast<typename R::Acc>(load(xr, j)));
    acc = block_reduce<R>(acc);
    if (threadIdx.x == 0) out[row] = finish_value<Kind, T>(acc, n);
  }
}

// Block (32, 8): x over 32 outputs along inner, y over 8 interleaved runs of n.
template <class R, class T, class Finish>
__device__ void reduce_columns_body(const T* x, Index outer, Index n, Index inner, Finish finish) {
  using Acc = typename R::Acc;
  __shared__ alignas(16) unsigned char raw[8 * 33 * sizeof(Acc)];
  Acc* part = reinterpret_cast<Acc*>(raw);
  const Index tiles = (inner + 31) / 32;
  for (Index unit = blockIdx.x; unit < outer * tiles; unit += gridDim.x) {
    const Index o = unit / tiles, i = (unit % tiles) * 32 + threadIdx.x;
    Acc acc = R::identity();
    if (i < inner) {
      const T* base = x + o * n * inner + i;
      for (Index r = threadIdx.y; r < n; r += blockDim.y) acc = R::combine(acc, R::lift(load(base, r * inner), r));
    }
    part[threadIdx.y * 33 + threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0) {
      for (int k = 1; k < static_cast<int>(blockDim.y); ++k) acc = R::combine(acc, part[k * 33 + threadIdx.x]);
      if (i < inner) finish(o * inner + i, acc);
    }
    __syncthreads();
  }
}

template <int Kind, class C>
struct LiftedValueReducer : ValueReducer<Kind, C> {
  using Acc = typename ValueReducer<Kind, C>::Acc;
  __device__ static Acc lift(C v, Index) { return static_cast<Acc>(v); }
};
template <bool Greater, class C>
struct LiftedArgReducer : ArgReducer<Greater, C> {
  using Acc = typename ArgReducer<Greater, C>::Acc;
  __device__ static Acc lift(C v, Index r) { return {v, r}; }
};

template <int Kind, class T>
__global__ void reduce_columns_kernel(const T* x, T* out, Index outer, Index n, Index inner) {
  using R = LiftedValueReducer<Kind, compute_t<T>>;
  reduce_columns_body<R>(x, outer, n, inner, [&](Index at, typename R::Acc acc) { out[at] = finish_value<Kind, T>(acc, n); });
}

// ---- argmax / argmin ----------------------------------------------------------------------------
template <bool Greater, class T>
__global__ void arg_rows_kernel(const T* x, std::int64_t* out, Index outer, Index n) {
  using R = ArgReducer<Greater, compute_t<T>>;
  for (Index row = blockIdx.x; row < outer; row += gridDim.x) {
    const T* xr = x + row * n;
    typename R::Acc acc = R::identity();
    for (Index j = threadIdx.x; j < n; j += blockDim.x) acc = R::combine(acc, {load(xr, j), j});
    acc = block_reduce<R>(acc);
    if (threadIdx.x == 0) out[row] = acc.index;
  }
}

template <bool Greater, class T>
__global__ void arg_columns_kernel(const T* x, std::int64_t* out, Index outer, Index n, Index inner) {
  using R = LiftedArgReducer<Greater, compute_t<T>>;
  reduce_columns_body<R>(x, outer, n, inner, [&](Index at, typename R::Acc acc) { out[at] = acc.index; });
}

inline unsigned row_grid(Index units, const char* op) {
  int device = 0, sms = 0;
  check(cudaGetDevice(&device), op, "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), op, "cudaDeviceGetAttribute");
  const Index cap = Index{16} * sms;
  return static_cast<unsigned>(units < 1 ? 1 : (units < cap ? units : cap));
}

inline std::string layout_text(Index outer, Index n, Index inner) {
  return "[outer " + std::to_string(outer) + ", n " + std::to_string(n) + ", inner " + std::to_string(inner) + "]";
}

// out[o * inner + i] = reduction over r of x[(o * n + r) * inner + i]; n >= 1.
template <int Kind, class T>
void reduce(const T* x, T* out, Index outer, Index n, Index inner, const char* op) {
  if (outer * inner == 0) return;
  if (inner == 1) {
    if (n <= rows_per_warp_limit) {
      reduce_rows_warp_kernel<Kind, T><<<row_grid((outer + 7) / 8, op), 256, 0, stream()>>>(x, out, outer, n);
    } else {
      reduce_rows_block_kernel<Kind, T><<<row_grid(outer, op), 256, 0, stream()>>>(x, out, outer, n);
    }
  } else {
    reduce_columns_kernel<Kind, T><<<row_grid(outer * ((inner + 31) / 32), op), dim3(32, 8), 0, stream()>>>(x, out, outer, n, inner);
  }
  check(cudaGetLastError(), op, "reduction kernel launch over " + layout_text(outer, n, inner));
}

template <bool Greater, class T>
void arg_reduce(const T* x, std::int64_t* out, Index outer, Index n, Index inner, const char* op) {
  if (outer * inner == 0) return;
  if (inner == 1) arg_rows_kernel<Greater, T><<<row_grid(outer, op), 256, 0, stream()>>>(x, out, outer, n);
  else arg_columns_kernel<Greater, T><<<row_grid(outer * ((inner + 31) / 32), op), dim3(32, 8), 0, stream()>>>(x, out, outer, n, inner);
  check(cudaGetLastError(), op, "argmax/argmin kernel launch over " + layout_text(outer, n, inner));
}

// ---- softmax, log_softmax, logsumexp ------------------------------------------------------------
// kind: 0 softmax, 1 log_softmax, 2 logsumexp (SoftmaxKind). Per row: shift = max (0 when not
// finite), s = sum exp(x - shift) in double, then as on the CPU:
//   softmax y = exp(x - shift) * C(1 / s) (0 when s == 0);  log_softmax y = (x - shift) - C(log s);
//   logsumexp y = C(shift + log s).
template <class C>
__device__ inline C softmax_shift(C m) {
  return isfinite(m) ? m : C(0);
}

template <class T>
__device__ inline void softmax_write(const T* xr, T* yr, Index n, Index stride, Index first, Index step, compute_t<T> shift, double s,
                                     int kind) {
  using C = compute_t<T>;
  if (kind == 0) {
    const C inv = s == 0.0 ? C(0) : static_cast<C>(1.0 / s);
    for (Index j = first; j < n; j += step) yr[j * stride] = static_cast<T>(math::exp(load(xr, j * stride) - shift) * inv);
  } else {
    const C log_s = s == 0.0 ? C(0) : static_cast<C>(::log(s));
    for (Index j = first; j < n; j += step) yr[j * stride] = static_cast<T>((load(xr, j * stride) - shift) - log_s);
  }
}

template <class T>
__global__ void softmax_rows_kernel(const T* x, T* y, Index outer, Index n, int kind) {
  using C = compute_t<T>;
  using Max = ValueReducer<2, C>;
  using Sum = ValueReducer<0, C>;
  for (Index row = blockIdx.x; row < outer; row += gridDim.x) {
    const T* xr = x + row * n;
    C m = Max::identity();
    for (Index j = threadIdx.x; j < n; j += blockDim.x) m = Max::combine(m, load(xr, j));
    const C shift = softmax_shift(block_reduce<Max>(m));
    double s = 0.0;
    for (Index j = threadIdx.x; j < n; j += blockDim.x) s += static_cast<double>(math::exp(load(xr, j) - shift));
    s = block_reduce<Sum>(s);
    if (kind == 2) {
      if (threadIdx.x == 0) y[row] = static_cast<T>(static_cast<C>(static_cast<double>(shift) + ::log(s)));
    } else {
      softmax_write(xr, y + row * n, n, 1, threadIdx.x, blockDim.x, shift, s, kind);
    }
  }
}

// inner > 1: one thread per (o, i) column, three passes down n (coalesced along i).
template <class T>
__global__ void softmax_columns_kernel(const T* x, T* y, Index outer, Index n, Index inner, int kind) {
  using C = compute_t<T>;
  using Max = ValueReducer<2, C>;
  for (Index u = grid_first(); u < outer * inner; u += grid_step()) {
    const Index o = u / inner, i = u % inner;
    const T* xc = x + o * n * inner + i;
    C m = Max::identity();
    for (Index r = 0; r < n; ++r) m = Max::combine(m, load(xc, r * inner));
    const C shift = softmax_shift(m);
    double s = 0.0;
    for (Index r = 0; r < n; ++r) s += static_cast<double>(math::exp(load(xc, r * inner) - shift));
    if (kind == 2) y[u] = static_cast<T>(static_cast<C>(static_cast<double>(shift) + ::log(s)));
    else softmax_write(xc, y + o * n * inner + i, n, inner, 0, 1, shift, s, kind);
  }
}

template <class T>
void softmax(const T* x, T* y, Index outer, Index n, Index inner, int kind, const char* op) {
  if (outer * inner == 0) return;
  if (inner == 1) {
    softmax_rows_kernel<T><<<row_grid(outer, op), n <= 128 ? 64 : 256, 0, stream()>>>(x, y, outer, n, kind);
  } else {
    softmax_columns_kernel<T><<<grid_size(outer * inner, op), block_size, 0, stream()>>>(x, y, outer, n, inner, kind);
  }
  check(cudaGetLastError(), op, "softmax kernel launch over " + layout_text(outer, n, inner));
}

}  // namespace cerberus::cuda_backend
