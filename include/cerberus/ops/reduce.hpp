// Reductions: sum, mean, max, min over one axis, several axes or all of them (keepdim keeps
// the reduced axes as extent 1), and argmax / argmin over one axis or the flattened tensor.
//
// Shape rule: x [d0, ..., dn) reduced over axes A gives x's shape with every axis in A removed,
// or set to 1 with keepdim; reducing every axis gives a rank-0 tensor. Axes may be negative
// (-1 = last). Leaving the axes out (or passing `{}`) reduces every axis; an empty run-time list
// reduces none (see Axes).
//
// Inputs are float, double or bfloat16 CPU tensors, or any expression over them (evaluated
// once, first). Results are tensors of the input's element type (argmax/argmin: int64). bf16
// accumulates in float, float sums in float SIMD lanes whose block totals are added in double.
//
// Empty reductions: the sum of no elements is 0; mean, max, min, argmax and argmin of no
// elements throw ValueError ("[max] ..."). NaN propagates through sum, mean, max and min;
// argmax/argmin return the index of the first NaN (like PyTorch), else of the first extreme.
//
// Results never depend on the thread count: how a long row or column is cut into pieces, and
// the order pieces are merged in, follow from the shape alone.
//
// Backward (differentiable_reduce, at the end): sum broadcasts dy, mean broadcasts dy / count,
// max/min share dy among the elements equal to the extreme.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/backend/cpu/backend.hpp"
#include "cerberus/backend/cpu/thread_pool.hpp"
#include "cerberus/backend/op_kernels.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/core/shape.hpp"
#include "cerberus/expr/expr.hpp"
#include "cerberus/expr/ops.hpp"
#include "cerberus/tensor/tensor.hpp"

// Normally already included by the backend (with its warning guards); repeated for nvcc TUs,
// where the backend leaves xsimd out. These kernels are host-only, so xsimd is fine there.
#include <xsimd/xsimd.hpp>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>  // bf16 <-> float conversions (load_batch, store_batch)
#endif

namespace cerberus {

// The axes a reduction runs over: `sum(x, 1)`, `sum(x, {0, 2})`, `sum(x, axes_vector)`. Every
// axis when the argument is left out, or is `{}` or Axes::all(). A list that happens to be
// empty (a vector built at run time) reduces no axis, as in NumPy: code that collects the axes
// to reduce must not reduce everything when it finds none.
class Axes {
 public:
  Axes() = default;
  Axes(int axis) : all_(false), axes_{axis} {}  // NOLINT(google-explicit-constructor): `sum(x, 1)` is the point
  Axes(std::initializer_list<int> axes) : all_(false), axes_(axes) {}
  Axes(std::span<const int> axes) : all_(false), axes_(axes.begin(), axes.end()) {}  // NOLINT
  Axes(const std::vector<int>& axes) : all_(false), axes_(axes) {}                   // NOLINT

  static Axes all() { return Axes(); }
  bool is_all() const { return all_; }
  const std::vector<int>& list() const { return axes_; }

  // Bit d set when axis d of `shape` is reduced. Throws IndexError, naming `op` and the shape,
  // for an axis out of range or given twice.
  std::uint32_t mask(const Shape& shape, const char* op) const {
    if (all_) return shape.rank() == 0 ? 0u : (~0u >> (32 - shape.rank()));
    std::uint32_t m = 0;
    for (const int a : axes_) {
      const int d = shape.axis(a, op);
      if (m >> d & 1u)
        throw IndexError(std::string("[") + op + "] axis " + std::to_string(a) + " appears twice in the axes of a reduction over shape " +
                         shape.to_string());
      m |= 1u << d;
    }
    return m;
  }

 private:
  bool all_ = true;
  std::vector<int> axes_;
};

namespace cpu_backend {
inline namespace CERBERUS_SIMD_ABI {

// ---- tuning constants: all of them fix only how work is cut, never what is computed -----------
// A row longer than this is reduced in pieces of this many elements; pieces may run on
// different threads, and are merged in order.
inline constexpr Index reduce_piece = 64 * 1024;
// Elements a row's SIMD accumulators take before their lanes are folded into the block total
// (double for sums). A multiple of 4 batches of every SIMD width.
inline constexpr Index reduce_block = 2048;
// Rows a column strip's float accumulators take before they are folded into the totals.
inline constexpr Index reduce_block_rows = 64;
// Widest column strip handled at once (its accumulators stay in L1).
inline constexpr Index reduce_strip_width = 1024;
// Elements per task below which threading costs more than it saves.
inline constexpr Index reduce_grain = 32 * 1024;
// Rows shorter than short_row_batches SIMD batches are transposed in tiles of this many rows
// (see for_short_row_tiles).
inline constexpr Index short_row_batches = 2;
inline constexpr Index short_row_tile = 256;

template <class T>
using batch_of = xsimd::batch<compute_t<T>>;

// Rows shorter than this take the transposed-tile path.
template <class T>
inline constexpr Index short_row_limit = short_row_batches * static_cast<Index>(batch_of<T>::size);

// ---- bf16 <-> float, whole registers: the same bit operations as bfloat16's own conversions
// (widen: the bf16 bits are the float's high half; narrow: round to nearest even, a NaN kept a
// quiet NaN), written with intrinsics where the compiler would otherwise loop over lanes.
#if defined(__AVX512F__)
CERBERUS_ALWAYS_INLINE __m512 bf16_to_float(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
CERBERUS_ALWAYS_INLINE __m256i float_to_bf16(__m512 f) {
  const __m512i u = _mm512_castps_si512(f);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  const __m512i quiet_nan = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(_mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q), rounded, quiet_nan));
}
#endif
#if defined(__AVX2__)
CERBERUS_ALWAYS_INLINE __m256 bf16_to_float(__m128i h) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
CERBERUS_ALWAYS_INLINE __m128i float_to_bf16(__m256 f) {
  const __m256i u = _mm256_castps_si256(f);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  const __m256i quiet_nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  const __m256i bits = _mm256_blendv_epi8(rounded, quiet_nan, _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q)));
  // Lanes hold values below 2^16: pack to 16 bits, then bring the two 64-bit halves together.
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(bits, bits), 0xD8));
}
#endif

// Which intrinsic path a batch type takes: its register's width in bytes.
template <class B>
inline constexpr std::size_t register_bytes = sizeof(typename B::register_type);

// W consecutive elements as a batch of the compute type (bf16 widened to float). Elsewhere
// than AVX-512/AVX2, bf16 goes through a loop of fixed length W that compilers vectorise at -O3.
template <class T>
CERBERUS_ALWAYS_INLINE batch_of<T> load_batch(const T* p) {
  using B = batch_of<T>;
  if constexpr (std::is_same_v<T, compute_t<T>>) {
    return B::load_unaligned(p);
  } else {
    static_assert(std::is_same_v<T, bfloat16> && sizeof(float) == sizeof(std::uint32_t));
#if defined(__AVX512F__)
    if constexpr (register_bytes<B> == 64) return B(bf16_to_float(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#endif
#if defined(__AVX2__)
    if constexpr (register_bytes<B> == 32) return B(bf16_to_float(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#endif
    alignas(64) std::uint32_t bits[B::size];
    for (std::size_t k = 0; k < B::size; ++k) bits[k] = static_cast<std::uint32_t>(p[k].bits) << 16;
    alignas(64) float wide[B::size];
    std::memcpy(wide, bits, sizeof wide);
    return B::load_aligned(wide);
  }
}

// Stores a batch of the compute type as W elements of T (bf16 rounded like bfloat16(float)).
template <class T>
CERBERUS_ALWAYS_INLINE void store_batch(T* p, const batch_of<T>& v) {
  using B = batch_of<T>;
  if constexpr (std::is_same_v<T, compute_t<T>>) {
    v.store_unaligned(p);
  } else {
#if defined(__AVX512F__)
    if constexpr (register_bytes<B> == 64) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), float_to_bf16(v));
      return;
    }
#endif
#if defined(__AVX2__)
    if constexpr (register_bytes<B> == 32) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), float_to_bf16(v));
      return;
    }
#endif
    alignas(64) float wide[B::size];
    v.store_aligned(wide);
    alignas(64) std::uint32_t bits[B::size];
    std::memcpy(bits, wide, sizeof bits);
    for (std::size_t k = 0; k < B::size; ++k) {
      const std::uint32_t u = bits[k];
      const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
      const std::uint32_t quiet_nan = (u >> 16) | 0x0040u;
      p[k].bits = static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
    }
  }
}

// The first `count` (< W) elements at p in a batch, the other lanes `fill`, and the matching
// partial store: the ragged end of a row still takes the SIMD path (a scalar libm exp costs
// as much as a whole batch). Masked loads and stores where the ISA has them; elsewhere a small
// buffer (slower: its element-wise writes cannot be forwarded to the wide load).
template <class T>
CERBERUS_ALWAYS_INLINE batch_of<T> load_partial(const T* p, Index count, compute_t<T> fill) {
  using B = batch_of<T>;
#if defined(__AVX512F__)
  if constexpr (register_bytes<B> == 64) {
    const auto mask = static_cast<__mmask16>((1u << count) - 1u);
    if constexpr (std::is_same_v<T, float>) return B(_mm512_mask_loadu_ps(_mm512_set1_ps(fill), mask, p));
    if constexpr (std::is_same_v<T, double>) return B(_mm512_mask_loadu_pd(_mm512_set1_pd(fill), static_cast<__mmask8>(mask), p));
#if defined(__AVX512BW__) && defined(__AVX512VL__)
    if constexpr (std::is_same_v<T, bfloat16>) {
      const auto fill_bits = static_cast<short>(bfloat16(fill).bits);
      return B(bf16_to_float(_mm256_mask_loadu_epi16(_mm256_set1_epi16(fill_bits), mask, p)));
    }
#endif
  }
#endif
#if defined(__AVX2__)
  if constexpr (register_bytes<B> == 32 && std::is_same_v<T, float>) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return B(_mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m)));
  }
  if constexpr (register_bytes<B> == 32 && std::is_same_v<T, double>) {
    const __m256i m = _mm256_cmpgt_epi64(_mm256_set1_epi64x(count), _mm256_setr_epi64x(0, 1, 2, 3));
    return B(_mm256_blendv_pd(_mm256_set1_pd(fill), _mm256_maskload_pd(p, m), _mm256_castsi256_pd(m)));
  }
#endif
  alignas(64) T buf[B::size];
  std::fill(buf, buf + B::size, static_cast<T>(fill));
  std::copy(p, p + count, buf);
  return load_batch(buf);
}
template <class T>
CERBERUS_ALWAYS_INLINE void store_partial(T* p, const batch_of<T>& v, Index count) {
  using B = batch_of<T>;
#if defined(__AVX512F__)
  if constexpr (register_bytes<B> == 64) {
    const auto mask = static_cast<__mmask16>((1u << count) - 1u);
    if constexpr (std::is_same_v<T, float>) return _mm512_mask_storeu_ps(p, mask, v);
    if constexpr (std::is_same_v<T, double>) return _mm512_mask_storeu_pd(p, static_cast<__mmask8>(mask), v);
#if defined(__AVX512BW__) && defined(__AVX512VL__)
    if constexpr (std::is_same_v<T, bfloat16>) return _mm256_mask_storeu_epi16(p, mask, float_to_bf16(v));
#endif
  }
#endif
#if defined(__AVX2__)
  if constexpr (register_bytes<B> == 32 && std::is_same_v<T, float>) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_maskstore_ps(p, m, v);
  }
  if constexpr (register_bytes<B> == 32 && std::is_same_v<T, double>) {
    const __m256i m = _mm256_cmpgt_epi64(_mm256_set1_epi64x(count), _mm256_setr_epi64x(0, 1, 2, 3));
    return _mm256_maskstore_pd(p, m, v);
  }
#endif
  alignas(64) T buf[B::size];
  store_batch(buf, v);
  std::copy(buf, buf + count, p);
}

// Walks [0, n) in steps of W: f(i, W, std::true_type) for each whole batch, then
// f(i, count, std::false_type) for a ragged end. The tag makes "whole" a compile-time fact in
// f's body (load_upto / store_upto below), so the main loop keeps no run-time test that would
// stop the compiler vectorising bf16 conversions.
template <Index W, class F>
CERBERUS_ALWAYS_INLINE void for_each_batch(Index n, F&& f) {
  Index i = 0;
  for (; i + W <= n; i += W) f(i, W, std::true_type{});
  if (i < n) f(i, n - i, std::false_type{});
}
template <class T, bool Whole>
CERBERUS_ALWAYS_INLINE batch_of<T> load_upto(const T* p, Index count, compute_t<T> fill, std::bool_constant<Whole>) {
  if constexpr (Whole) return load_batch(p);
  else return load_partial(p, count, fill);
}
template <class T, bool Whole>
CERBERUS_ALWAYS_INLINE void store_upto(T* p, const batch_of<T>& v, Index count, std::bool_constant<Whole>) {
  if constexpr (Whole) store_batch(p, v);
  else store_partial(p, v, count);
}

// Horizontal fold with any combiner (xsimd 8 has no reduce_max/reduce_min, and no swizzle
// that is spelled the same in later versions): halving steps over the lanes in memory, so the
// dependency chain is log2(W) combines deep rather than W - 1.
template <class C, class A, class F>
CERBERUS_ALWAYS_INLINE C horizontal_fold(const xsimd::batch<C, A>& b, F f) {
  alignas(64) C v[xsimd::batch<C, A>::size];
  b.store_aligned(v);
  for (std::size_t half = xsimd::batch<C, A>::size / 2; half >= 1; half /= 2)
    for (std::size_t k = 0; k < half; ++k) v[k] = f(v[k], v[k + half]);
  return v[0];
}

// Horizontal sum: `hadd` in xsimd 8, `reduce_add` from 9 on. xsimd 8's AVX-512 hadd uses an
// AVX-512DQ instruction, so a build with AVX-512F alone (-mavx512f) folds in memory instead.
template <class C, class A>
CERBERUS_ALWAYS_INLINE C horizontal_sum(const xsimd::batch<C, A>& b) {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_add(b);
#elif defined(__AVX512F__) && !defined(__AVX512DQ__)
  return horizontal_fold(b, [](C x, C y) { return x + y; });
#else
  return xsimd::hadd(b);
#endif
}

// NaN test for scalars and batches. Not `v != v` on batches: xsimd 8 compiles `!=` as an ordered
// comparison on AVX and AVX-512 (_CMP_NEQ_OQ), which is false for NaN. (`==` is ordered too,
// so `v == v` is a correct "not NaN".)
template <class V>
CERBERUS_ALWAYS_INLINE auto is_nan(const V& v) {
  if constexpr (std::is_floating_point_v<V>) return v != v;
  else return xsimd::isnan(v);
}

// ---- reducers: what is combined, and the type block results are folded into -----------------
// A reducer has `identity`, `combine` (scalars and batches of the compute type C), `fold` (a
// batch to a scalar), `Total` with `total_identity`, `absorb` (a block result into a Total)
// and `merge` (two Totals, the earlier first).
template <class C>
struct SumReducer {
  using Total = double;  // float lanes keep blocks short; the long sum runs in double
  static constexpr C identity = C(0);
  static constexpr Total total_identity = 0.0;
  template <class V>
  static CERBERUS_ALWAYS_INLINE V combine(const V& a, const V& b) {
    return a + b;
  }
  template <class A>
  static CERBERUS_ALWAYS_INLINE C fold(const xsimd::batch<C, A>& b) {
    return horizontal_sum(b);
  }
  static CERBERUS_ALWAYS_INLINE Total absorb(Total t, C v) { return t + static_cast<double>(v); }
  static CERBERUS_ALWAYS_INLINE Total merge(Total a, Total b) { return a + b; }
};

// Max (Greater) or min. Once an accumulator holds NaN it keeps it: `b` replaces `a` when it is
// more extreme or NaN, and nothing compares as more extreme than a NaN.
template <class C, bool Greater>
struct ExtremeReducer {
  using Total = C;
  static constexpr C identity = Greater ? -std::numeric_limits<C>::infinity() : std::numeric_limits<C>::infinity();
  static constexpr Total total_identity = identity;
  template <class V>
  static CERBERUS_ALWAYS_INLINE V combine(const V& a, const V& b) {
    if constexpr (std::is_floating_point_v<V>) {
      const bool take = (Greater ? b > a : b < a) | is_nan(b);  // `|`, not `||`: no branch to mispredict
      return take ? b : a;
    } else {
      return xsimd::select((Greater ? b > a : b < a) | is_nan(b), b, a);
    }
  }
  // NaN is checked once for the whole batch; the lanes are then folded with plain compares,
  // which compile to max/min instructions (combine's NaN test makes the compiler branch, and
  // across lanes those branches are unpredictable).
  template <class A>
  static CERBERUS_ALWAYS_INLINE C fold(const xsimd::batch<C, A>& b) {
    if (xsimd::any(is_nan(b))) return std::numeric_limits<C>::quiet_NaN();
    return horizontal_fold(b, [](C x, C y) { return (Greater ? x < y : y < x) ? y : x; });
  }
  static CERBERUS_ALWAYS_INLINE Total absorb(Total t, C v) { return combine(t, v); }
  static CERBERUS_ALWAYS_INLINE Total merge(Total a, Total b) { return combine(a, b); }
};
template <class C>
using MaxReducer = ExtremeReducer<C, true>;
template <class C>
using MinReducer = ExtremeReducer<C, false>;

// ---- argmax / argmin -------------------------------------------------------------------------
template <class C>
struct ArgBest {
  C value;
  Index index;
};

// True when v should replace `best`: strictly more extreme, or the first NaN (a held NaN is
// never replaced). Scalars and batches alike.
template <bool Greater, class V>
CERBERUS_ALWAYS_INLINE auto arg_better(const V& v, const V& best) {
  if constexpr (Greater) return (v > best) | (is_nan(v) & (best == best));
  else return (v < best) | (is_nan(v) & (best == best));
}

// The better of two candidates; equal values (or two NaNs) go to the lower index. Branch-free:
// on random data the comparisons are coin flips.
template <bool Greater, class C>
CERBERUS_ALWAYS_INLINE ArgBest<C> arg_pick(const ArgBest<C>& a, const ArgBest<C>& b) {
  const bool b_better = arg_better<Greater>(b.value, a.value), a_better = arg_better<Greater>(a.value, b.value);
  const bool take_b = b_better | (!a_better & (b.index < a.index));
  return {take_b ? b.value : a.value, take_b ? b.index : a.index};
}

// ---- one contiguous span ---------------------------------------------------------------------
// Reduces x[0, n) to a Total. Four independent accumulators keep the SIMD units busy (no add
// waits on the previous one); each block of reduce_block elements is folded into the Total.
template <class R, class T>
typename R::Total reduce_span(const T* x, Index n) {
  using C = compute_t<T>;
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  typename R::Total total = R::total_identity;
  for (Index b0 = 0; b0 < n; b0 += reduce_block) {
    const Index b1 = std::min(n, b0 + reduce_block);
    B a0(R::identity), a1(R::identity), a2(R::identity), a3(R::identity);
    Index i = b0;
    for (; i + 4 * W <= b1; i += 4 * W) {
      a0 = R::combine(a0, load_batch(x + i));
      a1 = R::combine(a1, load_batch(x + i + W));
      a2 = R::combine(a2, load_batch(x + i + 2 * W));
      a3 = R::combine(a3, load_batch(x + i + 3 * W));
    }
    for (; i + W <= b1; i += W) a0 = R::combine(a0, load_batch(x + i));
    C v = R::fold(R::combine(R::combine(a0, a1), R::combine(a2, a3)));
    for (; i < b1; ++i) v = R::combine(v, static_cast<C>(x[i]));
    total = R::absorb(total, v);
  }
  return total;
}

// 0, 1, 2, ... for lane numbers (enough for any SIMD width up to 64 lanes).
template <class C>
alignas(64) inline constexpr C lane_numbers[64] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                                   16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
                                                   32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
                                                   48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63};

// Value and index (relative to x) of the first extreme of x[0, n), n >= 1, in two passes: the
// extreme by the SIMD reducer, then the first element equal to it (the first NaN when it is
// NaN), a compare scan that stops at the first matching batch and picks the lowest matching
// lane with a branch-free min. Tracking indices in the lanes instead costs a select per batch
// and a fold of (value, index) pairs per row, which dominated rows of ~100 elements.
template <bool Greater, class T>
ArgBest<compute_t<T>> arg_span(const T* x, Index n) {
  using C = compute_t<T>;
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  static_assert(W <= 64);
  const C best = reduce_span<ExtremeReducer<C, Greater>>(x, n);
  const bool nan = is_nan(best);
  const B target(best), lanes = B::load_aligned(lane_numbers<C>), none(static_cast<C>(W));
  Index i = 0;
  for (; i + W <= n; i += W) {
    const B v = load_batch(x + i);
    const auto hit = nan ? is_nan(v) : v == target;
    if (xsimd::any(hit)) {
      const C lane = horizontal_fold(xsimd::select(hit, lanes, none), [](C a, C b) { return b < a ? b : a; });
      return {best, i + static_cast<Index>(lane)};
    }
  }
  while (nan ? !is_nan(static_cast<C>(x[i])) : static_cast<C>(x[i]) != best) ++i;  // best is in the tail
  return {best, i};
}

// ---- column strips: [rows, width] slabs reduced down the rows, vectorised across the width --
// x points at the strip's first element; row r starts at x + r * row_stride. `total` (width
// entries) is folded into, so pieces can continue each other.
template <class R, class T>
void reduce_strip(const T* x, Index rows, Index width, Index row_stride, typename R::Total* total) {
  using C = compute_t<T>;
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  alignas(64) C acc[reduce_strip_width];
  for (Index r0 = 0; r0 < rows; r0 += reduce_block_rows) {
    const Index r1 = std::min(rows, r0 + reduce_block_rows);
    std::fill(acc, acc + width, R::identity);
    Index r = r0;
    // Four rows are combined in registers before touching the accumulator: for narrow strips
    // the accumulator's load-add-store chain, not memory, would otherwise set the pace.
    for (; r + 4 <= r1; r += 4) {
      const T* q0 = x + r * row_stride;
      const T *q1 = q0 + row_stride, *q2 = q1 + row_stride, *q3 = q2 + row_stride;
      Index i = 0;
      for (; i + W <= width; i += W) {
        const B pair01 = R::combine(load_batch(q0 + i), load_batch(q1 + i));
        const B pair23 = R::combine(load_batch(q2 + i), load_batch(q3 + i));
        R::combine(B::load_aligned(acc + i), R::combine(pair01, pair23)).store_aligned(acc + i);
      }
      for (; i < width; ++i) {
        const C pair01 = R::combine(static_cast<C>(q0[i]), static_cast<C>(q1[i]));
        const C pair23 = R::combine(static_cast<C>(q2[i]), static_cast<C>(q3[i]));
        acc[i] = R::combine(acc[i], R::combine(pair01, pair23));
      }
    }
    for (; r < r1; ++r) {
      const T* row = x + r * row_stride;
      Index i = 0;
      for (; i + W <= width; i += W) R::combine(B::load_aligned(acc + i), load_batch(row + i)).store_aligned(acc + i);
      for (; i < width; ++i) acc[i] = R::combine(acc[i], static_cast<C>(row[i]));
    }
    for (Index i = 0; i < width; ++i) total[i] = R::absorb(total[i], acc[i]);
  }
}

// Narrow dense columns (inner < W, rows packed back to back): the slab is one contiguous
// stream in which element e belongs to column e % inner. A period of lcm(inner, W) elements
// is a whole number of batches and of rows, so lane j of batch k always meets column
// (k W + j) % inner, and the stream is read at full SIMD width.
template <class R, class T>
void reduce_narrow(const T* x, Index rows, Index inner, typename R::Total* total) {
  using C = compute_t<T>;
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  const Index period = inner / std::gcd(inner, W) * W;
  const Index batches = period / W;  // < W since inner < W
  const Index n = rows * inner;
  B acc[W];
  alignas(64) C lanes[W * W];
  Index e = 0;
  while (e + period <= n) {
    const Index e1 = e + std::min(reduce_block_rows, (n - e) / period) * period;
    for (Index k = 0; k < batches; ++k) acc[k] = B(R::identity);
    for (; e + 4 * period <= e1; e += 4 * period)  // four periods at once, as in reduce_strip
      for (Index k = 0; k < batches; ++k) {
        const T* q = x + e + k * W;
        const B pair01 = R::combine(load_batch(q), load_batch(q + period));
        const B pair23 = R::combine(load_batch(q + 2 * period), load_batch(q + 3 * period));
        acc[k] = R::combine(acc[k], R::combine(pair01, pair23));
      }
    for (; e < e1; e += period)
      for (Index k = 0; k < batches; ++k) acc[k] = R::combine(acc[k], load_batch(x + e + k * W));
    for (Index k = 0; k < batches; ++k) acc[k].store_aligned(lanes + k * W);
    for (Index j = 0; j < period; ++j) total[j % inner] = R::absorb(total[j % inner], lanes[j]);
  }
  for (; e < n; ++e) total[e % inner] = R::absorb(total[e % inner], static_cast<C>(x[e]));
}

// First extreme down the rows of a [rows, width] strip, per column; indices relative to the
// strip's first row (rows < 2^24).
template <bool Greater, class T>
void arg_strip(const T* x, Index rows, Index width, Index row_stride, ArgBest<compute_t<T>>* out) {
  using C = compute_t<T>;
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  alignas(64) C value[reduce_strip_width], at[reduce_strip_width];
  for (Index i = 0; i < width; ++i) value[i] = static_cast<C>(x[i]), at[i] = C(0);
  for (Index r = 1; r < rows; ++r) {
    const T* row = x + r * row_stride;
    const B here(static_cast<C>(r));
    Index i = 0;
    for (; i + W <= width; i += W) {
      const B v = load_batch(row + i), cur = B::load_aligned(value + i);
      const auto take = arg_better<Greater>(v, cur);
      xsimd::select(take, v, cur).store_aligned(value + i);
      xsimd::select(take, here, B::load_aligned(at + i)).store_aligned(at + i);
    }
    for (; i < width; ++i) {
      const C v = static_cast<C>(row[i]);
      const bool take = arg_better<Greater>(v, value[i]);
      value[i] = take ? v : value[i];
      at[i] = take ? static_cast<C>(r) : at[i];
    }
  }
  for (Index i = 0; i < width; ++i) out[i] = {value[i], static_cast<Index>(at[i])};
}

// ---- drivers: cut the work into units, run them over the shared pool, merge pieces in order --
// Rows: out(o) = reduce of the n elements of row o. unit(o, r0, len) reduces one piece and
// returns a Partial; merge(earlier, later) joins pieces; finish(o, Partial) writes row o.
template <class Partial, class Unit, class Merge, class Finish>
void drive_rows(Index rows, Index n, Unit&& unit, Merge&& merge, Finish&& finish) {
  const Index pieces = (n + reduce_piece - 1) / reduce_piece;
  const Index grain = std::max<Index>(1, reduce_grain / std::min(n, reduce_piece));
  if (pieces == 1) {
    parallel_for(0, rows, grain, [&](Index b, Index e) {
      for (Index o = b; o < e; ++o) finish(o, unit(o, Index(0), n));
    });
    return;
  }
  std::vector<Partial> partial(static_cast<std::size_t>(rows * pieces));
  parallel_for(0, rows * pieces, grain, [&](Index b, Index e) {
    for (Index u = b; u < e; ++u) {
      const Index r0 = (u % pieces) * reduce_piece;
      partial[static_cast<std::size_t>(u)] = unit(u / pieces, r0, std::min(reduce_piece, n - r0));
    }
  });
  parallel_for(0, rows, std::max<Index>(1, reduce_grain / pieces), [&](Index b, Index e) {
    for (Index o = b; o < e; ++o) {
      Partial t = partial[static_cast<std::size_t>(o * pieces)];
      for (Index p = 1; p < pieces; ++p) t = merge(t, partial[static_cast<std::size_t>(o * pieces + p)]);
      finish(o, t);
    }
  });
}

// Columns: out(o, i) = reduce over r of element (o, r, i). Units are (o, strip of `width`
// columns, piece of `piece_rows` rows); unit(o, r0, rows, i0, w, Partial* out) fills w
// Partials; finish(o, i, Partial) writes one output.
template <class Partial, class Unit, class Merge, class Finish>
void drive_columns(Index outer, Index n, Index inner, Index width, Index piece_rows, Unit&& unit, Merge&& merge,
                   Finish&& finish) {
  const Index strips = (inner + width - 1) / width;
  const Index pieces = (n + piece_rows - 1) / piece_rows;
  const Index units = outer * strips * pieces;
  const Index grain = std::max<Index>(1, reduce_grain / (std::min(n, piece_rows) * width));
  if (pieces == 1) {
    parallel_for(0, units, grain, [&](Index b, Index e) {
      Partial part[reduce_strip_width];
      for (Index u = b; u < e; ++u) {
        const Index o = u / strips, i0 = (u % strips) * width, w = std::min(width, inner - i0);
        unit(o, Index(0), n, i0, w, part);
        for (Index i = 0; i < w; ++i) finish(o, i0 + i, part[i]);
      }
    });
    return;
  }
  // partial[(o * pieces + p) * inner + i]
  std::vector<Partial> partial(static_cast<std::size_t>(outer * pieces * inner));
  parallel_for(0, units, grain, [&](Index b, Index e) {
    for (Index u = b; u < e; ++u) {
      const Index p = u % pieces, s = (u / pieces) % strips, o = u / (pieces * strips);
      const Index r0 = p * piece_rows, i0 = s * width;
      unit(o, r0, std::min(piece_rows, n - r0), i0, std::min(width, inner - i0),
           partial.data() + (o * pieces + p) * inner + i0);
    }
  });
  parallel_for(0, outer * inner, std::max<Index>(1, reduce_grain / pieces), [&](Index b, Index e) {
    for (Index j = b; j < e; ++j) {
      const Index o = j / inner, i = j % inner;
      Partial t = partial[static_cast<std::size_t>(o * pieces * inner + i)];
      for (Index p = 1; p < pieces; ++p) t = merge(t, partial[static_cast<std::size_t>((o * pieces + p) * inner + i)]);
      finish(o, i, t);
    }
  });
}

// Rows of a column piece: enough for ~reduce_piece elements per unit, a whole number of
// accumulator blocks (and so of narrow-stream periods, which divide W <= 64 rows).
inline Index column_piece_rows(Index width) {
  return std::max<Index>(reduce_block_rows, reduce_piece / width / reduce_block_rows * reduce_block_rows);
}

// Short rows: SIMD along a row of a few elements would leave most lanes idle and pay a
// horizontal fold per row. Instead tiles of up to short_row_tile rows are transposed into a
// [n, tile] block of the compute type, whose columns are then reduced vectorised across rows.
// fn(first_row, rows, block) runs once per tile; the tiles are spread over the pool.
template <class T, class Fn>
void for_short_row_tiles(const T* x, Index rows, Index n, Index row_stride, Fn&& fn) {
  using C = compute_t<T>;
  const Index tiles = (rows + short_row_tile - 1) / short_row_tile;
  parallel_for(0, tiles, std::max<Index>(1, reduce_grain / (short_row_tile * n)), [&](Index b, Index e) {
    alignas(64) C block[short_row_limit<T> * short_row_tile];
    for (Index t = b; t < e; ++t) {
      const Index o0 = t * short_row_tile, count = std::min(short_row_tile, rows - o0);
      for (Index r = 0; r < count; ++r) {
        const T* row = x + (o0 + r) * row_stride;
        for (Index j = 0; j < n; ++j) block[j * short_row_tile + r] = static_cast<C>(row[j]);
      }
      fn(o0, count, static_cast<const C*>(block));
    }
  });
}

// ---- the two kernels every reduction comes down to -------------------------------------------
// Element (o, r, i) of the input is x[o * outer_stride + r * reduce_stride + i]; i has unit
// stride, and when inner == 1 so must r. finish(o, i, Total) gets each output's total.
template <class R, class T, class Finish>
void reduce(const T* x, Index outer, Index n, Index inner, Index outer_stride, Index reduce_stride, Finish&& finish) {
  using Total = typename R::Total;
  constexpr Index W = static_cast<Index>(batch_of<T>::size);
  auto merge = [](Total a, Total b) { return R::merge(a, b); };
  if (inner == 1 && n < short_row_limit<T>) {
    for_short_row_tiles(x, outer, n, outer_stride, [&](Index o0, Index count, const compute_t<T>* block) {
      Total total[short_row_tile];
      std::fill(total, total + count, R::total_identity);
      reduce_strip<R>(block, n, count, short_row_tile, total);
      for (Index r = 0; r < count; ++r) finish(o0 + r, Index(0), total[r]);
    });
    return;
  }
  if (inner == 1) {
    drive_rows<Total>(
        outer, n, [&](Index o, Index r0, Index len) { return reduce_span<R>(x + o * outer_stride + r0, len); }, merge,
        [&](Index o, Total t) { finish(o, Index(0), t); });
    return;
  }
  const bool narrow = inner < W && reduce_stride == inner;
  const Index width = narrow ? inner : std::min(inner, reduce_strip_width);
  drive_columns<Total>(
      outer, n, inner, width, column_piece_rows(width),
      [&](Index o, Index r0, Index rows, Index i0, Index w, Total* out) {
        std::fill(out, out + w, R::total_identity);
        const T* base = x + o * outer_stride + r0 * reduce_stride + i0;
        if (narrow) reduce_narrow<R>(base, rows, inner, out);
        else reduce_strip<R>(base, rows, w, reduce_stride, out);
      },
      merge, finish);
}

// Same layout contract; finish(o, i, ArgBest) gets each output's value and index along r.
template <bool Greater, class T, class Finish>
void arg_reduce(const T* x, Index outer, Index n, Index inner, Index outer_stride, Index reduce_stride, Finish&& finish) {
  using Best = ArgBest<compute_t<T>>;
  auto merge = [](const Best& a, const Best& b) { return arg_pick<Greater>(a, b); };
  if (inner == 1 && n < short_row_limit<T>) {
    for_short_row_tiles(x, outer, n, outer_stride, [&](Index o0, Index count, const compute_t<T>* block) {
      Best best[short_row_tile];
      arg_strip<Greater>(block, n, count, short_row_tile, best);
      for (Index r = 0; r < count; ++r) finish(o0 + r, Index(0), best[r]);
    });
    return;
  }
  if (inner == 1) {
    drive_rows<Best>(
        outer, n,
        [&](Index o, Index r0, Index len) {
          Best b = arg_span<Greater>(x + o * outer_stride + r0, len);
          b.index += r0;
          return b;
        },
        merge, [&](Index o, const Best& b) { finish(o, Index(0), b); });
    return;
  }
  const Index width = std::min(inner, reduce_strip_width);
  drive_columns<Best>(
      outer, n, inner, width, column_piece_rows(width),
      [&](Index o, Index r0, Index rows, Index i0, Index w, Best* out) {
        arg_strip<Greater>(x + o * outer_stride + r0 * reduce_stride + i0, rows, w, reduce_stride, out);
        for (Index i = 0; i < w; ++i) out[i].index += r0;
      },
      merge, finish);
}

}  // namespace CERBERUS_SIMD_ABI
}  // namespace cpu_backend

namespace detail {

template <class E>
constexpr void check_reduction_operand() {
  static_assert(FloatElement<expr_value_t<E>>, "Reductions need float, double or bfloat16 elements; convert with .to<float>() first.");
}

// x's shape with the masked axes removed, or kept as extent 1.
inline Shape reduced_shape(const Shape& shape, std::uint32_t mask, bool keepdim) {
  Shape out;
  for (int d = 0; d < shape.rank(); ++d) {
    if (!(mask >> d & 1u)) out.push_back(shape[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

inline Index reduced_count(const Shape& shape, std::uint32_t mask) {
  Index n = 1;
  for (int d = 0; d < shape.rank(); ++d)
    if (mask >> d & 1u) n *= shape[d];
  return n;
}

inline std::string axes_string(std::uint32_t mask, int rank) {
  std::string s = "{";
  for (int d = 0; d < rank; ++d)
    if (mask >> d & 1u) s += (s.size() > 1 ? ", " : "") + std::to_string(d);
  return s + "}";
}

[[noreturn]] inline void throw_empty_reduction(const char* op, const Shape& shape, std::uint32_t mask) {
  throw ValueError(std::string("[") + op + "] cannot reduce shape " + shape.to_string() + " over axes " +
                   axes_string(mask, shape.rank()) + ": they hold no elements, and the " + op + " of nothing is undefined");
}

// A reduction brought to the kernels' [outer, n, inner] layout.
template <class T>
struct ReducePlan {
  Tensor<T, cpu> source;  // keeps the memory read alive: the input itself, or a contiguous copy
  Index outer = 1, n = 1, inner = 1, outer_stride = 0, reduce_stride = 1;
  // For each input axis that is kept: its stride in the kernel's dense [outer, inner] result.
  Strides result_strides;
};

// Reads the input in place when its memory, walked in stride order, is [kept, reduced, kept]
// with unit innermost stride (any contiguous tensor, transposes, row slices); otherwise copies
// it once with the kept axes first and the reduced axes last.
template <class T>
ReducePlan<T> plan_reduction(const Tensor<T, cpu>& x, std::uint32_t mask) {
  struct Dim {
    Index extent, stride;
    bool reduced;
    int axis;
  };
  const int rank = x.rank();
  ReducePlan<T> plan;
  plan.result_strides = Shape::filled(rank, 0);

  Dim dims[max_rank];
  int count = 0;
  for (int d = 0; d < rank; ++d)
    if (x.shape()[d] != 1) dims[count++] = {x.shape()[d], x.strides()[d], (mask >> d & 1u) != 0, d};
  std::stable_sort(dims, dims + count, [](const Dim& a, const Dim& b) { return a.stride > b.stride; });

  // Merge neighbours (in memory order) of the same kind that are laid out back to back.
  Dim groups[max_rank];
  int g = 0;
  for (int k = 0; k < count; ++k) {
    if (g > 0 && groups[g - 1].reduced == dims[k].reduced && groups[g - 1].stride == dims[k].stride * dims[k].extent) {
      groups[g - 1].extent *= dims[k].extent;
      groups[g - 1].stride = dims[k].stride;
    } else {
      groups[g++] = dims[k];
    }
  }
  int reduced_at = -1, reduced_groups = 0;
  for (int k = 0; k < g; ++k)
    if (groups[k].reduced) reduced_at = k, ++reduced_groups;
  const bool direct = reduced_groups == 1 && reduced_at <= 1 && g - reduced_at <= 2 && groups[g - 1].stride == 1;

  if (direct) {
    plan.source = x;
    if (reduced_at == 1) plan.outer = groups[0].extent, plan.outer_stride = groups[0].stride;
    plan.n = groups[reduced_at].extent;
    plan.reduce_stride = groups[reduced_at].stride;
    if (reduced_at + 1 < g) plan.inner = groups[reduced_at + 1].extent;
    // The kernel writes kept axes in memory order: outer group, then inner group.
    Index stride = 1;
    for (int k = count - 1; k >= 0; --k)
      if (!dims[k].reduced) plan.result_strides[dims[k].axis] = stride, stride *= dims[k].extent;
    return plan;
  }

  int order[max_rank];
  int k = 0;
  for (int d = 0; d < rank; ++d)
    if (!(mask >> d & 1u)) order[k++] = d;
  for (int d = 0; d < rank; ++d)
    if (mask >> d & 1u) order[k++] = d;
  plan.source = x.permute(std::span<const int>(order, static_cast<std::size_t>(rank))).contiguous();
  plan.n = reduced_count(x.shape(), mask);
  plan.outer = x.numel() / plan.n;
  plan.outer_stride = plan.n;
  Index stride = 1;
  for (int d = rank - 1; d >= 0; --d)
    if (!(mask >> d & 1u)) plan.result_strides[d] = stride, stride *= x.shape()[d];
  return plan;
}

// The kernel's dense result seen with the output's shape; copied only when the kept axes were
// read in another order than the output's (e.g. a transposed input).
template <class U, class T>
Tensor<U, cpu> arrange_result(const Tensor<U, cpu>& result, const ReducePlan<T>& plan, const Shape& in_shape, std::uint32_t mask,
                              bool keepdim) {
  Shape shape, strides;
  for (int d = 0; d < in_shape.rank(); ++d) {
    if (!(mask >> d & 1u)) shape.push_back(in_shape[d]), strides.push_back(plan.result_strides[d]);
    else if (keepdim) shape.push_back(1), strides.push_back(0);
  }
  const Tensor<U, cpu> view(result.storage(), 0, shape, strides);
  if (view.is_contiguous()) return Tensor<U, cpu>(result.storage(), 0, shape, contiguous_strides(shape));
  return view.clone();
}

enum class ReduceKind { sum, mean, max, min };

// Runs reducer R over a plan; finalize turns each output's Total into its value.
template <class R, class T, class Finalize>
void run_reduction(const ReducePlan<T>& plan, T* out, Finalize finalize) {
  cpu_backend::reduce<R>(plan.source.data(), plan.outer, plan.n, plan.inner, plan.outer_stride, plan.reduce_stride,
                         [&](Index o, Index i, typename R::Total t) {
                           out[o * plan.inner + i] = static_cast<T>(static_cast<compute_t<T>>(finalize(t)));
                         });
}

// Another device: x made contiguous and seen as [outer, n, inner] with the reduced axes in the
// middle (when they are not one run of neighbours, a copy with the kept axes first and the
// reduced ones last, inner = 1); the kernel's dense [outer, inner] result is then already in
// the output's order.
template <class T, class D>
Tensor<T, D> device_reduce_layout(const Tensor<T, D>& x, std::uint32_t mask, Index& outer, Index& n, Index& inner) {
  int first = -1, last = -1;
  for (int d = 0; d < x.rank(); ++d)
    if ((mask >> d & 1u) && x.shape()[d] != 1) first = first < 0 ? d : first, last = d;
  bool run = true;
  for (int d = first; first >= 0 && d <= last; ++d) run = run && ((mask >> d & 1u) || x.shape()[d] == 1);
  outer = 1, n = 1, inner = 1;
  if (run) {
    for (int d = 0; d < x.rank(); ++d) {
      if (mask >> d & 1u) n *= x.shape()[d];
      else if (first < 0 || d < first) outer *= x.shape()[d];
      else inner *= x.shape()[d];
    }
    return x.contiguous();
  }
  int order[max_rank];
  int k = 0;
  for (int d = 0; d < x.rank(); ++d)
    if (!(mask >> d & 1u)) order[k++] = d, outer *= x.shape()[d];
  for (int d = 0; d < x.rank(); ++d)
    if (mask >> d & 1u) order[k++] = d, n *= x.shape()[d];
  return x.permute(std::span<const int>(order, static_cast<std::size_t>(x.rank()))).contiguous();
}

template <ReduceKind K, class E>
Tensor<expr_value_t<E>, expr_device_t<E>> reduce_values(const E& expr, const Axes& axes, bool keepdim, const char* op) {
  check_reduction_operand<E>();
  using T = expr_value_t<E>;
  using D = expr_device_t<E>;
  if constexpr (!std::is_same_v<D, cpu>) {
    const Tensor<T, D> x(expr);
    const std::uint32_t mask = axes.mask(x.shape(), op);
    const Shape out_shape = reduced_shape(x.shape(), mask, keepdim);
    const Index count = reduced_count(x.shape(), mask);
    if (count == 0) {
      if constexpr (K != ReduceKind::sum) throw_empty_reduction(op, x.shape(), mask);
      auto zeros = Tensor<T, D>::empty(out_shape);
      zeros.fill(T(0));
      return zeros;
    }
    if (out_shape.numel() == 0) return Tensor<T, D>::empty(out_shape);
    if (count == 1) return x.clone().view(out_shape);
    Index outer, n, inner;
    const Tensor<T, D> src = device_reduce_layout(x, mask, outer, n, inner);
    auto out = Tensor<T, D>::empty(out_shape);
    OpKernels<D>::template reduce<static_cast<int>(K)>(src.data(), out.data(), outer, n, inner, op);
    return out;
  } else {
  using C = compute_t<T>;
  const Tensor<T, cpu> x(expr);
  const std::uint32_t mask = axes.mask(x.shape(), op);
  const Shape out_shape = reduced_shape(x.shape(), mask, keepdim);
  const Index count = reduced_count(x.shape(), mask);
  if (count == 0) {
    if constexpr (K != ReduceKind::sum) throw_empty_reduction(op, x.shape(), mask);
    auto zeros = Tensor<T, cpu>::empty(out_shape);
    zeros.fill(T(0));
    return zeros;
  }
  if (out_shape.numel() == 0) return Tensor<T, cpu>::empty(out_shape);
  if (count == 1) return x.clone().view(out_shape);  // each output is its one input element

  const ReducePlan<T> plan = plan_reduction(x, mask);
  auto result = Tensor<T, cpu>::empty(Shape{plan.outer * plan.inner});
  T* out = result.data();
  if constexpr (K == ReduceKind::sum) {
    run_reduction<cpu_backend::SumReducer<C>>(plan, out, [](double t) { return t; });
  } else if constexpr (K == ReduceKind::mean) {
    run_reduction<cpu_backend::SumReducer<C>>(plan, out, [count](double t) { return t / static_cast<double>(count); });
  } else if constexpr (K == ReduceKind::max) {
    run_reduction<cpu_backend::MaxReducer<C>>(plan, out, [](C t) { return t; });
  } else {
    run_reduction<cpu_backend::MinReducer<C>>(plan, out, [](C t) { return t; });
  }
  return arrange_result(result, plan, x.shape(), mask, keepdim);
  }
}

// argmax (Greater) / argmin along `axis`, or over the flattened tensor when `flat`.
template <bool Greater, class E>
Tensor<std::int64_t, expr_device_t<E>> reduce_index(const E& expr, int axis, bool flat, bool keepdim, const char* op) {
  check_reduction_operand<E>();
  using T = expr_value_t<E>;
  using D = expr_device_t<E>;
  if constexpr (!std::is_same_v<D, cpu>) {
    Tensor<T, D> x(expr);
    if (flat) {
      if (x.numel() == 0) throw_empty_reduction(op, x.shape(), x.rank() == 0 ? 0u : (~0u >> (32 - x.rank())));
      x = x.contiguous().reshape({x.numel()});
      axis = 0;
      keepdim = false;
    }
    const std::uint32_t mask = 1u << x.shape().axis(axis, op);
    const Shape out_shape = reduced_shape(x.shape(), mask, keepdim);
    const Index count = reduced_count(x.shape(), mask);
    if (count == 0) throw_empty_reduction(op, x.shape(), mask);
    auto out = Tensor<std::int64_t, D>::empty(out_shape);
    if (out_shape.numel() == 0 || count == 1) {
      out.fill(0);
      return out;
    }
    Index outer, n, inner;
    const Tensor<T, D> src = device_reduce_layout(x, mask, outer, n, inner);
    OpKernels<D>::template arg_reduce<Greater>(src.data(), out.data(), outer, n, inner, op);
    return out;
  } else {
  Tensor<T, cpu> x(expr);
  if (flat) {
    if (x.numel() == 0) throw_empty_reduction(op, x.shape(), x.rank() == 0 ? 0u : (~0u >> (32 - x.rank())));
    x = x.contiguous().reshape({x.numel()});  // flat indices count in row-major order
    axis = 0;
    keepdim = false;
  }
  const std::uint32_t mask = 1u << x.shape().axis(axis, op);
  const Shape out_shape = reduced_shape(x.shape(), mask, keepdim);
  const Index count = reduced_count(x.shape(), mask);
  if (count == 0) throw_empty_reduction(op, x.shape(), mask);
  auto zeros = Tensor<std::int64_t, cpu>::empty(out_shape);
  if (out_shape.numel() == 0 || count == 1) {
    zeros.fill(0);
    return zeros;
  }
  const ReducePlan<T> plan = plan_reduction(x, mask);
  auto result = Tensor<std::int64_t, cpu>::empty(Shape{plan.outer * plan.inner});
  std::int64_t* out = result.data();
  cpu_backend::arg_reduce<Greater>(plan.source.data(), plan.outer, plan.n, plan.inner, plan.outer_stride, plan.reduce_stride,
                                   [&](Index o, Index i, const auto& best) { out[o * plan.inner + i] = best.index; });
  return arrange_result(result, plan, x.shape(), mask, keepdim);
  }
}

}  // namespace detail

// ---- public reductions -------------------------------------------------------------------------
// sum(x) over every axis (rank-0 result), sum(x, 1), sum(x, {0, 2}, true), ...
namespace detail {

// The axes where `kept` has extent 1 and `full` does not (the reduced ones).
inline std::vector<int> kept_axes(const Shape& kept, const Shape& full) {
  std::vector<int> axes;
  for (int d = 0; d < full.rank(); ++d)
    if (kept[d] == 1 && full[d] != 1) axes.push_back(d);
  return axes;  // may be empty: then nothing is reduced
}

// Runs a value reduction and, when its input requires grad, records its backward.
// backward saves: the input handle and, for max/min, the output (to find where the extremes were).
template <ReduceKind K, class E>
Tensor<expr_value_t<E>, expr_device_t<E>> differentiable_reduce(const E& expr, const Axes& axes, bool keepdim, const char* op) {
  using T = expr_value_t<E>;
  using D = expr_device_t<E>;
  const Tensor<T, D> x(expr);  // a fused expression records its own node here
  Tensor<T, D> out;
  {
    NoGradGuard forward_only;
    out = reduce_values<K>(x, axes, keepdim, op);
  }
  if (autograd::any_requires_grad(x)) {
    const Shape kept = reduced_shape(x.shape(), axes.mask(x.shape(), op), true);  // reduced axes as extent 1
    const Index count = kept.numel() == 0 ? 0 : x.numel() / kept.numel();
    autograd::record<T, D>(out, op, {x}, [x, kept, count, out](const Tensor<T, D>& g) {
      const Tensor<T, D> gk = g.reshape(kept);
      if constexpr (K == ReduceKind::sum) {
        return std::vector<Tensor<T, D>>{gk.expand(x.shape()).contiguous()};
      } else if constexpr (K == ReduceKind::mean) {
        return std::vector<Tensor<T, D>>{Tensor<T, D>(gk.expand(x.shape()) / static_cast<double>(count))};
      } else {  // max / min: the extreme elements share the gradient evenly (ties split it)
        const Tensor<T, D> hit = equal(x, out.reshape(kept));
        const Tensor<T, D> ties = reduce_values<ReduceKind::sum>(hit, Axes(std::vector<int>(kept_axes(kept, x.shape()))), true, "sum");
        return std::vector<Tensor<T, D>>{Tensor<T, D>(hit * gk / ties)};
      }
    });
  }
  return out;
}

}  // namespace detail

// Sum over `axes` (all axes by default). Differentiable.
template <Expression E>
Tensor<expr_value_t<E>, expr_device_t<E>> sum(const E& x, const Axes& axes = {}, bool keepdim = false) {
  return detail::differentiable_reduce<detail::ReduceKind::sum>(x, axes, keepdim, "sum");
}
// Mean over `axes` (all axes by default). Differentiable.
template <Expression E>
Tensor<expr_value_t<E>, expr_device_t<E>> mean(const E& x, const Axes& axes = {}, bool keepdim = false) {
  return detail::differentiable_reduce<detail::ReduceKind::mean>(x, axes, keepdim, "mean");
}
// Maximum over `axes`; NaN propagates. Differentiable: tied maxima share the gradient.
template <Expression E>
Tensor<expr_value_t<E>, expr_device_t<E>> max(const E& x, const Axes& axes = {}, bool keepdim = false) {
  return detail::differentiable_reduce<detail::ReduceKind::max>(x, axes, keepdim, "max");
}
// Minimum over `axes`; NaN propagates. Differentiable: tied minima share the gradient.
template <Expression E>
Tensor<expr_value_t<E>, expr_device_t<E>> min(const E& x, const Axes& axes = {}, bool keepdim = false) {
  return detail::differentiable_reduce<detail::ReduceKind::min>(x, axes, keepdim, "min");
}

// Index of the first maximum along `axis` (int64, the axis removed unless keepdim).
template <Expression E>
Tensor<std::int64_t, expr_device_t<E>> argmax(const E& x, int axis, bool keepdim = false) {
  return detail::reduce_index<true>(x, axis, false, keepdim, "argmax");
}
// Row-major index of the first maximum of the whole tensor (rank-0 result).
template <Expression E>
Tensor<std::int64_t, expr_device_t<E>> argmax(const E& x) {
  return detail::reduce_index<true>(x, 0, true, false, "argmax");
}
template <Expression E>
Tensor<std::int64_t, expr_device_t<E>> argmin(const E& x, int axis, bool keepdim = false) {
  return detail::reduce_index<false>(x, axis, false, keepdim, "argmin");
}
template <Expression E>
Tensor<std::int64_t, expr_device_t<E>> argmin(const E& x) {
  return detail::reduce_index<false>(x, 0, true, false, "argmin");
}

}  // namespace cerberus
