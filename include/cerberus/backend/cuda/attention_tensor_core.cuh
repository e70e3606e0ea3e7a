// bf16 flash attention on tensor cores (sm_80+): FlashAttention-2 forward and backward with
// mma.sync m16n8k16 (bf16 operands, fp32 accumulation), for head sizes 64 and 128 (d == dv).
// scaled_dot_product_attention on bf16 cuda tensors takes this path when it fits
// (tensor_core_attention_fits below: compute capability >= 8.0, d == dv in {64, 128}, rows
// 16-byte aligned, the runtime switch on); otherwise q, k, v are converted to float and run by
// the CUDA-core flash kernels of attention.cuh. Same semantics as those, exactly: scale,
// key-padding bias, causal aligned to the end (query i sees keys j <= i + Tk - Tq), segments,
// fully masked rows giving a zero output, lse = -inf and zero gradients.
//
// Legend: B batch, H heads, Tq queries, Tk keys, D head size (= Dv), BQ / BK query / key rows of
// a tile. Operands are [B, H, T, D] bf16 views with a contiguous last axis (q may be a view of
// [B, T, H, D] memory); results out, dq, dk, dv are contiguous [B, H, T, D] bf16 (what the op
// returns: each rounded once from fp32, as the float path rounds its float results), lse and the
// backward's delta are float [B, H, Tq].
//
// Work split: 128 threads = 4 warps per block; each warp owns 16 rows of the block's tile (query
// rows in the forward and dQ kernels, key rows in the dK/dV kernel), so every product a warp
// does is a 16 x n strip of m16n8k16 tiles and softmax statistics stay inside the warp. bf16
// tiles sit in shared memory with rows padded to D + 8 elements (D * 2 + 16 bytes: rows stay
// 16-byte aligned for ldmatrix and uint4 copies, and the 8 rows one fragment load touches fall
// on 8 different 4-bank groups, so fragment loads are conflict-free).
//
// Forward, a block per (b, h, 64 query rows): Q fragments kept in registers; per 64-key tile
//   S = Q K^T (fp32), scale, mask, online softmax (running max m and sum l per row), P rounded
//   to bf16 and fed straight from the S accumulators as the A operand (the m16n8k16 C layout of
//   two adjacent 8-key tiles is the A layout of one 16-key slice), O += P V (V through
//   ldmatrix.trans). O / l and lse = m + log l at the end. Causal blocks stop at their last
//   visible key tile. Shared memory: Q, K, V tiles, (64 + 2 * 64) x (D + 8) bf16 = 27 / 51 KiB.
// Backward, FlashAttention-2, three launches, no atomics (deterministic):
//   delta = rowsum(dO * O)                      a warp per query row, fp32
//   dK, dV: a block per (b, h, 64 keys)         K, V resident; over the query tiles that can see
//           the keys (BQ = 64 for D 64, 32 for D 128: the dK, dV accumulators live in registers),
//           S^T = K Q^T, dP^T = V dO^T, P^T = exp(S^T - lse), dS^T = P^T (dP^T - delta) scale,
//           dV += P^T dO, dK += dS^T Q (P^T, dS^T as bf16 A operands from the accumulators)
//   dQ:     a block per (b, h, 64 queries)      Q, dO resident; over key tiles of 64 like the
//           forward, S, dP, dS as above untransposed, dQ += dS K
// The products with a transposed right operand (P V, P^T dO, dS^T Q, dS K) read it with
// ldmatrix .trans; the others read 32-bit words of the row-major tiles directly.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "cerberus/backend/cuda/attention.cuh"
#include "cerberus/backend/cuda/error.cuh"
#include "cerberus/backend/cuda/launch.cuh"
#include "cerberus/core/bfloat16.hpp"
#include "cerberus/core/config.hpp"
#include "cerberus/core/error.hpp"

namespace cerberus::cuda_backend {

// ---- When the tensor-core path runs -------------------------------------------------------------

inline std::atomic<bool>& tensor_core_attention_flag() {
  static std::atomic<bool> on{true};
  return on;
}

// Tensor-core bf16 attention on cuda (default on). Off: bf16 attention converts to float and
// runs the CUDA-core flash kernels, as before (tests and benchmarks compare the two). A
// process-wide switch, read at each call.
inline void set_tensor_core_attention(bool on) { tensor_core_attention_flag().store(on); }
inline bool tensor_core_attention_enabled() { return tensor_core_attention_flag().load(); }

// Whether the current device has bf16 mma.sync (compute capability 8.0 or newer); asked once
// per device, then cached.
inline bool device_has_bf16_mma() {
  constexpr int cached_devices = 64;
  static std::array<std::atomic<int>, cached_devices> major{};  // 0: not asked yet
  int device = 0;
  check(cudaGetDevice(&device), "scaled_dot_product_attention", "cudaGetDevice");
  int m = device >= 0 && device < cached_devices ? major[static_cast<std::size_t>(device)].load(std::memory_order_relaxed) : 0;
  if (m == 0) {
    check(cudaDeviceGetAttribute(&m, cudaDevAttrComputeCapabilityMajor, device), "scaled_dot_product_attention",
          "cudaDeviceGetAttribute (compute capability)");
    if (device >= 0 && device < cached_devices) major[static_cast<std::size_t>(device)].store(m, std::memory_order_relaxed);
  }
  return m >= 8;
}

// Rows the kernels copy as 16-byte words: the data 16-byte aligned and every stride a multiple
// of 8 elements (the last axis itself must be contiguous: the caller checks that).
inline bool tensor_core_attention_aligned(const DeviceAttentionView<bfloat16>& v) {
  return reinterpret_cast<std::uintptr_t>(v.data) % 16 == 0 && v.sb % 8 == 0 && v.sh % 8 == 0 && v.st % 8 == 0;
}

// Whether the tensor-core path takes this geometry on the current device: the switch, the head
// size, then the hardware (the operands' rows: tensor_core_attention_aligned).
inline bool tensor_core_attention_fits(const DeviceAttentionGeometry& g) {
  if (!tensor_core_attention_enabled() || g.d != g.dv || (g.d != 64 && g.d != 128)) return false;
  return device_has_bf16_mma();
}

// ---- Fragments of mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 ----------------------------
// (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type".) A lane = 4 group +
// quad, group 0..7, quad 0..3. Each .b32 register holds two bf16, the lower column (A, C) or row
// (B) in its low half.
//   A, 16 x 16 (row major), 4 registers: a0 (row group,     cols 2 quad, 2 quad + 1)
//                                        a1 (row group + 8, cols 2 quad, 2 quad + 1)
//                                        a2 (row group,     cols 8 + 2 quad, + 1)
//                                        a3 (row group + 8, cols 8 + 2 quad, + 1)
//   B, 16 x 8 ("col": k pairs packed), 2 registers: b0 (rows 2 quad, 2 quad + 1;     col group)
//                                                   b1 (rows 8 + 2 quad, + 1;        col group)
//   C / D, 16 x 8 fp32, 4 floats: c0, c1 (row group, cols 2 quad, 2 quad + 1), c2, c3 (row group + 8, same cols)

inline constexpr int tc_threads = 128;  // 4 warps, 16 tile rows each

struct MmaLane {
  int group;  // lane / 4: the row of A and C, the column of B
  int quad;   // lane % 4: the pair of columns (A, C) or rows (B)
};
__device__ inline MmaLane mma_lane() {
  const int lane = static_cast<int>(threadIdx.x & 31);
  return {lane >> 2, lane & 3};
}

__device__ inline std::uint32_t shared_word(const std::uint16_t* p) { return *reinterpret_cast<const std::uint32_t*>(p); }

// A fragment of the 16 x 16 block at (row0, col0) of a row-major bf16 tile (row stride ld).
__device__ inline void load_a_fragment(std::uint32_t (&a)[4], const std::uint16_t* tile, int ld, int row0, int col0, MmaLane l) {
  const std::uint16_t* p = tile + (row0 + l.group) * ld + col0 + 2 * l.quad;
  a[0] = shared_word(p);               // row group,     cols 2 quad..
  a[1] = shared_word(p + 8 * ld);      // row group + 8, cols 2 quad..
  a[2] = shared_word(p + 8);           // row group,     cols 8 + 2 quad..
  a[3] = shared_word(p + 8 * ld + 8);  // row group + 8, cols 8 + 2 quad..
}

// B fragment of a product X Y^T: B[k][n] = Y[n0 + n][k0 + k] for Y a row-major tile whose rows
// are B's columns (K in Q K^T, Q in K Q^T, ...): each register is one 32-bit word of row n0 + group.
__device__ inline void load_b_fragment_from_rows(std::uint32_t (&b)[2], const std::uint16_t* tile, int ld, int n0, int k0, MmaLane l) {
  const std::uint16_t* p = tile + (n0 + l.group) * ld + k0 + 2 * l.quad;
  b[0] = shared_word(p);      // k rows 2 quad, 2 quad + 1 of column group
  b[1] = shared_word(p + 8);  // k rows 8 + 2 quad, + 1
}

// B fragments of a product X Y: B[k][n] = Y[k0 + k][n0 + n] for Y a row-major tile whose rows
// are B's k (V in P V, dO in P^T dO, ...), for the two 8-column tiles n0 and n0 + 8:
// b[0], b[1] for columns n0.., b[2], b[3] for columns n0 + 8... One ldmatrix.x4.trans: lanes
// 8m..8m+7 give the row addresses of 8 x 8 matrix m = rows k0 + 8 (m & 1) + (0..7), columns
// n0 + 8 (m >> 1); .trans hands each lane (rows 2 quad, 2 quad + 1; column group) of matrix m
// in register m, which is B's register (m & 1) of column tile m >> 1.
__device__ inline void load_b_fragments_transposed(std::uint32_t (&b)[4], const std::uint16_t* tile, int ld, int k0, int n0) {
  const int lane = static_cast<int>(threadIdx.x & 31);
  const std::uint16_t* p = tile + (k0 + (lane & 15)) * ld + n0 + 8 * (lane >> 4);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const auto address = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
               : "r"(address)
               : "memory");
#elif defined(__CUDA_ARCH__)
  (void)p;
  b[0] = b[1] = b[2] = b[3] = 0;
  asm volatile("trap;");  // never launched below sm_80 (tensor_core_attention_fits)
#else
  (void)p;
  b[0] = b[1] = b[2] = b[3] = 0;
#endif
}

// d += a b for one 16 x 8 x 16 tile.
__device__ inline void mma_bf16(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#elif defined(__CUDA_ARCH__)
  (void)d, (void)a, (void)b0, (void)b1;
  asm volatile("trap;");
#else
  (void)d, (void)a, (void)b0, (void)b1;
#endif
}

// Two floats as bf16 (round to nearest even), `low` in the low half: the order of a fragment
// register and of memory.
__device__ inline std::uint32_t pack_bf16(float low, float high) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(low, high);  // .x = low (low half), .y = high
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

// The A fragment of the 16-column slice `slice` of a 16 x N strip held as C fragments c[N / 8]
// (8 columns each): columns 16 slice.. are tile 2 slice, 16 slice + 8.. tile 2 slice + 1, and
// rows group / group + 8 with columns 2 quad, 2 quad + 1 are c0, c1 / c2, c3 in both layouts.
template <int TILES>
__device__ inline void a_fragment_from_accumulators(std::uint32_t (&a)[4], const float (&c)[TILES][4], int slice) {
  a[0] = pack_bf16(c[2 * slice][0], c[2 * slice][1]);          // row group,     cols 2 quad..
  a[1] = pack_bf16(c[2 * slice][2], c[2 * slice][3]);          // row group + 8, cols 2 quad..
  a[2] = pack_bf16(c[2 * slice + 1][0], c[2 * slice + 1][1]);  // row group,     cols 8 + 2 quad..
  a[3] = pack_bf16(c[2 * slice + 1][2], c[2 * slice + 1][3]);  // row group + 8, cols 8 + 2 quad..
}

// acc += A B for one warp's 16 rows: A (16 x 16 SLICES) is the bf16 rounding of fp32
// accumulators c in the C layout (P or dS: 2 SLICES tiles of 8 columns), B [16 SLICES][LD]
// row-major in shared memory (V or K) read transposed by ldmatrix; acc has N 8-column tiles.
// (Forward: O += P V; dQ: dQ += dS K. The dK/dV kernel interleaves its two such products per
// slice, sharing the slice loop, and keeps its own loop.)
template <int SLICES, int N>
__device__ inline void accumulate_scores_product(float (&acc)[N][4], const float (&c)[2 * SLICES][4], const std::uint16_t* b_tile, int ld) {
#pragma unroll
  for (int slice = 0; slice < SLICES; ++slice) {
    std::uint32_t a[4];
    a_fragment_from_accumulators(a, c, slice);
#pragma unroll
    for (int n = 0; n < N; n += 2) {
      std::uint32_t bt[4];
      load_b_fragments_transposed(bt, b_tile, ld, slice * 16, n * 8);
      mma_bf16(acc[n], a, bt[0], bt[1]);
      mma_bf16(acc[n + 1], a, bt[2], bt[3]);
    }
  }
}

// Column of element e (0..3) of a C fragment within its 16 x 8 tile (its row: group + 8 (e >> 1)).
__device__ inline int c_col(MmaLane l, int e) { return 2 * l.quad + (e & 1); }

// The backward's two products against row-major tiles, for one warp's 16 rows: x = X Y^T and
// z = Z W^T, X and Z [rows][LD] from row0 (16 rows), Y and W [N * 8][LD], depth KC * 16; both
// start from zero. (dK/dV: S^T = K Q^T, dP^T = V dO^T; dQ: S = Q K^T, dP = dO V^T.)
template <int N, int KC>
__device__ inline void two_row_products(float (&x)[N][4], float (&z)[N][4], const std::uint16_t* xs, const std::uint16_t* zs,
                                        const std::uint16_t* ys, const std::uint16_t* ws, int ld, int row0, MmaLane l) {
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) x[n][e] = z[n][e] = 0.f;
#pragma unroll
  for (int kc = 0; kc < KC; ++kc) {
    std::uint32_t xa[4], za[4];
    load_a_fragment(xa, xs, ld, row0, kc * 16, l);
    load_a_fragment(za, zs, ld, row0, kc * 16, l);
#pragma unroll
    for (int n = 0; n < N; ++n) {
      std::uint32_t yb[2], wb[2];
      load_b_fragment_from_rows(yb, ys, ld, n * 8, kc * 16, l);
      load_b_fragment_from_rows(wb, ws, ld, n * 8, kc * 16, l);
      mma_bf16(x[n], xa, yb[0], yb[1]);
      mma_bf16(z[n], za, wb[0], wb[1]);
    }
  }
}

// ---- Tiles and masks ----------------------------------------------------------------------------

// Starts copying rows [t0, t0 + ROWS) of a [B, H, T, HD] bf16 operand into tile[ROWS][HD + 8]:
// one cp.async of 16 bytes per thread and word, rows past t_end zero-filled (source size 0:
// nothing read there), so a product with them is 0, never NaN. The copies are asynchronous: the
// tile is ready after commit_copies(), wait_copies<..>() and a __syncthreads(). The loops below
// double-buffer the streamed tiles: the next tile's copy runs while the current one is used.
template <int ROWS, int HD>
__device__ inline void copy_bf16_tile(std::uint16_t* tile, const DeviceAttentionView<bfloat16>& v, Index b, Index h, Index t0, Index t_end) {
  constexpr int words = HD / 8, LD = HD + 8;
  for (int idx = static_cast<int>(threadIdx.x); idx < ROWS * words; idx += tc_threads) {
    const int r = idx / words, c = (idx - r * words) * 8;
    const Index t = t0 + r;
    const bool inside = t < t_end;
    const bfloat16* source = inside ? v.row(b, h, t) + c : v.data;  // a valid address even where nothing is read
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const auto destination = static_cast<unsigned>(__cvta_generic_to_shared(tile + r * LD + c));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(destination), "l"(__cvta_generic_to_global(source)),
                 "r"(inside ? 16 : 0)
                 : "memory");
#else
    uint4 value = make_uint4(0u, 0u, 0u, 0u);
    if (inside) value = *reinterpret_cast<const uint4*>(source);
    *reinterpret_cast<uint4*>(tile + r * LD + c) = value;
#endif
  }
}
// Closes the group of copies started since the last commit.
__device__ inline void commit_copies() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
// Waits until at most PENDING of this thread's committed groups are still in flight.
template <int PENDING>
__device__ inline void wait_copies() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING) : "memory");
#endif
}

// The key-tile loop's double buffering (forward and dQ kernels). kv_buffers holds two
// [K [BK][LD], V [BK][LD]] pairs, tile t in pair t % 2 (the first one copied before the loop).
// Starts the copy of the next tile's pair into the other half when there is a next tile (that
// half is free: the loop's last barrier), waits for this tile's copies (and anything committed
// before them; the next tile's may run on), and returns this tile's K (its V follows at
// + BK * LD). The caller's __syncthreads then makes the tile visible to every warp.
template <int BK, int HD, int LD>
__device__ inline const std::uint16_t* key_tile_pair(std::uint16_t* kv_buffers, Index tile, Index k0, Index kend,
                                                     const DeviceAttentionView<bfloat16>& k, const DeviceAttentionView<bfloat16>& v,
                                                     Index b, Index h, Index tk) {
  if (k0 + BK < kend) {
    std::uint16_t* next = kv_buffers + ((tile + 1) & 1) * 2 * BK * LD;
    copy_bf16_tile<BK, HD>(next, k, b, h, k0 + BK, tk);
    copy_bf16_tile<BK, HD>(next + BK * LD, v, b, h, k0 + BK, tk);
    commit_copies();
    wait_copies<1>();
  } else {
    wait_copies<0>();
  }
  return kv_buffers + (tile & 1) * 2 * BK * LD;
}

// lse and delta of query rows [q0, q0 + ROWS) into shared memory; -inf / 0 past Tq, so those
// rows get P = 0.
template <int ROWS>
__device__ inline void load_row_stats(float* lse_s, float* delta_s, const float* lse, const float* delta, Index bh, Index q0, Index tq) {
  for (int r = static_cast<int>(threadIdx.x); r < ROWS; r += tc_threads) {
    const Index row = q0 + r;
    lse_s[r] = row < tq ? lse[bh * tq + row] : -INFINITY;
    delta_s[r] = row < tq ? delta[bh * tq + row] : 0.f;
  }
}

// Whether every pair (query >= q0, key in [k0, k0 + keys)) is visible and unbiased: the tile's
// scores then need only the scale (most tiles of a long causal sequence).
__device__ inline bool tile_unmasked(const DeviceAttentionGeometry& g, const float* bias, Index q0, Index k0, Index keys) {
  return !bias && !g.segments && k0 + keys <= g.tk && (!g.causal || k0 + keys - 1 <= q0 + (g.tk - g.tq));
}

// The score of query row i and key j from dot = q_i . k_j: scale * dot + bias_j, or -inf where
// the pair is hidden (past Tq / Tk, causal, other segment) or the key padded.
__device__ inline float masked_score(const DeviceAttentionGeometry& g, float scale, const float* bias, Index b, Index i, Index j, float dot) {
  if (i >= g.tq || j >= g.tk) return -INFINITY;
  if (g.causal && j > i + (g.tk - g.tq)) return -INFINITY;
  if (g.other_segment(b, i, j)) return -INFINITY;
  return dot * scale + (bias ? bias[b * g.tk + j] : 0.f);
}

// P = exp(s - lse) of a backward score, 0 where masked or for a row with no visible key.
__device__ inline float recomputed_probability(float s, float lse) {
  return (lse == -INFINITY || s == -INFINITY) ? 0.f : __expf(s - lse);
}

// Reductions over the 4 lanes of a quad (the lanes holding one row of a C fragment).
__device__ inline float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ inline float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Rows [row0, row0 + 16) of a C-fragment strip acc[HD / 8] (times `factor` per row half) as bf16
// into the contiguous [.., T, HD] rows of `dst` (rows >= t_end skipped).
template <int HD>
__device__ inline void store_bf16_rows(bfloat16* dst, Index t_end, Index row0, const float (&acc)[HD / 8][4], const float (&factor)[2], MmaLane l) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const Index row = row0 + l.group + 8 * half;
    if (row >= t_end) continue;
    bfloat16* p = dst + row * HD + 2 * l.quad;
#pragma unroll
    for (int n = 0; n < HD / 8; ++n)
      *reinterpret_cast<std::uint32_t*>(p + 8 * n) = pack_bf16(acc[n][2 * half] * factor[half], acc[n][2 * half + 1] * factor[half]);
  }
}

// ---- Forward ------------------------------------------------------------------------------------

template <int HD>
struct TensorCoreForwardTiles {
  static constexpr int BQ = 64, BK = 64, LD = HD + 8;
  // Q, then K and V twice (double buffer).
  static constexpr std::size_t smem = static_cast<std::size_t>(BQ + 4 * BK) * LD * sizeof(std::uint16_t);
};

template <int HD>
__global__ void __launch_bounds__(tc_threads)
    tensor_core_forward_kernel(DeviceAttentionGeometry g, float scale, DeviceAttentionView<bfloat16> q, DeviceAttentionView<bfloat16> k,
                               DeviceAttentionView<bfloat16> v, const float* bias, bfloat16* out, float* lse) {
  using Tiles = TensorCoreForwardTiles<HD>;
  constexpr int BQ = Tiles::BQ, BK = Tiles::BK, LD = Tiles::LD;
  constexpr int KC = HD / 16;  // 16-wide slices of the head (the k of Q K^T)
  constexpr int SN = BK / 8;   // 8-key tiles of a score strip
  constexpr int ON = HD / 8;   // 8-column tiles of an output strip
  extern __shared__ __align__(16) unsigned char tc_smem[];
  auto* qs = reinterpret_cast<std::uint16_t*>(tc_smem);  // [BQ][LD]
  std::uint16_t* kv_buffers = qs + BQ * LD;              // [2][K [BK][LD], V [BK][LD]]
  const int warp = static_cast<int>(threadIdx.x >> 5);
  const MmaLane l = mma_lane();
  const Index tiles = (g.tq + BQ - 1) / BQ;
  const Index bh = static_cast<Index>(blockIdx.x) / tiles;
  const Index q0 = (tiles - 1 - static_cast<Index>(blockIdx.x) % tiles) * BQ;  // causal: the longest tiles first
  const Index b = bh / g.heads, h = bh % g.heads;
  const Index rows[2] = {q0 + warp * 16 + l.group, q0 + warp * 16 + l.group + 8};  // this lane's two query rows
  const Index kend = flash_key_end(g, q0, BQ);

  copy_bf16_tile<BQ, HD>(qs, q, b, h, q0, g.tq);
  if (kend > 0) {
    copy_bf16_tile<BK, HD>(kv_buffers, k, b, h, 0, g.tk);
    copy_bf16_tile<BK, HD>(kv_buffers + BK * LD, v, b, h, 0, g.tk);
  }
  commit_copies();
  wait_copies<0>();
  __syncthreads();
  std::uint32_t qf[KC][4];
#pragma unroll
  for (int kc = 0; kc < KC; ++kc) load_a_fragment(qf[kc], qs, LD, warp * 16, kc * 16, l);

  float o[ON][4];
#pragma unroll
  for (int n = 0; n < ON; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};  // row_sum: this lane's part, summed over the quad at the end
  for (Index k0 = 0, tile = 0; k0 < kend; k0 += BK, ++tile) {
    const std::uint16_t* ks = key_tile_pair<BK, HD, LD>(kv_buffers, tile, k0, kend, k, v, b, h, g.tk);  // [BK][LD]
    const std::uint16_t* vs = ks + BK * LD;                                                             // [BK][LD]
    __syncthreads();  // this tile is visible to every warp

    float s[SN][4];  // S = Q K^T, 16 rows x BK keys
#pragma unroll
    for (int n = 0; n < SN; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int kc = 0; kc < KC; ++kc)
#pragma unroll
      for (int n = 0; n < SN; ++n) {
        std::uint32_t kb[2];
        load_b_fragment_from_rows(kb, ks, LD, n * 8, kc * 16, l);
        mma_bf16(s[n], qf[kc], kb[0], kb[1]);
      }
    if (tile_unmasked(g, bias, q0, k0, BK)) {
#pragma unroll
      for (int n = 0; n < SN; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[n][e] *= scale;
    } else {
#pragma unroll
      for (int n = 0; n < SN; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[n][e] = masked_score(g, scale, bias, b, rows[e >> 1], k0 + n * 8 + c_col(l, e), s[n][e]);
    }

    // Online softmax per row half: new max, rescale of the sum and the output, P = exp(S - m).
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < SN; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * half], s[n][2 * half + 1]));
      const float m_new = fmaxf(m[half], quad_max(mx));
      // No visible key yet (m_new = -inf): exponents against 0 instead, so alpha and P are
      // exp(-inf) = 0 and nothing accumulates (the sum and O are still 0). No branch: the
      // quads of a warp may differ.
      const float m_base = m_new == -INFINITY ? 0.f : m_new;
      const float alpha = __expf(m[half] - m_base);  // 0 while m is -inf
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < SN; ++n)
#pragma unroll
        for (int e = 2 * half; e < 2 * half + 2; ++e) {
          s[n][e] = __expf(s[n][e] - m_base);  // 0 where masked
          sum += s[n][e];
        }
      row_sum[half] = row_sum[half] * alpha + sum;
      m[half] = m_new;
#pragma unroll
      for (int n = 0; n < ON; ++n) {
        o[n][2 * half] *= alpha;
        o[n][2 * half + 1] *= alpha;
      }
    }

    // O += P V: P as bf16 A fragments straight from the score accumulators.
    accumulate_scores_product<BK / 16>(o, s, vs, LD);
    __syncthreads();  // every warp is done with this buffer before the next iteration refills it
  }

  float inv[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const float l_row = quad_sum(row_sum[half]);
    inv[half] = l_row > 0.f ? 1.f / l_row : 0.f;
    if (l.quad == 0 && rows[half] < g.tq) lse[bh * g.tq + rows[half]] = l_row > 0.f ? m[half] + logf(l_row) : -INFINITY;
  }
  store_bf16_rows<HD>(out + bh * g.tq * HD, g.tq, q0 + warp * 16, o, inv, l);
}

// ---- Backward -----------------------------------------------------------------------------------

// delta[row] = sum_c dout[row][c] * out[row][c] in fp32, a warp per (b, h, query row).
template <class E>
__global__ void tensor_core_delta_kernel(DeviceAttentionGeometry g, const E* out, DeviceAttentionView<E> dout, float* delta) {
  const int lane = static_cast<int>(threadIdx.x & 31);
  const Index rows = g.batch * g.heads * g.tq;
  const Index warps = static_cast<Index>(gridDim.x) * (blockDim.x >> 5);
  for (Index row = static_cast<Index>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rows; row += warps) {
    const Index bh = row / g.tq, i = row % g.tq, b = bh / g.heads, h = bh % g.heads;
    const E* o = out + row * g.dv;
    const E* d = dout.row(b, h, i);
    float s = 0.f;
    for (Index c = lane; c < g.dv; c += 32) s += static_cast<float>(o[c]) * static_cast<float>(d[c]);
    s = warp_sum(s);
    if (lane == 0) delta[row] = s;
  }
}

template <int HD>
struct TensorCoreBackwardTiles {
  static constexpr int BK = 64;                       // keys per dK/dV block and per dQ key tile
  static constexpr int BQ = 64;                       // queries per dQ block
  static constexpr int BQ_KEYS = HD == 128 ? 32 : 64;  // query tile of the dK/dV loop (register budget)
  static constexpr int LD = HD + 8;
  // dK/dV: K, V, then Q, dO twice (double buffer), then lse, delta twice.
  static constexpr std::size_t dkdv_smem =
      static_cast<std::size_t>(2 * BK + 4 * BQ_KEYS) * LD * sizeof(std::uint16_t) + 4 * BQ_KEYS * sizeof(float);
  // dQ: Q, dO, then K, V twice (double buffer), then lse, delta.
  static constexpr std::size_t dq_smem = static_cast<std::size_t>(2 * BQ + 4 * BK) * LD * sizeof(std::uint16_t) + 2 * BQ * sizeof(float);
};

template <int HD>
__global__ void __launch_bounds__(tc_threads)
    tensor_core_dkdv_kernel(DeviceAttentionGeometry g, float scale, DeviceAttentionView<bfloat16> q, DeviceAttentionView<bfloat16> k,
                            DeviceAttentionView<bfloat16> v, DeviceAttentionView<bfloat16> dout, const float* lse, const float* delta,
                            const float* bias, bfloat16* dk, bfloat16* dv) {
  using Tiles = TensorCoreBackwardTiles<HD>;
  constexpr int BK = Tiles::BK, BQ = Tiles::BQ_KEYS, LD = Tiles::LD;
  constexpr int KC = HD / 16;  // 16-wide slices of the head
  constexpr int QN = BQ / 8;   // 8-query tiles of an S^T strip
  constexpr int DN = HD / 8;   // 8-column tiles of a dK / dV strip
  extern __shared__ __align__(16) unsigned char tc_smem[];
  auto* ks = reinterpret_cast<std::uint16_t*>(tc_smem);             // [BK][LD]
  std::uint16_t* vs = ks + BK * LD;                                 // [BK][LD]
  std::uint16_t* qdo_buffers = vs + BK * LD;                        // [2][Q [BQ][LD], dO [BQ][LD]]
  auto* stat_buffers = reinterpret_cast<float*>(qdo_buffers + 4 * BQ * LD);  // [2][lse [BQ], delta [BQ]]
  const int warp = static_cast<int>(threadIdx.x >> 5);
  const MmaLane l = mma_lane();
  const Index tiles = (g.tk + BK - 1) / BK;
  const Index bh = static_cast<Index>(blockIdx.x) / tiles;
  const Index k0 = (static_cast<Index>(blockIdx.x) % tiles) * BK;  // causal: the first key tiles see the most queries
  const Index b = bh / g.heads, h = bh % g.heads;
  const Index keys[2] = {k0 + warp * 16 + l.group, k0 + warp * 16 + l.group + 8};  // this lane's two key rows

  float dk_acc[DN][4], dv_acc[DN][4];
#pragma unroll
  for (int n = 0; n < DN; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk_acc[n][e] = dv_acc[n][e] = 0.f;
  Index qbegin = 0;
  if (g.causal) {
    const Index first = k0 - (g.tk - g.tq);  // the first query row that sees key k0
    qbegin = first <= 0 ? 0 : (first / BQ) * BQ;
  }
  // K, V and the first Q, dO tile in one group; lse and delta by plain loads.
  copy_bf16_tile<BK, HD>(ks, k, b, h, k0, g.tk);
  copy_bf16_tile<BK, HD>(vs, v, b, h, k0, g.tk);
  if (qbegin < g.tq) {
    copy_bf16_tile<BQ, HD>(qdo_buffers, q, b, h, qbegin, g.tq);
    copy_bf16_tile<BQ, HD>(qdo_buffers + BQ * LD, dout, b, h, qbegin, g.tq);
    load_row_stats<BQ>(stat_buffers, stat_buffers + BQ, lse, delta, bh, qbegin, g.tq);
  }
  commit_copies();
  for (Index q0 = qbegin, tile = 0; q0 < g.tq; q0 += BQ, ++tile) {
    const std::uint16_t* qs = qdo_buffers + (tile & 1) * 2 * BQ * LD;  // [BQ][LD]
    const std::uint16_t* dos = qs + BQ * LD;                          // [BQ][LD]
    const float* lse_s = stat_buffers + (tile & 1) * 2 * BQ;          // [BQ]
    const float* delta_s = lse_s + BQ;                                // [BQ]
    if (q0 + BQ < g.tq) {  // the next tile into the other buffers (free: the loop's last barrier)
      std::uint16_t* next = qdo_buffers + ((tile + 1) & 1) * 2 * BQ * LD;
      copy_bf16_tile<BQ, HD>(next, q, b, h, q0 + BQ, g.tq);
      copy_bf16_tile<BQ, HD>(next + BQ * LD, dout, b, h, q0 + BQ, g.tq);
      float* next_stats = stat_buffers + ((tile + 1) & 1) * 2 * BQ;
      load_row_stats<BQ>(next_stats, next_stats + BQ, lse, delta, bh, q0 + BQ, g.tq);
      commit_copies();
      wait_copies<1>();  // this tile's copies (and K, V) are done, the next tile's may run on
    } else {
      wait_copies<0>();
    }
    __syncthreads();  // this tile is visible to every warp

    float st[QN][4], dpt[QN][4];  // S^T = K Q^T and dP^T = V dO^T: 16 keys x BQ queries
    two_row_products<QN, KC>(st, dpt, ks, vs, qs, dos, LD, warp * 16, l);
    // P^T = exp(S^T - lse) into st, dS^T = P^T (dP^T - delta) scale into dpt (per query column).
    const bool unmasked = tile_unmasked(g, bias, q0, k0, BK);
#pragma unroll
    for (int n = 0; n < QN; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = n * 8 + c_col(l, e);  // query within the tile
        const float s = unmasked ? st[n][e] * scale : masked_score(g, scale, bias, b, q0 + c, keys[e >> 1], st[n][e]);
        const float p = recomputed_probability(s, lse_s[c]);
        st[n][e] = p;
        dpt[n][e] = p * (dpt[n][e] - delta_s[c]) * scale;
      }
    // dV += P^T dO and dK += dS^T Q, over 16-query slices.
#pragma unroll
    for (int slice = 0; slice < BQ / 16; ++slice) {
      std::uint32_t pa[4], dsa[4];
      a_fragment_from_accumulators(pa, st, slice);
      a_fragment_from_accumulators(dsa, dpt, slice);
#pragma unroll
      for (int n = 0; n < DN; n += 2) {
        std::uint32_t dob[4], qb[4];
        load_b_fragments_transposed(dob, dos, LD, slice * 16, n * 8);
        mma_bf16(dv_acc[n], pa, dob[0], dob[1]);
        mma_bf16(dv_acc[n + 1], pa, dob[2], dob[3]);
        load_b_fragments_transposed(qb, qs, LD, slice * 16, n * 8);
        mma_bf16(dk_acc[n], dsa, qb[0], qb[1]);
        mma_bf16(dk_acc[n + 1], dsa, qb[2], qb[3]);
      }
    }
    __syncthreads();  // every warp is done with these buffers before the next iteration refills them
  }
  wait_copies<0>();  // no copy outlives the block (K, V when no query tile sees these keys)
  const float one[2] = {1.f, 1.f};
  store_bf16_rows<HD>(dk + bh * g.tk * HD, g.tk, k0 + warp * 16, dk_acc, one, l);
  store_bf16_rows<HD>(dv + bh * g.tk * HD, g.tk, k0 + warp * 16, dv_acc, one, l);
}

template <int HD>
__global__ void __launch_bounds__(tc_threads)
    tensor_core_dq_kernel(DeviceAttentionGeometry g, float scale, DeviceAttentionView<bfloat16> q, DeviceAttentionView<bfloat16> k,
                          DeviceAttentionView<bfloat16> v, DeviceAttentionView<bfloat16> dout, const float* lse, const float* delta,
                          const float* bias, bfloat16* dq) {
  using Tiles = TensorCoreBackwardTiles<HD>;
  constexpr int BQ = Tiles::BQ, BK = Tiles::BK, LD = Tiles::LD;
  constexpr int KC = HD / 16;  // 16-wide slices of the head
  constexpr int SN = BK / 8;   // 8-key tiles of an S strip
  constexpr int DN = HD / 8;   // 8-column tiles of the dQ strip
  extern __shared__ __align__(16) unsigned char tc_smem[];
  auto* qs = reinterpret_cast<std::uint16_t*>(tc_smem);                 // [BQ][LD]
  std::uint16_t* dos = qs + BQ * LD;                                    // [BQ][LD]
  std::uint16_t* kv_buffers = dos + BQ * LD;                            // [2][K [BK][LD], V [BK][LD]]
  auto* lse_s = reinterpret_cast<float*>(kv_buffers + 4 * BK * LD);      // [BQ]
  float* delta_s = lse_s + BQ;                                          // [BQ]
  const int warp = static_cast<int>(threadIdx.x >> 5);
  const MmaLane l = mma_lane();
  const Index tiles = (g.tq + BQ - 1) / BQ;
  const Index bh = static_cast<Index>(blockIdx.x) / tiles;
  const Index q0 = (tiles - 1 - static_cast<Index>(blockIdx.x) % tiles) * BQ;
  const Index b = bh / g.heads, h = bh % g.heads;
  const Index rows[2] = {q0 + warp * 16 + l.group, q0 + warp * 16 + l.group + 8};  // this lane's two query rows

  const Index kend = flash_key_end(g, q0, BQ);
  copy_bf16_tile<BQ, HD>(qs, q, b, h, q0, g.tq);
  copy_bf16_tile<BQ, HD>(dos, dout, b, h, q0, g.tq);
  if (kend > 0) {
    copy_bf16_tile<BK, HD>(kv_buffers, k, b, h, 0, g.tk);
    copy_bf16_tile<BK, HD>(kv_buffers + BK * LD, v, b, h, 0, g.tk);
  }
  commit_copies();
  load_row_stats<BQ>(lse_s, delta_s, lse, delta, bh, q0, g.tq);
  __syncthreads();  // lse, delta visible (the tiles: at the loop's first barrier)
  const float row_lse[2] = {lse_s[warp * 16 + l.group], lse_s[warp * 16 + l.group + 8]};
  const float row_delta[2] = {delta_s[warp * 16 + l.group], delta_s[warp * 16 + l.group + 8]};
  float dq_acc[DN][4];
#pragma unroll
  for (int n = 0; n < DN; ++n) dq_acc[n][0] = dq_acc[n][1] = dq_acc[n][2] = dq_acc[n][3] = 0.f;
  for (Index k0 = 0, tile = 0; k0 < kend; k0 += BK, ++tile) {
    const std::uint16_t* ks = key_tile_pair<BK, HD, LD>(kv_buffers, tile, k0, kend, k, v, b, h, g.tk);  // [BK][LD]
    const std::uint16_t* vs = ks + BK * LD;                                                             // [BK][LD]
    __syncthreads();  // this tile is visible to every warp

    float s[SN][4], dp[SN][4];  // S = Q K^T and dP = dO V^T: 16 queries x BK keys
    two_row_products<SN, KC>(s, dp, qs, dos, ks, vs, LD, warp * 16, l);
    // dS = P (dP - delta) scale into dp, P = exp(S - lse).
    const bool unmasked = tile_unmasked(g, bias, q0, k0, BK);
#pragma unroll
    for (int n = 0; n < SN; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int half = e >> 1;
        const float sc = unmasked ? s[n][e] * scale : masked_score(g, scale, bias, b, rows[half], k0 + n * 8 + c_col(l, e), s[n][e]);
        const float p = recomputed_probability(sc, row_lse[half]);
        dp[n][e] = p * (dp[n][e] - row_delta[half]) * scale;
      }
    // dQ += dS K over 16-key slices.
    accumulate_scores_product<BK / 16>(dq_acc, dp, ks, LD);
    __syncthreads();  // every warp is done with this buffer before the next iteration refills it
  }
  wait_copies<0>();  // no copy outlives the block (Q, dO when no key tile is visible)
  const float one[2] = {1.f, 1.f};
  store_bf16_rows<HD>(dq + bh * g.tq * HD, g.tq, q0 + warp * 16, dq_acc, one, l);
}

// ---- Launches -----------------------------------------------------------------------------------

inline void check_tensor_core_operands(const DeviceAttentionGeometry& g, std::initializer_list<DeviceAttentionView<bfloat16>> operands) {
  if (g.d != g.dv || (g.d != 64 && g.d != 128))
    throw ShapeError("[scaled_dot_product_attention] the tensor-core kernels take head sizes 64 and 128 (d == dv), got " + attention_text(g));
  for (const auto& v : operands)
    if (!tensor_core_attention_aligned(v))
      throw ValueError("[scaled_dot_product_attention] the tensor-core kernels need 16-byte aligned rows (strides multiples of 8), got " +
                       attention_text(g));
}

template <int HD>
void tensor_core_forward(const DeviceAttentionGeometry& g, float scale, DeviceAttentionView<bfloat16> q, DeviceAttentionView<bfloat16> k,
                         DeviceAttentionView<bfloat16> v, const float* bias, bfloat16* out, float* lse) {
  using Tiles = TensorCoreForwardTiles<HD>;
  auto kernel = tensor_core_forward_kernel<HD>;
  flash_launch_setup(kernel, Tiles::smem, "tensor-core flash forward", g);
  const Index blocks = g.batch * g.heads * ((g.tq + Tiles::BQ - 1) / Tiles::BQ);
  kernel<<<flash_grid(blocks, g), tc_threads, Tiles::smem, stream()>>>(g, scale, q, k, v, bias, out, lse);
  check(cudaGetLastError(), "scaled_dot_product_attention", "tensor-core flash forward kernel launch (" + attention_text(g) + ")");
}

// out [B, H, Tq, D] and lse [B, H, Tq], contiguous; bias [B, Tk] or null.
// The launchers are templates (E is always bfloat16) so that the kernels are compiled only in the
// programs that run bf16 attention: every CUDA unit includes this header, and ptxas on these
// kernels costs ~4 s per unit.
template <class E>
void attention_forward_tensor_core(const DeviceAttentionGeometry& g, float scale, DeviceAttentionView<E> q, DeviceAttentionView<E> k,
                                   DeviceAttentionView<E> v, const float* bias, E* out, float* lse) {
  static_assert(std::is_same_v<E, bfloat16>, "the tensor-core attention kernels take bfloat16 operands");
  check_tensor_core_operands(g, {q, k, v});
  if (g.batch * g.heads * g.tq == 0) return;
  if (g.d == 64) tensor_core_forward<64>(g, scale, q, k, v, bias, out, lse);
  else tensor_core_forward<128>(g, scale, q, k, v, bias, out, lse);
}

template <int HD>
void tensor_core_backward(const DeviceAttentionGeometry& g, float scale, DeviceAttentionView<bfloat16> q, DeviceAttentionView<bfloat16> k,
                          DeviceAttentionView<bfloat16> v, DeviceAttentionView<bfloat16> dout, const float* lse, const float* delta,
                          const float* bias, bfloat16* dq, bfloat16* dk, bfloat16* dv) {
  using Tiles = TensorCoreBackwardTiles<HD>;
  const char* op = "scaled_dot_product_attention";
  if (g.tk > 0) {
    auto kernel = tensor_core_dkdv_kernel<HD>;
    flash_launch_setup(kernel, Tiles::dkdv_smem, "tensor-core flash backward dk/dv", g);
    const Index blocks = g.batch * g.heads * ((g.tk + Tiles::BK - 1) / Tiles::BK);
    kernel<<<flash_grid(blocks, g), tc_threads, Tiles::dkdv_smem, stream()>>>(g, scale, q, k, v, dout, lse, delta, bias, dk, dv);
    check(cudaGetLastError(), op, "tensor-core flash backward dk/dv kernel launch (" + attention_text(g) + ")");
  }
  if (g.tq > 0) {
    auto kernel = tensor_core_dq_kernel<HD>;
    flash_launch_setup(kernel, Tiles::dq_smem, "tensor-core flash backward dq", g);
    const Index blocks = g.batch * g.heads * ((g.tq + Tiles::BQ - 1) / Tiles::BQ);
    kernel<<<flash_grid(blocks, g), tc_threads, Tiles::dq_smem, stream()>>>(g, scale, q, k, v, dout, lse, delta, bias, dq);
    check(cudaGetLastError(), op, "tensor-core flash backward dq kernel launch (" + attention_text(g) + ")");
  }
}

// dq, dk, dv contiguous [B, H, T, D]; out the forward's contiguous output; delta: scratch of
// B * H * Tq floats.
template <class E>
void attention_backward_tensor_core(const DeviceAttentionGeometry& g, float scale, DeviceAttentionView<E> q, DeviceAttentionView<E> k,
                                    DeviceAttentionView<E> v, const E* out, DeviceAttentionView<E> dout, const float* lse, const float* bias,
                                    E* dq, E* dk, E* dv, float* delta) {
  static_assert(std::is_same_v<E, bfloat16>, "the tensor-core attention kernels take bfloat16 operands");
  check_tensor_core_operands(g, {q, k, v, dout});
  const Index rows = g.batch * g.heads * g.tq;
  if (rows > 0) {
    tensor_core_delta_kernel<E><<<attention_grid(rows), 32 * attention_warps, 0, stream()>>>(g, out, dout, delta);
    check(cudaGetLastError(), "scaled_dot_product_attention", "tensor-core flash backward delta kernel launch (" + attention_text(g) + ")");
  }
  if (g.batch * g.heads == 0) return;
  if (g.d == 64) tensor_core_backward<64>(g, scale, q, k, v, dout, lse, delta, bias, dq, dk, dv);
  else tensor_core_backward<128>(g, scale, q, k, v, dout, lse, delta, bias, dq, dk, dv);
}

}  // namespace cerberus::cuda_backend

namespace cerberus {
// The switch under its public name, next to set_cuda_matmul_tf32.
using cuda_backend::set_tensor_core_attention;
using cuda_backend::tensor_core_attention_enabled;
}  // namespace cerberus
