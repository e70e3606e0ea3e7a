// Shared helpers of the mtl tests: a tiny trunk configuration, mixed batches, and the synthetic
// "marked tokens" problem of related tasks.
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

// Tokens 1..40; half of them, scattered ((id * 7) % 41 < 20), are "marked". Task 0 ("count",
// the first n_count rows, SequenceClassifier<2>): are at least half the tokens of the row
// marked? (labels). Task 1 ("mark", n_mark rows, TokenClassifier<2>): is each token marked?
// (token_labels). Rows of kMarkedT tokens, no padding.
constexpr Index kMarkedT = 10;
constexpr std::int64_t kMarkedVocab = 41;
constexpr bool is_marked(std::int64_t id) { return (id * 7) % kMarkedVocab < 20; }

// The small encoder both marked-tokens tests train.
inline nn::TransformerConfig marked_config() {
  nn::TransformerConfig c;
  c.vocab_size = kMarkedVocab;
  c.d_model = 16;
  c.n_layers = 1;
  c.n_heads = 2;
  c.d_ff = 32;
  c.max_seq_len = kMarkedT;
  return c;
}

inline mtl::Batch<float> marked_tokens(Index n_count, Index n_mark, std::uint64_t seed) {
  Generator gen(seed);
  const Index b = n_count + n_mark;
  const auto u = uniform<double>(Shape{b, kMarkedT}, 0.0, 1.0, gen).to_vector();
  std::vector<std::int64_t> ids(static_cast<std::size_t>(b * kMarkedT)), tok(ids.size()), labels(static_cast<std::size_t>(b)), task(labels.size());
  for (Index i = 0; i < b; ++i) {
    int marked = 0;
    for (Index j = 0; j < kMarkedT; ++j) {
      const std::size_t at = static_cast<std::size_t>(i * kMarkedT + j);
      ids[at] = 1 + static_cast<std::int64_t>(u[at] * static_cast<double>(kMarkedVocab - 1));
      tok[at] = is_marked(ids[at]) ? 1 : 0;
      marked += static_cast<int>(tok[at]);
    }
    labels[static_cast<std::size_t>(i)] = 2 * marked >= kMarkedT ? 1 : 0;
    task[static_cast<std::size_t>(i)] = i < n_count ? 0 : 1;
  }
  mtl::Batch<float> batch;
  batch.ids = from_vector<std::int64_t>(ids, Shape{b, kMarkedT});
  batch.task_id = from_vector<std::int64_t>(task);
  batch.labels = from_vector<std::int64_t>(labels);
  batch.token_labels = from_vector<std::int64_t>(tok, Shape{b, kMarkedT});
  return batch;
}

}  // namespace mtl_test
