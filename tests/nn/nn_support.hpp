// Shared by the nn tests: a tiny decoder config and seeded random token ids.
#pragma once

#include <cstdint>
#include <vector>

#include "cerberus/cerberus.hpp"

namespace cerberus::nn_test {

inline nn::TransformerConfig tiny() {
  nn::TransformerConfig c;
  c.vocab_size = 23;
  c.d_model = 16;
  c.n_layers = 2;
  c.n_heads = 4;
  c.d_ff = 32;
  c.max_seq_len = 24;
  return c;
}

// [b, t] ids drawn uniformly from [0, vocab) by a generator seeded with `seed`.
inline Tensor<std::int64_t> random_ids(Index b, Index t, Index vocab, std::uint64_t seed) {
  Generator gen(seed);
  std::vector<std::int64_t> v(static_cast<std::size_t>(b * t));
  for (auto& x : v) x = static_cast<std::int64_t>(gen.next_u32() % static_cast<std::uint32_t>(vocab));
  return from_vector<std::int64_t>(v, Shape{b, t});
}

}  // namespace cerberus::nn_test
