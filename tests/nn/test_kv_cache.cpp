// KV-cache decoding: logits from incremental steps equal a full recompute (float, 1e-5 relative)
// for learned, sinusoidal and rotary positions, grouped-query heads, SwiGLU + RMSNorm, padded
// prompts and an encoder-decoder; cache errors; generate() (greedy against a recompute loop,
// top-k, seeded sampling, eos).
#include <cstdint>
#include <string>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "nn/nn_support.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"

using namespace cerberus;
using cerberus::testing_support::compare;
using cerberus::testing_support::message_of;
using cerberus::testing_support::values;

namespace {

using nn_test::random_ids;
using nn_test::tiny;

// Logits of ids [B, T] fed to the cache in chunks of the given sizes, concatenated along time.
template <class Step>
Tensor<float> incremental(Step&& step, const Tensor<std::int64_t>& ids, const std::vector<Index>& chunks) {
  std::vector<Tensor<float>> parts;
  Index t = 0;
  for (Index n : chunks) {
    parts.push_back(step(ids.slice(1, t, t + n), t, n));
    t += n;
  }
  REQUIRE(t == ids.size(1));
  return concat(parts, 1);
}

void check_close(const Tensor<float>& got, const Tensor<float>& want) {
  REQUIRE(got.shape() == want.shape());
  const auto r = compare(values(got), values(want), 1e-5, 1e-6);
  INFO(r.describe());
  CHECK(r.ok());
}

}  // namespace

TEST_CASE("Incremental decoding equals a full recompute: positions, GQA, SwiGLU + RMSNorm") {
  struct Variant {
    const char* name;
    nn::PositionKind position;
    Index kv_heads;
    bool swiglu_rms;
  };
  const Variant variants[] = {{"learned", nn::PositionKind::learned, 0, false},
                              {"sinusoidal", nn::PositionKind::sinusoidal, 0, false},
                              {"rope", nn::PositionKind::rope, 0, false},
                              {"rope + GQA (2 kv heads)", nn::PositionKind::rope, 2, false},
                              {"learned + MQA (1 kv head)", nn::PositionKind::learned, 1, false},
                              {"rope + GQA + SwiGLU + RMSNorm, untied", nn::PositionKind::rope, 2, true}};
  for (const auto& v : variants) {
    SECTION(v.name) {
      auto c = tiny();
      c.position = v.position;
      c.n_kv_heads = v.kv_heads;
      if (v.swiglu_rms) {
        c.mlp = nn::MlpKind::swiglu;
        c.norm = nn::NormKind::rms;
        c.tie_embeddings = false;
        c.bias = false;
      }
      Generator gen(42);
      nn::DecoderOnly<float> model(c, gen);
      const auto ids = random_ids(2, 14, c.vocab_size, 7);
      const auto full = model.forward(ids);
      auto cache = model.make_cache(2);
      const auto got = incremental([&](const Tensor<std::int64_t>& part, Index, Index) { return model.forward_step(part, cache); }, ids,
                                   {5, 1, 1, 3, 1, 1, 1, 1});
      CHECK(cache.length() == 14);
      check_close(got, full);
      // reset() starts a new sequence in the same buffers.
      cache.reset();
      check_close(model.forward_step(ids.slice(1, 0, 4), cache), full.slice(1, 0, 4));
    }
  }
}

TEST_CASE("Incremental decoding with a padded prompt equals the padded full recompute") {
  auto c = tiny();
  c.position = nn::PositionKind::rope;
  Generator gen(5);
  nn::DecoderOnly<float> model(c, gen);
  const auto ids = random_ids(2, 9, c.vocab_size, 3);
  // Row 1 is left-padded by 3: its first three keys are never attended to.
  std::vector<std::uint8_t> pad(18, 0);
  pad[9] = pad[10] = pad[11] = 1;
  const auto padding = from_vector<std::uint8_t>(pad, Shape{2, 9});
  const auto full = model.forward(ids, padding);
  auto cache = model.make_cache(2, 12);
  std::vector<Tensor<float>> parts{model.forward_step(ids.slice(1, 0, 6), cache, padding.slice(1, 0, 6).contiguous())};
  for (Index t = 6; t < 9; ++t) parts.push_back(model.forward_step(ids.slice(1, t, t + 1), cache));
  const auto got = concat(parts, 1);
  // Row 1's padded query rows attend nothing kept before them (zero attention output), which is
  // the same in both paths; compare everything.
  check_close(got, full);
  // And the mask matters: without it, row 1 differs.
  const auto unpadded = model.forward(ids);
  CHECK_FALSE(compare(values(unpadded.select(0, 1).slice(0, 3, 9)), values(full.select(0, 1).slice(0, 3, 9)), 1e-4, 1e-5).ok());
}

TEST_CASE("EncoderDecoder: cached decoding with cross-attention equals the full forward") {
  auto c = tiny();
  c.n_encoder_layers = 3;
  c.n_kv_heads = 2;
  Generator gen(9);
  nn::EncoderDecoder<float> model(c, gen);
  const auto src = random_ids(2, 7, c.vocab_size, 1);
  const auto tgt = random_ids(2, 8, c.vocab_size, 2);
  std::vector<std::uint8_t> pad(14, 0);
  pad[12] = pad[13] = 1;  // row 1's source has 2 padded tokens
  const auto src_padding = from_vector<std::uint8_t>(pad, Shape{2, 7});
  const auto full = model.forward(src, tgt, src_padding);
  const auto memory = model.encode(src, src_padding);
  auto cache = model.make_cache(2, 8);
  const auto got = incremental(
      [&](const Tensor<std::int64_t>& part, Index, Index) { return model.forward_step(part, cache, memory, src_padding); }, tgt,
      {3, 1, 1, 2, 1});
  check_close(got, full);
}

TEST_CASE("KV cache errors: overflow, batch mismatch, capacity above max_seq_len") {
  auto c = tiny();
  Generator gen(1);
  nn::DecoderOnly<float> model(c, gen);
  auto cache = model.make_cache(2, 6);
  CHECK(cache.capacity() == 6);
  model.forward_step(random_ids(2, 5, c.vocab_size, 1), cache);
  CHECK(message_of([&] { model.forward_step(random_ids(2, 2, c.vocab_size, 2), cache); }) ==
        "[KVCache] cannot append 2 tokens to a cache holding 5 of its 6 positions");
  CHECK(cache.length() == 5);  // a refused step writes nothing
  model.forward_step(random_ids(2, 1, c.vocab_size, 3), cache);
  CHECK(cache.length() == 6);
  CHECK(message_of([&] { model.forward_step(random_ids(3, 1, c.vocab_size, 4), cache); }) ==
        "[KVCache] new tokens have batch 3, the cache was made for batch 2");
  CHECK(message_of([&] { model.make_cache(1, 25); }) == "[Decoder] cache capacity 25 exceeds max_seq_len 24");
  CHECK_THROWS_AS(model.forward(random_ids(1, 25, c.vocab_size, 5)), ValueError);  // longer than the position table
  nn::KVCache<float> empty;
  CHECK_THROWS_AS(model.forward_step(random_ids(2, 1, c.vocab_size, 6), empty), ValueError);
}

TEST_CASE("generate: greedy equals an argmax loop over full recomputes; top-k 1 is greedy") {
  auto c = tiny();
  c.position = nn::PositionKind::rope;
  c.n_kv_heads = 2;
  Generator gen(11);
  nn::DecoderOnly<float> model(c, gen);
  const auto prompt = random_ids(2, 4, c.vocab_size, 5);
  nn::SamplingOptions options;
  options.max_new_tokens = 8;
  const auto out = nn::generate(model, prompt, options);
  REQUIRE(out.shape() == Shape{2, 12});
  // Reference: recompute the whole sequence for every new token.
  auto seq = prompt.to_vector();
  for (Index step = 0; step < 8; ++step) {
    const Index t = 4 + step;
    const auto logits = model.forward(from_vector<std::int64_t>(seq, Shape{2, t}));
    const auto next = argmax(logits.select(1, t - 1), 1).to_vector();
    std::vector<std::int64_t> grown;
    for (Index r = 0; r < 2; ++r) {
      grown.insert(grown.end(), seq.begin() + r * t, seq.begin() + (r + 1) * t);
      grown.push_back(next[static_cast<std::size_t>(r)]);
    }
    seq = grown;
  }
  CHECK(out.to_vector() == seq);
  options.temperature = 1.0;
  options.top_k = 1;
  CHECK(nn::generate(model, prompt, options).to_vector() == seq);
  CHECK(model.is_training());  // the mode is restored
}

TEST_CASE("generate: seeded sampling is reproducible, eos ends rows, length limits") {
  auto c = tiny();
  Generator gen(12);
  nn::DecoderOnly<float> model(c, gen);
  const auto prompt = random_ids(3, 2, c.vocab_size, 8);
  nn::SamplingOptions options;
  options.max_new_tokens = 12;
  options.temperature = 1.5;
  options.seed = 1;
  const auto a = nn::generate(model, prompt, options).to_vector();
  CHECK(nn::generate(model, prompt, options).to_vector() == a);
  options.seed = 2;
  CHECK(nn::generate(model, prompt, options).to_vector() != a);
  options.top_k = 3;
  const auto k3 = nn::generate(model, prompt, options);
  CHECK(k3.shape() == Shape{3, 14});
  // eos: every row stops producing anything else once it produced eos.
  options.top_k = 0;
  options.eos_id = a[2];  // the first sampled token of row 0 (seed 1)
  options.seed = 1;
  const auto e = nn::generate(model, prompt, options);
  const auto ev = e.to_vector();
  const Index len = e.size(1);
  CHECK(ev[2] == options.eos_id);
  for (Index r = 0; r < 3; ++r) {
    bool ended = false;
    for (Index t = 2; t < len; ++t) {
      if (ended) CHECK(ev[static_cast<std::size_t>(r * len + t)] == options.eos_id);
      ended = ended || ev[static_cast<std::size_t>(r * len + t)] == options.eos_id;
    }
  }
  options.max_new_tokens = 30;
  CHECK(message_of([&] { nn::generate(model, prompt, options); }) ==
        "[generate] prompt length 2 + max_new_tokens 30 needs 31 positions, above max_seq_len 24");
}

TEST_CASE("generate for an EncoderDecoder matches greedy decoding by full recompute") {
  auto c = tiny();
  Generator gen(13);
  nn::EncoderDecoder<float> model(c, gen);
  const auto src = random_ids(2, 6, c.vocab_size, 9);
  const auto start = from_vector<std::int64_t>({0, 0}, Shape{2, 1});
  nn::SamplingOptions options;
  options.max_new_tokens = 5;
  const auto out = nn::generate(model, src, start, options);
  REQUIRE(out.shape() == Shape{2, 6});
  auto seq = start.to_vector();
  for (Index t = 1; t <= 5; ++t) {
    const auto logits = model.forward(src, from_vector<std::int64_t>(seq, Shape{2, t}));
    const auto next = argmax(logits.select(1, t - 1), 1).to_vector();
    std::vector<std::int64_t> grown;
    for (Index r = 0; r < 2; ++r) {
      grown.insert(grown.end(), seq.begin() + r * t, seq.begin() + (r + 1) * t);
      grown.push_back(next[static_cast<std::size_t>(r)]);
    }
    seq = grown;
  }
  CHECK(out.to_vector() == seq);
}
