// nn::Packing: several short examples laid side by side in one row of a batch (sequence
// packing), so a batch of short examples wastes no compute on padding.
//
// Legend: B = rows, T = time.
//   segments   int64 [B, T]  which packed example each token belongs to (any ids; equal = same
//                            example). Attention never crosses examples: a query attends only
//                            keys of its own segment (AttentionOptions::segments).
//   positions  int64 [B, T]  each token's position inside its own example (restarts at 0 at
//                            every example). Learned and sinusoidal positions add the table row
//                            of this position; RoPE rotates q and k by it.
// Either may be undefined: no segments = one example per row; no positions = 0 .. T-1.
// With both, a packed row gives every example exactly the hidden states it gets alone
// (tests/nn/test_packing.cpp). Padding (key_padding) still applies on top.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#include "cerberus/core/error.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus::nn {

template <Device D = cpu>
struct Packing {
  Tensor<std::int64_t, D> segments;   // [B, T] or undefined
  Tensor<std::int64_t, D> positions;  // [B, T] or undefined

  bool defined() const { return segments.defined() || positions.defined(); }
};

namespace detail {

// The packing tensors of a stack's input must have the ids' shape [B, T].
template <Device D>
void check_packing(const char* op, const Shape& ids, const Packing<D>& packing) {
  auto check = [&](const Tensor<std::int64_t, D>& t, const char* what) {
    if (t.defined() && !(t.shape() == ids))
      throw ShapeError(std::string("[") + op + "] packing " + what + " " + t.shape().to_string() + " must have the ids' shape " +
                       ids.to_string());
  };
  check(packing.segments, "segments");
  check(packing.positions, "positions");
}

}  // namespace detail
}  // namespace cerberus::nn
