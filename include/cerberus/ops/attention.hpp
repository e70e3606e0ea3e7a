// Scaled dot-product attention, forward and backward side by side, flash-attention style: the
// T x T probabilities are never stored.
//
// Shapes (legend: B = batch, H = heads, Tq = queries, Tk = keys, D = head size, Dv = value size):
//   scaled_dot_product_attention(q [B, H, Tq, D], k [B, H, Tk, D], v [B, H, Tk, Dv], options)
//     -> [B, H, Tq, Dv],   out = softmax(scale * q k^T + mask) v   per (b, h)
//   options.key_padding: uint8 [B, Tk], nonzero = a padded key, never attended to.
//   options.causal: query i attends keys j <= i + (Tk - Tq): the queries are the last Tq
//     positions of the Tk keys (KV-cache decoding: Tq = 1 attends every cached key).
//   options.segments: int64 [B, Tk], the packed example each key belongs to (sequence packing:
//     several short examples side by side in one row). Query i has the segment of key position
//     i + (Tk - Tq) (the causal convention: queries are the last Tq keys; needs Tq <= Tk), and
//     attends a key only when both have the same segment id, so attention never crosses
//     examples. Combines with causal and key_padding (a key must pass all three).
//   options.scale: default 1 / sqrt(D).
//   The masks live on the host (AttentionOptions, for operands on any device: a copy goes to the
//   device) or on the operands' device (BasicAttentionOptions<cuda>: the bias is computed there,
//   no synchronisation; nn's attention passes its cuda masks this way).
// A query whose keys are all masked (padding, or causal with Tq > Tk) gets a zero output row
// and zero gradients, never NaN.
//
// Segments cost one id comparison per score, and the CPU kernels skip a whole (query block, key
// block) tile when the two blocks' segment ranges [min, max] are disjoint: with packed examples
// laid out left to right, most far-off-diagonal tiles are skipped.
//
// Saved for backward: q, k, v and the output (handles, no copies), and per query row the
// logsumexp of its scaled, masked scores ([B, H, Tq], compute type). The backward recomputes
// each tile of probabilities as exp(s - lse) from q and k (FlashAttention-2, Dao 2023), so the
// saved state is O(T) per head rather than the O(Tq * Tk) probabilities: at T = 2048, 8 heads
// and batch 8 that is 0.5 MiB instead of 1 GiB per layer. The recomputation costs one extra
// q k^T product per tile in the backward (5 products instead of 4), which was judged cheaper
// than writing and re-reading the probabilities from memory at these sizes.
//
// Kernels: per (b, h) the queries are cut into blocks of attention_block_q rows and the keys
// into blocks of attention_block_k; every product of a tile goes through the raw GEMM of
// backend/cpu/gemm.hpp (strided operands, so q / k / v views with a contiguous last axis are
// read in place, e.g. [B, T, H, D] permuted to [B, H, T, D]). The forward keeps a running max
// and sum per query row (online softmax) and rescales its output rows as later key blocks
// raise the max. Tasks: forward (b, h, query block); backward (b, h), each owning its dk and dv
// rows (no races: a parallel split over keys would need a second pass or atomics for dq).
// bf16 inputs are converted to float once, computed in float, and rounded once at the end.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/autograd/node.hpp"
#include "cerberus/backend/cpu/backend.hpp"
#include "cerberus/backend/cpu/gemm.hpp"
#include "cerberus/backend/cpu/thread_pool.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/backend/op_kernels.hpp"
#include "cerberus/core/simd.hpp"
#include "cerberus/ops/reduce.hpp"  // reduce_span, MaxReducer
#include "cerberus/tensor/tensor.hpp"

namespace cerberus {

// M is where the masks live: the host (AttentionOptions, accepted for q, k, v on any device), or
// the device of q, k and v (BasicAttentionOptions<cuda> for cuda operands: a cuda model keeps its
// batch's masks there, and the op reads them without a round trip through the host).
template <Device M = cpu>
struct BasicAttentionOptions {
  bool causal = false;                      // query i attends keys j <= i + (Tk - Tq)
  Tensor<std::uint8_t, M> key_padding = {};  // [B, Tk], nonzero = padded (excluded); undefined = none
  Tensor<std::int64_t, M> segments = {};     // [B, Tk], packed-example id per key; undefined = one example per row
  std::optional<double> scale = {};          // default 1 / sqrt(D)
};
using AttentionOptions = BasicAttentionOptions<cpu>;

namespace cpu_backend {
inline namespace CERBERUS_SIMD_ABI {

// Tile sizes: a score tile (block_q x block_k) stays in L2, and products are big enough for
// the GEMM's packing to pay off. They fix only how work is cut, never what is computed.
inline constexpr Index attention_block_q = 64;
inline constexpr Index attention_block_k = 256;

// One operand [B, H, T, X] of the compute type whose last axis is contiguous; sb, sh, st are
// its strides along B, H and T (0 for a broadcast axis, e.g. keys shared by every head).
template <class C>
struct AttentionView {
  const C* data;
  Index sb, sh, st;
  const C* at(Index b, Index h) const { return data + b * sb + h * sh; }
};

struct AttentionGeometry {
  Index batch, heads, tq, tk, d, dv;
  bool causal;
  // Segment id per key, [B, Tk] contiguous, in the memory of the device that runs the kernel
  // (options.segments), or null: part of the mask's shape, like causal.
  const std::int64_t* segments = nullptr;
  // Keys [0, end) that query row `row` may see through the causal mask (all of them otherwise).
  Index key_end(Index row) const { return causal ? std::clamp<Index>(row + (tk - tq) + 1, 0, tk) : tk; }
  // The segment row of batch b, or null.
  const std::int64_t* segment_row(Index b) const { return segments ? segments + b * tk : nullptr; }
};

// True when no query of rows [q0, q0 + nq) can attend a key of [k0, k0 + nk) because their
// segment ranges do not overlap (seg is one batch row, [Tk]; queries sit at key positions + Tk - Tq).
inline bool attention_segments_disjoint(const AttentionGeometry& g, const std::int64_t* seg, Index q0, Index nq, Index k0, Index nk) {
  if (!seg || nq <= 0 || nk <= 0) return false;
  const Index shift = g.tk - g.tq;
  const auto [qlo, qhi] = std::minmax_element(seg + q0 + shift, seg + q0 + shift + nq);
  const auto [klo, khi] = std::minmax_element(seg + k0, seg + k0 + nk);
  return *qhi < *klo || *khi < *qlo;
}

// row[j] = exp(row[j] - shift) for j < n, in place; returns their sum (in double).
template <class C>
double attention_exp_row(C* row, Index n, C shift) {
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  const B vs(shift);
  B acc(C(0));
  Index j = 0;
  for (; j + W <= n; j += W) {
    const B e = xsimd::exp(B::load_unaligned(row + j) - vs);
    e.store_unaligned(row + j);
    acc += e;
  }
  double sum = static_cast<double>(simd::reduce_add(acc));
  for (; j < n; ++j) sum += static_cast<double>(row[j] = std::exp(row[j] - shift));
  return sum;
}

// Scores of one tile: s[i, j] = scale * q[q0 + i] . k[k0 + j] plus the padding bias (0 or -inf
// per key), -inf past each row's causal limit and on keys of another segment (seg: this batch
// row's segment ids [Tk], or null). s has leading dimension attention_block_k.
template <class C>
void attention_scores(const AttentionGeometry& g, C scale, const C* q, Index q_st, const C* k, Index k_st, const C* bias,
                      const std::int64_t* seg, Index q0, Index nq, Index k0, Index nk, C* s) {
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  constexpr Index ld = attention_block_k;
  gemm<C>(nq, nk, g.d, scale, q + q0 * q_st, q_st, 1, k + k0 * k_st, 1, k_st, C(0), s, ld, 1);
  const C neg_inf = -std::numeric_limits<C>::infinity();
  for (Index i = 0; i < nq; ++i) {
    C* row = s + i * ld;
    if (bias) {
      Index j = 0;
      for (; j + W <= nk; j += W) (B::load_unaligned(row + j) + B::load_unaligned(bias + k0 + j)).store_unaligned(row + j);
      for (; j < nk; ++j) row[j] += bias[k0 + j];
    }
    const Index end = g.key_end(q0 + i) - k0;  // first masked column of this row in the tile
    for (Index j = std::max<Index>(end, 0); j < nk; ++j) row[j] = neg_inf;
    if (seg) {
      const std::int64_t mine = seg[q0 + i + (g.tk - g.tq)];
      for (Index j = 0; j < nk; ++j)
        if (seg[k0 + j] != mine) row[j] = neg_inf;
    }
  }
}

// Forward for every (b, h): out [B, H, Tq, Dv] and lse [B, H, Tq], both contiguous.
// bias is [B, Tk] (0 or -inf) or null.
template <class C>
void attention_forward(const AttentionGeometry& g, C scale, AttentionView<C> q, AttentionView<C> k, AttentionView<C> v, const C* bias,
                       C* out, C* lse) {
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  constexpr Index BQ = attention_block_q, BK = attention_block_k;
  const Index q_blocks = (g.tq + BQ - 1) / BQ;
  const Index tasks = g.batch * g.heads * q_blocks;
  const Index work = BQ * std::max<Index>(g.tk, 1) * (g.d + g.dv);  // multiply-adds per task
  parallel_for(0, tasks, std::max<Index>(1, (Index{1} << 18) / work), [&](Index t0, Index t1) {
    std::vector<C> s(static_cast<std::size_t>(BQ * BK)), m(BQ), l(BQ);
    for (Index task = t0; task < t1; ++task) {
      const Index bh = task / q_blocks, b = bh / g.heads, h = bh % g.heads;
      const Index q0 = (task % q_blocks) * BQ, nq = std::min(BQ, g.tq - q0);
      const C *qp = q.at(b, h), *kp = k.at(b, h), *vp = v.at(b, h);
      const C* bias_b = bias ? bias + b * g.tk : nullptr;
      const std::int64_t* seg_b = g.segment_row(b);
      C* o = out + (bh * g.tq + q0) * g.dv;
      std::fill(o, o + nq * g.dv, C(0));
      std::fill(m.begin(), m.end(), -std::numeric_limits<C>::infinity());
      std::fill(l.begin(), l.end(), C(0));
      const Index k_end = g.key_end(q0 + nq - 1);  // the block's last row sees the most keys
      for (Index k0 = 0; k0 < k_end; k0 += BK) {
        const Index nk = std::min(BK, k_end - k0);
        if (attention_segments_disjoint(g, seg_b, q0, nq, k0, nk)) continue;  // every score would be -inf
        attention_scores(g, scale, qp, q.st, kp, k.st, bias_b, seg_b, q0, nq, k0, nk, s.data());
        // Online softmax: rows become exp(s - new max); earlier output rows are rescaled.
        for (Index i = 0; i < nq; ++i) {
          C* row = s.data() + i * BK;
          const C m_new = std::max(m[i], reduce_span<MaxReducer<C>>(row, nk));
          if (m_new == -std::numeric_limits<C>::infinity()) {  // every key so far is masked
            std::fill(row, row + nk, C(0));
            continue;
          }
          const C alpha = std::exp(m[i] - m_new);  // 0 for the first unmasked block
          l[i] = static_cast<C>(l[i] * alpha + attention_exp_row(row, nk, m_new));
          m[i] = m_new;
          if (alpha != C(1)) {
            C* oi = o + i * g.dv;
            const B va(alpha);
            Index j = 0;
            for (; j + W <= g.dv; j += W) (B::load_unaligned(oi + j) * va).store_unaligned(oi + j);
            for (; j < g.dv; ++j) oi[j] *= alpha;
          }
        }
        gemm<C>(nq, g.dv, nk, C(1), s.data(), BK, 1, vp + k0 * v.st, v.st, 1, C(1), o, g.dv, 1);
      }
      C* lse_row = lse + bh * g.tq + q0;
      for (Index i = 0; i < nq; ++i) {
        // A fully masked row has l = 0: its output stays 0 and its lse is -inf (= log 0).
        const C inv = l[i] > C(0) ? C(1) / l[i] : C(0);
        C* oi = o + i * g.dv;
        for (Index j = 0; j < g.dv; ++j) oi[j] *= inv;
        lse_row[i] = l[i] > C(0) ? m[i] + std::log(l[i]) : -std::numeric_limits<C>::infinity();
      }
    }
  });
}

// Backward for every (b, h). dout and out are views like q; dq [B, H, Tq, D], dk [B, H, Tk, D]
// and dv [B, H, Tk, Dv] are contiguous and fully written. Per tile, with P = exp(s - lse):
//   dv += P^T dout,  dP = dout v^T,  dS = P * (dP - rowsum(dout * out)) * scale,
//   dq += dS k,      dk += dS^T q.
template <class C>
void attention_backward(const AttentionGeometry& g, C scale, AttentionView<C> q, AttentionView<C> k, AttentionView<C> v,
                        AttentionView<C> out, AttentionView<C> dout, const C* lse, const C* bias, C* dq, C* dk, C* dv) {
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  constexpr Index BQ = attention_block_q, BK = attention_block_k;
  const Index work = std::max<Index>(g.tq, 1) * std::max<Index>(g.tk, 1) * (2 * g.d + 2 * g.dv);
  parallel_for(0, g.batch * g.heads, std::max<Index>(1, (Index{1} << 18) / work), [&](Index t0, Index t1) {
    std::vector<C> p(static_cast<std::size_t>(BQ * BK)), ds(static_cast<std::size_t>(BQ * BK)), delta(static_cast<std::size_t>(g.tq));
    for (Index bh = t0; bh < t1; ++bh) {
      const Index b = bh / g.heads, h = bh % g.heads;
      const C *qp = q.at(b, h), *kp = k.at(b, h), *vp = v.at(b, h), *op = out.at(b, h), *dop = dout.at(b, h);
      const C* bias_b = bias ? bias + b * g.tk : nullptr;
      const std::int64_t* seg_b = g.segment_row(b);
      const C* lse_bh = lse + bh * g.tq;
      C* dq_bh = dq + bh * g.tq * g.d;
      C* dk_bh = dk + bh * g.tk * g.d;
      C* dv_bh = dv + bh * g.tk * g.dv;
      std::fill(dq_bh, dq_bh + g.tq * g.d, C(0));
      std::fill(dk_bh, dk_bh + g.tk * g.d, C(0));
      std::fill(dv_bh, dv_bh + g.tk * g.dv, C(0));
      // delta_i = rowsum(dout_i * out_i) = sum_j P_ij dP_ij: the softmax backward's row term.
      for (Index i = 0; i < g.tq; ++i) {
        const C *a = dop + i * dout.st, *o = op + i * out.st;
        B acc(C(0));
        Index j = 0;
        for (; j + W <= g.dv; j += W) acc = xsimd::fma(B::load_unaligned(a + j), B::load_unaligned(o + j), acc);
        C sum = simd::reduce_add(acc);
        for (; j < g.dv; ++j) sum += a[j] * o[j];
        delta[static_cast<std::size_t>(i)] = sum;
      }
      for (Index q0 = 0; q0 < g.tq; q0 += BQ) {
        const Index nq = std::min(BQ, g.tq - q0);
        const Index k_end = g.key_end(q0 + nq - 1);
        for (Index k0 = 0; k0 < k_end; k0 += BK) {
          const Index nk = std::min(BK, k_end - k0);
          if (attention_segments_disjoint(g, seg_b, q0, nq, k0, nk)) continue;  // P = 0 on the whole tile
          attention_scores(g, scale, qp, q.st, kp, k.st, bias_b, seg_b, q0, nq, k0, nk, p.data());
          for (Index i = 0; i < nq; ++i) {
            C* row = p.data() + i * BK;
            const C li = lse_bh[q0 + i];
            if (li == -std::numeric_limits<C>::infinity()) {  // fully masked row: no gradient
              std::fill(row, row + nk, C(0));
              continue;
            }
            const B vl(li);
            Index j = 0;
            for (; j + W <= nk; j += W) xsimd::exp(B::load_unaligned(row + j) - vl).store_unaligned(row + j);
            for (; j < nk; ++j) row[j] = std::exp(row[j] - li);
          }
          // dv_j += P^T dout_i
          gemm<C>(nk, g.dv, nq, C(1), p.data(), 1, BK, dop + q0 * dout.st, dout.st, 1, C(1), dv_bh + k0 * g.dv, g.dv, 1);
          // dP = dout_i v_j^T, then dS = P * (dP - delta) * scale in place
          gemm<C>(nq, nk, g.dv, C(1), dop + q0 * dout.st, dout.st, 1, vp + k0 * v.st, 1, v.st, C(0), ds.data(), BK, 1);
          for (Index i = 0; i < nq; ++i) {
            C *d = ds.data() + i * BK, *pr = p.data() + i * BK;
            const B vdelta(delta[static_cast<std::size_t>(q0 + i)]), vs(scale);
            Index j = 0;
            for (; j + W <= nk; j += W)
              (B::load_unaligned(pr + j) * (B::load_unaligned(d + j) - vdelta) * vs).store_unaligned(d + j);
            for (; j < nk; ++j) d[j] = pr[j] * (d[j] - delta[static_cast<std::size_t>(q0 + i)]) * scale;
          }
          // dq_i += dS k_j,  dk_j += dS^T q_i
          gemm<C>(nq, g.d, nk, C(1), ds.data(), BK, 1, kp + k0 * k.st, k.st, 1, C(1), dq_bh + q0 * g.d, g.d, 1);
          gemm<C>(nk, g.d, nq, C(1), ds.data(), 1, BK, qp + q0 * q.st, q.st, 1, C(1), dk_bh + k0 * g.d, g.d, 1);
        }
      }
    }
  });
}

}  // namespace CERBERUS_SIMD_ABI
}  // namespace cpu_backend

namespace detail {

// An operand in the compute type with a contiguous last axis: float / double views are used
// in place when they already have one; bf16 is converted (once) to a contiguous float copy.
template <class T, class D>
Tensor<compute_t<T>, D> attention_operand(const Tensor<T, D>& t) {
  NoGradGuard copies_are_not_recorded;
  if constexpr (std::is_same_v<T, compute_t<T>>) {
    if (t.strides()[t.rank() - 1] == 1 || t.size(-1) <= 1) return t.detach();
    return t.contiguous().detach();
  } else {
    return t.template to<compute_t<T>>();
  }
}

template <class C, class D>
cpu_backend::AttentionView<C> attention_view(const Tensor<C, D>& t) {
  return {t.data(), t.strides()[0], t.strides()[1], t.strides()[2]};
}

inline std::string attention_shapes(const Shape& q, const Shape& k, const Shape& v) {
  return "q " + q.to_string() + ", k " + k.to_string() + ", v " + v.to_string();
}

}  // namespace detail

// softmax(scale * q k^T + mask) v per batch and head; see the top of this file. Differentiable
// in q, k and v.
template <FloatElement T, Device D, Device M = cpu>
  requires(std::is_same_v<M, cpu> || std::is_same_v<M, D>)
Tensor<T, D> scaled_dot_product_attention(const Tensor<T, D>& q, const Tensor<T, D>& k, const Tensor<T, D>& v,
                                          const BasicAttentionOptions<M>& options = {}) {
  using C = compute_t<T>;
  constexpr bool host_masks = std::is_same_v<M, cpu>;  // also true for cpu operands
  if (!q.defined() || !k.defined() || !v.defined())
    throw ValueError("[scaled_dot_product_attention] q, k and v must be defined tensors");
  const Shape &qs = q.shape(), &ks = k.shape(), &vs = v.shape();
  if (q.rank() != 4 || k.rank() != 4 || v.rank() != 4)
    throw ShapeError("[scaled_dot_product_attention] q, k and v must be [B, H, T, D], got " + detail::attention_shapes(qs, ks, vs));
  if (ks[0] != qs[0] || vs[0] != qs[0] || ks[1] != qs[1] || vs[1] != qs[1] || ks[3] != qs[3] || vs[2] != ks[2])
    throw ShapeError("[scaled_dot_product_attention] shapes do not fit q [B, H, Tq, D], k [B, H, Tk, D], v [B, H, Tk, Dv]: got " +
                     detail::attention_shapes(qs, ks, vs));
  cpu_backend::AttentionGeometry g{qs[0], qs[1], qs[2], ks[2], qs[3], vs[3], options.causal};
  if (options.key_padding.defined() && !(options.key_padding.shape() == Shape{g.batch, g.tk}))
    throw ShapeError("[scaled_dot_product_attention] key_padding must be [B, Tk] = [" + std::to_string(g.batch) + ", " +
                     std::to_string(g.tk) + "], got " + options.key_padding.shape().to_string() + " for " +
                     detail::attention_shapes(qs, ks, vs));
  // Segment ids, contiguous, where the masks are; host ids for another device are copied into its
  // memory below.
  Tensor<std::int64_t, M> segments;
  if (options.segments.defined()) {
    if (!(options.segments.shape() == Shape{g.batch, g.tk}))
      throw ShapeError("[scaled_dot_product_attention] segments must be int64 [B, Tk] = [" + std::to_string(g.batch) + ", " +
                       std::to_string(g.tk) + "], got " + options.segments.shape().to_string() + " for " + detail::attention_shapes(qs, ks, vs));
    if (g.tq > g.tk)
      throw ShapeError("[scaled_dot_product_attention] segments need Tq <= Tk (query i has the segment of key i + Tk - Tq), got " +
                       detail::attention_shapes(qs, ks, vs));
    segments = options.segments.contiguous();
    g.segments = segments.data();
  }
  const C scale = static_cast<C>(options.scale ? *options.scale : g.d > 0 ? 1.0 / std::sqrt(static_cast<double>(g.d)) : 1.0);

  // Padding as an additive bias on the scores: 0 for a real key, -inf for a padded one.
  std::vector<C> bias;
  if constexpr (host_masks) {
    if (options.key_padding.defined()) {
      const auto mask = options.key_padding.contiguous();
      bias.resize(static_cast<std::size_t>(g.batch * g.tk));
      for (Index i = 0; i < g.batch * g.tk; ++i)
        bias[static_cast<std::size_t>(i)] = mask.data()[i] ? -std::numeric_limits<C>::infinity() : C(0);
    }
  }

  // Other devices read the bias from their own memory ([B, Tk] of the compute type): copied from
  // the host's, or computed there from a device mask (no synchronisation).
  Tensor<C, D> bias_device;
  Tensor<std::int64_t, D> segments_device;
  if constexpr (!std::is_same_v<D, cpu>) {
    if constexpr (host_masks) {
      if (!bias.empty()) {
        bias_device = Tensor<C, D>::empty(Shape{g.batch, g.tk});
        Backend<D>::copy_from_host(bias_device.data(), bias.data(), bias.size() * sizeof(C));
      }
      if (segments.defined()) {
        segments_device = Tensor<std::int64_t, D>::empty(Shape{g.batch, g.tk});
        Backend<D>::copy_from_host(segments_device.data(), segments.data(), static_cast<std::size_t>(segments.numel()) * sizeof(std::int64_t));
        g.segments = segments_device.data();
      }
    } else {
      NoGradGuard masks_are_not_recorded;
      if (options.key_padding.defined())
        bias_device = where(options.key_padding.contiguous().template to<C>(), -std::numeric_limits<C>::infinity(), C(0));
      segments_device = segments;  // already contiguous on the device
    }
  }
  const Tensor<C, D> qc = detail::attention_operand(q), kc = detail::attention_operand(k), vc = detail::attention_operand(v);
  auto out_c = Tensor<C, D>::empty(Shape{g.batch, g.heads, g.tq, g.dv});
  auto lse = Tensor<C, D>::empty(Shape{g.batch, g.heads, g.tq});
  if (out_c.numel() > 0 || lse.numel() > 0) {
    if constexpr (std::is_same_v<D, cpu>)
      cpu_backend::attention_forward<C>(g, scale, detail::attention_view(qc), detail::attention_view(kc), detail::attention_view(vc),
                                        bias.empty() ? nullptr : bias.data(), out_c.data(), lse.data());
    else
      OpKernels<D>::template attention_forward<C>(g, scale, detail::attention_view(qc), detail::attention_view(kc),
                                                  detail::attention_view(vc), bias_device.defined() ? bias_device.data() : nullptr,
                                                  out_c.data(), lse.data());
  }
  Tensor<T, D> out;
  if constexpr (std::is_same_v<T, C>) out = out_c;
  else out = out_c.template to<T>();

  if (autograd::any_requires_grad(q, k, v)) {
    // Saved: q, k, v, the output and lse (see the top of this file). float and double keep the
    // operands the forward read; bf16 keeps its own half-size tensors and converts them again.
    auto saved = [](const Tensor<T, D>& original, const Tensor<C, D>& computed) {
      if constexpr (std::is_same_v<T, C>) return computed;
      else return original.detach();
    };
    // The segment tensors are captured to keep g.segments alive.
    auto backward = [g, scale, lse, bias = std::move(bias), bias_device, segments, segments_device, q_saved = saved(q, qc), k_saved = saved(k, kc), v_saved = saved(v, vc),
                     out_saved = out.detach()](const Tensor<T, D>& grad) {
      const Tensor<C, D> qb = detail::attention_operand(q_saved), kb = detail::attention_operand(k_saved);
      const Tensor<C, D> vb = detail::attention_operand(v_saved), ob = detail::attention_operand(out_saved);
      const Tensor<C, D> dob = detail::attention_operand(grad);
      auto dq = Tensor<C, D>::empty(Shape{g.batch, g.heads, g.tq, g.d});
      auto dk = Tensor<C, D>::empty(Shape{g.batch, g.heads, g.tk, g.d});
      auto dv = Tensor<C, D>::empty(Shape{g.batch, g.heads, g.tk, g.dv});
      if (g.batch * g.heads > 0) {
        if constexpr (std::is_same_v<D, cpu>)
          cpu_backend::attention_backward<C>(g, scale, detail::attention_view(qb), detail::attention_view(kb), detail::attention_view(vb),
                                             detail::attention_view(ob), detail::attention_view(dob), lse.data(),
                                             bias.empty() ? nullptr : bias.data(), dq.data(), dk.data(), dv.data());
        else
          OpKernels<D>::template attention_backward<C>(g, scale, detail::attention_view(qb), detail::attention_view(kb),
                                                       detail::attention_view(vb), detail::attention_view(ob),
                                                       detail::attention_view(dob), lse.data(),
                                                       bias_device.defined() ? bias_device.data() : nullptr, dq.data(), dk.data(),
                                                       dv.data());
      }
      if constexpr (std::is_same_v<T, C>) return std::vector<Tensor<T, D>>{dq, dk, dv};
      else return std::vector<Tensor<T, D>>{dq.template to<T>(), dk.template to<T>(), dv.template to<T>()};
    };
    autograd::record<T, D>(out, "scaled_dot_product_attention", {q, k, v}, std::move(backward));
  }
  return out;
}

}  // namespace cerberus
