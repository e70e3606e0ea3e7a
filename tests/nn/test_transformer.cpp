// Transformer stacks end to end: gradcheck (double) of DecoderOnly and EncoderDecoder losses with
// respect to parameters of every kind; padding masks leave kept positions unchanged; a tiny
// DecoderOnly overfits a repeated sequence with a plain SGD loop.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "cerberus/testing/gradcheck.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"

using namespace cerberus;
using cerberus::testing::gradcheck;
using cerberus::testing_support::compare;
using cerberus::testing_support::values;

namespace {

nn::TransformerConfig tiny() {
  nn::TransformerConfig c;
  c.vocab_size = 11;
  c.d_model = 8;
  c.n_layers = 2;
  c.n_heads = 2;
  c.d_ff = 12;
  c.max_seq_len = 8;
  return c;
}

Tensor<std::int64_t> ids_of(const std::vector<std::int64_t>& v, Index b, Index t) { return from_vector<std::int64_t>(v, Shape{b, t}); }

// gradcheck of `loss()` with respect to the named parameters of `model`: the function hands
// gradcheck's leaves to the model in place of those parameters.
template <class Model, class Loss>
void check_gradients(Model& model, const std::vector<std::string>& names, Loss&& loss) {
  std::vector<Tensor<double>> inputs;
  for (const auto& name : names) {
    bool found = false;
    for (const auto& p : model.named_parameters())
      if (p.name == name) inputs.push_back(p.tensor), found = true;
    INFO(name);
    REQUIRE(found);
  }
  auto substitute = [&](const std::vector<Tensor<double>>& xs) {
    model.visit_parameters("", [&](const std::string& name, Tensor<double>& p) {
      for (std::size_t i = 0; i < names.size(); ++i)
        if (name == names[i]) p = xs[i];
    });
  };
  const auto r = gradcheck(
      [&](const std::vector<Tensor<double>>& xs) {
        substitute(xs);
        return loss();
      },
      inputs);
  INFO(r.message);
  CHECK(r.ok);
}

}  // namespace

TEST_CASE("gradcheck: DecoderOnly loss (learned positions, LayerNorm, GELU, tied, padding, ignore_index)") {
  Generator gen(1);
  nn::DecoderOnly<double> model(tiny(), gen);
  const auto ids = ids_of({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 0}, 2, 6);
  const auto targets = ids_of({2, 3, 4, 5, 6, 7, 8, 9, 10, -100, -100, -100}, 2, 6);
  std::vector<std::uint8_t> pad(12, 0);
  pad[10] = pad[11] = 1;
  const auto padding = from_vector<std::uint8_t>(pad, Shape{2, 6});
  check_gradients(model,
                  {"decoder.embed_tokens.weight", "decoder.embed_positions.weight", "decoder.layers.0.attn.q_proj.weight",
                   "decoder.layers.0.attn.k_proj.bias", "decoder.layers.1.attn.v_proj.weight", "decoder.layers.1.attn_norm.bias",
                   "decoder.layers.1.mlp.down_proj.weight", "decoder.final_norm.weight"},
                  [&] { return model.loss(ids, targets, padding); });
}

TEST_CASE("gradcheck: DecoderOnly loss (RoPE, GQA, RMSNorm, SwiGLU, untied, no bias)") {
  auto c = tiny();
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.position = nn::PositionKind::rope;
  c.norm = nn::NormKind::rms;
  c.mlp = nn::MlpKind::swiglu;
  c.tie_embeddings = false;
  c.bias = false;
  Generator gen(2);
  nn::DecoderOnly<double> model(c, gen);
  const auto ids = ids_of({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 2, 5);
  const auto targets = ids_of({2, 3, 4, 5, 6, 7, 8, 9, 10, 1}, 2, 5);
  check_gradients(model,
                  {"decoder.embed_tokens.weight", "decoder.layers.0.attn.q_proj.weight", "decoder.layers.0.attn.k_proj.weight",
                   "decoder.layers.1.attn.o_proj.weight", "decoder.layers.0.mlp.gate_proj.weight", "decoder.layers.1.mlp_norm.weight",
                   "lm_head.weight"},
                  [&] { return model.loss(ids, targets); });
}

TEST_CASE("gradcheck: EncoderDecoder loss (shared embedding, cross-attention, source padding, sinusoidal)") {
  auto c = tiny();
  c.position = nn::PositionKind::sinusoidal;
  c.n_encoder_layers = 1;
  Generator gen(3);
  nn::EncoderDecoder<double> model(c, gen);
  const auto src = ids_of({1, 2, 3, 4, 5, 6, 7, 8, 0, 0}, 2, 5);
  std::vector<std::uint8_t> pad(10, 0);
  pad[8] = pad[9] = 1;
  const auto src_padding = from_vector<std::uint8_t>(pad, Shape{2, 5});
  const auto tgt_in = ids_of({0, 3, 5, 7, 0, 2, 4, 6}, 2, 4);
  const auto tgt_out = ids_of({3, 5, 7, 9, 2, 4, 6, 8}, 2, 4);
  check_gradients(model,
                  {"shared.weight", "encoder.layers.0.attn.k_proj.weight", "encoder.layers.0.mlp.up_proj.bias", "encoder.final_norm.weight",
                   "decoder.layers.0.cross_attn.v_proj.weight", "decoder.layers.1.cross_attn.q_proj.bias",
                   "decoder.layers.1.cross_attn_norm.weight"},
                  [&] { return model.loss(src, tgt_in, tgt_out, src_padding); });
}

TEST_CASE("Encoder key padding: kept positions equal the unpadded sequence, whatever the padding holds") {
  auto c = tiny();
  c.position = nn::PositionKind::rope;
  Generator gen(4);
  nn::Encoder<float> encoder(c, gen);
  const auto alone = encoder(ids_of({3, 1, 4, 1}, 1, 4));
  std::vector<std::uint8_t> pad(12, 0);
  pad[10] = pad[11] = 1;
  const auto padding = from_vector<std::uint8_t>(pad, Shape{2, 6});
  for (std::int64_t filler : {0, 9}) {
    const auto batch = encoder(ids_of({5, 9, 2, 6, 5, 3, 3, 1, 4, 1, filler, filler}, 2, 6), padding);
    const auto r = compare(values(batch.select(0, 1).slice(0, 0, 4)), values(alone.select(0, 0)), 1e-5, 1e-6);
    INFO(r.describe());
    CHECK(r.ok());
  }
  // Without the mask the padded tokens leak into every position.
  const auto leaked = encoder(ids_of({5, 9, 2, 6, 5, 3, 3, 1, 4, 1, 9, 9}, 2, 6));
  CHECK_FALSE(compare(values(leaked.select(0, 1).slice(0, 0, 4)), values(alone.select(0, 0)), 1e-3, 1e-4).ok());
}

TEST_CASE("DecoderOnly and EncoderDecoder: right padding and source padding leave kept logits unchanged") {
  auto c = tiny();
  Generator gen(5);
  nn::DecoderOnly<float> gpt(c, gen);
  std::vector<std::uint8_t> pad(12, 0);
  pad[9] = pad[10] = pad[11] = 1;
  const auto padding = from_vector<std::uint8_t>(pad, Shape{2, 6});
  const auto batch = gpt(ids_of({1, 2, 3, 4, 5, 6, 7, 8, 9, 4, 4, 4}, 2, 6), padding);
  const auto alone = gpt(ids_of({7, 8, 9}, 1, 3));
  CHECK(compare(values(batch.select(0, 1).slice(0, 0, 3)), values(alone.select(0, 0)), 1e-5, 1e-6).ok());

  nn::EncoderDecoder<float> t5(c, gen);
  const auto tgt = ids_of({0, 5, 6, 0, 5, 6}, 2, 3);
  const auto with_pad = t5.forward(ids_of({1, 2, 3, 4, 5, 6, 7, 8, 9, 2, 2, 2}, 2, 6), tgt, padding);
  const auto src_alone = t5.forward(ids_of({7, 8, 9}, 1, 3), ids_of({0, 5, 6}, 1, 3));
  CHECK(compare(values(with_pad.select(0, 1)), values(src_alone.select(0, 0)), 1e-5, 1e-6).ok());
  const auto no_pad = t5.forward(ids_of({1, 2, 3, 4, 5, 6, 7, 8, 9, 2, 2, 2}, 2, 6), tgt);
  CHECK_FALSE(compare(values(no_pad.select(0, 1)), values(src_alone.select(0, 0)), 1e-3, 1e-4).ok());
}

TEST_CASE("A tiny DecoderOnly overfits a repeated sequence with plain SGD") {
  nn::TransformerConfig c;
  c.vocab_size = 12;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.d_ff = 64;
  c.max_seq_len = 16;
  c.position = nn::PositionKind::rope;
  Generator gen(6);
  nn::DecoderOnly<float> model(c, gen);
  std::vector<std::int64_t> seq, next;
  for (int i = 0; i < 32; ++i) seq.push_back(1 + (i * 5) % 7);  // period 7, batch of 2 rows of 16
  for (std::size_t i = 0; i < seq.size(); ++i) next.push_back(1 + static_cast<std::int64_t>((i + 1) * 5 % 7));
  const auto ids = ids_of(seq, 2, 16), targets = ids_of(next, 2, 16);
  const auto params = model.parameters();
  const double first = model.loss(ids, targets).item();
  double last = first;
  for (int step = 0; step < 150; ++step) {
    model.zero_grad();
    const auto loss = model.loss(ids, targets);
    loss.backward();
    last = loss.item();
    NoGradGuard update;
    for (const auto& p : params) p -= p.grad() * 0.5f;
  }
  INFO("first loss " << first << ", last " << last);
  CHECK(first > 2.0);
  CHECK(last < 0.05);
}
