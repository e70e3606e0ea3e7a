// OpKernels<cuda>: the device side of the non-elementwise ops (backend/op_kernels.hpp). Each
// op header (ops/*.hpp) does its shape checks, layout planning and autodiff recording for any
// device and calls these with raw device pointers; the kernels live in reduce.cuh, blas.cuh,
// norm.cuh, attention.cuh and attention_tensor_core.cuh beside this file.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "cerberus/backend/cuda/attention.cuh"
#include "cerberus/backend/cuda/attention_tensor_core.cuh"
#include "cerberus/backend/cuda/blas.cuh"
#include "cerberus/backend/cuda/norm.cuh"
#include "cerberus/backend/cuda/reduce.cuh"
#include "cerberus/backend/op_kernels.hpp"
#include "cerberus/ops/attention.hpp"
#include "cerberus/ops/matmul.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus {

template <>
struct OpKernels<cuda> {
  // Kind: ReduceKind (0 sum, 1 mean, 2 max, 3 min) over contiguous [outer, n, inner].
  template <int Kind, class T>
  static void reduce(const T* x, T* out, Index outer, Index n, Index inner, const char* op) {
    cuda_backend::reduce<Kind, T>(x, out, outer, n, inner, op);
  }
  template <bool Greater, class T>
  static void arg_reduce(const T* x, std::int64_t* out, Index outer, Index n, Index inner, const char* op) {
    cuda_backend::arg_reduce<Greater, T>(x, out, outer, n, inner, op);
  }
  // kind: SoftmaxKind (0 softmax, 1 log_softmax, 2 logsumexp).
  template <class T>
  static void softmax(const T* x, T* y, Index outer, Index n, Index inner, int kind, const char* op) {
    cuda_backend::softmax<T>(x, y, outer, n, inner, kind, op);
  }

  template <class T>
  static void matmul(const matmul_detail::Plan& p, const T* a, const T* b, T* c, const Strides& c_batch, Index c_rs, Index c_cs, double alpha,
                     double beta) {
    cuda_backend::matmul<T>(p, a, b, c, c_batch, c_rs, c_cs, alpha, beta);
  }

  template <class T>
  static void norm_forward(const T* x, const T* w, const T* b, T* y, compute_t<T>* mean, compute_t<T>* rstd, Index rows, Index n, double eps,
                           bool center, const char* op) {
    cuda_backend::norm_forward(x, w, b, y, mean, rstd, rows, n, eps, center, op);
  }
  template <class T>
  static void norm_backward(const T* dy, const T* x, const T* w, const compute_t<T>* mean, const compute_t<T>* rstd, T* dx, T* dw, T* db,
                            Index rows, Index n, bool center, const char* op) {
    std::vector<Tensor<double, cuda>> scratch;  // partial sums, alive until the kernels are queued (stream order keeps reuse safe)
    cuda_backend::norm_backward(dy, x, w, mean, rstd, dx, dw, db, rows, n, center, op, [&](Index count) {
      scratch.push_back(Tensor<double, cuda>::empty(Shape{count}));
      return scratch.back().data();
    });
  }

  // Cross-entropy on the device (backend/cuda/norm.cuh): forward, reduction (mean / sum) or
  // per-row losses (none), backward.
  template <class T>
  static void cross_entropy_forward(const T* x, const std::int64_t* target, const float* weights, Index rows, Index v, std::int64_t ignore,
                                    double smoothing, double* loss, compute_t<T>* stats, double* row_weight, unsigned long long* first_bad) {
    cuda_backend::cross_entropy_forward(x, target, weights, rows, v, ignore, smoothing, loss, stats, row_weight, first_bad);
  }
  template <class C>
  static void cross_entropy_reduce(const double* loss, const double* row_weight, Index rows, bool mean, double* scale_and_total, C* out) {
    cuda_backend::cross_entropy_reduce(loss, row_weight, rows, mean, scale_and_total, out);
  }
  template <class C>
  static void cross_entropy_rows(const double* loss, const double* row_weight, Index rows, C* out) {
    cuda_backend::cross_entropy_rows(loss, row_weight, rows, out);
  }
  template <class T>
  static void cross_entropy_backward(const T* x, const std::int64_t* target, const compute_t<T>* stats, const double* row_weight,
                                     const double* scale, const compute_t<T>* upstream, bool per_row, Index rows, Index v, double smoothing,
                                     T* dx) {
    cuda_backend::cross_entropy_backward(x, target, stats, row_weight, scale, upstream, per_row, rows, v, smoothing, dx);
  }

  template <class C>
  static cuda_backend::DeviceAttentionView<C> view(const cpu_backend::AttentionView<C>& v) {
    return {v.data, v.sb, v.sh, v.st};
  }
  static cuda_backend::DeviceAttentionGeometry geometry(const cpu_backend::AttentionGeometry& g) {
    return {g.batch, g.heads, g.tq, g.tk, g.d, g.dv, g.causal, g.segments};
  }
  template <class C>
  static void attention_forward(const cpu_backend::AttentionGeometry& g, C scale, cpu_backend::AttentionView<C> q, cpu_backend::AttentionView<C> k,
                                cpu_backend::AttentionView<C> v, const C* bias, C* out, C* lse) {
    cuda_backend::attention_forward<C>(geometry(g), scale, view(q), view(k), view(v), bias, out, lse);
  }
  template <class C>
  static void attention_backward(const cpu_backend::AttentionGeometry& g, C scale, cpu_backend::AttentionView<C> q,
                                 cpu_backend::AttentionView<C> k, cpu_backend::AttentionView<C> v, cpu_backend::AttentionView<C> out,
                                 cpu_backend::AttentionView<C> dout, const C* lse, const C* bias, C* dq, C* dk, C* dv) {
    // delta = rowsum(dout * out) per query row: scratch alive until the kernels are queued.
    auto delta = Tensor<C, cuda>::empty(Shape{g.batch * g.heads * g.tq});
    cuda_backend::attention_backward<C>(geometry(g), scale, view(q), view(k), view(v), view(out), view(dout), lse, bias, dq, dk, dv,
                                        delta.data());
  }

  // bf16 attention on tensor cores (attention_tensor_core.cuh): whether it takes these operands
  // (views with a contiguous last axis), then forward and backward reading bf16 in place and
  // writing contiguous bf16 results.
  static bool attention_bf16_fits(const cpu_backend::AttentionGeometry& g,
                                  std::initializer_list<cpu_backend::AttentionView<bfloat16>> operands) {
    for (const auto& v : operands)
      if (!cuda_backend::tensor_core_attention_aligned(view(v))) return false;
    return cuda_backend::tensor_core_attention_fits(geometry(g));  // switch, head size, then the device
  }
  // (Templates, E = bfloat16: the kernels are compiled only where a program calls them.)
  template <class E>
  static void attention_forward_bf16(const cpu_backend::AttentionGeometry& g, float scale, cpu_backend::AttentionView<E> q,
                                     cpu_backend::AttentionView<E> k, cpu_backend::AttentionView<E> v, const float* bias, E* out, float* lse) {
    cuda_backend::attention_forward_tensor_core(geometry(g), scale, view(q), view(k), view(v), bias, out, lse);
  }
  template <class E>
  static void attention_backward_bf16(const cpu_backend::AttentionGeometry& g, float scale, cpu_backend::AttentionView<E> q,
                                      cpu_backend::AttentionView<E> k, cpu_backend::AttentionView<E> v, const E* out,
                                      cpu_backend::AttentionView<E> dout, const float* lse, const float* bias, E* dq, E* dk, E* dv) {
    auto delta = Tensor<float, cuda>::empty(Shape{g.batch * g.heads * g.tq});  // rowsum(dout * out), alive until the kernels are queued
    cuda_backend::attention_backward_tensor_core(geometry(g), scale, view(q), view(k), view(v), out, view(dout), lse, bias, dq, dk, dv,
                                                 delta.data());
  }
};

}  // namespace cerberus
