// Matrix products of CPU tensors, with NumPy's matmul rules.
//
// Shape legend: a is [..., M, K], b is [..., K, N], the result is [..., M, N]. M = rows of the
// result, K = the inner (summed) dimension, N = columns; "..." are batch dimensions, broadcast
// against each other NumPy-style (aligned from the right, extent 1 repeats).
//   [K] . [K]          -> []          (dot product)
//   [M, K] x [K]       -> [M]         (a 1-D b is a column, its axis dropped from the result)
//   [K] x [K, N]       -> [N]         (a 1-D a is a row, its axis dropped from the result)
//   [B, M, K] x [K, N] -> [B, M, N]   (b broadcast over the batch)
//
// Operands are never copied: any strides go straight to the GEMM, whose packing reads row-major,
// column-major (a transposed view such as a.t()), sliced and broadcast operands alike. A batch
// whose B is shared and whose A rows are evenly strided (x [B, T, C] times W [C, D]) runs as one
// [B*T, C] x [C, D] product.
//
// Element types: float, double, bfloat16 (bf16 sums run in float, each result element is
// rounded once). Results do not depend on the thread count. matmul is differentiable (backward
// below the forward); matmul_into writes in place and is not.
#pragma once

#include <string>
#include <type_traits>

#include "cerberus/backend/cpu/gemm.hpp"
#include "cerberus/backend/cpu/thread_pool.hpp"
#include "cerberus/backend/op_kernels.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/core/shape.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus {

namespace matmul_detail {

// The product's geometry: both operands as (batch..., rows, cols) views, batch dims broadcast.
struct Plan {
  Shape batch;            // broadcast batch extents
  Strides a_batch, b_batch;  // per batch dim; 0 where an operand is broadcast
  Index m = 0, k = 0, n = 0;
  Index a_rs = 0, a_cs = 0, b_rs = 0, b_cs = 0;
  Shape result;  // the shape matmul returns (1-D operands' axes dropped)
};

inline std::string shapes_text(const Shape& a, const Shape& b) { return "shapes " + a.to_string() + " and " + b.to_string(); }

inline Plan plan(const Shape& as, const Strides& ast, const Shape& bs, const Strides& bst) {
  if (as.rank() == 0 || bs.rank() == 0)
    throw ShapeError("[matmul] " + shapes_text(as, bs) + " do not match: both operands need at least one dimension");
  Plan p;
  // A 1-D a is a single row (M = 1), a 1-D b a single column (N = 1).
  const bool a_vec = as.rank() == 1, b_vec = bs.rank() == 1;
  p.m = a_vec ? 1 : as[as.rank() - 2];
  p.k = as[as.rank() - 1];
  const Index kb = b_vec ? bs[0] : bs[bs.rank() - 2];
  p.n = b_vec ? 1 : bs[bs.rank() - 1];
  if (p.k != kb)
    throw ShapeError("[matmul] " + shapes_text(as, bs) + " do not match: inner dimensions " + std::to_string(p.k) + " and " +
                     std::to_string(kb) + " differ");
  p.a_rs = a_vec ? 0 : ast[as.rank() - 2];
  p.a_cs = ast[as.rank() - 1];
  p.b_rs = b_vec ? bst[0] : bst[bs.rank() - 2];
  p.b_cs = b_vec ? 0 : bst[bs.rank() - 1];

  const int a_batch_rank = std::max(0, as.rank() - 2), b_batch_rank = std::max(0, bs.rank() - 2);
  const int rank = std::max(a_batch_rank, b_batch_rank);
  p.batch = Shape::filled(rank, 1);
  p.a_batch = Shape::filled(rank, 0);
  p.b_batch = Shape::filled(rank, 0);
  for (int i = 0; i < rank; ++i) {
    const int da = a_batch_rank - rank + i, db = b_batch_rank - rank + i;
    const Index ea = da >= 0 ? as[da] : 1, eb = db >= 0 ? bs[db] : 1;
    if (ea != eb && ea != 1 && eb != 1) {
      Shape ab, bb;
      for (int d = 0; d < a_batch_rank; ++d) ab.push_back(as[d]);
      for (int d = 0; d < b_batch_rank; ++d) bb.push_back(bs[d]);
      throw ShapeError("[matmul] " + shapes_text(as, bs) + " do not match: batch dimensions " + ab.to_string() + " and " +
                       bb.to_string() + " cannot be broadcast together");
    }
    p.batch[i] = ea == 1 ? eb : ea;
    if (da >= 0 && ea != 1) p.a_batch[i] = ast[da];
    if (db >= 0 && eb != 1) p.b_batch[i] = bst[db];
  }
  p.result = p.batch;
  if (!a_vec) p.result.push_back(p.m);
  if (!b_vec) p.result.push_back(p.n);
  return p;
}

// Rows of an operand over (batch..., M) as one evenly strided run, if they form one: the batch
// is then a single taller product. rows == 0 when they do not.
struct RowRun {
  Index rows = 0, stride = 0;
};
inline RowRun row_run(const Shape& batch, const Strides& batch_strides, Index m, Index rs) {
  RowRun run{1, 0};
  bool started = false;
  const auto add = [&](Index extent, Index stride) {
    if (extent == 1) return true;
    if (!started) {
      run = {extent, stride};
      started = true;
      return true;
    }
    if (stride != run.rows * run.stride) return false;
    run.rows *= extent;
    return true;
  };
  if (!add(m, rs)) return {};
  for (int d = batch.rank() - 1; d >= 0; --d)
    if (!add(batch[d], batch_strides[d])) return {};
  return run;
}

// out (a tensor of the plan's batch + [M, N] extents, given by its strides) =
// alpha * a . b + beta * out, one GEMM per batch entry or one folded GEMM.
template <class T>
void run(const Plan& p, const T* a, const T* b, T* c, const Strides& c_batch, Index c_rs, Index c_cs, compute_t<T> alpha,
         compute_t<T> beta) {
  const Index batches = p.batch.numel();
  if (batches == 0 || p.m == 0 || p.n == 0) return;
  if (batches > 1) {
    // x [B, T, C] times W [C, D]: B is shared by every entry (broadcast wherever the batch has
    // extent > 1), A's and C's rows run evenly: one [B*T, C] x [C, D] product.
    bool b_shared = true;
    for (int d = 0; d < p.batch.rank(); ++d) b_shared = b_shared && (p.batch[d] == 1 || p.b_batch[d] == 0);
    const RowRun ar = row_run(p.batch, p.a_batch, p.m, p.a_rs), cr = row_run(p.batch, c_batch, p.m, c_rs);
    if (b_shared && ar.rows > 0 && cr.rows == ar.rows) {
      cpu_backend::gemm<T>(ar.rows, p.n, p.k, alpha, a, ar.stride, p.a_cs, b, p.b_rs, p.b_cs, beta, c, cr.stride, c_cs);
      return;
    }
  }
  const int rank = p.batch.rank();
  const auto entry = [&](Index e) {
    Index ao = 0, bo = 0, co = 0;
    for (int d = rank - 1; d >= 0; --d) {
      const Index i = e % p.batch[d];
      e /= p.batch[d];
      ao += i * p.a_batch[d];
      bo += i * p.b_batch[d];
      co += i * c_batch[d];
    }
    cpu_backend::gemm<T>(p.m, p.n, p.k, alpha, a + ao, p.a_rs, p.a_cs, b + bo, p.b_rs, p.b_cs, beta, c + co, c_rs, c_cs);
  };
  // Small products: one per task, so the threads share the batch (a product's own threading
  // would mostly wait). Large ones: one after another, each spread over the pool.
  const Index work = p.m * p.n * std::max<Index>(p.k, 1);
  constexpr Index big = Index{1} << 21;
  if (batches > 1 && work < big && num_threads() > 1) {
    parallel_for(0, batches, std::max<Index>(1, big / work / 4), [&](Index e0, Index e1) {
      for (Index e = e0; e < e1; ++e) entry(e);
    });
  } else {
    for (Index e = 0; e < batches; ++e) entry(e);
  }
}

// Strides of `t`'s memory for the (batch..., M, N) layout of the plan: the result tensor has the
// 1-D operands' axes dropped, so they are put back with extent 1.
template <class T, class D>
void output_layout(const Plan& p, const Tensor<T, D>& out, bool a_vec, bool b_vec, Strides& c_batch, Index& c_rs,
                   Index& c_cs) {
  const int rank = p.batch.rank();
  c_batch = Shape::filled(rank, 0);
  for (int d = 0; d < rank; ++d) c_batch[d] = out.strides()[d];
  c_rs = a_vec ? 0 : out.strides()[rank];
  c_cs = b_vec ? 0 : out.strides()[rank + (a_vec ? 0 : 1)];
}

// How a BLAS library (column-major, one unit stride per matrix) can read a rows x cols matrix
// with strides (rs, cs): row-major (unit column stride, leading dimension rs), column-major
// (unit row stride, leading dimension cs), or not at all (then the operand is copied first).
// Extent-1 dimensions may have any stride; the leading dimension is then made legal.
enum class BlasOrder { row_major, col_major, none };
struct BlasLayout {
  BlasOrder order = BlasOrder::none;
  Index ld = 0;
};
inline BlasLayout blas_layout(Index rows, Index cols, Index rs, Index cs) {
  const Index r1 = std::max<Index>(rows, 1), c1 = std::max<Index>(cols, 1);
  if ((cs == 1 || cols <= 1) && (rows <= 1 || rs >= c1)) return {BlasOrder::row_major, rows <= 1 ? c1 : rs};
  if ((rs == 1 || rows <= 1) && (cols <= 1 || cs >= r1)) return {BlasOrder::col_major, cols <= 1 ? r1 : cs};
  return {};
}

// Devices whose GEMM is a BLAS library: an operand whose last two dimensions have no unit stride
// (a strided slice, an expanded matrix) is made contiguous first; the result is detached, so the
// caller keeps the original operand for autodiff.
template <class T, class D>
Tensor<T, D> blas_operand(const Tensor<T, D>& t) {
  const bool vec = t.rank() == 1;
  const Index rows = vec ? 1 : t.shape()[t.rank() - 2], cols = t.shape()[t.rank() - 1];
  const Index rs = vec ? 0 : t.strides()[t.rank() - 2], cs = t.strides()[t.rank() - 1];
  if (vec) {  // a [K] vector is used as a row (a) or a column (b): either needs a unit stride or a single element
    if (cs == 1 || cols <= 1) return t.detach();
  } else if (blas_layout(rows, cols, rs, cs).order != BlasOrder::none) {
    return t.detach();
  }
  NoGradGuard copy_is_not_recorded;
  return t.detach().contiguous();
}

}  // namespace matmul_detail

// out = alpha * matmul(a, b) + beta * out, written through out's strides (any layout, no
// broadcast). out must already have the result's shape. With beta == 0 out is only written.
// Operands that share memory with out are copied first. Returns out.
template <FloatElement T, Device D>
Tensor<T, D> matmul_into(const Tensor<T, D>& out, Tensor<T, D> a, Tensor<T, D> b, double alpha = 1.0, double beta = 0.0) {
  const matmul_detail::Plan p = matmul_detail::plan(a.shape(), a.strides(), b.shape(), b.strides());
  if (!(out.shape() == p.result))
    throw ShapeError("[matmul] out has shape " + out.shape().to_string() + ", but " + matmul_detail::shapes_text(a.shape(), b.shape()) +
                     " give " + p.result.to_string());
  for (int d = 0; d < out.rank(); ++d)
    if (out.strides()[d] == 0 && out.shape()[d] > 1)
      throw ShapeError("[matmul] cannot write into a broadcast view (shape " + out.shape().to_string() + ", strides " +
                       out.strides().to_string() + ")");
  if (a.storage() == out.storage()) a = a.clone();
  if (b.storage() == out.storage()) b = b.clone();
  if constexpr (!std::is_same_v<D, cpu>) {
    a = matmul_detail::blas_operand(a);
    b = matmul_detail::blas_operand(b);
  }
  const matmul_detail::Plan q = matmul_detail::plan(a.shape(), a.strides(), b.shape(), b.strides());
  Strides c_batch;
  Index c_rs, c_cs;
  matmul_detail::output_layout(q, out, a.rank() == 1, b.rank() == 1, c_batch, c_rs, c_cs);
  if constexpr (std::is_same_v<D, cpu>)
    matmul_detail::run<T>(q, a.data(), b.data(), out.data(), c_batch, c_rs, c_cs, static_cast<compute_t<T>>(alpha),
                          static_cast<compute_t<T>>(beta));
  else if (matmul_detail::blas_layout(q.m, q.n, c_rs, c_cs).order != matmul_detail::BlasOrder::none)
    OpKernels<D>::template matmul<T>(q, a.data(), b.data(), out.data(), c_batch, c_rs, c_cs, alpha, beta);
  else {  // an output BLAS cannot write (no unit stride in its last two dimensions): through a contiguous copy
    const Tensor<T, D> tmp = Tensor<T, D>::empty(out.shape());
    if (beta != 0.0) Backend<D>::template convert<T, T>(tmp.data(), tmp.strides(), out.data(), out.strides(), out.shape());
    matmul_detail::output_layout(q, tmp, a.rank() == 1, b.rank() == 1, c_batch, c_rs, c_cs);
    OpKernels<D>::template matmul<T>(q, a.data(), b.data(), tmp.data(), c_batch, c_rs, c_cs, alpha, beta);
    Backend<D>::template convert<T, T>(out.data(), out.strides(), tmp.data(), tmp.strides(), out.shape());
  }
  return out;
}

// The matrix product a . b with NumPy's matmul rules (see the legend at the top).
template <FloatElement T, Device D>
Tensor<T, D> matmul(const Tensor<T, D>& a, const Tensor<T, D>& b) {
  Tensor<T, D> out;
  if constexpr (!std::is_same_v<D, cpu>) {
    // cuBLAS reads operands in place when one of their last two strides is 1 (a.t() is an op
    // flag, not a copy); anything else is copied first.
    const Tensor<T, D> ad = matmul_detail::blas_operand(a), bd = matmul_detail::blas_operand(b);
    const matmul_detail::Plan p = matmul_detail::plan(ad.shape(), ad.strides(), bd.shape(), bd.strides());
    out = Tensor<T, D>::empty(p.result);
    Strides c_batch;
    Index c_rs, c_cs;
    matmul_detail::output_layout(p, out, a.rank() == 1, b.rank() == 1, c_batch, c_rs, c_cs);
    OpKernels<D>::template matmul<T>(p, ad.data(), bd.data(), out.data(), c_batch, c_rs, c_cs, 1.0, 0.0);
  } else {
    const matmul_detail::Plan p = matmul_detail::plan(a.shape(), a.strides(), b.shape(), b.strides());
    out = Tensor<T, cpu>::empty(p.result);
    Strides c_batch;
    Index c_rs, c_cs;
    matmul_detail::output_layout(p, out, a.rank() == 1, b.rank() == 1, c_batch, c_rs, c_cs);
    matmul_detail::run<T>(p, a.data(), b.data(), out.data(), c_batch, c_rs, c_cs, compute_t<T>(1), compute_t<T>(0));
  }
  // backward saves: a and b (handles, no copy). With a2 = a as [..., M, K], b2 = b as [..., K, N]
  // and g2 = the gradient as [..., M, N]:  da = g2 b2^T,  db = a2^T g2, each summed over the
  // batch dimensions its operand was broadcast along.
  if (autograd::any_requires_grad(a, b))
    autograd::record<T, D>(out, "matmul", {a, b}, [a, b](const Tensor<T, D>& g) {
      const bool a_vec = a.rank() == 1, b_vec = b.rank() == 1;
      const Tensor<T, D> a2 = a_vec ? a.unsqueeze(0) : a;
      const Tensor<T, D> b2 = b_vec ? b.unsqueeze(-1) : b;
      Tensor<T, D> g2 = b_vec ? g.unsqueeze(-1) : g;
      if (a_vec) g2 = g2.unsqueeze(-2);
      Tensor<T, D> da, db;
      if (a.requires_grad()) da = autograd::sum_to_shape(matmul(g2, b2.transpose(-1, -2)), a2.shape()).reshape(a.shape());
      if (b.requires_grad()) {
        if (b2.rank() == 2 && a2.rank() > 2) {
          // A weight shared by every batch entry (x [B, T, C] . W [C, D]): one [C, B*T] x [B*T, D]
          // product instead of B products and a sum.
          const Index k = a2.shape()[a2.rank() - 1], n = g2.shape()[g2.rank() - 1];
          db = matmul(a2.reshape({-1, k}).t(), g2.reshape({-1, n})).reshape(b.shape());
        } else {
          db = autograd::sum_to_shape(matmul(a2.transpose(-1, -2), g2), b2.shape()).reshape(b.shape());
        }
      }
      return std::vector<Tensor<T, D>>{da, db};
    });
  return out;
}

}  // namespace cerberus
