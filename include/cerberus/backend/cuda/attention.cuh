// Scaled dot-product attention on the device. What runs when:
//   bf16, head size 64 or 128 (d == dv), sm_80+, rows 16-byte aligned, set_tensor_core_attention
//     on (the default): the tensor-core kernels of attention_tensor_core.cuh (mma.sync bf16 with
//     fp32 accumulation, reading bf16 in place; chosen in ops/attention.hpp through
//     OpKernels<cuda>::attention_bf16_fits);
//   any other bf16 case: q, k, v converted to float (ops/attention.hpp), then as float:
//   float / double, head sizes up to 128: the tiled flash kernels in this file (below, "Tiled
//     flash attention": K/V tiles in shared memory, online softmax on CUDA cores,
//     FlashAttention-2 backward without atomics);
//   head sizes 129..256: the simple fused warp-per-row kernels, kept only as that fallback.
// All of them save the per-row logsumexp for the backward, as on the CPU
// (ops/attention.hpp: same masks, same fully-masked-row convention: zero output, lse = -inf).
// Segments (sequence packing): a query attends only keys of its own segment; the id test is one
// more mask term next to causal (flash_mask, and the warp kernels' key loops). Unlike the CPU,
// the kernels do not skip tiles whose segments cannot meet: those tiles compute and mask.
//
// Fallback forward: one warp per (batch, head, query row) walks the keys with an online softmax
// (running max m, running sum l, output accumulator in registers). Fallback backward, one warp
// per query row, recomputing P = exp(s - lse) key by key:
//   delta = rowsum(dout * out),  dP_j = dout . v_j,  dS_j = P_j (dP_j - delta) scale,
//   dq += dS_j k_j (registers),  dk_j += dS_j q,  dv_j += P_j dout (atomicAdd: rows race).
// K and V are re-read from global memory (L2) by every query row. Head sizes up to 256.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "cerberus/backend/cuda/error.cuh"
#include "cerberus/backend/cuda/launch.cuh"
#include "cerberus/backend/cuda/reduce.cuh"
#include "cerberus/core/config.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/core/math.hpp"

namespace cerberus::cuda_backend {

inline constexpr int attention_max_head = 256;
inline constexpr int attention_per_lane = attention_max_head / 32;
inline constexpr int attention_warps = 4;

// Operand [B, H, T, X] with unit stride along X.
template <class C>
struct DeviceAttentionView {
  const C* data;
  Index sb, sh, st;
  __device__ const C* row(Index b, Index h, Index t) const { return data + b * sb + h * sh + t * st; }
};

struct DeviceAttentionGeometry {
  Index batch, heads, tq, tk, d, dv;
  bool causal;
  const std::int64_t* segments;  // [B, Tk] in device memory, or null (see ops/attention.hpp)
  __device__ Index key_end(Index row) const {
    if (!causal) return tk;
    const Index e = row + (tk - tq) + 1;
    return e < 0 ? 0 : (e > tk ? tk : e);
  }
  // Whether query row `row` (< tq) and key j (< tk) of batch b lie in different segments.
  __device__ bool other_segment(Index b, Index row, Index j) const {
    return segments && segments[b * tk + j] != segments[b * tk + row + (tk - tq)];
  }
};

template <class C>
__device__ inline C warp_sum(C v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  // Lanes added in different orders; lane 0's sum goes to all, so every lane takes the same branches and weights.
  return __shfl_sync(0xffffffffu, v, 0);
}

template <class C>
__device__ inline void load_row(const C* p, Index n, int lane, C (&r)[attention_per_lane]) {
#pragma unroll
  for (int t = 0; t < attention_per_lane; ++t) {
    const Index d = lane + 32 * t;
    r[t] = d < n ? p[d] : C(0);
  }
}

template <class C>
__device__ inline C dot_row(const C (&r)[attention_per_lane], const C* p, Index n, int lane) {
  C s = C(0);
#pragma unroll
  for (int t = 0; t < attention_per_lane; ++t) {
    const Index d = lane + 32 * t;
    if (d < n) s += r[t] * p[d];
  }
  return warp_sum(s);
}

template <class C>
__global__ void attention_forward_kernel(DeviceAttentionGeometry g, C scale, DeviceAttentionView<C> q, DeviceAttentionView<C> k,
                                         DeviceAttentionView<C> v, const C* bias, C* out, C* lse) {
  const int lane = threadIdx.x & 31;
  const Index rows = g.batch * g.heads * g.tq;
  const Index warps = static_cast<Index>(gridDim.x) * (blockDim.x >> 5);
  for (Index row = static_cast<Index>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rows; row += warps) {
    const Index bh = row / g.tq, i = row % g.tq, b = bh / g.heads, h = bh % g.heads;
    C qr[attention_per_lane], acc[attention_per_lane];
    load_row(q.row(b, h, i), g.d, lane, qr);
#pragma unroll
    for (int t = 0; t < attention_per_lane; ++t) acc[t] = C(0);
    C m = -INFINITY, l = C(0);
    const Index end = g.key_end(i);
    for (Index j = 0; j < end; ++j) {
      if (g.other_segment(b, i, j)) continue;  // uniform across the warp
      C s = dot_row(qr, k.row(b, h, j), g.d, lane) * scale;
      if (bias) s += bias[b * g.tk + j];
      if (s == -INFINITY) continue;  // a masked key (uniform across the warp)
      const C m_new = s > m ? s : m;
      const C alpha = math::exp(m - m_new);  // 0 while m is -inf
      const C p = math::exp(s - m_new);
      l = l * alpha + p;
      m = m_new;
      const C* vj = v.row(b, h, j);
#pragma unroll
      for (int t = 0; t < attention_per_lane; ++t) {
        const Index d = lane + 32 * t;
        if (d < g.dv) acc[t] = acc[t] * alpha + p * vj[d];
      }
    }
    const C inv = l > C(0) ? C(1) / l : C(0);
    C* o = out + row * g.dv;
#pragma unroll
    for (int t = 0; t < attention_per_lane; ++t) {
      const Index d = lane + 32 * t;
      if (d < g.dv) o[d] = acc[t] * inv;
    }
    if (lane == 0) lse[row] = l > C(0) ? m + math::log(l) : C(-INFINITY);
  }
}

template <class C>
__global__ void attention_backward_kernel(DeviceAttentionGeometry g, C scale, DeviceAttentionView<C> q, DeviceAttentionView<C> k,
                                          DeviceAttentionView<C> v, DeviceAttentionView<C> out, DeviceAttentionView<C> dout, const C* lse,
                                          const C* bias, C* dq, C* dk, C* dv) {
  const int lane = threadIdx.x & 31;
  const Index rows = g.batch * g.heads * g.tq;
  const Index warps = static_cast<Index>(gridDim.x) * (blockDim.x >> 5);
  for (Index row = static_cast<Index>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rows; row += warps) {
    const Index bh = row / g.tq, i = row % g.tq, b = bh / g.heads, h = bh % g.heads;
    C qr[attention_per_lane], dor[attention_per_lane], dqr[attention_per_lane];
    load_row(q.row(b, h, i), g.d, lane, qr);
    load_row(dout.row(b, h, i), g.dv, lane, dor);
#pragma unroll
    for (int t = 0; t < attention_per_lane; ++t) dqr[t] = C(0);
    const C li = lse[row];
    if (li != -INFINITY) {
      const C delta = dot_row(dor, out.row(b, h, i), g.dv, lane);
      const Index end = g.key_end(i);
      C* dk_bh = dk + bh * g.tk * g.d;
      C* dv_bh = dv + bh * g.tk * g.dv;
      for (Index j = 0; j < end; ++j) {
        if (g.other_segment(b, i, j)) continue;
        const C* kj = k.row(b, h, j);
        C s = dot_row(qr, kj, g.d, lane) * scale;
        if (bias) s += bias[b * g.tk + j];
        if (s == -INFINITY) continue;
        const C p = math::exp(s - li);
        const C dp = dot_row(dor, v.row(b, h, j), g.dv, lane);
        const C ds = p * (dp - delta) * scale;
#pragma unroll
        for (int t = 0; t < attention_per_lane; ++t) {
          const Index d = lane + 32 * t;
          if (d < g.d) {
            dqr[t] += ds * kj[d];
            atomicAdd(dk_bh + j * g.d + d, ds * qr[t]);
          }
          if (d < g.dv) atomicAdd(dv_bh + j * g.dv + d, p * dor[t]);
        }
      }
    }
    C* dqp = dq + row * g.d;
#pragma unroll
    for (int t = 0; t < attention_per_lane; ++t) {
      const Index d = lane + 32 * t;
      if (d < g.d) dqp[d] = dqr[t];
    }
  }
}

inline std::string attention_text(const DeviceAttentionGeometry& g) {
  return "q [" + std::to_string(g.batch) + ", " + std::to_string(g.heads) + ", " + std::to_string(g.tq) + ", " + std::to_string(g.d) + "], k [" +
         std::to_string(g.batch) + ", " + std::to_string(g.heads) + ", " + std::to_string(g.tk) + ", " + std::to_string(g.d) + "], v [.., " +
         std::to_string(g.dv) + "]";
}

inline void check_attention_heads(const DeviceAttentionGeometry& g) {
  if (g.d > attention_max_head || g.dv > attention_max_head)
    throw ShapeError("[scaled_dot_product_attention] the cuda kernel takes head sizes up to " + std::to_string(attention_max_head) + ", got " +
                     attention_text(g));
}

inline unsigned attention_grid(Index rows) {
  const Index blocks = (rows + attention_warps - 1) / attention_warps;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 16 ? 65535 * 16 : blocks));
}

// ---------------------------------------------------------------------------------------------
// Tiled flash attention (head sizes up to 128; the warp-per-row kernels above stay only as the
// fallback for head sizes 129..256).
//
// Every block has 128 threads seen as a 16 x 8 grid (ty = tid / 8, tx = tid % 8). A scores
// tile of BQ x BK belongs to the threads as rows ty * RM + i (RM = BQ / 16) and columns
// tx + 8 n (CN = BK / 8), so the 8 threads of a row are 8 consecutive lanes and row
// reductions are three shuffles. Operand tiles [rows][HD] sit in shared memory with rows padded
// to HD + 1 elements (no bank conflicts for the column walks), zero past d / dv and past the
// sequence, so HD (32, 64 or 128) only has to cover max(d, dv).
//
// Forward: a block per (b, h, query tile of BQ); K and V tiles of BK staged in shared memory;
// S = scale q k^T + bias in registers, masked (-inf) past Tk, past each row's causal limit
// (query i sees keys j <= i + Tk - Tq) and on padded keys; online softmax (running max m and
// sum l per row), P through shared memory into O += P V accumulated in registers; at the end
// O / l (0 for a row with no key) and lse = m + log l (-inf for such a row). Causal blocks stop
// at their last visible key tile.
//
// Backward, FlashAttention-2 style, three launches, no atomics (deterministic):
//   delta = rowsum(dO * O)                    a warp per query row
//   dK, dV: a block per (b, h, key tile)      K, V resident; loops over the query tiles that can
//           see the tile (causal: from the first one), recomputes P = exp(S - lse),
//           dP = dO V^T, dS = P (dP - delta) scale, dV += P^T dO, dK += dS^T Q in registers
//   dQ:     a block per (b, h, query tile)    Q, dO resident; loops over key tiles like the
//           forward, dQ += dS K in registers
// Fully masked rows (lse = -inf) give P = 0, hence zero gradients, as on the CPU.
// Tiles: float BQ = BK = 64 (backward dK/dV with HD 128: BK = 32 to keep the accumulators in
// registers); double 32 x 32 (shared memory). Shared memory beyond 48 KB is requested per launch.

inline constexpr int flash_threads = 128;

template <class C, int HD, int BQ, int BK>
struct FlashShape {
  static constexpr int RM = BQ / 16;  // score rows per thread
  static constexpr int CN = BK / 8;   // score columns per thread
  static constexpr int RK = BK / 16;  // key rows per thread (dK, dV accumulators)
  static constexpr int DN = HD / 8;   // head columns per thread
  static constexpr int LD = HD + 1;   // row stride of an operand tile
  static constexpr int LS = BK + 1;   // row stride of a scores tile
  static_assert(BQ % 16 == 0 && BK % 16 == 0 && HD % 8 == 0, "flash tile shapes");
};

// rows [t0, t0 + ROWS) of a [B, H, T, X] operand into tile[ROWS][HD + 1], zero past t_end / width.
template <int ROWS, int HD, class C>
__device__ inline void flash_load(C* tile, const DeviceAttentionView<C>& v, Index b, Index h, Index t0, Index t_end, Index width) {
  for (int idx = threadIdx.x; idx < ROWS * HD; idx += flash_threads) {
    const int r = idx / HD, c = idx - r * HD;
    const Index t = t0 + r;
    tile[r * (HD + 1) + c] = (t < t_end && c < width) ? v.row(b, h, t)[c] : C(0);
  }
}

// acc[i][n] = sum_c a[(ty RM + i)][c] * bt[(tx + 8 n)][c] over tiles with row stride HD + 1.
template <int RM, int CN, int HD, class C>
__device__ inline void flash_dot(const C* a, const C* bt, int ty, int tx, C (&acc)[RM][CN]) {
  constexpr int LD = HD + 1;
#pragma unroll
  for (int i = 0; i < RM; ++i)
#pragma unroll
    for (int n = 0; n < CN; ++n) acc[i][n] = C(0);
#pragma unroll 4
  for (int c = 0; c < HD; ++c) {
    C av[RM], bv[CN];
#pragma unroll
    for (int i = 0; i < RM; ++i) av[i] = a[(ty * RM + i) * LD + c];
#pragma unroll
    for (int n = 0; n < CN; ++n) bv[n] = bt[(tx + 8 * n) * LD + c];
#pragma unroll
    for (int i = 0; i < RM; ++i)
#pragma unroll
      for (int n = 0; n < CN; ++n) acc[i][n] = fma(av[i], bv[n], acc[i][n]);
  }
}

// acc[i][n] += sum_r p[r][row(i)] * x[r][tx + 8 n]  (TRANS: p is read transposed, p[r][row])
// or            sum_j p[row(i)][j] * x[j][tx + 8 n]  (!TRANS), p with row stride LS.
template <bool TRANS, int R, int DN, int K, int LS, int HD, class C>
__device__ inline void flash_accumulate(const C* p, const C* x, int ty, int tx, C (&acc)[R][DN]) {
  constexpr int LD = HD + 1;
#pragma unroll 4
  for (int j = 0; j < K; ++j) {
    C pv[R], xv[DN];
#pragma unroll
    for (int i = 0; i < R; ++i) pv[i] = TRANS ? p[j * LS + ty * R + i] : p[(ty * R + i) * LS + j];
#pragma unroll
    for (int n = 0; n < DN; ++n) xv[n] = x[j * LD + tx + 8 * n];
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
      for (int n = 0; n < DN; ++n) acc[i][n] = fma(pv[i], xv[n], acc[i][n]);
  }
}

template <class C>
__device__ inline C flash_row_max(C v) {
  v = fmax(v, __shfl_xor_sync(0xffffffffu, v, 4));
  v = fmax(v, __shfl_xor_sync(0xffffffffu, v, 2));
  return fmax(v, __shfl_xor_sync(0xffffffffu, v, 1));
}
template <class C>
__device__ inline C flash_row_sum(C v) {
  v += __shfl_xor_sync(0xffffffffu, v, 4);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v + __shfl_xor_sync(0xffffffffu, v, 1);
}

// The scores tile of query rows q0.. and keys k0..: scale * dot + bias, -inf where masked.
template <int RM, int CN, class C>
__device__ inline void flash_mask(const DeviceAttentionGeometry& g, C scale, const C* bias, Index b, Index q0, Index k0, int ty, int tx,
                                  C (&s)[RM][CN]) {
#pragma unroll
  for (int n = 0; n < CN; ++n) {
    const Index j = k0 + tx + 8 * n;
    const C bj = j < g.tk ? (bias ? bias[b * g.tk + j] : C(0)) : C(-INFINITY);
#pragma unroll
    for (int i = 0; i < RM; ++i) {
      const Index row = q0 + ty * RM + i;
      const bool hidden = (g.causal && j > row + (g.tk - g.tq)) || (j < g.tk && row < g.tq && g.other_segment(b, row, j));
      s[i][n] = hidden ? C(-INFINITY) : s[i][n] * scale + bj;
    }
  }
}

// One past the last key a query tile [q0, q0 + rows) can see.
__device__ inline Index flash_key_end(const DeviceAttentionGeometry& g, Index q0, Index rows) {
  if (!g.causal) return g.tk;
  const Index last = (q0 + rows < g.tq ? q0 + rows : g.tq) - 1;
  const Index e = last + (g.tk - g.tq) + 1;
  return e < 0 ? 0 : (e > g.tk ? g.tk : e);
}

template <class C, int HD, int BQ, int BK>
__global__ void __launch_bounds__(flash_threads) flash_forward_kernel(DeviceAttentionGeometry g, C scale, DeviceAttentionView<C> q,
                                                                       DeviceAttentionView<C> k, DeviceAttentionView<C> v, const C* bias,
                                                                       C* out, C* lse) {
  using S = FlashShape<C, HD, BQ, BK>;
  constexpr int RM = S::RM, CN = S::CN, DN = S::DN, LD = S::LD, LS = S::LS;
  extern __shared__ __align__(16) unsigned char flash_smem[];
  C* qs = reinterpret_cast<C*>(flash_smem);
  C* ks = qs + BQ * LD;
  C* vs = ks + BK * LD;
  C* ps = vs + BK * LD;
  const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
  const Index tiles = (g.tq + BQ - 1) / BQ;
  const Index bh = static_cast<Index>(blockIdx.x) / tiles;
  const Index q0 = (tiles - 1 - static_cast<Index>(blockIdx.x) % tiles) * BQ;  // causal: the longest tiles first
  const Index b = bh / g.heads, h = bh % g.heads;

  flash_load<BQ, HD>(qs, q, b, h, q0, g.tq, g.d);
  C m[RM], l[RM], acc[RM][DN];
#pragma unroll
  for (int i = 0; i < RM; ++i) {
    m[i] = -INFINITY;
    l[i] = C(0);
#pragma unroll
    for (int n = 0; n < DN; ++n) acc[i][n] = C(0);
  }
  const Index kend = flash_key_end(g, q0, BQ);
  for (Index k0 = 0; k0 < kend; k0 += BK) {
    __syncthreads();  // the previous tile's readers are done (and the q tile is written)
    flash_load<BK, HD>(ks, k, b, h, k0, g.tk, g.d);
    flash_load<BK, HD>(vs, v, b, h, k0, g.tk, g.dv);
    __syncthreads();
    C s[RM][CN];
    flash_dot<RM, CN, HD>(qs, ks, ty, tx, s);
    flash_mask(g, scale, bias, b, q0, k0, ty, tx, s);
#pragma unroll
    for (int i = 0; i < RM; ++i) {
      C mx = s[i][0];
#pragma unroll
      for (int n = 1; n < CN; ++n) mx = fmax(mx, s[i][n]);
      const C m_new = fmax(m[i], flash_row_max(mx));
      C alpha = C(1), sum = C(0);
      if (m_new != -INFINITY) {
        alpha = math::exp(m[i] - m_new);  // 0 while m is -inf
#pragma unroll
        for (int n = 0; n < CN; ++n) {
          s[i][n] = math::exp(s[i][n] - m_new);  // 0 where masked
          sum += s[i][n];
        }
      } else {
#pragma unroll
        for (int n = 0; n < CN; ++n) s[i][n] = C(0);
      }
      l[i] = l[i] * alpha + flash_row_sum(sum);
      m[i] = m_new;
#pragma unroll
      for (int n = 0; n < DN; ++n) acc[i][n] *= alpha;
#pragma unroll
      for (int n = 0; n < CN; ++n) ps[(ty * RM + i) * LS + tx + 8 * n] = s[i][n];
    }
    __syncthreads();
    flash_accumulate<false, RM, DN, BK, LS, HD>(ps, vs, ty, tx, acc);
  }
#pragma unroll
  for (int i = 0; i < RM; ++i) {
    const Index row = q0 + ty * RM + i;
    if (row >= g.tq) continue;
    const C inv = l[i] > C(0) ? C(1) / l[i] : C(0);
    C* o = out + (bh * g.tq + row) * g.dv;
#pragma unroll
    for (int n = 0; n < DN; ++n) {
      const int c = tx + 8 * n;
      if (c < g.dv) o[c] = acc[i][n] * inv;
    }
    if (tx == 0) lse[bh * g.tq + row] = l[i] > C(0) ? m[i] + math::log(l[i]) : C(-INFINITY);
  }
}

// delta[row] = sum_c dout[row][c] * out[row][c], a warp per (b, h, query row).
template <class C>
__global__ void flash_delta_kernel(DeviceAttentionGeometry g, DeviceAttentionView<C> out, DeviceAttentionView<C> dout, C* delta) {
  const int lane = threadIdx.x & 31;
  const Index rows = g.batch * g.heads * g.tq;
  const Index warps = static_cast<Index>(gridDim.x) * (blockDim.x >> 5);
  for (Index row = static_cast<Index>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rows; row += warps) {
    const Index bh = row / g.tq, i = row % g.tq, b = bh / g.heads, h = bh % g.heads;
    const C* o = out.row(b, h, i);
    const C* d = dout.row(b, h, i);
    C s = C(0);
    for (Index c = lane; c < g.dv; c += 32) s += o[c] * d[c];
    s = warp_sum(s);
    if (lane == 0) delta[row] = s;
  }
}

// P and dS of a (query tile, key tile) pair into shared memory (ps, dss: [BQ][BK + 1]).
template <class C, int HD, int BQ, int BK>
__device__ inline void flash_p_ds(const DeviceAttentionGeometry& g, C scale, const C* bias, Index b, Index bh, Index q0, Index k0,
                                  const C* qs, const C* ks, const C* vs, const C* dos, const C* lse_s, const C* delta_s, C* ps, C* dss,
                                  int ty, int tx) {
  using S = FlashShape<C, HD, BQ, BK>;
  constexpr int RM = S::RM, CN = S::CN, LS = S::LS;
  C s[RM][CN], dp[RM][CN];
  flash_dot<RM, CN, HD>(qs, ks, ty, tx, s);
  flash_dot<RM, CN, HD>(dos, vs, ty, tx, dp);
  flash_mask(g, scale, bias, b, q0, k0, ty, tx, s);
#pragma unroll
  for (int i = 0; i < RM; ++i) {
    const int r = ty * RM + i;
    const C li = lse_s[r], di = delta_s[r];
#pragma unroll
    for (int n = 0; n < CN; ++n) {
      const C p = (li == -INFINITY || s[i][n] == -INFINITY) ? C(0) : math::exp(s[i][n] - li);
      ps[r * LS + tx + 8 * n] = p;
      dss[r * LS + tx + 8 * n] = p * (dp[i][n] - di) * scale;
    }
  }
}

template <class C, int BQ>
__device__ inline void flash_load_rows(C* lse_s, C* delta_s, const C* lse, const C* delta, Index bh, Index q0, Index tq) {
  for (int r = threadIdx.x; r < BQ; r += flash_threads) {
    const Index row = q0 + r;
    lse_s[r] = row < tq ? lse[bh * tq + row] : C(-INFINITY);
    delta_s[r] = row < tq ? delta[bh * tq + row] : C(0);
  }
}

template <class C, int HD, int BQ, int BK>
__global__ void __launch_bounds__(flash_threads) flash_dkdv_kernel(DeviceAttentionGeometry g, C scale, DeviceAttentionView<C> q,
                                                                    DeviceAttentionView<C> k, DeviceAttentionView<C> v,
                                                                    DeviceAttentionView<C> dout, const C* lse, const C* delta,
                                                                    const C* bias, C* dk, C* dv) {
  using S = FlashShape<C, HD, BQ, BK>;
  constexpr int RK = S::RK, DN = S::DN, LD = S::LD, LS = S::LS;
  extern __shared__ __align__(16) unsigned char flash_smem[];
  C* ks = reinterpret_cast<C*>(flash_smem);
  C* vs = ks + BK * LD;
  C* qs = vs + BK * LD;
  C* dos = qs + BQ * LD;
  C* ps = dos + BQ * LD;
  C* dss = ps + BQ * LS;
  C* lse_s = dss + BQ * LS;
  C* delta_s = lse_s + BQ;
  const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
  const Index tiles = (g.tk + BK - 1) / BK;
  const Index bh = static_cast<Index>(blockIdx.x) / tiles;
  const Index k0 = (static_cast<Index>(blockIdx.x) % tiles) * BK;  // causal: the first key tiles see the most queries
  const Index b = bh / g.heads, h = bh % g.heads;

  flash_load<BK, HD>(ks, k, b, h, k0, g.tk, g.d);
  flash_load<BK, HD>(vs, v, b, h, k0, g.tk, g.dv);
  C dk_acc[RK][DN], dv_acc[RK][DN];
#pragma unroll
  for (int i = 0; i < RK; ++i)
#pragma unroll
    for (int n = 0; n < DN; ++n) dk_acc[i][n] = dv_acc[i][n] = C(0);
  Index qbegin = 0;
  if (g.causal) {
    const Index first = k0 - (g.tk - g.tq);  // the first query row that sees key k0
    qbegin = first <= 0 ? 0 : (first / BQ) * BQ;
  }
  for (Index q0 = qbegin; q0 < g.tq; q0 += BQ) {
    __syncthreads();
    flash_load<BQ, HD>(qs, q, b, h, q0, g.tq, g.d);
    flash_load<BQ, HD>(dos, dout, b, h, q0, g.tq, g.dv);
    flash_load_rows<C, BQ>(lse_s, delta_s, lse, delta, bh, q0, g.tq);
    __syncthreads();
    flash_p_ds<C, HD, BQ, BK>(g, scale, bias, b, bh, q0, k0, qs, ks, vs, dos, lse_s, delta_s, ps, dss, ty, tx);
    __syncthreads();
    flash_accumulate<true, RK, DN, BQ, LS, HD>(ps, dos, ty, tx, dv_acc);
    flash_accumulate<true, RK, DN, BQ, LS, HD>(dss, qs, ty, tx, dk_acc);
  }
#pragma unroll
  for (int i = 0; i < RK; ++i) {
    const Index j = k0 + ty * RK + i;
    if (j >= g.tk) continue;
    C* dkp = dk + (bh * g.tk + j) * g.d;
    C* dvp = dv + (bh * g.tk + j) * g.dv;
#pragma unroll
    for (int n = 0; n < DN; ++n) {
      const int c = tx + 8 * n;
      if (c < g.d) dkp[c] = dk_acc[i][n];
      if (c < g.dv) dvp[c] = dv_acc[i][n];
    }
  }
}

template <class C, int HD, int BQ, int BK>
__global__ void __launch_bounds__(flash_threads) flash_dq_kernel(DeviceAttentionGeometry g, C scale, DeviceAttentionView<C> q,
                                                                  DeviceAttentionView<C> k, DeviceAttentionView<C> v,
                                                                  DeviceAttentionView<C> dout, const C* lse, const C* delta,
                                                                  const C* bias, C* dq) {
  using S = FlashShape<C, HD, BQ, BK>;
  constexpr int RM = S::RM, DN = S::DN, LD = S::LD, LS = S::LS;
  extern __shared__ __align__(16) unsigned char flash_smem[];
  C* qs = reinterpret_cast<C*>(flash_smem);
  C* dos = qs + BQ * LD;
  C* ks = dos + BQ * LD;
  C* vs = ks + BK * LD;
  C* ps = vs + BK * LD;
  C* dss = ps + BQ * LS;
  C* lse_s = dss + BQ * LS;
  C* delta_s = lse_s + BQ;
  const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
  const Index tiles = (g.tq + BQ - 1) / BQ;
  const Index bh = static_cast<Index>(blockIdx.x) / tiles;
  const Index q0 = (tiles - 1 - static_cast<Index>(blockIdx.x) % tiles) * BQ;
  const Index b = bh / g.heads, h = bh % g.heads;

  flash_load<BQ, HD>(qs, q, b, h, q0, g.tq, g.d);
  flash_load<BQ, HD>(dos, dout, b, h, q0, g.tq, g.dv);
  flash_load_rows<C, BQ>(lse_s, delta_s, lse, delta, bh, q0, g.tq);
  C acc[RM][DN];
#pragma unroll
  for (int i = 0; i < RM; ++i)
#pragma unroll
    for (int n = 0; n < DN; ++n) acc[i][n] = C(0);
  const Index kend = flash_key_end(g, q0, BQ);
  for (Index k0 = 0; k0 < kend; k0 += BK) {
    __syncthreads();
    flash_load<BK, HD>(ks, k, b, h, k0, g.tk, g.d);
    flash_load<BK, HD>(vs, v, b, h, k0, g.tk, g.dv);
    __syncthreads();
    flash_p_ds<C, HD, BQ, BK>(g, scale, bias, b, bh, q0, k0, qs, ks, vs, dos, lse_s, delta_s, ps, dss, ty, tx);
    __syncthreads();
    flash_accumulate<false, RM, DN, BK, LS, HD>(dss, ks, ty, tx, acc);
  }
#pragma unroll
  for (int i = 0; i < RM; ++i) {
    const Index row = q0 + ty * RM + i;
    if (row >= g.tq) continue;
    C* p = dq + (bh * g.tq + row) * g.d;
#pragma unroll
    for (int n = 0; n < DN; ++n) {
      const int c = tx + 8 * n;
      if (c < g.d) p[c] = acc[i][n];
    }
  }
}

// Tile sizes per compute type and head size (see above).
template <class C, int HD>
struct FlashTiles {
  static constexpr bool single = sizeof(C) == 4;
  static constexpr int fwd_q = single ? 64 : 32, fwd_k = single ? 64 : 32;
  static constexpr int bwd_q = single ? 64 : 32, bwd_k = single ? (HD == 128 ? 32 : 64) : 32;
  static constexpr std::size_t fwd_smem = (fwd_q * (HD + 1) + 2 * fwd_k * (HD + 1) + fwd_q * (fwd_k + 1)) * sizeof(C);
  static constexpr std::size_t bwd_smem = (2 * bwd_k * (HD + 1) + 2 * bwd_q * (HD + 1) + 2 * bwd_q * (bwd_k + 1) + 2 * bwd_q) * sizeof(C);
};

template <class Kernel>
void flash_launch_setup(Kernel kernel, std::size_t smem, const char* what, const DeviceAttentionGeometry& g) {
  if (smem > 48 * 1024)
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)), "scaled_dot_product_attention",
          std::string("cudaFuncSetAttribute (") + what + ", " + std::to_string(smem) + " bytes of shared memory; " + attention_text(g) + ")");
}

inline unsigned flash_grid(Index blocks, const DeviceAttentionGeometry& g) {
  if (blocks > 0x7fffffff) throw ShapeError("[scaled_dot_product_attention] too many tiles for one cuda launch: " + attention_text(g));
  return static_cast<unsigned>(blocks);
}

template <class C, int HD>
void flash_forward(const DeviceAttentionGeometry& g, C scale, DeviceAttentionView<C> q, DeviceAttentionView<C> k, DeviceAttentionView<C> v,
                   const C* bias, C* out, C* lse) {
  using T = FlashTiles<C, HD>;
  auto kernel = flash_forward_kernel<C, HD, T::fwd_q, T::fwd_k>;
  flash_launch_setup(kernel, T::fwd_smem, "flash forward", g);
  const Index blocks = g.batch * g.heads * ((g.tq + T::fwd_q - 1) / T::fwd_q);
  kernel<<<flash_grid(blocks, g), flash_threads, T::fwd_smem, stream()>>>(g, scale, q, k, v, bias, out, lse);
  check(cudaGetLastError(), "scaled_dot_product_attention", "flash forward kernel launch (" + attention_text(g) + ")");
}

template <class C, int HD>
void flash_backward(const DeviceAttentionGeometry& g, C scale, DeviceAttentionView<C> q, DeviceAttentionView<C> k, DeviceAttentionView<C> v,
                    DeviceAttentionView<C> dout, const C* lse, const C* delta, const C* bias, C* dq, C* dk, C* dv) {
  using T = FlashTiles<C, HD>;
  const char* op = "scaled_dot_product_attention";
  if (g.tk > 0) {
    auto kernel = flash_dkdv_kernel<C, HD, T::bwd_q, T::bwd_k>;
    flash_launch_setup(kernel, T::bwd_smem, "flash backward dk/dv", g);
    const Index blocks = g.batch * g.heads * ((g.tk + T::bwd_k - 1) / T::bwd_k);
    kernel<<<flash_grid(blocks, g), flash_threads, T::bwd_smem, stream()>>>(g, scale, q, k, v, dout, lse, delta, bias, dk, dv);
    check(cudaGetLastError(), op, "flash backward dk/dv kernel launch (" + attention_text(g) + ")");
  }
  if (g.tq > 0) {
    auto kernel = flash_dq_kernel<C, HD, T::bwd_q, T::bwd_k>;
    flash_launch_setup(kernel, T::bwd_smem, "flash backward dq", g);
    const Index blocks = g.batch * g.heads * ((g.tq + T::bwd_q - 1) / T::bwd_q);
    kernel<<<flash_grid(blocks, g), flash_threads, T::bwd_smem, stream()>>>(g, scale, q, k, v, dout, lse, delta, bias, dq);
    check(cudaGetLastError(), op, "flash backward dq kernel launch (" + attention_text(g) + ")");
  }
}

// The head-size bucket of the tiled kernels (32, 64, 128), or 0: the warp-per-row fallback.
inline int flash_head(const DeviceAttentionGeometry& g) {
  const Index d = g.d > g.dv ? g.d : g.dv;
  return d <= 32 ? 32 : d <= 64 ? 64 : d <= 128 ? 128 : 0;
}

template <class C>
void attention_forward(const DeviceAttentionGeometry& g, C scale, DeviceAttentionView<C> q, DeviceAttentionView<C> k, DeviceAttentionView<C> v,
                       const C* bias, C* out, C* lse) {
  check_attention_heads(g);
  const Index rows = g.batch * g.heads * g.tq;
  if (rows == 0) return;
  switch (flash_head(g)) {
    case 32: return flash_forward<C, 32>(g, scale, q, k, v, bias, out, lse);
    case 64: return flash_forward<C, 64>(g, scale, q, k, v, bias, out, lse);
    case 128: return flash_forward<C, 128>(g, scale, q, k, v, bias, out, lse);
    default: break;
  }
  attention_forward_kernel<C><<<attention_grid(rows), 32 * attention_warps, 0, stream()>>>(g, scale, q, k, v, bias, out, lse);
  check(cudaGetLastError(), "scaled_dot_product_attention", "forward kernel launch (" + attention_text(g) + ")");
}

// delta: scratch of B * H * Tq elements (used by the tiled kernels only).
template <class C>
void attention_backward(const DeviceAttentionGeometry& g, C scale, DeviceAttentionView<C> q, DeviceAttentionView<C> k, DeviceAttentionView<C> v,
                        DeviceAttentionView<C> out, DeviceAttentionView<C> dout, const C* lse, const C* bias, C* dq, C* dk, C* dv, C* delta) {
  check_attention_heads(g);
  const char* op = "scaled_dot_product_attention";
  const Index rows = g.batch * g.heads * g.tq;
  if (const int head = flash_head(g)) {
    if (rows > 0) {
      flash_delta_kernel<C><<<attention_grid(rows), 32 * attention_warps, 0, stream()>>>(g, out, dout, delta);
      check(cudaGetLastError(), op, "flash backward delta kernel launch (" + attention_text(g) + ")");
    }
    if (g.batch * g.heads == 0) return;
    switch (head) {
      case 32: return flash_backward<C, 32>(g, scale, q, k, v, dout, lse, delta, bias, dq, dk, dv);
      case 64: return flash_backward<C, 64>(g, scale, q, k, v, dout, lse, delta, bias, dq, dk, dv);
      default: return flash_backward<C, 128>(g, scale, q, k, v, dout, lse, delta, bias, dq, dk, dv);
    }
  }
  const std::size_t dk_bytes = static_cast<std::size_t>(g.batch * g.heads * g.tk * g.d) * sizeof(C);
  const std::size_t dv_bytes = static_cast<std::size_t>(g.batch * g.heads * g.tk * g.dv) * sizeof(C);
  if (dk_bytes) check(cudaMemsetAsync(dk, 0, dk_bytes, stream()), op, "cudaMemsetAsync of dk (" + attention_text(g) + ")");
  if (dv_bytes) check(cudaMemsetAsync(dv, 0, dv_bytes, stream()), op, "cudaMemsetAsync of dv (" + attention_text(g) + ")");
  if (rows == 0) return;
  attention_backward_kernel<C><<<attention_grid(rows), 32 * attention_warps, 0, stream()>>>(g, scale, q, k, v, out, dout, lse, bias, dq, dk, dv);
  check(cudaGetLastError(), op, "backward kernel launch (" + attention_text(g) + ")");
}

}  // namespace cerberus::cuda_backend
