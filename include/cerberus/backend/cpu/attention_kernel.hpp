// The small products of the CPU attention kernels (ops/attention.hpp): a register-blocked
// product that reads its operands where they lie, with no packing, and a transpose that lays
// out keys (or values) once per (batch, head) for the q k^T and dout v^T products.
//
// Why not the general GEMM (backend/cpu/gemm.hpp): attention's tiles are small (64 query rows,
// up to 256 keys, head size 64), and the GEMM packed both operands of every one of them: in a
// tiny GPT training step that packing alone was ~18 ms, about as much as the products. Here
// every product of a tile has one operand whose rows are contiguous along the output's columns
// (keys transposed once per head, v, dout, k or q rows as they are), read as vectors in place,
// and one operand read a scalar at a time and broadcast (q rows, the probability tile, or its
// transpose: broadcasts don't care about strides), so nothing is copied per tile.
//
// Shapes (legend: m = output rows, n = output columns, depth = summed axis):
//   tile_product(m, n, depth, alpha, a, a_rs, a_ks, b, b_ks, c, c_rs, accumulate, range)
//     c[i * c_rs + j] (+)= alpha * sum_p a[i * a_rs + p * a_ks] * b[p * b_ks + j]
//     for i < m, j < n: A [m, depth] with any strides, B [depth, n] with contiguous rows,
//     C [m, n] with contiguous rows. accumulate: add to c (else overwrite it). range (optional):
//     per block of rows, the columns and depths to compute (BlockRange): columns past its
//     n_end rounded up to whole vectors are not written; an empty depth range writes zeros
//     (or leaves c as it is when accumulating).
//   transpose_rows(dst, ld, src, src_rs, rows, cols, padded)
//     dst[c * ld + r] = src[r * src_rs + c] for r < rows, c < cols; zeros for rows <= r < padded.
//
// Every output element is one fma chain over its depths in increasing order; whether it is a
// vector lane or a scalar tail column, and which depths it sums, depend on the shape and range
// alone. So results depend on the operands and the product's shape only, never on how the
// caller cut its work among threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "cerberus/backend/cpu/backend.hpp"
#include "cerberus/core/config.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/simd.hpp"

namespace cerberus::cpu_backend {
inline namespace CERBERUS_SIMD_ABI {
namespace attention_kernel {

// Register blocking: MR rows x NV vectors of accumulators, plus NV vectors of B and one broadcast.
#if defined(__AVX512F__) || defined(__aarch64__)
inline constexpr int block_rows = 6, block_vectors = 4;  // 24 + 4 + 1 of 32 vector registers
#else
inline constexpr int block_rows = 4, block_vectors = 2;  // 8 + 2 + 1 of 16 (AVX2, SSE)
#endif

// One MR x (NV * W) block of C over the whole depth: the accumulators stay in registers.
template <class C, int MR, int NV>
#if defined(__GNUC__)
__attribute__((noinline))  // a separate function keeps all accumulators in registers
#endif
void block(Index depth, C alpha, const C* a, Index a_rs, Index a_ks, const C* b, Index b_ks, C* c, Index c_rs, bool accumulate) {
  using Batch = xsimd::batch<C>;
  constexpr int W = static_cast<int>(Batch::size);
  Batch acc[MR][NV];
CERBERUS_UNROLL(8)
  for (int i = 0; i < MR; ++i)
CERBERUS_UNROLL(4)
    for (int v = 0; v < NV; ++v) acc[i][v] = Batch(C(0));
  const C* rows[MR];
CERBERUS_UNROLL(8)
  for (int i = 0; i < MR; ++i) rows[i] = a + i * a_rs;
  for (Index p = 0; p < depth; ++p) {
    Batch bv[NV];
CERBERUS_UNROLL(4)
    for (int v = 0; v < NV; ++v) bv[v] = Batch::load_unaligned(b + v * W);
CERBERUS_UNROLL(8)
    for (int i = 0; i < MR; ++i) {
      const Batch ai(rows[i][p * a_ks]);
CERBERUS_UNROLL(4)
      for (int v = 0; v < NV; ++v) acc[i][v] = xsimd::fma(ai, bv[v], acc[i][v]);
    }
    b += b_ks;
  }
  const Batch va(alpha);
CERBERUS_UNROLL(8)
  for (int i = 0; i < MR; ++i) {
    C* ci = c + i * c_rs;
CERBERUS_UNROLL(4)
    for (int v = 0; v < NV; ++v) {
      Batch r = acc[i][v] * va;
      if (accumulate) r += Batch::load_unaligned(ci + v * W);
      r.store_unaligned(ci + v * W);
    }
  }
}

// One row block of MR rows: columns [0, vectors * W) in blocks of NV vectors, the last narrower.
template <class C, int MR, int NV>
void row_block(Index vectors, Index depth, C alpha, const C* a, Index a_rs, Index a_ks, const C* b, Index b_ks, C* c, Index c_rs,
               bool accumulate) {
  constexpr Index W = static_cast<Index>(xsimd::batch<C>::size);
  Index v = 0;
  for (; v + NV <= vectors; v += NV) block<C, MR, NV>(depth, alpha, a, a_rs, a_ks, b + v * W, b_ks, c + v * W, c_rs, accumulate);
  if constexpr (NV > 1) {
    if (v < vectors) row_block<C, MR, NV - 1>(vectors - v, depth, alpha, a, a_rs, a_ks, b + v * W, b_ks, c + v * W, c_rs, accumulate);
  }
}

// row_block for `rows` <= MR rows (the last block of a product may be short).
template <class C, int MR>
void rows_of(Index rows, Index vectors, Index depth, C alpha, const C* a, Index a_rs, Index a_ks, const C* b, Index b_ks, C* c,
             Index c_rs, bool accumulate) {
  if (rows == MR) return row_block<C, MR, block_vectors>(vectors, depth, alpha, a, a_rs, a_ks, b, b_ks, c, c_rs, accumulate);
  if constexpr (MR > 1) rows_of<C, MR - 1>(rows, vectors, depth, alpha, a, a_rs, a_ks, b, b_ks, c, c_rs, accumulate);
}

// What one row block [i0, i0 + rows) of a product needs: columns [0, n_end) and depths
// [p_begin, p_end) (clamped to the product's). Causal attention tiles use it to skip what the
// mask makes zero: scores past the block's last visible key (they are set to -inf afterwards),
// and terms whose probability is exactly 0 (adding them would add exact zeros: skipping them
// leaves every sum bitwise the same).
struct BlockRange {
  Index n_end, p_begin, p_end;
};

struct Everything {
  BlockRange operator()(Index, Index) const { return {std::numeric_limits<Index>::max(), 0, std::numeric_limits<Index>::max()}; }
};

template <class C, class Range = Everything>
void tile_product(Index m, Index n, Index depth, C alpha, const C* a, Index a_rs, Index a_ks, const C* b, Index b_ks, C* c,
                  Index c_rs, bool accumulate, Range&& range = {}) {
  if (m <= 0 || n <= 0) return;
  constexpr Index W = static_cast<Index>(xsimd::batch<C>::size);
  // Row blocks outside, columns inside: a row block's range limits its columns and depths.
  for (Index i0 = 0; i0 < m; i0 += block_rows) {
    const Index rows = std::min<Index>(block_rows, m - i0);
    const BlockRange r = range(i0, rows);
    const Index n_end = std::clamp<Index>(r.n_end, 0, n), p0 = std::clamp<Index>(r.p_begin, 0, depth);
    const Index p1 = std::clamp<Index>(r.p_end, p0, depth);
    if (n_end == 0 || (accumulate && p1 == p0)) continue;
    const Index vectors = std::min(n / W, (n_end + W - 1) / W);
    const C* const ab = a + i0 * a_rs + p0 * a_ks;
    const C* const bb = b + p0 * b_ks;
    C* const cb = c + i0 * c_rs;
    if (vectors > 0) rows_of<C, block_rows>(rows, vectors, p1 - p0, alpha, ab, a_rs, a_ks, bb, b_ks, cb, c_rs, accumulate);
    // Columns past the last whole vector (head sizes that are not a multiple of W): one scalar
    // fma chain per element, in the same order over p as the vector blocks.
    for (Index i = 0; i < rows; ++i)
      for (Index j = vectors * W; j < n_end; ++j) {
        C sum = C(0);
        for (Index p = 0; p < p1 - p0; ++p) sum = std::fma(ab[i * a_rs + p * a_ks], bb[p * b_ks + j], sum);
        C& out = cb[i * c_rs + j];
        out = accumulate ? out + alpha * sum : alpha * sum;
      }
  }
}

#if defined(__AVX__)
// dst[c * ld + r] = src[r * rs + c] for an 8 x 8 block of floats, in registers (24 shuffles for
// 64 values). With the scalar loop below alone the transposes were 11% of the attention op's
// time at the tiny GPT shapes; with this and the prefetch in transpose_rows, 4%.
inline void transpose8x8(float* dst, Index ld, const float* src, Index rs) {
  const __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + rs), r2 = _mm256_loadu_ps(src + 2 * rs);
  const __m256 r3 = _mm256_loadu_ps(src + 3 * rs), r4 = _mm256_loadu_ps(src + 4 * rs), r5 = _mm256_loadu_ps(src + 5 * rs);
  const __m256 r6 = _mm256_loadu_ps(src + 6 * rs), r7 = _mm256_loadu_ps(src + 7 * rs);
  // Rows a..h: t0 = a0 b0 a1 b1 | a4 b4 a5 b5, t1 = a2 b2 a3 b3 | a6 b6 a7 b7, ...
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  // u0 = a0 b0 c0 d0 | a4 b4 c4 d4 (columns 0 | 4 of rows a-d), u1: 1 | 5, u2: 2 | 6, u3: 3 | 7;
  // u4..u7 the same for rows e-h.
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + ld, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * ld, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * ld, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * ld, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * ld, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * ld, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * ld, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif

template <class C>
void transpose_rows(C* dst, Index ld, const C* src, Index src_rs, Index rows, Index cols, Index padded) {
  // 8 x 8 blocks: each source row's 8 values are read once, and the 8 destination rows written
  // stay in L1 while the block fills them.
  constexpr Index S = 8;
  for (Index r0 = 0; r0 < rows; r0 += S) {
    const Index r1 = std::min(rows, r0 + S);
#if defined(__GNUC__)
    // The next block's rows, a line at a time: the keys arrive cold, and at a projection's row
    // stride (3 * d_model floats for the fused qkv) the hardware prefetcher does not follow them.
    for (Index r = r1; r < std::min(rows, r1 + S); ++r)
      for (Index cc = 0; cc < cols; cc += 64 / static_cast<Index>(sizeof(C))) __builtin_prefetch(src + r * src_rs + cc);
#endif
    for (Index c0 = 0; c0 < cols; c0 += S) {
      const Index c1 = std::min(cols, c0 + S);
#if defined(__AVX__)
      if constexpr (std::is_same_v<C, float>) {
        if (r1 - r0 == S && c1 - c0 == S) {
          transpose8x8(dst + c0 * ld + r0, ld, src + r0 * src_rs + c0, src_rs);
          continue;
        }
      }
#endif
      for (Index r = r0; r < r1; ++r)
        for (Index cc = c0; cc < c1; ++cc) dst[cc * ld + r] = src[r * src_rs + cc];
    }
  }
  for (Index cc = 0; cc < cols; ++cc) std::fill(dst + cc * ld + rows, dst + cc * ld + padded, C(0));
}

}  // namespace attention_kernel
}  // namespace CERBERUS_SIMD_ABI
}  // namespace cerberus::cpu_backend
