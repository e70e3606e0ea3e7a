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
#include <string>

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
// Everything on the device, so that a loss costs one synchronisation (reading `first_bad`, the
// target check) instead of copies of targets, row losses and coefficients both ways:
//   forward   per row: the loss (unweighted, double), stats (shift, log_sum) in the compute type,
//             and the row's weight w_r (0 for ignore_index; options' weight or 1 otherwise); a
//             target outside [0, V) is not read: its row gets weight 0 and first_bad the
//             smallest such row (atomicMin), for the host to report
//   reduce    one block: weight_total = sum w_r, total = sum w_r loss_r (a fixed tree, so the
//             result depends on the data only), scale = 1 / weight_total (mean; 0 when nothing
//             counts) or 1 (sum), out = total * scale; scale kept for the backward
//   none      out[r] = w_r loss_r
//   backward  coef_r = w_r * scale * upstream (upstream[0]; none: upstream[r], scale null = 1), then
//             dlogits = (softmax - (1 - e) onehot(t) - e / V) * coef_r
template <class T>
__global__ void cross_entropy_forward_kernel(const T* x, const std::int64_t* target, const float* weights, Index rows, Index v,
                                             std::int64_t ignore, double smoothing, double* loss, compute_t<T>* stats, double* row_weight,
                                             unsigned long long* first_bad) {
  using C = compute_t<T>;
  using Max = ValueReducer<2, C>;
  using Sum = ValueReducer<0, C>;
  for (Index r = blockIdx.x; r < rows; r += gridDim.x) {
    const std::int64_t t = target[r];
    const bool bad = t != ignore && (t < 0 || t >= v);
    if (t == ignore || bad) {  // uniform across the block: no reduction below is skipped by part of it
      if (threadIdx.x == 0) {
        loss[r] = 0.0, stats[2 * r] = C(0), stats[2 * r + 1] = C(0), row_weight[r] = 0.0;
        if (bad) atomicMin(first_bad, static_cast<unsigned long long>(r));
      }
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
      row_weight[r] = weights ? static_cast<double>(weights[r]) : 1.0;
    }
  }
}

// scale_and_total: [0] = scale, [1] = the reduced loss (double; `out` gets it in C).
template <class C>
__global__ void cross_entropy_reduce_kernel(const double* loss, const double* row_weight, Index rows, bool mean, double* scale_and_total, C* out) {
  using Sum = ValueReducer<0, double>;
  double wt = 0.0, total = 0.0;
  for (Index r = threadIdx.x; r < rows; r += blockDim.x) {
    wt += row_weight[r];
    total += row_weight[r] * loss[r];
  }
  wt = block_reduce<Sum>(wt);  // fixed trees: the result depends on the data only
  total = block_reduce<Sum>(total);
  if (threadIdx.x == 0) {
    const double scale = mean ? (wt != 0.0 ? 1.0 / wt : 0.0) : 1.0;
    scale_and_total[0] = scale;
    scale_and_total[1] = total * scale;
    *out = static_cast<C>(total * scale);
  }
}

template <class C>
__global__ void cross_entropy_rows_kernel(const double* loss, const double* row_weight, Index rows, C* out) {
  for (Index r = grid_first(); r < rows; r += grid_step()) out[r] = static_cast<C>(row_weight[r] * loss[r]);
}

template <class T>
__global__ void cross_entropy_backward_kernel(const T* x, const std::int64_t* target, const compute_t<T>* stats, const double* row_weight,
                                              const double* scale, const compute_t<T>* upstream, bool per_row, Index rows, Index v,
                                              double smoothing, T* dx) {
  using C = compute_t<T>;
  for (Index r = blockIdx.x; r < rows; r += gridDim.x) {
    T* dr = dx + r * v;
    const double cr = row_weight[r] * (scale ? scale[0] : 1.0) * static_cast<double>(upstream[per_row ? r : 0]);
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

inline std::string cross_entropy_shape(Index rows, Index v) {
  return "[N " + std::to_string(rows) + ", V " + std::to_string(v) + "]";
}

// Queues the forward; returns nothing to the host. first_bad must hold a value >= rows.
template <class T>
void cross_entropy_forward(const T* x, const std::int64_t* target, const float* weights, Index rows, Index v, std::int64_t ignore,
                           double smoothing, double* loss, compute_t<T>* stats, double* row_weight, unsigned long long* first_bad) {
  if (rows == 0) return;
  cross_entropy_forward_kernel<T><<<row_grid(rows, "cross_entropy"), row_block(v), 0, stream()>>>(x, target, weights, rows, v, ignore, smoothing,
                                                                                                 loss, stats, row_weight, first_bad);
  check(cudaGetLastError(), "cross_entropy", "forward kernel launch over " + cross_entropy_shape(rows, v));
}

template <class C>
void cross_entropy_reduce(const double* loss, const double* row_weight, Index rows, bool mean, double* scale_and_total, C* out) {
  cross_entropy_reduce_kernel<C><<<1, block_size, 0, stream()>>>(loss, row_weight, rows, mean, scale_and_total, out);
  check(cudaGetLastError(), "cross_entropy", "reduction kernel launch over " + std::to_string(rows) + " rows");
}

template <class C>
void cross_entropy_rows(const double* loss, const double* row_weight, Index rows, C* out) {
  if (rows == 0) return;
  cross_entropy_rows_kernel<C><<<grid_size(rows, "cross_entropy"), block_size, 0, stream()>>>(loss, row_weight, rows, out);
  check(cudaGetLastError(), "cross_entropy", "per-row loss kernel launch over " + std::to_string(rows) + " rows");
}

template <class T>
void cross_entropy_backward(const T* x, const std::int64_t* target, const compute_t<T>* stats, const double* row_weight, const double* scale,
                            const compute_t<T>* upstream, bool per_row, Index rows, Index v, double smoothing, T* dx) {
  if (rows == 0) return;
  cross_entropy_backward_kernel<T><<<row_grid(rows, "cross_entropy"), row_block(v), 0, stream()>>>(x, target, stats, row_weight, scale, upstream,
                                                                                                  per_row, rows, v, smoothing, dx);
  check(cudaGetLastError(), "cross_entropy", "backward kernel launch over " + cross_entropy_shape(rows, v));
}

}  // namespace cerberus::cuda_backend
