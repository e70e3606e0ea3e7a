// Row kernels of the normalisation layers (layer_norm, rms_norm) and of cross-entropy, forward
// and backward: one block per row (grid-stride over rows), block reductions through warp
// shuffles (reduce.cuh), sums in double as the CPU's block totals. The formulas are the CPU's
// (ops/norm.hpp, ops/loss.hpp), step for step, in the compute type (bf16 -> float).
//
// dweight / dbias of the norms: a [chunks, C] grid of partial column sums (each chunk a fixed
// range of rows, 32 columns x 8 row-lanes per block), added in chunk order by a second kernel:
// deterministic, no atomics.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cerberus/backend/cuda/error.cuh"
#include "cerberus/backend/cuda/launch.cuh"
#include "cerberus/backend/cuda/reduce.cuh"
#include "cerberus/core/config.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/math.hpp"

namespace cerberus::cuda_backend {

inline int row_block(Index n) { return n <= 256 ? 64 : (n <= 1024 ? 128 : 256); }

// ---- layer_norm / rms_norm ----------------------------------------------------------------------
template <class T>
__global__ void norm_forward_kernel(const T* x, const T* w, const T* b, T* y, compute_t<T>* mean, compute_t<T>* rstd, Index rows, Index n,
                                    double eps, bool center) {
  using C = compute_t<T>;
  using Sum = ValueReducer<0, C>;
  for (Index r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    C mu = C(0);
    if (center) {
      const C x0 = load(xr, 0);
      double s = 0.0;
      for (Index i = threadIdx.x; i < n; i += blockDim.x) s += static_cast<double>(load(xr, i) - x0);
      s = block_reduce<Sum>(s);
      mu = static_cast<C>(static_cast<double>(x0) + s / static_cast<double>(n));
    }
    double ss = 0.0;
    for (Index i = threadIdx.x; i < n; i += blockDim.x) {
      const C d = load(xr, i) - mu;
      ss += static_cast<double>(d * d);
    }
    ss = block_reduce<Sum>(ss);
    const C rs = static_cast<C>(1.0 / ::sqrt(ss / static_cast<double>(n) + eps));
    if (threadIdx.x == 0) {
      if (center) mean[r] = mu;
      rstd[r] = rs;
    }
    T* yr = y + r * n;
    for (Index i = threadIdx.x; i < n; i += blockDim.x) {
      C v = (load(xr, i) - mu) * rs;
      if (w) v *= load(w, i);
      if (b) v += load(b, i);
      yr[i] = static_cast<T>(v);
    }
  }
}

template <class T>
__global__ void norm_backward_dx_kernel(const T* dy, const T* x, const T* w, const compute_t<T>* mean, const compute_t<T>* rstd, T* dx,
                                        Index rows, Index n, bool center) {
  using C = compute_t<T>;
  using Sum = ValueReducer<0, C>;
  for (Index r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *xr = x + r * n, *gr = dy + r * n;
    const C mu = center ? mean[r] : C(0), rs = rstd[r];
    double sg = 0.0, sgx = 0.0;
    for (Index i = threadIdx.x; i < n; i += blockDim.x) {
      const C g = w ? load(gr, i) * load(w, i) : load(gr, i);
      sg += static_cast<double>(g);
      sgx += static_cast<double>(g * ((load(xr, i) - mu) * rs));
    }
    sg = block_reduce<Sum>(sg);
    sgx = block_reduce<Sum>(sgx);
    const C a = center ? static_cast<C>(sg / static_cast<double>(n)) : C(0);
    const C c = static_cast<C>(sgx / static_cast<double>(n));
    T* dxr = dx + r * n;
    for (Index i = threadIdx.x; i < n; i += blockDim.x) {
      const C g = load(gr, i);
      const C xh = (load(xr, i) - mu) * rs;
      const C gw = w ? g * load(w, i) : g;
      dxr[i] = static_cast<T>(rs * (gw - a - xh * c));
    }
  }
}

// part_w / part_b [chunks, n] (double): sums over the chunk's rows of dy * xh and dy.
template <class T>
__global__ void norm_param_partials_kernel(const T* dy, const T* x, const compute_t<T>* mean, const compute_t<T>* rstd, double* part_w,
                                           double* part_b, Index rows, Index n, Index chunks, bool center) {
  using C = compute_t<T>;
  __shared__ double sw[8][33], sb[8][33];
  const Index j = static_cast<Index>(blockIdx.x) * 32 + threadIdx.x;
  const Index chunk = blockIdx.y;
  const Index r0 = rows * chunk / chunks, r1 = rows * (chunk + 1) / chunks;
  double aw = 0.0, ab = 0.0;
  if (j < n) {
    for (Index r = r0 + threadIdx.y; r < r1; r += blockDim.y) {
      const C g = load(dy, r * n + j);
      const C xh = (load(x, r * n + j) - (center ? mean[r] : C(0))) * rstd[r];
      aw += static_cast<double>(g * xh);
      ab += static_cast<double>(g);
    }
  }
  sw[threadIdx.y][threadIdx.x] = aw;
  sb[threadIdx.y][threadIdx.x] = ab;
  __syncthreads();
  if (threadIdx.y == 0 && j < n) {
    for (int k = 1; k < static_cast<int>(blockDim.y); ++k) aw += sw[k][threadIdx.x], ab += sb[k][threadIdx.x];
    if (part_w) part_w[chunk * n + j] = aw;
    if (part_b) part_b[chunk * n + j] = ab;
  }
}

template <class T>
__global__ void column_total_kernel(const double* part, T* out, Index chunks, Index n) {
  for (Index j = grid_first(); j < n; j += grid_step()) {
    double s = 0.0;
    for (Index k = 0; k < chunks; ++k) s += part[k * n + j];
    out[j] = static_cast<T>(static_cast<compute_t<T>>(s));
  }
}

inline std::string rows_text(Index rows, Index n) { return "[rows " + std::to_string(rows) + ", C " + std::to_string(n) + "]"; }

template <class T>
void norm_forward(const T* x, const T* w, const T* b, T* y, compute_t<T>* mean, compute_t<T>* rstd, Index rows, Index n, double eps, bool center,
                  const char* op) {
  if (rows == 0) return;
  norm_forward_kernel<T><<<row_grid(rows, op), row_block(n), 0, stream()>>>(x, w, b, y, mean, rstd, rows, n, eps, center);
  check(cudaGetLastError(), op, "forward kernel launch over " + rows_text(rows, n));
}

// dw / db: n values of T each (null when not wanted); `scratch` supplies [chunks, n] doubles.
template <class T, class Scratch>
void norm_backward(const T* dy, const T* x, const T* w, const compute_t<T>* mean, const compute_t<T>* rstd, T* dx, T* dw, T* db, Index rows,
                   Index n, bool center, const char* op, Scratch scratch) {
  if (rows == 0 || n == 0) {
    return;
  }
  if (dx) {
    norm_backward_dx_kernel<T><<<row_grid(rows, op), row_block(n), 0, stream()>>>(dy, x, w, mean, rstd, dx, rows, n, center);
    check(cudaGetLastError(), op, "backward (dx) kernel launch over " + rows_text(rows, n));
  }
  if (dw || db) {
    const Index chunks = std::max<Index>(1, std::min<Index>(256, rows / 32));
    double* part_w = dw ? scratch(chunks * n) : nullptr;
    double* part_b = db ? scratch(chunks * n) : nullptr;
    const dim3 grid(static_cast<unsigned>((n + 31) / 32), static_cast<unsigned>(chunks));
    norm_param_partials_kernel<T><<<grid, dim3(32, 8), 0, stream()>>>(dy, x, mean, rstd, part_w, part_b, rows, n, chunks, center);
    check(cudaGetLastError(), op, "backward (weight / bias partials) kernel launch over " + rows_text(rows, n));
    if (dw) column_total_kernel<T><<<grid_size(n, op), block_size, 0, stream()>>>(part_w, dw, chunks, n);
    if (db) column_total_kernel<T><<<grid_size(n, op), block_size, 0, stream()>>>(part_b, db, chunks, n);
    check(cudaGetLastError(), op, "backward (weight / bias totals) kernel launch over " + rows_text(rows, n));
  }
}

// ---- cross-entropy ------------------------------------------------------------------------------
// stats: per row (shift, log_sum) in the compute type; loss: per row, unweighted, in double.
template <class T>
__global__ void cross_entropy_forward_kernel(const T* x, const std::int64_t* target, Index rows, Index v, std::int64_t ignore, double smoothing,
                                             double* loss, compute_t<T>* stats) {
  using C = compute_t<T>;
  using Max = ValueReducer<2, C>;
  using Sum = ValueReducer<0, C>;
  for (Index r = blockIdx.x; r < rows; r += gridDim.x) {
    const std::int64_t t = target[r];
    if (t == ignore) {  // uniform across the block: no reduction below is skipped by part of it
      if (threadIdx.x == 0) loss[r] = 0.0, stats[2 * r] = C(0), stats[2 * r + 1] = C(0);
      continue;
    }
    const T* xr = x + r * v;
    C m = Max::identity();
    for (Index i = threadIdx.x; i < v; i += blockDim.x) m = Max::combine(m, load(xr, i));
    m = block_reduce<Max>(m);
    const C shift = isfinite(m) ? m : C(0);
    double s = 0.0, below = 0.0;
    for (Index i = threadIdx.x; i < v; i += blockDim.x) {
      const C z = load(xr, i) - shift;
      s += static_cast<double>(math::exp(z));
      below += static_cast<double>(z);
    }
    s = block_reduce<Sum>(s);
    if (smoothing != 0.0) below = block_reduce<Sum>(below);
    if (threadIdx.x == 0) {
      const C log_sum = static_cast<C>(::log(s));
      stats[2 * r] = shift;
      stats[2 * r + 1] = log_sum;
      double l = static_cast<double>(log_sum) + (1.0 - smoothing) * (static_cast<double>(shift) - static_cast<double>(load(xr, t)));
      if (smoothing != 0.0) l += smoothing * (-below / static_cast<double>(v));
      loss[r] = l;
    }
  }
}

template <class T>
__global__ void cross_entropy_backward_kernel(const T* x, const std::int64_t* target, const compute_t<T>* stats, const double* coef, Index rows,
                                              Index v, double smoothing, T* dx) {
  using C = compute_t<T>;
  for (Index r = blockIdx.x; r < rows; r += gridDim.x) {
    T* dr = dx + r * v;
    const double cr = coef[r];
    if (cr == 0.0) {
      for (Index i = threadIdx.x; i < v; i += blockDim.x) dr[i] = static_cast<T>(C(0));
      continue;
    }
    const T* xr = x + r * v;
    const C k = static_cast<C>(cr);
    const C off = static_cast<C>(smoothing / static_cast<double>(v) * cr);
    const C hot = static_cast<C>((1.0 - smoothing) * cr);
    const C shift = stats[2 * r], log_sum = stats[2 * r + 1];
    const std::int64_t t = target[r];
    for (Index i = threadIdx.x; i < v; i += blockDim.x) {
      C d = math::exp((load(xr, i) - shift) - log_sum) * k - off;
      if (i == t) d -= hot;
      dr[i] = static_cast<T>(d);
    }
  }
}

template <class T>
void cross_entropy_forward(const T* x, const std::int64_t* target, Index rows, Index v, std::int64_t ignore, double smoothing, double* loss,
                           compute_t<T>* stats) {
  if (rows == 0) return;
  cross_entropy_forward_kernel<T><<<row_grid(rows, "cross_entropy"), row_block(v), 0, stream()>>>(x, target, rows, v, ignore, smoothing, loss,
                                                                                                 stats);
  check(cudaGetLastError(), "cross_entropy", "forward kernel launch over [N " + std::to_string(rows) + ", V " + std::to_string(v) + "]");
}

template <class T>
void cross_entropy_backward(const T* x, const std::int64_t* target, const compute_t<T>* stats, const double* coef, Index rows, Index v,
                            double smoothing, T* dx) {
  if (rows == 0) return;
  cross_entropy_backward_kernel<T><<<row_grid(rows, "cross_entropy"), row_block(v), 0, stream()>>>(x, target, stats, coef, rows, v, smoothing,
                                                                                                  dx);
  check(cudaGetLastError(), "cross_entropy", "backward kernel launch over [N " + std::to_string(rows) + ", V " + std::to_string(v) + "]");
}

}  // namespace cerberus::cuda_backend
