// In-place updates of several arrays in one pass, and a double-precision sum of squares: the CPU
// kernels behind the optimizers (optim/) and gradient clipping.
//
// The expression evaluator writes one output per pass. An Adam step writes three (the parameter
// and both moments) from four inputs; as expressions that takes four passes that read the
// gradient and the moments again (48 bytes per parameter instead of 28). update_elements runs a
// functor over element i of every array at once, so each byte is read and written once.
#pragma once

#include <algorithm>
#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "cerberus/backend/cpu/backend.hpp"
#include "cerberus/backend/cpu/thread_pool.hpp"
#include "cerberus/core/bfloat16.hpp"
#include "cerberus/core/config.hpp"
#include "cerberus/core/dtype.hpp"

namespace cerberus::cpu_backend {
inline namespace CERBERUS_SIMD_ABI {

namespace update_detail {

// bf16 arrays (the weights and gradients of a mixed-precision model) are read into float and
// stored rounded to nearest even, through bfloat16's own conversions.
template <class V, class P>
CERBERUS_ALWAYS_INLINE V load(P* p, Index i) {
  if constexpr (std::is_arithmetic_v<V>) {
    return static_cast<V>(p[i]);
  } else if constexpr (std::is_same_v<std::remove_const_t<P>, bfloat16>) {
    alignas(64) float wide[V::size];
    for (std::size_t k = 0; k < V::size; ++k) wide[k] = static_cast<float>(p[i + static_cast<Index>(k)]);
    return V::load_aligned(wide);
  } else {
    return V::load_unaligned(p + i);
  }
}

// Only arrays passed as non-const pointers are outputs.
template <class V, class P>
CERBERUS_ALWAYS_INLINE void store(P* p, Index i, const V& v) {
  if constexpr (!std::is_const_v<P>) {
    if constexpr (std::is_arithmetic_v<V>) {
      p[i] = v;
    } else if constexpr (std::is_same_v<P, bfloat16>) {
      alignas(64) float wide[V::size];
      v.store_aligned(wide);
      for (std::size_t k = 0; k < V::size; ++k) p[i + static_cast<Index>(k)] = bfloat16(wide[k]);
    } else {
      v.store_unaligned(p + i);
    }
  }
}

template <class P>
inline constexpr bool update_element_v = std::is_floating_point_v<std::remove_const_t<P>> || std::is_same_v<std::remove_const_t<P>, bfloat16>;

template <class V, class Fn, class... P, std::size_t... K>
CERBERUS_ALWAYS_INLINE void apply_at(const Fn& fn, Index i, std::index_sequence<K...>, P*... arrays) {
  std::tuple<decltype(load<V>(arrays, i))...> values{load<V>(arrays, i)...};
  fn(std::get<K>(values)...);
  (store<V>(arrays, i, std::get<K>(values)), ...);
}

}  // namespace update_detail

// For every i in [0, n): calls fn(x0, x1, ...) where xk holds element i of arrays[k] (a float, or
// an xsimd batch of consecutive elements), as an lvalue, then stores back the arrays given as
// non-const pointers. Arrays are contiguous and share one compute type C: float, double, or
// float for bfloat16 arrays (read into float, stored rounded). As in evaluate(), work is split in
// blocks of W elements, so an element takes the SIMD or the scalar path by its index alone:
// results are bitwise the same for any thread count.
template <class Fn, class First, class... Rest>
void update_elements(Index n, const Fn& fn, First* first, Rest*... rest) {
  static_assert(update_detail::update_element_v<First> && (update_detail::update_element_v<Rest> && ...),
                "update_elements: arrays of float, double or bfloat16 only.");
  using C = compute_t<std::remove_const_t<First>>;
  static_assert((std::is_same_v<C, compute_t<std::remove_const_t<Rest>>> && ...),
                "update_elements: every array must have the same compute type (float and bfloat16 arrays mix, double stays alone).");
  using Seq = std::index_sequence_for<First, Rest...>;
#if CERBERUS_CPU_SIMD
  using Batch = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(Batch::size);
#else
  constexpr Index W = 16;
#endif
  if (n <= 0) return;
  const Index blocks = (n + W - 1) / W;
  parallel_for(0, blocks, elementwise_grain / W, [&](Index b, Index e) {
    Index i = b * W;
    const Index end = std::min(n, e * W);
#if CERBERUS_CPU_SIMD
    for (; i + W <= end; i += W) update_detail::apply_at<Batch>(fn, i, Seq{}, first, rest...);
#endif
    for (; i < end; ++i) update_detail::apply_at<C>(fn, i, Seq{}, first, rest...);
  });
}

// Sum of x[i]^2 in double. Fixed chunks, each summed in 8 interleaved lanes (which the compiler
// vectorises without reassociating), chunk sums added in order: the result depends on n and the
// data only, never on the thread count.
template <class T>
double sum_of_squares(const T* x, Index n) {
  constexpr Index chunk = 64 * 1024;
  if (n <= 0) return 0.0;
  const Index chunks = (n + chunk - 1) / chunk;
  auto chunk_sum = [x, n](Index c) {
    const Index b = c * chunk, e = std::min(n, b + chunk);
    double lane[8] = {};
    Index i = b;
    for (; i + 8 <= e; i += 8)
      for (int k = 0; k < 8; ++k) {
        const double v = static_cast<double>(x[i + k]);
        lane[k] += v * v;
      }
    for (int k = 0; i < e; ++i, ++k) {
      const double v = static_cast<double>(x[i]);
      lane[k] += v * v;
    }
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  };
  if (chunks == 1) return chunk_sum(0);
  std::vector<double> sums(static_cast<std::size_t>(chunks));
  parallel_for(0, chunks, 1, [&](Index b, Index e) {
    for (Index c = b; c < e; ++c) sums[static_cast<std::size_t>(c)] = chunk_sum(c);
  });
  double total = 0;
  for (const double s : sums) total += s;
  return total;
}

}  // namespace CERBERUS_SIMD_ABI
}  // namespace cerberus::cpu_backend
