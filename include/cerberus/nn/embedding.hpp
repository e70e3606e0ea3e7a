// nn::Embedding: a [V, C] table of rows looked up by integer ids.
//
// Legend: V = num_embeddings (vocabulary), C = embedding_dim, B = batch, T = time.
//   parameters: weight [V, C]
//   forward(ids int64 [B, T]) -> [B, T, C]   (any id shape [...] -> [..., C])
// Initialisation (GPT-2): weight ~ normal(0, 0.02). The gradient is a scatter-add into [V, C]
// (ops/embedding.hpp). The same table serves as a tied LM head: logits = hidden W^T.
#pragma once

#include <cstdint>

#include "cerberus/core/random.hpp"
#include "cerberus/nn/module.hpp"
#include "cerberus/ops/embedding.hpp"
#include "cerberus/tensor/factories.hpp"

namespace cerberus::nn {

template <Element T = float, Device D = cpu>
class Embedding : public Module<Embedding<T, D>, T, D> {
 public:
  Tensor<T, D> weight;  // [V, C]

  Embedding() = default;
  Embedding(Index num_embeddings, Index embedding_dim, Generator& gen, double init_std = 0.02)
      : weight(detail::make_parameter(normal<T, D>(Shape{num_embeddings, embedding_dim}, 0.0, init_std, gen))) {}

  Index num_embeddings() const { return weight.size(0); }
  Index embedding_dim() const { return weight.size(1); }

  Tensor<T, D> forward(const Tensor<std::int64_t, D>& ids) const { return embedding(weight, ids); }
  Tensor<T, D> operator()(const Tensor<std::int64_t, D>& ids) const { return forward(ids); }

  template <class F>
  void visit_own_parameters(F&& f) {
    f("weight", weight);
  }
};

}  // namespace cerberus::nn
