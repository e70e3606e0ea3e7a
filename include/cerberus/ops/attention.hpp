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
// into blocks of attention_block_k. The products of a tile go through the small register-blocked
// product of backend/cpu/attention_kernel.hpp, which reads q, v, dout, k and the probability tile
// in place through their strides (q / k / v views with a contiguous last axis, e.g. [B, T, H, D]
// permuted to [B, H, T, D]); only keys and values are transposed, once per head, for the
// q k^T and dout v^T products (with fewer than 24 queries, as in KV-cache decoding, those take
// dot products of rows instead). The forward keeps a running max and sum per query row (online
// softmax) and rescales its output rows as later key blocks raise the max. Tasks: forward
// (b, h, run of query blocks); backward (b, h), each owning its dk and dv rows (no races: a
// parallel split over keys would need a second pass or atomics for dq).
// bf16 inputs are converted to float once, computed in float, and rounded once at the end;
// on cuda, bf16 with head size 64 or 128 runs instead on tensor cores, reading bf16 in place
// (backend/cuda/attention_tensor_core.cuh; detail::attention_native says when).
//
// Result layout (CPU): the output and the gradients dq, dk, dv are [B, H, T, X] tensors whose
// memory follows their operand's: when q is a [B, H, T, D] view of [B, T, H, D] memory (heads
// inside time, as nn's attention passes the projections' outputs), the output is allocated as
// [B, T, H, Dv] and returned permuted, so out.permute({0, 2, 1, 3}).reshape({B, T, H * Dv}) for
// the output projection is a view, not a copy; dq, dk and dv follow q, k and v the same way, so
// their gradients reach the projections' [B, T, H*D] layout without a transpose. Otherwise
// (contiguous operands) the results are contiguous [B, H, T, X] as before. Other devices always
// return contiguous results.
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
#include "cerberus/backend/cpu/attention_kernel.hpp"
#include "cerberus/backend/cpu/backend.hpp"
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

// One result [B, H, T, X] of the compute type, written by the kernels: element (b, h, t, 0) at
// data + b * sb + h * sh + t * st, the last axis contiguous. A fresh result laid out as
// [B, T, H, X] (the layout the projections around attention use) has sh = X and st = H * X.
template <class C>
struct AttentionOut {
  C* data;
  Index sb, sh, st;
  C* at(Index b, Index h) const { return data + b * sb + h * sh; }
};

inline constexpr Index attention_round_up(Index n, Index w) { return (n + w - 1) / w * w; }

// The causal mask's reach inside the tile (query rows q0 + i, keys k0 + j), as ranges for the
// tile products (attention_kernel::BlockRange): a block of query rows needs no key past its last
// row's causal limit (no score: it becomes -inf; no term: its probability is 0), and a block of
// key rows (the transposed products) no query before the first that sees its first key. Without
// the causal mask every range is the whole tile.
struct AttentionTileRanges {
  const AttentionGeometry& g;
  Index q0, k0;
  static constexpr Index all = std::numeric_limits<Index>::max();
  Index keys_of(Index i0, Index rows) const { return g.key_end(q0 + i0 + rows - 1) - k0; }
  attention_kernel::BlockRange scores(Index i0, Index rows) const { return {keys_of(i0, rows), 0, all}; }  // columns = keys
  attention_kernel::BlockRange terms(Index i0, Index rows) const { return {all, 0, keys_of(i0, rows)}; }   // depths = keys
  // rows = keys k0 + j0 ..., depths = queries: query r sees key k when k <= r + Tk - Tq.
  attention_kernel::BlockRange transposed(Index j0, Index) const { return {all, g.causal ? k0 + j0 - (g.tk - g.tq) - q0 : 0, all}; }
};

// Below this many queries (KV-cache decoding: one or a few new tokens) the products against keys
// or values take dot products of their rows instead of transposing them first: the transpose
// (of cold keys) pays off only when enough queries share it. Measured with one thread against a
// 512-key cache, 32 heads of size 64: dot products 0.52 / 0.82 / 1.38 / 2.60 ms for 4 / 8 / 16 /
// 32 queries, the transposed path 1.05 / 1.31 / 1.51 / 2.16 ms. Decided by Tq alone, so the
// forward and the backward compute bitwise the same scores.
inline constexpr Index attention_transpose_min_queries = 24;

// c[i * ldc + j] = alpha * (a_i . b_j) for i < m, j < n: rows of a at stride a_st, of b at b_st,
// both of length d.
template <class C>
void attention_row_dots(Index m, Index n, Index d, C alpha, const C* a, Index a_st, const C* b, Index b_st, C* c, Index ldc) {
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j) {
      const C *x = a + i * a_st, *y = b + j * b_st;
      B acc(C(0));
      Index p = 0;
      for (; p + W <= d; p += W) acc = xsimd::fma(B::load_unaligned(x + p), B::load_unaligned(y + p), acc);
      C sum = simd::reduce_add(acc);
      for (; p < d; ++p) sum = std::fma(x[p], y[p], sum);
      c[i * ldc + j] = alpha * sum;
    }
}

// Scores of one tile: s[i, j] = scale * q[q0 + i] . k[k0 + j] plus the padding bias (0 or -inf
// per key), -inf past each row's causal limit and on keys of another segment (seg: this batch
// row's segment ids [Tk], or null). kt is this head's keys transposed, [D, kt_ld] (kt_ld a
// multiple of the vector width covering k0 + nk, zero-padded), or null below
// attention_transpose_min_queries queries (then k's rows are read). The product fills whole vectors,
// so columns nk .. round_up(nk) of s get (finite) values no one reads. With the causal mask the
// product skips keys past each row block's limit; the mask then sets every column past a row's
// limit, computed or not, to -inf. s has leading dimension attention_block_k.
template <class C>
void attention_scores(const AttentionGeometry& g, C scale, const C* q, Index q_st, const C* k, Index k_st, const C* kt, Index kt_ld,
                      const C* bias, const std::int64_t* seg, Index q0, Index nq, Index k0, Index nk, C* s) {
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  constexpr Index ld = attention_block_k;
  const AttentionTileRanges ranges{g, q0, k0};
  if (kt)
    attention_kernel::tile_product<C>(nq, attention_round_up(nk, W), g.d, scale, q + q0 * q_st, q_st, 1, kt + k0, kt_ld, s, ld, false,
                                      [&](Index i0, Index rows) { return ranges.scores(i0, rows); });
  else
    attention_row_dots(nq, nk, g.d, scale, q + q0 * q_st, q_st, k + k0 * k_st, k_st, s, ld);
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

// Forward for every (b, h): out [B, H, Tq, Dv] (any layout, see AttentionOut) and lse [B, H, Tq]
// contiguous. bias is [B, Tk] (0 or -inf) or null.
// Tasks: (b, h, a run of query blocks). Each task transposes the keys its run can see once
// ([D, round_up(keys, W)], 32 KB for 128 keys of size 64; from attention_transpose_min_queries
// queries on) and reuses them for every tile. Runs are whole heads unless there are too few
// heads to keep the threads busy; how the query blocks are grouped into runs changes only how
// often keys are transposed, never a result.
template <class C>
void attention_forward(const AttentionGeometry& g, C scale, AttentionView<C> q, AttentionView<C> k, AttentionView<C> v, const C* bias,
                       AttentionOut<C> out, C* lse) {
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  constexpr Index BQ = attention_block_q, BK = attention_block_k;
  const Index q_blocks = (g.tq + BQ - 1) / BQ, heads = g.batch * g.heads;
  const Index wanted = std::max<Index>(1, (4 * static_cast<Index>(num_threads()) + heads - 1) / std::max<Index>(heads, 1));
  const Index run = (q_blocks + std::min(wanted, q_blocks) - 1) / std::max<Index>(std::min(wanted, q_blocks), 1);  // blocks per run
  const Index runs = (q_blocks + run - 1) / std::max<Index>(run, 1);
  const Index work = run * BQ * std::max<Index>(g.tk, 1) * (g.d + g.dv);  // multiply-adds per task
  parallel_for(0, heads * runs, std::max<Index>(1, (Index{1} << 18) / std::max<Index>(work, 1)), [&](Index t0, Index t1) {
    std::vector<C> s(static_cast<std::size_t>(BQ * BK)), m(BQ), l(BQ), kt;
    for (Index task = t0; task < t1; ++task) {
      const Index bh = task / runs, b = bh / g.heads, h = bh % g.heads;
      const Index r0 = (task % runs) * run * BQ, r1 = std::min(g.tq, r0 + run * BQ);  // the run's query rows
      const C *qp = q.at(b, h), *kp = k.at(b, h), *vp = v.at(b, h);
      const C* bias_b = bias ? bias + b * g.tk : nullptr;
      const std::int64_t* seg_b = g.segment_row(b);
      const Index keys = g.key_end(r1 - 1), kt_ld = attention_round_up(keys, W);  // the run's last row sees the most keys
      const bool transpose = g.tq >= attention_transpose_min_queries;
      if (transpose) {
        kt.resize(static_cast<std::size_t>(g.d * kt_ld));
        attention_kernel::transpose_rows(kt.data(), kt_ld, kp, k.st, keys, g.d, kt_ld);
      }
      for (Index q0 = r0; q0 < r1; q0 += BQ) {
        const Index nq = std::min(BQ, g.tq - q0);
        C* o = out.at(b, h) + q0 * out.st;  // row i at o + i * out.st
        // The block's first tile writes its output rows (no zero fill first: the fill was a
        // separate pass over fresh memory); every later tile rescales and accumulates.
        bool written = false;
        std::fill(m.begin(), m.end(), -std::numeric_limits<C>::infinity());
        std::fill(l.begin(), l.end(), C(0));
        const Index k_end = g.key_end(q0 + nq - 1);  // the block's last row sees the most keys
        for (Index k0 = 0; k0 < k_end; k0 += BK) {
          const Index nk = std::min(BK, k_end - k0);
          if (attention_segments_disjoint(g, seg_b, q0, nq, k0, nk)) continue;  // every score would be -inf
          attention_scores(g, scale, qp, q.st, kp, k.st, transpose ? kt.data() : nullptr, kt_ld, bias_b, seg_b, q0, nq, k0, nk, s.data());
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
            if (written && alpha != C(1)) {
              C* oi = o + i * out.st;
              const B va(alpha);
              Index j = 0;
              for (; j + W <= g.dv; j += W) (B::load_unaligned(oi + j) * va).store_unaligned(oi + j);
              for (; j < g.dv; ++j) oi[j] *= alpha;
            }
          }
          // o += P v_j: P read in place (broadcast), v's rows as vectors.
          const AttentionTileRanges ranges{g, q0, k0};
          attention_kernel::tile_product<C>(nq, g.dv, nk, C(1), s.data(), BK, 1, vp + k0 * v.st, v.st, o, out.st, written,
                                            [&](Index i0, Index rows) { return ranges.terms(i0, rows); });
          written = true;
        }
        if (!written)  // every tile skipped (or no key at all): the rows attend nothing
          for (Index i = 0; i < nq; ++i) std::fill(o + i * out.st, o + i * out.st + g.dv, C(0));
        C* lse_row = lse + bh * g.tq + q0;
        for (Index i = 0; i < nq; ++i) {
          // A fully masked row has l = 0: its output stays 0 and its lse is -inf (= log 0).
          const C inv = l[i] > C(0) ? C(1) / l[i] : C(0);
          C* oi = o + i * out.st;
          const B vinv(inv);
          Index j = 0;
          for (; j + W <= g.dv; j += W) (B::load_unaligned(oi + j) * vinv).store_unaligned(oi + j);
          for (; j < g.dv; ++j) oi[j] *= inv;
          lse_row[i] = l[i] > C(0) ? m[i] + std::log(l[i]) : -std::numeric_limits<C>::infinity();
        }
      }
    }
  });
}

// Backward for every (b, h). dout and out are views like q; dq [B, H, Tq, D], dk [B, H, Tk, D]
// and dv [B, H, Tk, Dv] (any layout, see AttentionOut) are fully written. Per tile, with
// P = exp(s - lse):
//   dv += P^T dout,  dP = dout v^T,  dS = P * (dP - rowsum(dout * out)) * scale,
//   dq += dS k,      dk += dS^T q.
// Each (b, h) task first transposes its keys and values once ([D, round_up(Tk, W)] and
// [Dv, round_up(Tk, W)]) for the s = q k^T and dP = dout v^T tiles (below
// attention_transpose_min_queries queries: dot products of rows instead); the other three
// products read their operands in place (tile_product).
template <class C>
void attention_backward(const AttentionGeometry& g, C scale, AttentionView<C> q, AttentionView<C> k, AttentionView<C> v,
                        AttentionView<C> out, AttentionView<C> dout, const C* lse, const C* bias, AttentionOut<C> dq,
                        AttentionOut<C> dk, AttentionOut<C> dv) {
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  constexpr Index BQ = attention_block_q, BK = attention_block_k;
  const Index work = std::max<Index>(g.tq, 1) * std::max<Index>(g.tk, 1) * (2 * g.d + 2 * g.dv);
  parallel_for(0, g.batch * g.heads, std::max<Index>(1, (Index{1} << 18) / work), [&](Index t0, Index t1) {
    std::vector<C> p(static_cast<std::size_t>(BQ * BK)), ds(static_cast<std::size_t>(BQ * BK)), delta(static_cast<std::size_t>(g.tq));
    std::vector<C> kt, vt;
    std::vector<Index> written_keys;
    for (Index bh = t0; bh < t1; ++bh) {
      const Index b = bh / g.heads, h = bh % g.heads;
      const C *qp = q.at(b, h), *kp = k.at(b, h), *vp = v.at(b, h), *op = out.at(b, h), *dop = dout.at(b, h);
      const C* bias_b = bias ? bias + b * g.tk : nullptr;
      const std::int64_t* seg_b = g.segment_row(b);
      const C* lse_bh = lse + bh * g.tq;
      C *dq_bh = dq.at(b, h), *dk_bh = dk.at(b, h), *dv_bh = dv.at(b, h);
      // Gradient rows are written by the first tile that reaches them and accumulated by later
      // ones (no zero fill first: the fill was a separate pass over fresh memory, ~5% of the op);
      // rows no tile reaches are zeroed at the end. dq: per query block, whether it was written;
      // dk / dv: per key block, the rows [k0, written_keys) written so far (causal tiles of
      // later query blocks reach further keys).
      const auto zero_rows = [](C* t, Index st, Index r0, Index r1, Index width) {
        for (Index r = r0; r < r1; ++r) std::fill(t + r * st, t + r * st + width, C(0));
      };
      written_keys.assign(static_cast<std::size_t>((g.tk + BK - 1) / BK), 0);
      if (g.tq == 0) {
        zero_rows(dk_bh, dk.st, 0, g.tk, g.d);
        zero_rows(dv_bh, dv.st, 0, g.tk, g.dv);
        continue;
      }
      const Index keys = g.key_end(g.tq - 1), t_ld = attention_round_up(keys, W);  // keys any query sees
      const bool transpose = g.tq >= attention_transpose_min_queries;
      if (transpose) {
        kt.resize(static_cast<std::size_t>(g.d * t_ld));
        vt.resize(static_cast<std::size_t>(g.dv * t_ld));
        attention_kernel::transpose_rows(kt.data(), t_ld, kp, k.st, keys, g.d, t_ld);
        attention_kernel::transpose_rows(vt.data(), t_ld, vp, v.st, keys, g.dv, t_ld);
      }
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
        bool dq_written = false;
        for (Index k0 = 0; k0 < k_end; k0 += BK) {
          const Index nk = std::min(BK, k_end - k0);
          if (attention_segments_disjoint(g, seg_b, q0, nq, k0, nk)) continue;  // P = 0 on the whole tile
          // This tile's key rows [k0, k0 + nk): those below `seen` accumulate, the rest are new.
          Index& written = written_keys[static_cast<std::size_t>(k0 / BK)];
          const Index seen = std::min(std::max(written, k0), k0 + nk) - k0;
          attention_scores(g, scale, qp, q.st, kp, k.st, transpose ? kt.data() : nullptr, t_ld, bias_b, seg_b, q0, nq, k0, nk, p.data());
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
          const C* dout_i = dop + q0 * dout.st;
          const AttentionTileRanges ranges{g, q0, k0};
          const auto scores = [&](Index i0, Index rows) { return ranges.scores(i0, rows); };
          const auto terms = [&](Index i0, Index rows) { return ranges.terms(i0, rows); };
          const auto transposed = [&](Index j0, Index rows) { return ranges.transposed(j0, rows); };
          // The key-row products (dv, dk) in two parts: rows already written accumulate, new
          // rows are overwritten. Splitting the rows changes no value: a row's sum skips only
          // exact zeros (terms before the first query that sees it) wherever its block starts.
          const auto key_rows = [&](auto&& product) {
            if (seen > 0) product(Index{0}, seen, true);
            if (seen < nk) product(seen, nk, false);
          };
          // dv_j += P^T dout_i (P^T read in place: its rows are P's columns)
          key_rows([&](Index j0, Index j1, bool accumulate) {
            attention_kernel::tile_product<C>(j1 - j0, g.dv, nq, C(1), p.data() + j0, 1, BK, dout_i, dout.st, dv_bh + (k0 + j0) * dv.st,
                                              dv.st, accumulate, [&](Index r0, Index rows) { return transposed(j0 + r0, rows); });
          });
          // dP = dout_i v_j^T, then dS = P * (dP - delta) * scale in place; past a row's causal
          // limit (where the product may have left dP unwritten) dS = 0, as P is.
          if (transpose)
            attention_kernel::tile_product<C>(nq, attention_round_up(nk, W), g.dv, C(1), dout_i, dout.st, 1, vt.data() + k0, t_ld,
                                              ds.data(), BK, false, scores);
          else
            attention_row_dots(nq, nk, g.dv, C(1), dout_i, dout.st, vp + k0 * v.st, v.st, ds.data(), BK);
          for (Index i = 0; i < nq; ++i) {
            C *d = ds.data() + i * BK, *pr = p.data() + i * BK;
            const Index e = std::clamp<Index>(g.key_end(q0 + i) - k0, 0, nk);
            const B vdelta(delta[static_cast<std::size_t>(q0 + i)]), vs(scale);
            Index j = 0;
            for (; j + W <= e; j += W)
              (B::load_unaligned(pr + j) * (B::load_unaligned(d + j) - vdelta) * vs).store_unaligned(d + j);
            for (; j < e; ++j) d[j] = pr[j] * (d[j] - delta[static_cast<std::size_t>(q0 + i)]) * scale;
            std::fill(d + e, d + nk, C(0));
          }
          // dq_i += dS k_j,  dk_j += dS^T q_i
          attention_kernel::tile_product<C>(nq, g.d, nk, C(1), ds.data(), BK, 1, kp + k0 * k.st, k.st, dq_bh + q0 * dq.st, dq.st,
                                            dq_written, terms);
          dq_written = true;
          key_rows([&](Index j0, Index j1, bool accumulate) {
            attention_kernel::tile_product<C>(j1 - j0, g.d, nq, C(1), ds.data() + j0, 1, BK, qp + q0 * q.st, q.st, dk_bh + (k0 + j0) * dk.st,
                                              dk.st, accumulate, [&](Index r0, Index rows) { return transposed(j0 + r0, rows); });
          });
          written = std::max(written, k0 + nk);
        }
        if (!dq_written) zero_rows(dq_bh + q0 * dq.st, dq.st, 0, nq, g.d);
      }
      for (Index k0 = 0; k0 < g.tk; k0 += BK) {  // keys no tile reached
        const Index from = std::max(written_keys[static_cast<std::size_t>(k0 / BK)], k0), to = std::min(g.tk, k0 + BK);
        zero_rows(dk_bh, dk.st, from, to, g.d);
        zero_rows(dv_bh, dv.st, from, to, g.dv);
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

template <class C, class D>
cpu_backend::AttentionOut<C> attention_out(const Tensor<C, D>& t) {
  return {t.data(), t.strides()[0], t.strides()[1], t.strides()[2]};
}

// Whether t [B, H, T, X] lies in memory as [B, T, H, X] (heads inside time: a projection's
// [B, T, H*X] output viewed per head). Only the CPU kernels write such results.
template <class T, class D>
bool attention_heads_inner(const Tensor<T, D>& t) {
  return std::is_same_v<D, cpu> && t.size(1) > 1 && t.size(2) > 1 && t.strides()[1] != 0 && t.strides()[1] < t.strides()[2];
}

// A fresh [B, H, T, X] result: a [B, T, H, X] tensor viewed permuted when heads_inner, else
// contiguous.
template <class C, class D>
Tensor<C, D> attention_result(Index b, Index h, Index t, Index x, bool heads_inner) {
  if (heads_inner) return Tensor<C, D>::empty(Shape{b, t, h, x}).permute({0, 2, 1, 3});
  return Tensor<C, D>::empty(Shape{b, h, t, x});
}

// r converted to T in the same memory layout (to<T>() writes a contiguous copy of the logical
// shape; going through the permuted-back [B, T, H, X] keeps heads inside time).
template <class T, class C, class D>
Tensor<T, D> attention_convert(const Tensor<C, D>& r, bool heads_inner) {
  if constexpr (std::is_same_v<T, C>) return r;
  else if (heads_inner) return r.permute({0, 2, 1, 3}).template to<T>().permute({0, 2, 1, 3});
  else return r.template to<T>();
}

// Whether the device runs bf16 attention on these operands natively, without float copies
// (cuda: tensor cores, backend/cuda/attention_tensor_core.cuh, when the hardware, the head size,
// the rows' alignment and set_tensor_core_attention allow). Never for the CPU, float or double.
template <class T, class D, class... Operands>
bool attention_native(const cpu_backend::AttentionGeometry& g, const Operands&... operands) {
  if constexpr (std::is_same_v<D, cpu> || !std::is_same_v<T, bfloat16>) return false;
  else return ((operands.strides()[3] == 1) && ...) && OpKernels<D>::attention_bf16_fits(g, {attention_view(operands)...});
}

// The native forward (attention_native): out [B, H, Tq, Dv] in T, contiguous; lse as always.
template <class T, class C, class D>
Tensor<T, D> attention_native_forward(const cpu_backend::AttentionGeometry& g, C scale, const Tensor<T, D>& q, const Tensor<T, D>& k,
                                      const Tensor<T, D>& v, const C* bias, C* lse) {
  auto out = Tensor<T, D>::empty(Shape{g.batch, g.heads, g.tq, g.dv});
  if constexpr (!std::is_same_v<D, cpu> && std::is_same_v<T, bfloat16>)
    if (out.numel() > 0)
      OpKernels<D>::attention_forward_bf16(g, scale, attention_view(q), attention_view(k), attention_view(v), bias, out.data(), lse);
  return out;
}

// The native backward: dq, dk, dv in T, contiguous (dout is copied when it does not fit).
template <class T, class C, class D>
std::vector<Tensor<T, D>> attention_native_backward(const cpu_backend::AttentionGeometry& g, C scale, const Tensor<T, D>& q,
                                                    const Tensor<T, D>& k, const Tensor<T, D>& v, const Tensor<T, D>& out,
                                                    const Tensor<T, D>& grad, const C* lse, const C* bias) {
  auto dq = Tensor<T, D>::empty(Shape{g.batch, g.heads, g.tq, g.d});
  auto dk = Tensor<T, D>::empty(Shape{g.batch, g.heads, g.tk, g.d});
  auto dv = Tensor<T, D>::empty(Shape{g.batch, g.heads, g.tk, g.dv});
  if constexpr (!std::is_same_v<D, cpu> && std::is_same_v<T, bfloat16>) {
    const Tensor<T, D> dout = attention_native<T, D>(g, grad) ? grad : grad.clone();
    if (g.batch * g.heads > 0)
      OpKernels<D>::attention_backward_bf16(g, scale, attention_view(q), attention_view(k), attention_view(v), out.data(), attention_view(dout),
                                            lse, bias, dq.data(), dk.data(), dv.data());
  }
  return {dq, dk, dv};
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
  // Results follow their operand's layout on the CPU (see the top of this file).
  const bool q_inner = detail::attention_heads_inner(q), k_inner = detail::attention_heads_inner(k);
  const bool v_inner = detail::attention_heads_inner(v);
  auto lse = Tensor<C, D>::empty(Shape{g.batch, g.heads, g.tq});
  // bf16 with a native device kernel reads q, k, v in place (detail::attention_native).
  const bool native = detail::attention_native<T, D>(g, q, k, v);
  Tensor<C, D> qc, kc, vc;
  Tensor<T, D> out;
  if (native) {
    out = detail::attention_native_forward(g, scale, q, k, v, bias_device.defined() ? bias_device.data() : nullptr, lse.data());
  } else {
    qc = detail::attention_operand(q), kc = detail::attention_operand(k), vc = detail::attention_operand(v);
    const auto out_c = detail::attention_result<C, D>(g.batch, g.heads, g.tq, g.dv, q_inner);
    if (out_c.numel() > 0 || lse.numel() > 0) {
      if constexpr (std::is_same_v<D, cpu>)
        cpu_backend::attention_forward<C>(g, scale, detail::attention_view(qc), detail::attention_view(kc), detail::attention_view(vc),
                                          bias.empty() ? nullptr : bias.data(), detail::attention_out(out_c), lse.data());
      else
        OpKernels<D>::template attention_forward<C>(g, scale, detail::attention_view(qc), detail::attention_view(kc),
                                                    detail::attention_view(vc), bias_device.defined() ? bias_device.data() : nullptr,
                                                    out_c.data(), lse.data());
    }
    out = detail::attention_convert<T>(out_c, q_inner);
  }

  if (autograd::any_requires_grad(q, k, v)) {
    // Saved: q, k, v, the output and lse (see the top of this file). float and double keep the
    // operands the forward read; bf16 keeps its own half-size tensors and converts them again.
    auto saved = [](const Tensor<T, D>& original, const Tensor<C, D>& computed) {
      if constexpr (std::is_same_v<T, C>) return computed;
      else return original.detach();
    };
    // The segment tensors are captured to keep g.segments alive.
    auto backward = [g, scale, lse, bias = std::move(bias), bias_device, segments, segments_device, q_saved = saved(q, qc), k_saved = saved(k, kc), v_saved = saved(v, vc),
                     out_saved = out.detach(), q_inner, k_inner, v_inner, native](const Tensor<T, D>& grad) {
      if (native)
        return detail::attention_native_backward(g, scale, q_saved, k_saved, v_saved, out_saved, grad, lse.data(),
                                                 bias_device.defined() ? bias_device.data() : nullptr);
      const Tensor<C, D> qb = detail::attention_operand(q_saved), kb = detail::attention_operand(k_saved);
      const Tensor<C, D> vb = detail::attention_operand(v_saved), ob = detail::attention_operand(out_saved);
      const Tensor<C, D> dob = detail::attention_operand(grad);
      // Each gradient in its operand's layout (CPU), e.g. [B, T, H, D] memory for q viewed from
      // a projection: the gradient then reaches that projection's output without a transpose.
      const auto dq = detail::attention_result<C, D>(g.batch, g.heads, g.tq, g.d, q_inner);
      const auto dk = detail::attention_result<C, D>(g.batch, g.heads, g.tk, g.d, k_inner);
      const auto dv = detail::attention_result<C, D>(g.batch, g.heads, g.tk, g.dv, v_inner);
      if (g.batch * g.heads > 0) {
        if constexpr (std::is_same_v<D, cpu>)
          cpu_backend::attention_backward<C>(g, scale, detail::attention_view(qb), detail::attention_view(kb), detail::attention_view(vb),
                                             detail::attention_view(ob), detail::attention_view(dob), lse.data(),
                                             bias.empty() ? nullptr : bias.data(), detail::attention_out(dq), detail::attention_out(dk),
                                             detail::attention_out(dv));
        else
          OpKernels<D>::template attention_backward<C>(g, scale, detail::attention_view(qb), detail::attention_view(kb),
                                                       detail::attention_view(vb), detail::attention_view(ob),
                                                       detail::attention_view(dob), lse.data(),
                                                       bias_device.defined() ? bias_device.data() : nullptr, dq.data(), dk.data(),
                                                       dv.data());
      }
      return std::vector<Tensor<T, D>>{detail::attention_convert<T>(dq, q_inner), detail::attention_convert<T>(dk, k_inner),
                                       detail::attention_convert<T>(dv, v_inner)};
    };
    autograd::record<T, D>(out, "scaled_dot_product_attention", {q, k, v}, std::move(backward));
  }
  return out;
}

}  // namespace cerberus
