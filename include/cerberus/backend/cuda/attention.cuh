// Scaled dot-product attention on the device: the simple fused kernel, not yet the tiled
// flash kernel. One warp per (batch, head, query row) walks the keys with an online softmax
// (running max m, running sum l, output accumulator in registers), so the Tq x Tk scores are
// never stored; per query row the logsumexp is saved for the backward, as on the CPU
// (ops/attention.hpp: same masks, same fully-masked-row convention: zero output, lse = -inf).
//
// Backward, one warp per query row, recomputing P = exp(s - lse) key by key:
//   delta = rowsum(dout * out),  dP_j = dout . v_j,  dS_j = P_j (dP_j - delta) scale,
//   dq += dS_j k_j (registers),  dk_j += dS_j q,  dv_j += P_j dout (atomicAdd: rows race).
// K and V are re-read from global memory (L2) by every query row: O(Tq Tk (D + Dv)) traffic, no
// shared-memory tiling yet. Head sizes up to 256 (8 values per lane).
#pragma once

#include <cuda_runtime.h>

#include <cmath>
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
  __device__ Index key_end(Index row) const {
    if (!causal) return tk;
    const Index e = row + (tk - tq) + 1;
    return e < 0 ? 0 : (e > tk ? tk : e);
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

template <class C>
void attention_forward(const DeviceAttentionGeometry& g, C scale, DeviceAttentionView<C> q, DeviceAttentionView<C> k, DeviceAttentionView<C> v,
                       const C* bias, C* out, C* lse) {
  check_attention_heads(g);
  const Index rows = g.batch * g.heads * g.tq;
  if (rows == 0) return;
  attention_forward_kernel<C><<<attention_grid(rows), 32 * attention_warps, 0, stream()>>>(g, scale, q, k, v, bias, out, lse);
  check(cudaGetLastError(), "scaled_dot_product_attention", "forward kernel launch (" + attention_text(g) + ")");
}

template <class C>
void attention_backward(const DeviceAttentionGeometry& g, C scale, DeviceAttentionView<C> q, DeviceAttentionView<C> k, DeviceAttentionView<C> v,
                        DeviceAttentionView<C> out, DeviceAttentionView<C> dout, const C* lse, const C* bias, C* dq, C* dk, C* dv) {
  check_attention_heads(g);
  const char* op = "scaled_dot_product_attention";
  const std::size_t dk_bytes = static_cast<std::size_t>(g.batch * g.heads * g.tk * g.d) * sizeof(C);
  const std::size_t dv_bytes = static_cast<std::size_t>(g.batch * g.heads * g.tk * g.dv) * sizeof(C);
  if (dk_bytes) check(cudaMemsetAsync(dk, 0, dk_bytes, stream()), op, "cudaMemsetAsync of dk (" + attention_text(g) + ")");
  if (dv_bytes) check(cudaMemsetAsync(dv, 0, dv_bytes, stream()), op, "cudaMemsetAsync of dv (" + attention_text(g) + ")");
  const Index rows = g.batch * g.heads * g.tq;
  if (rows == 0) return;
  attention_backward_kernel<C><<<attention_grid(rows), 32 * attention_warps, 0, stream()>>>(g, scale, q, k, v, out, dout, lse, bias, dq, dk, dv);
  check(cudaGetLastError(), op, "backward kernel launch (" + attention_text(g) + ")");
}

}  // namespace cerberus::cuda_backend
