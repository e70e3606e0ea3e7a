// Matrix products on raw pointers for the CPU backend: C = alpha * A * B + beta * C.
//
// Shapes: A is M x K, B is K x N, C is M x N. Element (i, j) of a matrix X is at
// x[i * x_rs + j * x_cs] (strides in elements), so a transposed operand is the same memory with
// its two strides swapped, and a broadcast operand may have stride 0. C must not overlap A or B.
// With beta == 0, C is only written (NaNs in it do not leak), as in BLAS. An optional epilogue
// (GemmEpilogue: a bias per column, a tanh GELU) is applied as each tile is stored.
//
// Design (GotoBLAS / BLIS). Operands are packed into panels, converted to the compute type on
// the way (bfloat16 -> float): A into MR-row panels (per k, MR values side by side) and B into
// NR-column panels (per k, NR values), zero-padded at the edges. A register-blocked micro-kernel
// computes an MR x NR tile of C from one A panel and one B panel: per k it loads NR/W vectors of
// B, broadcasts MR values of A and issues MR * NR / W FMAs (14 x 32 floats on AVX-512).
// Blocking: K is cut into equal slices of at most KC = 512 floats (K = 256 / 512 / 2048: one
// slice of 256, one of 512, four of 512); per slice, one A panel slice (MR x KC) is multiplied by a row of
// B panel slices (KC x up to 1 MiB of panels, which stay in L2), walking C left to right.
// Products are cut into chunks of K (and of M and N) so that the packed copies stay in cache:
// packing whole 2048^2 operands, written out to DRAM and read back, cost ~5%. Within a chunk each
// panel slice is packed just before its first use: B panels at the start of the slice, A panels
// one by one (or a few) as the tile reaches them, into the task's own small buffer when no other
// task reads them. In a model the operands arrive cold (written by the previous op, or read a
// step ago), and packing is then mostly waiting for memory; a packed copy still in L1 / L2 when
// the micro-kernel reads it saves a second trip (see gemm_packed).
//
// Threads: per chunk, one parallel region on the library's one pool (thread_pool.hpp) computes
// 2-D tiles of C; each panel that several tasks read is packed once, by the first task that needs
// it, into memory shared by all tasks (see ensure_packed). Small products stay on the calling
// thread. A product's
// result is bitwise the same for any thread count: each element is summed in the same order,
// since the K slicing does not depend on the thread count.
//
// Measured against OpenBLAS 0.3.21 (AVX-512 kernels, OPENBLAS_CORETYPE=Cooperlake) and Eigen 3.4
// on the 2-core AVX-512 Xeon VMs this was tuned on (docs/performance.md): 0.96-1.01x
// OpenBLAS on one thread from 256^3 to 2048^3, 0.93-0.99x on two; Eigen's product reaches
// 0.78-0.98x of this kernel on one thread and threads only through OpenMP, which the library does
// not use. So this kernel serves every product and Eigen is not called.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <thread>
#include <type_traits>

#include "cerberus/backend/cpu/backend.hpp"
#include "cerberus/backend/cpu/thread_pool.hpp"
#include "cerberus/core/bfloat16.hpp"
#include "cerberus/core/config.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/math.hpp"
#include "cerberus/core/simd.hpp"

namespace cerberus::cpu_backend {
inline namespace CERBERUS_SIMD_ABI {

// Whether an operand of the BLAS-style entry point is used as stored or transposed.
enum class Transpose : bool { no = false, yes = true };

// What a product does to each result before storing it (the epilogue):
//   C = act(alpha * A B + beta * C + bias),   bias [N] broadcast over the rows (unit stride).
// linear() adds its bias here instead of filling C with it and accumulating with beta = 1 (a
// fill pass and a read of C per product: 2-4% of a cold forward product), and an inference MLP
// applies its GELU here instead of a pass over the [N, 4C] hidden activations.
enum class GemmActivation : int { none, gelu_tanh };
template <class T>
struct GemmEpilogue {
  const T* bias = nullptr;  // N values, or nullptr
  GemmActivation activation = GemmActivation::none;
  bool empty() const { return bias == nullptr && activation == GemmActivation::none; }
};

// Register and cache blocking for compute type C at the SIMD width this TU is compiled for.
// MR x NV accumulator vectors plus NV vectors of B and one broadcast must fit in the register
// file: 32 vector registers on AVX-512 and AArch64, 16 on AVX/AVX2/SSE. Every micro-kernel shape
// that fits ran within 1% of the others on AVX-512 (~178 GFLOP/s from L1 at 1 thread); 14 x 32
// needs the least data per FMA, which matters once operands stream from L2.
template <class C>
struct GemmBlocking {
  static constexpr int width = static_cast<int>(xsimd::batch<C>::size);
#if defined(__AVX512F__)
  static constexpr int mr = 14, nv = 2;
#elif defined(__aarch64__)
  static constexpr int mr = 12, nv = 2;
#else
  static constexpr int mr = 6, nv = 2;
#endif
  static constexpr int nr = nv * width;
  // Deepest K slice per micro-kernel call; K is cut into equal slices no deeper than this. An A
  // panel slice (MR x kc_max) should fit in L1 (48 KiB here): 28 KiB of floats, 43 of doubles.
  static constexpr Index kc_max = sizeof(C) <= 4 ? 512 : 384;
  static constexpr Index kc_step = 4;  // slice depths are multiples of this (the k loop's unroll)
  // K slice depth for a product of depth k: ceil(k / slices) for the fewest slices of at most
  // kc_max (K = 256 / 512 / 1024 / 2048 -> 256 / 512 / 512 / 512, 8000 -> 500). Every slice after
  // the first reads and writes the whole of C again, and a shallow last slice (K = 512 cut
  // 384 + 128) pays that for a quarter of the work.
  static constexpr Index slice_depth(Index k) {
    const Index slices = (k + kc_max - 1) / kc_max;
    return std::max<Index>(kc_step, ((k + slices - 1) / slices + kc_step - 1) / kc_step * kc_step);
  }
  // B panels per tile, so that a tile's kc-deep block of B (kc x tile_cols) stays in L2 (1 MiB).
  static constexpr Index tile_panels(Index kc) {
    return std::max<Index>(1, (Index{1} << 20) / (kc * nr * static_cast<Index>(sizeof(C))));
  }
  // Packed elements per chunk (A and B together): the packed copies should stay in cache.
  static constexpr Index chunk_elements = Index{2} << 20;
};

namespace gemm_detail {

template <class C, class T>
CERBERUS_ALWAYS_INLINE C to_compute(T v) {
  if constexpr (std::is_same_v<T, bfloat16>) return static_cast<C>(static_cast<float>(v));
  else return static_cast<C>(v);
}

// Scratch memory from the library's caching allocator: a product of a similar size gets the same
// block back, with its pages already touched (a fresh 4 KiB page costs ~12 us on first touch).
class Scratch {
 public:
  explicit Scratch(std::size_t bytes) : bytes_(bytes), p_(bytes ? allocator().allocate(bytes) : nullptr) {}
  ~Scratch() {
    if (p_) allocator().deallocate(p_, bytes_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  std::size_t bytes_;
  void* p_;
};

// Runs fn(task) for each task; on the pool when there is more than one task and thread, in lanes
// (ThreadPool::run_in_lanes: tasks are numbered along C's rows, so each thread keeps the same
// rows of A and C from one product to the next). Two threads, tiny config, warm operands
// (bench_gemm_model_shapes --configs tiny --threads 2, Zen 4 VM, 2 runs): the forward products
// with N = 256 went from 0.76-0.87x OpenBLAS to 0.96-0.98x, the step's products from
// 0.91-0.94x to 0.99-1.02x.
template <class Fn>
void run_tasks(Index tasks, int threads, Fn&& fn) {
  if (tasks <= 0) return;
  if (tasks == 1 || threads <= 1) {
    for (Index t = 0; t < tasks; ++t) fn(t);
    return;
  }
  thread_pool().run_in_lanes(tasks, [&](Index t) { fn(t); });
}

// ---- packing ----------------------------------------------------------------------------------
// An operand seen as `rows` x depth with strides (rs along rows, ds along depth): for A rows are
// M, for B rows are N (B^T). Panel q holds rows [q*R, q*R + R) as dst[q * panel_stride + p * R + i].

// Rows contiguous at each depth (B row-major, A column-major): sweep the source row by row so
// that its reads are sequential (strided panel-by-panel reads ran ~30% slower at 1024 wide).
template <int R, class C, class T>
void pack_rows_contiguous(C* dst, Index panel_stride, const T* src, Index ds, Index rows, Index q0, Index q1, Index depth) {
  for (Index p = 0; p < depth; ++p) {
    const T* s = src + p * ds;
    for (Index q = q0; q < q1; ++q) {
      C* d = dst + q * panel_stride + p * R;
      const T* sq = s + q * R;
      const Index n = std::min<Index>(R, rows - q * R);
      if (n == R) {
        for (int i = 0; i < R; ++i) d[i] = to_compute<C>(sq[i]);
      } else {
        Index i = 0;
        for (; i < n; ++i) d[i] = to_compute<C>(sq[i]);
        for (; i < R; ++i) d[i] = C(0);
      }
    }
  }
}

// Depth contiguous in each row (A row-major, B column-major): a transpose, 16 depths at a time
// through a small buffer. Memory-bound (~0.3-0.4 ns per value from L3): an AVX-512 in-register
// transpose and software prefetching both measured slower than this.
template <int R, class C, class T>
void pack_depth_contiguous(C* dst, Index panel_stride, const T* src, Index rs, Index rows, Index q0, Index q1, Index depth) {
  constexpr Index W = 16;
  for (Index q = q0; q < q1; ++q) {
    C* d = dst + q * panel_stride;
    const T* s = src + q * R * rs;
    const Index n = std::min<Index>(R, rows - q * R);
    Index p = 0;
    if (n == R) {
      for (; p + W <= depth; p += W) {
        alignas(64) C t[R][W];
        for (int i = 0; i < R; ++i)
          for (Index k = 0; k < W; ++k) t[i][k] = to_compute<C>(s[i * rs + p + k]);
        for (Index k = 0; k < W; ++k)
          for (int i = 0; i < R; ++i) d[(p + k) * R + i] = t[i][k];
      }
    }
    for (; p < depth; ++p) {
      Index i = 0;
      for (; i < n; ++i) d[p * R + i] = to_compute<C>(s[i * rs + p]);
      for (; i < R; ++i) d[p * R + i] = C(0);
    }
  }
}

#if defined(__AVX512F__)
// AVX-512 versions for float operands (the common case): the portable loops above run at 1-2
// cycles per value even with the source in L2 (the compiler emits scalar gathers for the
// transpose and partial vectors for 14-wide rows); these run at a fraction of that.

// 16 x 16 transpose in registers: r[i] holds row i on entry, column i on exit.
CERBERUS_ALWAYS_INLINE void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
  }
  // r[4b + j] now holds, in each 128-bit lane L, elements (rows 4L'..) of column group j of row block b.
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
  }
}

// Depth contiguous, float: 16 depths of up to 16 rows per transpose.
template <int R>
void pack_depth_contiguous_f32(float* dst, Index panel_stride, const float* src, Index rs, Index rows, Index q0, Index q1, Index depth) {
  static_assert(R <= 16 || R % 16 == 0);
  constexpr int G = R < 16 ? R : 16;  // rows per transpose
  constexpr int groups = R < 16 ? 1 : R / 16;
  for (Index q = q0; q < q1; ++q) {
    float* d = dst + q * panel_stride;
    const Index n = std::min<Index>(R, rows - q * R);
    if (n < R) {
      pack_depth_contiguous<R>(d - q * panel_stride, panel_stride, src, rs, rows, q, q + 1, depth);
      continue;
    }
    const float* s = src + q * R * rs;
    Index p = 0;
    for (; p + 16 <= depth; p += 16) {
      for (int g = 0; g < groups; ++g) {
        __m512 r[16];
        for (int i = 0; i < G; ++i) r[i] = _mm512_loadu_ps(s + (g * 16 + i) * rs + p);
        for (int i = G; i < 16; ++i) r[i] = _mm512_setzero_ps();
        transpose16(r);
        float* dg = d + p * R + g * 16;
        if constexpr (G == 16) {
          for (int k = 0; k < 16; ++k) _mm512_storeu_ps(dg + k * R, r[k]);
        } else {
          constexpr __mmask16 m = static_cast<__mmask16>((1u << G) - 1);
          for (int k = 0; k < 16; ++k) _mm512_mask_storeu_ps(dg + k * R, m, r[k]);
        }
      }
    }
    for (; p < depth; ++p)
      for (int i = 0; i < R; ++i) d[p * R + i] = s[i * rs + p];
  }
}

// Rows contiguous, float: per depth, R values of each panel with (masked) vector moves.
template <int R>
void pack_rows_contiguous_f32(float* dst, Index panel_stride, const float* src, Index ds, Index rows, Index q0, Index q1, Index depth) {
  constexpr int V = (R + 15) / 16;
  for (Index p = 0; p < depth; ++p) {
    const float* s = src + p * ds;
    for (Index q = q0; q < q1; ++q) {
      float* d = dst + q * panel_stride + p * R;
      const float* sq = s + q * R;
      const Index n = std::min<Index>(R, rows - q * R);
      if (n == R) {
        for (int v = 0; v < V; ++v) {
          const int w = std::min(16, R - 16 * v);
          if (w == 16) _mm512_storeu_ps(d + 16 * v, _mm512_loadu_ps(sq + 16 * v));
          else {
            const __mmask16 m = static_cast<__mmask16>((1u << w) - 1);
            _mm512_mask_storeu_ps(d + 16 * v, m, _mm512_maskz_loadu_ps(m, sq + 16 * v));
          }
        }
      } else {
        Index i = 0;
        for (; i < n; ++i) d[i] = sq[i];
        for (; i < R; ++i) d[i] = 0.0f;
      }
    }
  }
}
#endif

template <int R, class C, class T>
void pack_strided(C* dst, Index panel_stride, const T* src, Index rs, Index ds, Index rows, Index q0, Index q1, Index depth) {
  for (Index q = q0; q < q1; ++q) {
    C* d = dst + q * panel_stride;
    const T* s = src + q * R * rs;
    const Index n = std::min<Index>(R, rows - q * R);
    for (Index p = 0; p < depth; ++p) {
      Index i = 0;
      for (; i < n; ++i) d[p * R + i] = to_compute<C>(s[i * rs + p * ds]);
      for (; i < R; ++i) d[p * R + i] = C(0);
    }
  }
}

template <int R, class C, class T>
void pack_panels(C* dst, Index panel_stride, const T* src, Index rs, Index ds, Index rows, Index q0, Index q1, Index depth) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<C, float> && std::is_same_v<T, float> && (R <= 16 || R % 16 == 0)) {
    if (rs == 1) return pack_rows_contiguous_f32<R>(dst, panel_stride, src, ds, rows, q0, q1, depth);
    if (ds == 1) return pack_depth_contiguous_f32<R>(dst, panel_stride, src, rs, rows, q0, q1, depth);
  }
#endif
  if (rs == 1) pack_rows_contiguous<R>(dst, panel_stride, src, ds, rows, q0, q1, depth);
  else if (ds == 1) pack_depth_contiguous<R>(dst, panel_stride, src, rs, rows, q0, q1, depth);
  else pack_strided<R>(dst, panel_stride, src, rs, ds, rows, q0, q1, depth);
}

// ---- epilogue ---------------------------------------------------------------------------------
// GELU, tanh form, written as fn::GeluTanh (expr/functors.hpp) writes it (x / (1 + exp(-2u)),
// see there why), so that the fused epilogue and the elementwise pass agree.
// (xsimd::exp named directly for batches: nvcc's device pass, which also parses this host
// code, does not see math.hpp's batch overloads.)
template <class V>
CERBERUS_ALWAYS_INLINE V gelu_tanh(const V& x) {
  const V minus_2u = V(-1.5957691216057308) * (x + V(0.044715) * x * x * x);
  if constexpr (std::is_floating_point_v<V>) return x / (V(1) + math::exp(minus_2u));
  else return x / (V(1) + xsimd::exp(minus_2u));
}

// The full-tile store of a micro-kernel with an epilogue (out of line: the plain store stays
// as short as it was).
template <class C, int MR, int NV, class Batch>
#if defined(__GNUC__)
__attribute__((noinline))
#endif
void store_epilogue(const Batch (&acc)[MR][NV], Batch va, Batch vb, C beta, C* c, Index c_rs, const C* bias, bool gelu) {
  constexpr int W = static_cast<int>(Batch::size);
  Batch bv[NV];
  for (int v = 0; v < NV; ++v) bv[v] = bias ? Batch::load_unaligned(bias + v * W) : Batch(C(0));
  for (int i = 0; i < MR; ++i) {
    C* ci = c + i * c_rs;
    for (int v = 0; v < NV; ++v) {
      Batch r = acc[i][v] * va;
      if (beta != C(0)) r = xsimd::fma(Batch::load_unaligned(ci + v * W), vb, r);
      r += bv[v];
      if (gelu) r = gelu_tanh(r);
      r.store_unaligned(ci + v * W);
    }
  }
}

// The epilogue as a pass over C, for the paths whose kernels have none (matrix-vector, tiny and
// column-major products): C[i, j] = act(C[i, j] + bias[j]).
template <class C, class T>
void apply_epilogue(Index m, Index n, T* c, Index c_rs, Index c_cs, const GemmEpilogue<C>& ep) {
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j) {
      T& out = c[i * c_rs + j * c_cs];
      C r = to_compute<C>(out);
      if (ep.bias) r += ep.bias[j];
      if (ep.activation == GemmActivation::gelu_tanh) r = gelu_tanh(r);
      out = static_cast<T>(r);
    }
}

// ---- micro-kernel -----------------------------------------------------------------------------
// C[0:rows, 0:cols] = alpha * sum_p a[p*MR + i] * b[p*BS + j] + beta * C (C not read if beta == 0).
// NV vectors of the B panel are used (BS = the panel's width): NV = 1 serves thin right edges.
template <class C, int MR, int NV, int BS>
#if defined(__GNUC__)
__attribute__((noinline))  // a separate function keeps all accumulators in registers
#endif
void micro_kernel(Index depth, const C* __restrict a, const C* __restrict b, C alpha, C beta, C* c, Index c_rs, Index c_cs,
                  Index rows, Index cols, const C* bias = nullptr, bool gelu = false) {
  using Batch = xsimd::batch<C>;
  constexpr int W = static_cast<int>(Batch::size);
  Batch acc[MR][NV];
CERBERUS_UNROLL(32)
  for (int i = 0; i < MR; ++i)
CERBERUS_UNROLL(4)
    for (int v = 0; v < NV; ++v) acc[i][v] = Batch(C(0));

  const bool direct = rows == MR && cols == NV * W && c_cs == 1;
#if defined(__GNUC__)
  if (direct) {
CERBERUS_UNROLL(32)
    for (int i = 0; i < MR; ++i)
CERBERUS_UNROLL(4)
      for (int v = 0; v < NV; ++v) __builtin_prefetch(c + i * c_rs + v * W, 1, 3);
  }
#endif

CERBERUS_UNROLL(4)
  for (Index p = 0; p < depth; ++p) {
    Batch bv[NV];
CERBERUS_UNROLL(4)
    for (int v = 0; v < NV; ++v) bv[v] = Batch::load_aligned(b + v * W);
CERBERUS_UNROLL(32)
    for (int i = 0; i < MR; ++i) {
      const Batch ai(a[i]);
CERBERUS_UNROLL(4)
      for (int v = 0; v < NV; ++v) acc[i][v] = xsimd::fma(ai, bv[v], acc[i][v]);
    }
    a += MR;
    b += BS;
  }

  const Batch va(alpha), vb(beta);
  if (direct) {
    if (bias || gelu) return store_epilogue<C, MR, NV>(acc, va, vb, beta, c, c_rs, bias, gelu);
CERBERUS_UNROLL(32)
    for (int i = 0; i < MR; ++i) {
      C* ci = c + i * c_rs;
CERBERUS_UNROLL(4)
      for (int v = 0; v < NV; ++v) {
        Batch r = acc[i][v] * va;
        if (beta != C(0)) r = xsimd::fma(Batch::load_unaligned(ci + v * W), vb, r);
        r.store_unaligned(ci + v * W);
      }
    }
    return;
  }
  alignas(64) C tile[MR * NV * W];
CERBERUS_UNROLL(32)
  for (int i = 0; i < MR; ++i)
CERBERUS_UNROLL(4)
    for (int v = 0; v < NV; ++v) acc[i][v].store_aligned(tile + (i * NV + v) * W);
  for (Index i = 0; i < rows; ++i) {
    for (Index j = 0; j < cols; ++j) {
      C& out = c[i * c_rs + j * c_cs];
      C r = alpha * tile[i * NV * W + j];
      if (beta != C(0)) r += beta * out;
      if (bias) r += bias[j];
      out = gelu ? gelu_tanh(r) : r;
    }
  }
}

// Panels are packed by the first task that needs them, inside the product's one parallel region
// (a separate packing region cost a second worker wake-up, ~20 us: an eighth of a 256^3 product
// on two threads). Each panel has a flag: free, being packed, or ready. A task claims the free
// panels it needs (a few at a time, so that two threads needing the same ones share the work),
// packs them, then waits for those that another thread is packing at that moment. It never waits
// while holding a claim, and when the tasks run one after another on one thread no claim is ever
// left open, so this cannot deadlock. The wait is std::atomic::wait (a futex after the standard
// library's brief spin), for at most the time another thread takes to pack a few panels.
enum PanelState : int { panel_free = 0, panel_packing = 1, panel_ready = 2 };

template <class Pack>
void ensure_packed(std::atomic<int>* state, Index lo, Index hi, Pack&& pack) {
  constexpr Index claim_max = 4;
  const auto claim = [&](Index i) {
    int expected = panel_free;
    return state[i].load(std::memory_order_relaxed) == panel_free &&
           state[i].compare_exchange_strong(expected, panel_packing, std::memory_order_acquire);
  };
  for (Index i = lo; i < hi;) {
    if (!claim(i)) {
      ++i;
      continue;
    }
    Index j = i + 1;
    while (j < hi && j - i < claim_max && claim(j)) ++j;
    pack(i, j);
    for (Index q = i; q < j; ++q) state[q].store(panel_ready, std::memory_order_release);
    i = j;
  }
  // Panels claimed by other tasks: wait by yielding, not with std::atomic::wait. A panel is packed
  // within microseconds of being claimed, and GCC 12's atomic wait/notify lost a wake-up here (a
  // test hung for minutes with the panel already marked ready).
  for (Index i = lo; i < hi; ++i)
    while (state[i].load(std::memory_order_acquire) != panel_ready) std::this_thread::yield();
}

// Multiply-adds below which a packed product runs on the calling thread alone.
inline constexpr Index parallel_product = Index{1} << 21;

// ---- packed product ---------------------------------------------------------------------------
// How the products of one chunk are cut into tasks: mt x nt tiles of tm x tn panels.
struct TilePlan {
  Index mt, nt, tm, tn;
};

// Picks the tiling that the pool finishes first. The pool deals tasks out in lanes, one per
// thread, and a thread whose lane is done takes the others' next tasks (run_tasks); a sleeping
// worker joins a region ~20-50 us after the caller starts (a futex wake on these VMs), worth
// about `late` panel products (MR x NR x depth each; a padded edge panel costs a full one). The
// plan is chosen by simulating the simpler schedule where each task goes to whichever thread is
// free first, which finishes at about the same time as lanes with that helping. Each thread gets at least
// three tasks: on these VMs one vCPU at times runs at half speed for a while (the host's load),
// and small tasks let the other take over its share. Finer tiles cost little (64 tiles instead of
// 1 measured the same within noise at 1024^3 on one thread). Tiles are at most tn_max panels
// wide, so that their KC-deep B block stays in L2; ties go to fewer tasks.
inline TilePlan plan_tiles(Index mp, Index np, Index tn_max, int threads, Index late) {
  const Index nt_min = (np + tn_max - 1) / tn_max;
  TilePlan best{1, nt_min, mp, (np + nt_min - 1) / nt_min};
  best.nt = (np + best.tn - 1) / best.tn;
  if (threads <= 1) return best;
  constexpr int max_threads = 64;
  threads = std::min(threads, max_threads);
  // 3 to 8 tasks per thread: the search stays a few microseconds.
  const Index min_tasks = std::min(3 * static_cast<Index>(threads), mp * np), max_tasks = 8 * static_cast<Index>(threads);
  const Index limit = 4 * static_cast<Index>(threads);
  Index best_time = -1, best_tasks = 0;
  for (Index mt = 1; mt <= std::min(mp, limit); ++mt) {
    const Index tm = (mp + mt - 1) / mt, mt_real = (mp + tm - 1) / tm;
    for (Index nt = nt_min; nt <= std::min(np, nt_min + limit); ++nt) {
      const Index tn = (np + nt - 1) / nt, nt_real = (np + tn - 1) / tn;
      const Index tasks = mt_real * nt_real;
      if (tasks < min_tasks || tasks > max_tasks) continue;
      Index free_at[max_threads];
      for (int t = 0; t < threads; ++t) free_at[t] = t == 0 ? 0 : late;
      for (Index task = 0; task < tasks; ++task) {
        const Index rows = std::min(tm, mp - task / nt_real * tm), cols = std::min(tn, np - task % nt_real * tn);
        *std::min_element(free_at, free_at + threads) += rows * cols + 1;  // + 1: a task's own start-up
      }
      const Index time = *std::max_element(free_at, free_at + threads);
      if (best_time < 0 || time < best_time || (time == best_time && tasks < best_tasks)) {
        best = {mt_real, nt_real, tm, tn};
        best_time = time;
        best_tasks = tasks;
      }
    }
  }
  return best;
}

template <class C, class TA, class TB>
void gemm_packed(Index m, Index n, Index k, C alpha, const TA* a, Index a_rs, Index a_cs, const TB* b, Index b_rs, Index b_cs,
                 C beta, C* c, Index c_rs, Index c_cs, const GemmEpilogue<C>& ep = {}) {
  using Blk = GemmBlocking<C>;
  constexpr int MR = Blk::mr, NR = Blk::nr, NV = Blk::nv, W = Blk::width;
  const Index KC = Blk::slice_depth(k);
  // Waking the pool's workers costs ~25 us: below ~4 MFLOP the calling thread does it all.
  const int threads = m * n * k < parallel_product ? 1 : num_threads();

  // Chunks: K in whole KC slices such that (M + N) x k_chunk fits the budget, then M and N.
  const Index k_chunk = std::min(k, std::max<Index>(KC, Blk::chunk_elements / (m + n) / KC * KC));
  // M and N in chunks of whole panels, as even as the budget allows (M = 2048 in at most 2044
  // rows was 2044 + 4: a chunk of one mostly padded panel row).
  const auto even_chunk = [](Index size, Index most, Index unit) {
    const Index chunks = (size + most - 1) / most, even = (size + chunks - 1) / chunks;
    return std::min(size, (even + unit - 1) / unit * unit);
  };
  const Index n_chunk = even_chunk(n, std::max<Index>(NR, Blk::chunk_elements / 2 / k_chunk / NR * NR), NR);
  const Index m_chunk = even_chunk(m, std::max<Index>(MR, Blk::chunk_elements / 2 / k_chunk / MR * MR), MR);
  const Index mp_max = (m_chunk + MR - 1) / MR, np_max = (n_chunk + NR - 1) / NR;
  const Index slices_max = (k_chunk + KC - 1) / KC;
  // Shared packed A (allocated when a chunk first needs it, see private_a below) and B.
  std::optional<Scratch> a_buf;
  Scratch b_buf(static_cast<std::size_t>(np_max * NR * k_chunk) * sizeof(C));
  C* pa = nullptr;
  C* const pb = b_buf.as<C>();
  // One flag per panel and K slice: each slice of a panel is packed just before the tiles that
  // read it, while it is likely still in L1 / L2 (packing a whole chunk first sent the copies out
  // to L3 and back).
  const std::unique_ptr<std::atomic<int>[]> a_state(new std::atomic<int>[static_cast<std::size_t>(mp_max * slices_max)]);
  const std::unique_ptr<std::atomic<int>[]> b_state(new std::atomic<int>[static_cast<std::size_t>(np_max * slices_max)]);
  // A panels packed at a time: one when A's depth is contiguous (row-major activations and
  // gradients: the packer transposes one panel's rows), a group otherwise (that packer reads the
  // source depth by depth across the group's panels; one panel at a time it would fetch each
  // source cache line once per panel: dW = g^T x ran 5-10% slower that way).
  const Index a_group = a_cs == 1 ? 1 : 8;

  for (Index jc = 0; jc < n; jc += n_chunk) {
    const Index nc = std::min(n_chunk, n - jc), np = (nc + NR - 1) / NR;
    for (Index pc = 0; pc < k; pc += k_chunk) {
      const Index kcc = std::min(k_chunk, k - pc), slices = (kcc + KC - 1) / KC;
      const C beta_chunk = pc == 0 ? beta : C(1);  // later K chunks accumulate onto C
      for (Index ic = 0; ic < m; ic += m_chunk) {
        const Index mc = std::min(m_chunk, m - ic), mp = (mc + MR - 1) / MR;
        if (ic == 0)
          for (Index q = 0; q < np * slices; ++q) b_state[q].store(panel_free, std::memory_order_relaxed);
        for (Index q = 0; q < mp * slices; ++q) a_state[q].store(panel_free, std::memory_order_relaxed);
        // One panel product (MR x NR x KC multiply-adds) takes ~2 us; a late worker ~12 of them.
        const Index late = std::max<Index>(1, 12 * KC / std::max<Index>(kcc, 1));
        const TilePlan plan = plan_tiles(mp, np, Blk::tile_panels(KC), threads, late);
        // With one column of tiles (N up to tile_panels * NR: most of a GPT step's products),
        // each A panel is read by one task only: the task packs its panels, a_group at a time,
        // into a small buffer of its own that stays in L1 / L2, instead of into the shared one,
        // whose lines each pack first has to fetch (transposing 2048 x 256 from L3: ~0.33 ns per
        // value into a cold buffer, ~0.2 into a hot one). 5-20% faster on those products with
        // their operands cold, as in a training step (bench_gemm_model_shapes --flush).
        const bool private_a = plan.nt == 1;
        if (!private_a && !a_buf) {
          a_buf.emplace(static_cast<std::size_t>(mp_max * MR * k_chunk) * sizeof(C));
          pa = a_buf->as<C>();
        }
        run_tasks(plan.mt * plan.nt, threads, [&](Index t) {
          const Index q0 = t / plan.nt * plan.tm, q1 = std::min(mp, q0 + plan.tm);
          const Index s0 = t % plan.nt * plan.tn, s1 = std::min(np, s0 + plan.tn);
          const Scratch own_a(private_a ? static_cast<std::size_t>(a_group * MR * KC) * sizeof(C) : 0);
          for (Index slice = 0; slice < slices; ++slice) {
            const Index p0 = slice * KC, depth = std::min(KC, kcc - p0);
            const C beta_k = p0 == 0 ? beta_chunk : C(1);
            // The epilogue: the bias joins the first K slice's store, the activation the last's.
            const C* const bias_k = pc == 0 && p0 == 0 ? ep.bias : nullptr;
            const bool gelu_k = ep.activation == GemmActivation::gelu_tanh && pc + p0 + depth == k;
            C* const pa_slice = private_a ? nullptr : pa + p0 * MR * mp;
            C* const pb_slice = pb + p0 * NR * np;
            const TA* const a_slice = a + ic * a_rs + (pc + p0) * a_cs;
            ensure_packed(b_state.get() + slice * np, s0, s1, [&](Index r0, Index r1) {
              pack_panels<NR>(pb_slice, NR * depth, b + jc * b_cs + (pc + p0) * b_rs, b_cs, b_rs, nc, r0, r1, depth);
            });
            for (Index q = q0; q < q1; ++q) {
              const C* ap;
              if (private_a) {
                const Index g0 = q - (q - q0) % a_group;
                if (q == g0) {
                  const Index g1 = std::min(q1, g0 + a_group);
                  pack_panels<MR>(own_a.as<C>(), MR * depth, a_slice + g0 * MR * a_rs, a_rs, a_cs, mc - g0 * MR, 0, g1 - g0, depth);
                }
                ap = own_a.as<C>() + (q - g0) * MR * depth;
              } else {
                if ((q - q0) % a_group == 0)
                  ensure_packed(a_state.get() + slice * mp, q, std::min(q1, q + a_group), [&](Index r0, Index r1) {
                    pack_panels<MR>(pa_slice, MR * depth, a_slice, a_rs, a_cs, mc, r0, r1, depth);
                  });
                ap = pa_slice + q * MR * depth;
              }
              const Index row = q * MR, rows = std::min<Index>(MR, mc - row);
              C* crow = c + (ic + row) * c_rs + jc * c_cs;
              for (Index s = s0; s < s1; ++s) {
                const C* bp = pb_slice + s * NR * depth;
                const Index col = s * NR, cols = std::min<Index>(NR, nc - col);
                const C* const bias_s = bias_k ? bias_k + jc + col : nullptr;
                if (NV > 1 && cols <= W)
                  micro_kernel<C, MR, 1, NR>(depth, ap, bp, alpha, beta_k, crow + col * c_cs, c_rs, c_cs, rows, cols, bias_s, gelu_k);
                else
                  micro_kernel<C, MR, NV, NR>(depth, ap, bp, alpha, beta_k, crow + col * c_cs, c_rs, c_cs, rows, cols, bias_s, gelu_k);
              }
            }
          }
        });
      }
    }
  }
}

// ---- small products and matrix-vector products ------------------------------------------------

// y[i] = alpha * sum_p A(i, p) x[p] + beta * y[i] for i < rows (A is rows x k).
template <class C, class TA, class TX, class TY>
void gemv(Index rows, Index k, C alpha, const TA* a, Index a_rs, Index a_cs, const TX* x, Index xs, C beta, TY* y, Index ys) {
  using Batch = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(Batch::size);
  const auto finish = [&](Index i, C sum) {
    TY& out = y[i * ys];
    out = static_cast<TY>(beta == C(0) ? alpha * sum : alpha * sum + beta * to_compute<C>(out));
  };
  // A task reads at least ~1 MiB of A: waking a worker costs ~25 us.
  const Index grain = std::max<Index>(1, (Index{1} << 18) / std::max<Index>(k, 1));
  if constexpr (std::is_same_v<TA, C> && std::is_same_v<TX, C>) {
    if (a_cs == 1 && xs == 1) {
      // Rows of A contiguous: one dot product per row, four vectors in flight.
      parallel_for(0, rows, grain, [&](Index i0, Index i1) {
        for (Index i = i0; i < i1; ++i) {
          const C* ai = a + i * a_rs;
          Batch s0(C(0)), s1(C(0)), s2(C(0)), s3(C(0));
          Index p = 0;
          for (; p + 4 * W <= k; p += 4 * W) {
            s0 = xsimd::fma(Batch::load_unaligned(ai + p), Batch::load_unaligned(x + p), s0);
            s1 = xsimd::fma(Batch::load_unaligned(ai + p + W), Batch::load_unaligned(x + p + W), s1);
            s2 = xsimd::fma(Batch::load_unaligned(ai + p + 2 * W), Batch::load_unaligned(x + p + 2 * W), s2);
            s3 = xsimd::fma(Batch::load_unaligned(ai + p + 3 * W), Batch::load_unaligned(x + p + 3 * W), s3);
          }
          for (; p + W <= k; p += W) s0 = xsimd::fma(Batch::load_unaligned(ai + p), Batch::load_unaligned(x + p), s0);
          C sum = simd::reduce_add((s0 + s1) + (s2 + s3));
          for (; p < k; ++p) sum += ai[p] * x[p];
          finish(i, sum);
        }
      });
      return;
    }
  }
  if (a_rs == 1) {
    // Columns of A contiguous: accumulate x[p] * column p into a block of sums.
    constexpr Index block = 256;
    parallel_for(0, (rows + block - 1) / block, std::max<Index>(1, grain / block), [&](Index b0, Index b1) {
      alignas(64) C sum[block];
      for (Index blk = b0; blk < b1; ++blk) {
        const Index i0 = blk * block, n = std::min(block, rows - i0);
        std::fill(sum, sum + n, C(0));
        for (Index p = 0; p < k; ++p) {
          const C xp = to_compute<C>(x[p * xs]);
          const TA* col = a + i0 + p * a_cs;
          for (Index i = 0; i < n; ++i) sum[i] += xp * to_compute<C>(col[i]);
        }
        for (Index i = 0; i < n; ++i) finish(i0 + i, sum[i]);
      }
    });
    return;
  }
  parallel_for(0, rows, grain, [&](Index i0, Index i1) {
    for (Index i = i0; i < i1; ++i) {
      C sum(0);
      for (Index p = 0; p < k; ++p) sum += to_compute<C>(a[i * a_rs + p * a_cs]) * to_compute<C>(x[p * xs]);
      finish(i, sum);
    }
  });
}

// A few rows of A against a weight read in place: C [M, N] = A [M, K] W^T with A's rows and W's
// rows ([N, K], B = W^T as a view) contiguous in K, as in a decoding step's projections (M = the
// batch's rows, or beams). Packing W^T for a few rows costs several times the product: 2 rows
// against an 8000 x 256 weight took 1.8 ms packed against 0.4 ms for one row's matrix-vector
// product, since the transpose of the whole weight is paid for 2 rows. Here each C[i, j] is a dot
// product of two contiguous rows: blocks of RB rows of A by JB rows of W keep RB x JB vector
// sums in registers, W streams through once per block of rows (the rows of A stay in L1), and
// each sum is reduced horizontally once at the end. A row or weight past the edge repeats the
// last one (its sums are not stored), so one kernel shape serves every size. Tasks are ranges of
// W rows; each C element is summed by one task in a fixed order, the same for any thread count.
template <class C, int RB, int JB, class Store>
void dot_rows_kernel(Index m, Index n, Index k, const C* a, Index a_rs, const C* w, Index w_rs, Store&& store) {
  using Batch = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(Batch::size);
  const Index kv = k / W * W;
  const Index grain = std::max<Index>(JB, (Index{1} << 16) / std::max<Index>(k * std::max<Index>(m, 1), 1) * JB);
  parallel_for(0, (n + JB - 1) / JB, std::max<Index>(1, grain / JB), [&](Index b0, Index b1) {
    for (Index i0 = 0; i0 < m; i0 += RB) {
      const C* ar[RB];
CERBERUS_UNROLL(8)
      for (int r = 0; r < RB; ++r) ar[r] = a + std::min<Index>(i0 + r, m - 1) * a_rs;
      for (Index blk = b0; blk < b1; ++blk) {
        const Index j0 = blk * JB;
        const C* wr[JB];
CERBERUS_UNROLL(4)
        for (int j = 0; j < JB; ++j) wr[j] = w + std::min<Index>(j0 + j, n - 1) * w_rs;
        Batch acc[RB][JB];
CERBERUS_UNROLL(8)
        for (int r = 0; r < RB; ++r)
CERBERUS_UNROLL(4)
          for (int j = 0; j < JB; ++j) acc[r][j] = Batch(C(0));
        for (Index p = 0; p < kv; p += W) {
          Batch wv[JB];
CERBERUS_UNROLL(4)
          for (int j = 0; j < JB; ++j) wv[j] = Batch::load_unaligned(wr[j] + p);
CERBERUS_UNROLL(8)
          for (int r = 0; r < RB; ++r) {
            const Batch av = Batch::load_unaligned(ar[r] + p);
CERBERUS_UNROLL(4)
            for (int j = 0; j < JB; ++j) acc[r][j] = xsimd::fma(av, wv[j], acc[r][j]);
          }
        }
        for (int r = 0; r < RB && i0 + r < m; ++r)
          for (int j = 0; j < JB && j0 + j < n; ++j) {
            C sum = simd::reduce_add(acc[r][j]);
            for (Index p = kv; p < k; ++p) sum += ar[r][p] * wr[j][p];
            store(i0 + r, j0 + j, sum);
          }
      }
    }
  });
}

// Rows of A up to which dot_rows_kernel beats packing (a GPT's KV-cache steps on one AVX-512
// thread, K 256-512, N 256-16000: at 16 rows it was no faster; docs/performance.md).
inline constexpr Index dot_rows_max = 8;

// Products too small to repay packing (a few hundred multiply-adds): row by row, a block of C's
// row summed over K on the calling thread.
template <class C, class TA, class TB, class TC>
void gemm_small(Index m, Index n, Index k, C alpha, const TA* a, Index a_rs, Index a_cs, const TB* b, Index b_rs, Index b_cs,
                C beta, TC* c, Index c_rs, Index c_cs) {
  constexpr Index block = 64;
  C sum[block];
  for (Index i = 0; i < m; ++i) {
    for (Index j0 = 0; j0 < n; j0 += block) {
      const Index nb = std::min(block, n - j0);
      std::fill(sum, sum + nb, C(0));
      for (Index p = 0; p < k; ++p) {
        const C ap = to_compute<C>(a[i * a_rs + p * a_cs]);
        const TB* bp = b + p * b_rs + j0 * b_cs;
        for (Index j = 0; j < nb; ++j) sum[j] += ap * to_compute<C>(bp[j * b_cs]);
      }
      for (Index j = 0; j < nb; ++j) {
        TC& out = c[i * c_rs + (j0 + j) * c_cs];
        out = static_cast<TC>(beta == C(0) ? alpha * sum[j] : alpha * sum[j] + beta * to_compute<C>(out));
      }
    }
  }
}

// C = beta * C (alpha == 0 or K == 0: A and B are not read, as in BLAS).
template <class C, class TC>
void scale_matrix(Index m, Index n, C beta, TC* c, Index c_rs, Index c_cs) {
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j) {
      TC& out = c[i * c_rs + j * c_cs];
      out = beta == C(0) ? TC(0) : static_cast<TC>(beta * to_compute<C>(out));
    }
}

// Below this many multiply-adds a product skips packing. Measured on one AVX-512 thread, packing
// already wins at 12^3 (0.49 us against 0.88) and by 3.7x at 32^3; the two tie at 8^3.
inline constexpr Index small_product = 8 * 8 * 8;

}  // namespace gemm_detail

// C = act(alpha * A * B + beta * C + bias) on strided matrices (see the legend at the top of
// this file; the epilogue, bias and act, is optional). T is float, double or bfloat16; bfloat16
// operands are widened to float, the sums are kept in float and each element of C is rounded once.
template <class T>
void gemm(Index m, Index n, Index k, compute_t<T> alpha, const T* a, Index a_rs, Index a_cs, const T* b, Index b_rs, Index b_cs,
          compute_t<T> beta, T* c, Index c_rs, Index c_cs, const GemmEpilogue<T>& epilogue = {}) {
  using C = compute_t<T>;
  using namespace gemm_detail;
  if (m <= 0 || n <= 0) return;
  // The epilogue in the compute type (a bfloat16 bias widened once: N values).
  std::optional<Scratch> bias_buf;
  GemmEpilogue<C> ep{nullptr, epilogue.activation};
  if constexpr (std::is_same_v<T, C>) {
    ep.bias = epilogue.bias;
  } else if (epilogue.bias) {
    bias_buf.emplace(static_cast<std::size_t>(n) * sizeof(C));
    for (Index j = 0; j < n; ++j) bias_buf->as<C>()[j] = to_compute<C>(epilogue.bias[j]);
    ep.bias = bias_buf->as<C>();
  }
  // The kernel stores rows of C as vectors: a column-major C is handled as C^T = B^T A^T (its
  // epilogue, per column of C, then runs as a pass afterwards).
  if (c_cs != 1 && c_rs == 1) {
    gemm<T>(n, m, k, alpha, b, b_cs, b_rs, a, a_cs, a_rs, beta, c, c_cs, c_rs);
    if (!ep.empty()) apply_epilogue(m, n, c, c_rs, c_cs, ep);
    return;
  }
  const auto plain = [&] {
    if (k <= 0 || alpha == C(0)) scale_matrix(m, n, beta, c, c_rs, c_cs);
    else if (n == 1) gemv(m, k, alpha, a, a_rs, a_cs, b, b_rs, beta, c, c_rs);
    else if (m == 1) gemv(n, k, alpha, b, b_cs, b_rs, a, a_cs, beta, c, c_cs);
    else gemm_small(m, n, k, alpha, a, a_rs, a_cs, b, b_rs, b_cs, beta, c, c_rs, c_cs);
    if (!ep.empty()) apply_epilogue(m, n, c, c_rs, c_cs, ep);
  };
  if (k <= 0 || alpha == C(0) || n == 1 || m == 1 || m * n * k < small_product) return plain();
  if constexpr (std::is_same_v<T, C>) {
    if (m <= dot_rows_max && a_cs == 1 && b_rs == 1) {
      const bool gelu = ep.activation == GemmActivation::gelu_tanh;
      const auto store = [&](Index i, Index j, C sum) {
        C& out = c[i * c_rs + j * c_cs];
        C r = alpha * sum;
        if (beta != C(0)) r += beta * out;
        if (ep.bias) r += ep.bias[j];
        out = gelu ? gelu_tanh(r) : r;
      };
      // 4 x 4: 16 sums + 4 weight vectors + 1 row vector (of AVX-512's 32 registers; AVX2's
      // 16 spill, not measured) and 8 row pointers. On a loaded machine it ran at least as fast
      // as 6 x 4, 2 x 8, 4 x 6 and 8 x 3 (the 8-row shapes were slower even at 8 rows, which
      // then stream W twice); not tuned further.
      dot_rows_kernel<C, 4, 4>(m, n, k, a, a_rs, b, b_cs, store);
      return;
    }
  }
  if constexpr (std::is_same_v<T, C>) {
    gemm_packed<C>(m, n, k, alpha, a, a_rs, a_cs, b, b_rs, b_cs, beta, c, c_rs, c_cs, ep);
  } else {
    // bfloat16 C: sum into a float copy (K slices accumulate there), round once at the end, the
    // epilogue applied in float just before.
    Scratch buf(static_cast<std::size_t>(m * n) * sizeof(C));
    C* tmp = buf.as<C>();
    gemm_packed<C>(m, n, k, alpha, a, a_rs, a_cs, b, b_rs, b_cs, C(0), tmp, n, 1);
    const bool gelu = ep.activation == GemmActivation::gelu_tanh;
    parallel_for(0, m, std::max<Index>(1, (Index{1} << 15) / n), [&](Index i0, Index i1) {
      for (Index i = i0; i < i1; ++i)
        for (Index j = 0; j < n; ++j) {
          T& out = c[i * c_rs + j * c_cs];
          C r = tmp[i * n + j];
          if (beta != C(0)) r += beta * to_compute<C>(out);
          if (ep.bias) r += ep.bias[j];
          out = static_cast<T>(gelu ? gelu_tanh(r) : r);
        }
    });
  }
}

// BLAS-style entry point on row-major storage: C (m x n, leading dimension ldc) =
// alpha * op(A) * op(B) + beta * C, with op(A) m x k and op(B) k x n. A is stored m x k
// (lda >= k), or k x m when transposed; likewise B.
template <class T>
void gemm(Transpose trans_a, Transpose trans_b, Index m, Index n, Index k, compute_t<T> alpha, const T* a, Index lda, const T* b,
          Index ldb, compute_t<T> beta, T* c, Index ldc) {
  const bool ta = trans_a == Transpose::yes, tb = trans_b == Transpose::yes;
  gemm<T>(m, n, k, alpha, a, ta ? 1 : lda, ta ? lda : 1, b, tb ? 1 : ldb, tb ? ldb : 1, beta, c, ldc, 1);
}

}  // namespace CERBERUS_SIMD_ABI
}  // namespace cerberus::cpu_backend
