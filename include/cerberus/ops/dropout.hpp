// Dropout: inverted, seeded, reproducible.
//
// Shapes: dropout(x, p, training, gen)   x [...]  ->  [...]  (any shape, e.g. [B, T, C])
//
// At train time each element is zeroed with probability p and the survivors are scaled by
// 1 / (1 - p), so the expected value is unchanged and eval mode is the identity (x itself is
// returned, no copy, no random numbers drawn). p = 1 zeroes everything.
//
// Randomness: element i (in x's row-major order, whatever its strides) keeps its value iff
// u_i >= p, where u_i is the 24-bit uniform from lane i % 4 of Philox block (first + i / 4), and
// `first` is reserved from the generator once per call. The mask is therefore a pure function of
// (seed, first, i): the same for any thread count and any device, and a generator restored to a
// saved (seed, offset) replays it exactly.
//
// The output is x * (mask * scale) by multiplication, as in PyTorch: a NaN or inf in x stays NaN
// at dropped positions, which surfaces a bad input rather than hiding it.
//
// Device split: the public function sees only Tensors and calls DropoutKernels<D>::apply with raw
// pointers and (seed, first, p); Philox is a host/device function, so a CUDA specialisation
// draws the identical mask.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/autograd/grad_mode.hpp"
#include "cerberus/autograd/node.hpp"
#include "cerberus/backend/cpu/backend.hpp"
#include "cerberus/backend/cpu/thread_pool.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/core/random.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus {

// Dropout kernels, specialised per device.
//   apply(x, out, n, seed, first, p, scale)   out[i] = x[i] * (u_i < p ? 0 : scale), x and out contiguous
// The forward applies it to x and the backward to dy: the same mask both times.
template <class D>
struct DropoutKernels {
  static_assert(sizeof(D) == 0, "No dropout kernels for this device: include the device's backend header (cuda: compile with nvcc).");
};

// Elements drawn from one Philox block (4 x 32 bits, one 24-bit uniform per element).
inline constexpr Index dropout_elements_per_block = 4;

namespace cpu_backend {
inline namespace CERBERUS_SIMD_ABI {

template <class T>
void dropout_apply(const T* x, T* out, Index n, std::uint64_t seed, std::uint64_t first, float p, compute_t<T> scale) {
  using C = compute_t<T>;
  constexpr Index K = dropout_elements_per_block;
  // A task handles whole blocks, so which numbers an element gets never depends on the split.
  // The partial last block is handled apart from the loop: a run-time lane index into r.v
  // anywhere in the loop keeps r in memory and made GCC 12's loop 4x slower.
  parallel_for(0, (n + K - 1) / K, 4096, [=](Index b, Index e) {
    const Index whole = std::min(e, n / K);
    for (Index blk = b; blk < whole; ++blk) {  // whole blocks: fixed trip count, unrolled
      const auto r = Philox::generate(seed, first + static_cast<std::uint64_t>(blk));
      for (Index lane = 0; lane < K; ++lane)
        out[blk * K + lane] = static_cast<T>(static_cast<C>(x[blk * K + lane]) * (Philox::to_unit_float(r.v[lane]) < p ? C(0) : scale));
    }
    if (whole < e) {  // the last block, partial
      const auto r = Philox::generate(seed, first + static_cast<std::uint64_t>(whole));
      for (Index i = whole * K; i < n; ++i)
        out[i] = static_cast<T>(static_cast<C>(x[i]) * (Philox::to_unit_float(r.v[i - whole * K]) < p ? C(0) : scale));
    }
  });
}

}  // namespace CERBERUS_SIMD_ABI
}  // namespace cpu_backend

template <>
struct DropoutKernels<cpu> {
  template <class T>
  static void apply(const T* x, T* out, Index n, std::uint64_t seed, std::uint64_t first, float p, compute_t<T> scale) {
    cpu_backend::dropout_apply(x, out, n, seed, first, p, scale);
  }
};

// Inverted dropout of x with drop probability p (0 <= p <= 1); the identity when !training.
//
// saves: (seed, first block, p) -- not the mask. The backward regenerates the mask from Philox
// (dy * mask * scale, the same kernel as the forward). Why regenerate rather than store: dropout
// follows most layers of a transformer, so a stored mask would cost memory proportional to the
// activations (a byte per element at best) from the forward until the backward, while
// regenerating costs one Philox block per 4 elements (here about 1.5x a plain x * 2 over the
// same tensor, one thread), and on a GPU it is what fused attention kernels do anyway. The
// counter-based generator makes the regenerated mask bitwise identical to the forward's.
template <FloatElement T, Device D>
Tensor<T, D> dropout(const Tensor<T, D>& x, double p, bool training, Generator& gen = default_generator()) {
  if (!(p >= 0.0 && p <= 1.0)) throw ValueError("[dropout] probability p must be in [0, 1], got " + std::to_string(p));
  if (!x.defined()) throw ValueError("[dropout] x is an undefined tensor");
  if (!training || p == 0.0) return x;
  using C = compute_t<T>;
  const Index n = x.numel();
  const std::uint64_t seed = gen.seed();
  const std::uint64_t first = gen.reserve(static_cast<std::uint64_t>((n + dropout_elements_per_block - 1) / dropout_elements_per_block));
  const float pf = static_cast<float>(p);
  const C scale = p < 1.0 ? static_cast<C>(1.0 / (1.0 - p)) : C(0);  // p = 1: every element is dropped anyway
  Tensor<T, D> out = Tensor<T, D>::empty(x.shape());
  // Contiguous input: the mask follows the logical (row-major) element order, not the storage's.
  if (n > 0) DropoutKernels<D>::apply(x.detach().contiguous().data(), out.data(), n, seed, first, pf, scale);
  if (autograd::any_requires_grad(x))
    autograd::record<T, D>(out, "dropout", {x}, [seed, first, pf, scale](const Tensor<T, D>& g) {
      Tensor<T, D> dx = Tensor<T, D>::empty(g.shape());
      if (g.numel() > 0) DropoutKernels<D>::apply(g.contiguous().data(), dx.data(), g.numel(), seed, first, pf, scale);
      return std::vector<Tensor<T, D>>{dx};
    });
  return out;
}

}  // namespace cerberus
