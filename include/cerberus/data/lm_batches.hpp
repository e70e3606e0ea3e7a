// Language-model batches from one stream of token ids: B windows of T + 1 consecutive tokens,
// inputs = the first T, targets = the same window shifted by one.
//
// Legend: B = batch size, T = sequence length (seq_len), N = tokens in the stream.
//
//   std::vector<std::int64_t> stream = ...;            // e.g. every document's ids, each ended by eos
//   cerberus::Generator gen(1);
//   cerberus::data::LmBatch b = cerberus::data::random_lm_batch(stream, 16, 64, gen);  // training
//   auto fixed = cerberus::data::evenly_spaced_lm_batches(stream, 8, 16, 64);        // validation
//   loss = model.loss(b.inputs, b.targets);
//
// A window may start at any offset in [0, N - T - 1], so it may cross a document boundary: the
// eos between documents is then a token like any other (GPT-2's pre-training layout). Training
// windows start at offsets drawn uniformly from a Generator, so the batches of a run are a pure
// function of (seed, offset) and a resumed run that restores the generator draws the same ones.
// Validation batches are fixed: windows spread evenly over the whole stream, so every run (and
// every evaluation of one run) measures the same tokens.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/core/random.hpp"
#include "cerberus/tensor/factories.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus::data {

struct LmBatch {
  Tensor<std::int64_t> inputs;   // [B, T]: stream[o_b + t]
  Tensor<std::int64_t> targets;  // [B, T]: stream[o_b + t + 1]
};

namespace lm_detail {
inline void check(std::span<const std::int64_t> stream, Index batch_size, Index seq_len, const char* op) {
  if (batch_size < 1) throw ValueError(std::string("[") + op + "] batch_size must be >= 1, got " + std::to_string(batch_size));
  if (seq_len < 1) throw ValueError(std::string("[") + op + "] seq_len must be >= 1, got " + std::to_string(seq_len));
  if (static_cast<Index>(stream.size()) < seq_len + 1)
    throw ValueError(std::string("[") + op + "] a window of seq_len + 1 = " + std::to_string(seq_len + 1) +
                     " tokens needs a stream of at least that many, got " + std::to_string(stream.size()) + " tokens");
}
}  // namespace lm_detail

// The batch whose row b is the window starting at offsets[b]. Every offset must be in
// [0, N - T - 1]; an offset out of range throws IndexError naming its row.
inline LmBatch lm_batch_at(std::span<const std::int64_t> stream, std::span<const Index> offsets, Index seq_len) {
  const Index b = static_cast<Index>(offsets.size());
  lm_detail::check(stream, b, seq_len, "lm_batch_at");
  const Index last = static_cast<Index>(stream.size()) - seq_len - 1;
  std::vector<std::int64_t> inputs(static_cast<std::size_t>(b * seq_len)), targets(inputs.size());
  for (Index r = 0; r < b; ++r) {
    const Index o = offsets[static_cast<std::size_t>(r)];
    if (o < 0 || o > last)
      throw IndexError("[lm_batch_at] offset " + std::to_string(o) + " of row " + std::to_string(r) + " is outside [0, " +
                       std::to_string(last) + "] (a window of " + std::to_string(seq_len + 1) + " tokens in a stream of " +
                       std::to_string(stream.size()) + ")");
    for (Index t = 0; t < seq_len; ++t) {
      inputs[static_cast<std::size_t>(r * seq_len + t)] = stream[static_cast<std::size_t>(o + t)];
      targets[static_cast<std::size_t>(r * seq_len + t)] = stream[static_cast<std::size_t>(o + t + 1)];
    }
  }
  return {from_vector<std::int64_t>(inputs, Shape{b, seq_len}), from_vector<std::int64_t>(targets, Shape{b, seq_len})};
}

// B windows at offsets drawn uniformly from [0, N - T - 1] with `gen` (one draw per row).
inline LmBatch random_lm_batch(std::span<const std::int64_t> stream, Index batch_size, Index seq_len, Generator& gen) {
  lm_detail::check(stream, batch_size, seq_len, "random_lm_batch");
  const Index windows = static_cast<Index>(stream.size()) - seq_len;  // offsets 0 .. windows - 1
  std::vector<Index> offsets(static_cast<std::size_t>(batch_size));
  for (Index& o : offsets) {
    o = static_cast<Index>(gen.uniform() * static_cast<double>(windows));  // uniform() < 1, so o < windows
    if (o >= windows) o = windows - 1;  // guards rounding for streams beyond 2^53 tokens
  }
  return lm_batch_at(stream, offsets, seq_len);
}

// num_batches batches of B windows whose num_batches * B start offsets are spread evenly over
// [0, N - T - 1] (first and last window included), in stream order. The windows do not overlap
// when the stream holds at least num_batches * B * T + 1 tokens. Deterministic: no generator.
inline std::vector<LmBatch> evenly_spaced_lm_batches(std::span<const std::int64_t> stream, Index num_batches, Index batch_size,
                                                     Index seq_len) {
  lm_detail::check(stream, batch_size, seq_len, "evenly_spaced_lm_batches");
  if (num_batches < 1)
    throw ValueError("[evenly_spaced_lm_batches] num_batches must be >= 1, got " + std::to_string(num_batches));
  const Index count = num_batches * batch_size;
  const Index last = static_cast<Index>(stream.size()) - seq_len - 1;
  std::vector<LmBatch> out;
  out.reserve(static_cast<std::size_t>(num_batches));
  std::vector<Index> offsets(static_cast<std::size_t>(batch_size));
  for (Index k = 0; k < num_batches; ++k) {
    for (Index r = 0; r < batch_size; ++r) {
      const Index i = k * batch_size + r;
      // i * last / (count - 1), exact in integers (last < 2^40 for any stream that fits in memory).
      offsets[static_cast<std::size_t>(r)] = count == 1 ? 0 : i * last / (count - 1);
    }
    out.push_back(lm_batch_at(stream, offsets, seq_len));
  }
  return out;
}

}  // namespace cerberus::data
