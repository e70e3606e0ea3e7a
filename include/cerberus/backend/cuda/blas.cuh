// Matrix products on the device through cuBLAS: one handle per (device, stream), operands read
// in place with transposes passed as op flags, batches as one strided-batched call whenever the
// batch strides allow it.
//
// Row-major C [m, n] = A [m, k] B [k, n] is computed as the column-major product
// C^T = B^T A^T (or directly as C = A B when C itself is column-major), so a row-major operand is
// cuBLAS's "N" and a transposed view (unit row stride) its "T": nothing is copied.
//
// Precision: float uses CUBLAS_COMPUTE_32F (true fp32, matching the CPU to ~1e-6) unless TF32 is
// switched on with set_cuda_matmul_tf32(true) (then CUBLAS_COMPUTE_32F_FAST_TF32: ~10-bit
// mantissa products, several times faster on tensor cores); bf16 uses bf16 operands with fp32
// accumulation (CUBLAS_COMPUTE_32F) and rounds the result once; double uses CUBLAS_COMPUTE_64F.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <atomic>
#include <climits>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>

#include "cerberus/backend/cuda/error.cuh"
#include "cerberus/backend/cuda/kernels.cuh"
#include "cerberus/backend/cuda/launch.cuh"
#include "cerberus/core/bfloat16.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/core/shape.hpp"
#include "cerberus/ops/matmul.hpp"

namespace cerberus {

namespace cuda_backend {
inline std::atomic<bool>& tf32_flag() {
  static std::atomic<bool> on{false};
  return on;
}
}  // namespace cuda_backend

// TF32 tensor-core math for float matmuls on cuda (default off: results then match the CPU to
// about 1e-6 relative). A process-wide switch, read at each call.
inline void set_cuda_matmul_tf32(bool on) { cuda_backend::tf32_flag().store(on); }
inline bool cuda_matmul_tf32() { return cuda_backend::tf32_flag().load(); }

namespace cuda_backend {

inline std::string cublas_status_text(cublasStatus_t status) {
  return std::string(cublasGetStatusString(status)) + " (" + cublasGetStatusName(status) + ")";
}

inline void check_cublas(cublasStatus_t status, const char* op, const std::string& what) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  (void)cudaGetLastError();
  throw DeviceError(std::string("[cuda ") + op + "] " + what + " failed: " + cublas_status_text(status));
}

// The cuBLAS handle for the current device and cerberus's stream. Handles are created on first
// use and kept for the life of the process (destroying them at exit, after the runtime has shut
// down, would fail), like the caching allocator.
inline cublasHandle_t blas_handle(const char* op) {
  static std::mutex mutex;
  static auto* handles = new std::map<std::pair<int, cudaStream_t>, cublasHandle_t>();
  int device = 0;
  check(cudaGetDevice(&device), op, "cudaGetDevice");
  const std::pair<int, cudaStream_t> key{device, stream()};
  std::lock_guard<std::mutex> lock(mutex);
  const auto found = handles->find(key);
  if (found != handles->end()) return found->second;
  cublasHandle_t handle = nullptr;
  check_cublas(cublasCreate(&handle), op, "cublasCreate");
  check_cublas(cublasSetStream(handle, key.second), op, "cublasSetStream");
  // Alpha and beta are host values.
  check_cublas(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST), op, "cublasSetPointerMode");
  handles->emplace(key, handle);
  return handle;
}

template <class T>
struct BlasType;
template <>
struct BlasType<float> {
  static constexpr cudaDataType_t data = CUDA_R_32F;
  using Scalar = float;
  static const char* name() { return "float"; }
};
template <>
struct BlasType<double> {
  static constexpr cudaDataType_t data = CUDA_R_64F;
  using Scalar = double;
  static const char* name() { return "double"; }
};
template <>
struct BlasType<bfloat16> {
  static constexpr cudaDataType_t data = CUDA_R_16BF;
  using Scalar = float;
  static const char* name() { return "bf16"; }
};

// One operand as cuBLAS sees it: pointer, op flag, leading dimension, batch stride.
struct BlasOperand {
  const void* data;
  cublasOperation_t op;
  Index ld;
  Index batch_stride;
};

inline std::string gemm_text(const matmul_detail::Plan& p) {
  return "a " + (p.batch.rank() ? p.batch.to_string() + " x " : std::string()) + "[" + std::to_string(p.m) + ", " + std::to_string(p.k) +
         "] times b [" + std::to_string(p.k) + ", " + std::to_string(p.n) + "]";
}

inline int blas_int(Index v, const char* op, const char* what, const matmul_detail::Plan& p) {
  if (v < 0 || v > INT_MAX)
    throw ShapeError(std::string("[") + op + "] " + what + " " + std::to_string(v) + " exceeds cuBLAS's 32-bit limit (" + gemm_text(p) + ")");
  return static_cast<int>(v);
}

// C (column-major rows x cols, ldc, batch stride sc) = alpha op(A) op(B) + beta C, `count` times.
template <class T>
void gemm_call(const matmul_detail::Plan& p, Index rows, Index cols, Index k, const BlasOperand& a, const BlasOperand& b, T* c, Index ldc,
               Index sc, Index count, double alpha, double beta) {
  using S = typename BlasType<T>::Scalar;
  const S al = static_cast<S>(alpha), be = static_cast<S>(beta);
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  if constexpr (std::is_same_v<T, double>) compute = CUBLAS_COMPUTE_64F;
  else if constexpr (std::is_same_v<T, float>) compute = cuda_matmul_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const char* op = "matmul";
  const cublasStatus_t status = cublasGemmStridedBatchedEx(
      blas_handle(op), a.op, b.op, blas_int(rows, op, "m", p), blas_int(cols, op, "n", p), blas_int(k, op, "k", p), &al, a.data,
      BlasType<T>::data, blas_int(a.ld, op, "lda", p), a.batch_stride, b.data, BlasType<T>::data, blas_int(b.ld, op, "ldb", p),
      b.batch_stride, &be, c, BlasType<T>::data, blas_int(ldc, op, "ldc", p), sc, blas_int(count, op, "batch count", p), compute,
      CUBLAS_GEMM_DEFAULT);
  if (status != CUBLAS_STATUS_SUCCESS)
    check_cublas(status, op,
                 std::string("cublasGemmStridedBatchedEx (") + BlasType<T>::name() + ", " + gemm_text(p) + ", cuBLAS m " + std::to_string(rows) +
                     " n " + std::to_string(cols) + " k " + std::to_string(k) + " lda " + std::to_string(a.ld) + " ldb " + std::to_string(b.ld) +
                     " ldc " + std::to_string(ldc) + ", batch " + std::to_string(count) + ")");
}

// A row-major-or-column-major matrix X as the operand cuBLAS needs: X itself (want_transpose
// false) or X^T, read from X's layout.
inline BlasOperand blas_operand(const void* data, const matmul_detail::BlasLayout& layout, bool want_transpose, Index batch_stride) {
  const bool row = layout.order == matmul_detail::BlasOrder::row_major;
  // Stored row-major, X reads as X^T in column-major order (op N gives X^T); column-major reads as X.
  const cublasOperation_t op = row ? (want_transpose ? CUBLAS_OP_N : CUBLAS_OP_T) : (want_transpose ? CUBLAS_OP_T : CUBLAS_OP_N);
  return {data, op, layout.ld, batch_stride};
}

// One product of count matrices, each batch entry offset by the given strides.
template <class T>
void gemm_batch(const matmul_detail::Plan& p, Index m, Index n, Index k, const T* a, Index a_rs, Index a_cs, Index sa, const T* b, Index b_rs,
                Index b_cs, Index sb, T* c, Index c_rs, Index c_cs, Index sc, Index count, double alpha, double beta) {
  using matmul_detail::blas_layout;
  using matmul_detail::BlasOrder;
  const auto la = blas_layout(m, k, a_rs, a_cs), lb = blas_layout(k, n, b_rs, b_cs), lc = blas_layout(m, n, c_rs, c_cs);
  if (la.order == BlasOrder::none || lb.order == BlasOrder::none || lc.order == BlasOrder::none)
    throw DeviceError("[cuda matmul] an operand without a unit stride reached cuBLAS (" + gemm_text(p) + ", strides a " + std::to_string(a_rs) + "/" +
                      std::to_string(a_cs) + ", b " + std::to_string(b_rs) + "/" + std::to_string(b_cs) + ", c " + std::to_string(c_rs) + "/" +
                      std::to_string(c_cs) + ")");
  if (lc.order == BlasOrder::row_major) {  // C^T (n x m, column-major) = B^T A^T
    gemm_call<T>(p, n, m, k, blas_operand(b, lb, true, sb), blas_operand(a, la, true, sa), c, lc.ld, sc, count, alpha, beta);
  } else {  // C (m x n, column-major) = A B
    gemm_call<T>(p, m, n, k, blas_operand(a, la, false, sa), blas_operand(b, lb, false, sb), c, lc.ld, sc, count, alpha, beta);
  }
}

// The batch strides of one operand as a single stride over the flattened batch (row-major order
// of `batch`), if they are one: true with *stride set, else false.
inline bool uniform_batch_stride(const Shape& batch, const Strides& strides, Index* stride) {
  Index expected = -1, s = 0;
  bool found = false;
  for (int d = batch.rank() - 1; d >= 0; --d) {
    if (batch[d] == 1) continue;
    if (!found) {
      s = strides[d];
      found = true;
      expected = s * batch[d];
      continue;
    }
    if (strides[d] != expected) return false;
    expected *= batch[d];
  }
  *stride = s;
  return true;
}


template <class T>
__global__ void scale_kernel(T* c, Shape shape, Strides strides, Index count, compute_t<T> beta) {
  for (Index i = grid_first(); i < count; i += grid_step()) {
    Index coord[max_rank];
    const Index o = unravel(i, shape, strides, coord);
    c[o] = static_cast<T>(beta == compute_t<T>(0) ? compute_t<T>(0) : static_cast<compute_t<T>>(c[o]) * beta);
  }
}

// c = alpha a b + beta c under matmul's plan (ops/matmul.hpp): the operands' last two strides
// each include a 1 (matmul_detail::blas_operand made sure).
template <class T>
void matmul(const matmul_detail::Plan& p, const T* a, const T* b, T* c, const Strides& c_batch, Index c_rs, Index c_cs, double alpha, double beta) {
  const Index batches = p.batch.numel();
  if (batches == 0 || p.m == 0 || p.n == 0) return;
  if (p.k == 0) {  // no products: C = beta C (0 when beta is 0, whatever C held)
    Shape shape = p.batch, strides = c_batch;
    shape.push_back(p.m), shape.push_back(p.n), strides.push_back(c_rs), strides.push_back(c_cs);
    scale_kernel<T><<<grid_size(shape.numel(), "matmul"), block_size, 0, stream()>>>(c, shape, strides, shape.numel(),
                                                                                   static_cast<compute_t<T>>(beta));
    check_launch("matmul");
    return;
  }
  if (batches == 1) {
    Index ao = 0, bo = 0, co = 0;  // extent-1 batch dims: offset 0
    gemm_batch<T>(p, p.m, p.n, p.k, a + ao, p.a_rs, p.a_cs, 0, b + bo, p.b_rs, p.b_cs, 0, c + co, c_rs, c_cs, 0, 1, alpha, beta);
    return;
  }
  // A weight shared by every batch entry and evenly strided rows of A and C: one tall product.
  bool b_shared = true;
  for (int d = 0; d < p.batch.rank(); ++d) b_shared = b_shared && (p.batch[d] == 1 || p.b_batch[d] == 0);
  if (b_shared) {
    const auto ar = matmul_detail::row_run(p.batch, p.a_batch, p.m, p.a_rs), cr = matmul_detail::row_run(p.batch, c_batch, p.m, c_rs);
    if (ar.rows > 0 && cr.rows == ar.rows &&
        matmul_detail::blas_layout(ar.rows, p.k, ar.stride, p.a_cs).order != matmul_detail::BlasOrder::none &&
        matmul_detail::blas_layout(cr.rows, p.n, cr.stride, c_cs).order != matmul_detail::BlasOrder::none) {
      gemm_batch<T>(p, ar.rows, p.n, p.k, a, ar.stride, p.a_cs, 0, b, p.b_rs, p.b_cs, 0, c, cr.stride, c_cs, 0, 1, alpha, beta);
      return;
    }
  }
  Index sa = 0, sb = 0, sc = 0;
  if (uniform_batch_stride(p.batch, p.a_batch, &sa) && uniform_batch_stride(p.batch, p.b_batch, &sb) &&
      uniform_batch_stride(p.batch, c_batch, &sc) && sc != 0) {
    gemm_batch<T>(p, p.m, p.n, p.k, a, p.a_rs, p.a_cs, sa, b, p.b_rs, p.b_cs, sb, c, c_rs, c_cs, sc, batches, alpha, beta);
    return;
  }
  // Batch strides that no single stride describes (e.g. [2, 1] against [1, 3] broadcasting):
  // one call per batch entry.
  const int rank = p.batch.rank();
  for (Index e = 0; e < batches; ++e) {
    Index rest = e, ao = 0, bo = 0, co = 0;
    for (int d = rank - 1; d >= 0; --d) {
      const Index i = rest % p.batch[d];
      rest /= p.batch[d];
      ao += i * p.a_batch[d];
      bo += i * p.b_batch[d];
      co += i * c_batch[d];
    }
    gemm_batch<T>(p, p.m, p.n, p.k, a + ao, p.a_rs, p.a_cs, 0, b + bo, p.b_rs, p.b_cs, 0, c + co, c_rs, c_cs, 0, 1, alpha, beta);
  }
}

}  // namespace cuda_backend
}  // namespace cerberus
