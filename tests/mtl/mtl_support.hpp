// Shared helpers of the mtl tests: a tiny trunk configuration and mixed batches.
#pragma once

#include <cstdint>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting/static.hpp"

namespace mtl_test {

using namespace cerberus;

inline nn::TransformerConfig tiny_config(Index layers = 2) {
  nn::TransformerConfig c;
  c.vocab_size = 11;
  c.d_model = 8;
  c.n_layers = layers;
  c.n_heads = 2;
  c.d_ff = 12;
  c.max_seq_len = 6;
  c.tie_embeddings = true;
  return c;
}

// A batch of B examples of length T: ids from a seed, the given tasks, right padding of
// `pad[i]` tokens in row i, labels / token labels / values filled for every row.
template <Element T>
mtl::Batch<T> make_batch(const std::vector<std::int64_t>& tasks, Index t, const std::vector<Index>& pad, std::uint64_t seed,
                         Index vocab = 11, Index classes = 2) {
  const Index b = static_cast<Index>(tasks.size());
  Generator gen(seed);
  const auto u = uniform<double>(Shape{b, t}, 0.0, 1.0, gen).to_vector();
  const auto v = uniform<double>(Shape{b}, -1.0, 1.0, gen).to_vector();
  std::vector<std::int64_t> ids(static_cast<std::size_t>(b * t)), token_labels(ids.size()), labels(static_cast<std::size_t>(b));
  std::vector<std::uint8_t> padding(ids.size(), 0);
  std::vector<T> values(static_cast<std::size_t>(b));
  for (Index i = 0; i < b; ++i) {
    for (Index j = 0; j < t; ++j) {
      const std::size_t at = static_cast<std::size_t>(i * t + j);
      ids[at] = 1 + static_cast<std::int64_t>(u[at] * static_cast<double>(vocab - 1));
      token_labels[at] = ids[at] % classes;
      if (j >= t - pad[static_cast<std::size_t>(i)]) padding[at] = 1, ids[at] = 0;
    }
    labels[static_cast<std::size_t>(i)] = (ids[static_cast<std::size_t>(i * t)] + i) % classes;
    values[static_cast<std::size_t>(i)] = static_cast<T>(v[static_cast<std::size_t>(i)]);
  }
  mtl::Batch<T> batch;
  batch.ids = from_vector<std::int64_t>(ids, Shape{b, t});
  batch.padding = from_vector<std::uint8_t>(padding, Shape{b, t});
  batch.task_id = from_vector<std::int64_t>(tasks);
  batch.labels = from_vector<std::int64_t>(labels);
  batch.token_labels = from_vector<std::int64_t>(token_labels, Shape{b, t});
  batch.values = from_vector<T>(values);
  return batch;
}

}  // namespace mtl_test
