// Embedding lookup: rows of a [V, C] table picked by integer ids.
//
// Shapes (legend: V = vocabulary, C = channels):
//   embedding(weight, ids, padding_idx)   weight [V, C], ids [...] (int64, e.g. [B, T])  ->  [..., C]
// Ids must lie in 0..V-1. padding_idx (optional, negative counts from V) marks a row whose
// gradient is always zero, as in torch.nn.functional.embedding; its forward value is read as
// usual (initialise that row to zeros if padding should embed to zero).
//
// Backward: a scatter-add of dy [K, C] (K = number of ids) into a dense [V, C] gradient; rows hit
// by several ids accumulate. Done without races or atomics: ids are bucketed by row (a stable
// counting sort) and each task owns a range of vocabulary rows, summing that row's
// contributions in id order, so the gradient is bitwise the same for any thread count. bf16
// sums run in float and are rounded once per row element. (Shared with index_select's backward:
// IndexingKernels<D>::index_add in ops/indexing.hpp.)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cerberus/autograd/grad_mode.hpp"
#include "cerberus/autograd/node.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/ops/indexing.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus {

// saves: the ids (the contiguous handle, not a copy), V and padding_idx; no activations.
template <FloatElement T, Device D>
Tensor<T, D> embedding(const Tensor<T, D>& weight, const Tensor<std::int64_t, D>& ids,
                       std::optional<Index> padding_idx = std::nullopt) {
  detail::require_defined("embedding", weight, "weight");
  detail::require_defined("embedding", ids, "ids");
  if (weight.rank() != 2)
    throw ShapeError("[embedding] weight must have shape [V, C], got " + weight.shape().to_string() + " (ids have shape " +
                     ids.shape().to_string() + ")");
  const Index V = weight.shape()[0], C = weight.shape()[1];
  if (ids.rank() + 1 > max_rank)
    throw ShapeError("[embedding] ids of shape " + ids.shape().to_string() + " would give an output of rank " +
                     std::to_string(ids.rank() + 1) + ", above the maximum " + std::to_string(max_rank));
  Index skip = -1;  // the row whose gradient is dropped; -1 = none
  if (padding_idx) {
    if (*padding_idx < -V || *padding_idx >= V)
      throw IndexError("[embedding] padding_idx " + std::to_string(*padding_idx) + " is out of range for weight of shape " +
                       weight.shape().to_string() + "; valid values are " + std::to_string(-V) + ".." + std::to_string(V - 1));
    skip = *padding_idx < 0 ? *padding_idx + V : *padding_idx;
  }
  const Tensor<std::int64_t, D> flat = ids.contiguous();
  detail::check_index_range("embedding", flat, V, "weight of shape " + weight.shape().to_string() + " (V = " + std::to_string(V) + " rows)");
  const Index K = flat.numel();
  Shape out_shape = ids.shape();
  out_shape.push_back(C);
  Tensor<T, D> out = Tensor<T, D>::empty(out_shape);
  if (out.numel() > 0)
    IndexingKernels<D>::index_select(weight.detach().contiguous().data(), out.data(), Index(1), V, C, flat.data(), K);
  if (autograd::any_requires_grad(weight))
    autograd::record<T, D>(out, "embedding", {weight}, [flat, V, C, K, skip](const Tensor<T, D>& g) {
      Tensor<T, D> dw = Tensor<T, D>::empty(Shape{V, C});
      if (dw.numel() > 0) IndexingKernels<D>::index_add(g.contiguous().data(), dw.data(), Index(1), V, C, flat.data(), K, skip);
      return std::vector<Tensor<T, D>>{dw};
    });
  return out;
}

}  // namespace cerberus
