// nn modules: layers against direct op calls, the parameter-name contract and exact parameter
// counts of every stack, freezing, zero_grad, tied storage, train / eval, config validation.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"

using namespace cerberus;
using cerberus::testing_support::compare;
using cerberus::testing_support::message_of;
using cerberus::testing_support::random_uniform;
using cerberus::testing_support::values;

namespace {

std::map<std::string, Shape> shapes_of(const nn::ParameterList<float>& params) {
  std::map<std::string, Shape> out;
  for (const auto& p : params) out[p.name] = p.tensor.shape();
  return out;
}

nn::TransformerConfig gpt_tiny() {
  nn::TransformerConfig c;  // vocab 8000, d 256, 4 layers, 4 heads, seq 128, d_ff 1024
  c.tie_embeddings = true;
  c.bias = true;
  c.position = nn::PositionKind::learned;
  return c;
}

Tensor<std::int64_t> ids_of(const std::vector<std::int64_t>& v, Index b, Index t) { return from_vector<std::int64_t>(v, Shape{b, t}); }

}  // namespace

TEST_CASE("Linear is x W^T + b over leading dims, one parameter pair named weight / bias") {
  Generator gen(3);
  nn::Linear<double> lin(5, 3, true, gen);
  CHECK(lin.weight.shape() == Shape{3, 5});
  CHECK(lin.bias.shape() == Shape{3});
  CHECK(lin.weight.requires_grad());
  {
    NoGradGuard g;
    lin.bias.assign(random_uniform<double>(Shape{3}, -1, 1, 8));
  }
  const auto x = random_uniform<double>(Shape{2, 4, 5}, -1, 1, 9);
  const auto y = lin(x);
  REQUIRE(y.shape() == Shape{2, 4, 3});
  std::vector<double> want;
  for (Index i = 0; i < 8; ++i)
    for (Index o = 0; o < 3; ++o) {
      double s = lin.bias(o);
      for (Index k = 0; k < 5; ++k) s += x(i / 4, i % 4, k) * lin.weight(o, k);
      want.push_back(s);
    }
  const auto r = compare(values(y), want, 1e-12, 1e-12);
  INFO(r.describe());
  CHECK(r.ok());
  const auto names = shapes_of(nn::Linear<float>(5, 3, false, gen).named_parameters());
  CHECK(names.size() == 1);
  CHECK(names.count("weight") == 1);
}

TEST_CASE("Linear initialisation: normal weights with the requested std, zero bias") {
  Generator gen(5);
  nn::Linear<double> lin(256, 512, true, gen, 0.02);
  const auto w = values(lin.weight);
  double mean = 0, sq = 0;
  for (double v : w) mean += v, sq += v * v;
  mean /= static_cast<double>(w.size());
  const double std = std::sqrt(sq / static_cast<double>(w.size()) - mean * mean);
  CHECK(std::abs(mean) < 1e-3);
  CHECK(std::abs(std - 0.02) < 5e-4);
  for (double v : values(lin.bias)) CHECK(v == 0.0);
}

TEST_CASE("Norm modules: LayerNorm has weight and bias, RMSNorm only weight; both match the ops") {
  const auto x = random_uniform<float>(Shape{3, 8}, -2, 2, 1);
  nn::LayerNorm<float> ln(8);
  nn::RMSNorm<float> rms(8, 1e-6);
  CHECK(shapes_of(ln.named_parameters()).size() == 2);
  const auto rms_names = shapes_of(rms.named_parameters());
  REQUIRE(rms_names.size() == 1);
  CHECK(rms_names.count("weight") == 1);
  CHECK(compare(values(ln(x)), values(layer_norm(x, ln.weight, ln.bias, 1e-5)), 0, 0).ok());
  CHECK(compare(values(rms(x)), values(rms_norm(x, rms.weight, 1e-6)), 0, 0).ok());
  CHECK(shapes_of(nn::LayerNorm<float>(8, 1e-5, false).named_parameters()).size() == 1);
}

TEST_CASE("Dropout follows train() and eval(); p = 0 and eval return the input itself") {
  Generator gen(11);
  nn::Dropout<float> drop(0.5, gen);
  const auto x = ones<float>(Shape{1000});
  const auto y = drop(x);
  const auto v = values(y);
  const auto zeros_count = std::count(v.begin(), v.end(), 0.0);
  CHECK(zeros_count > 400);
  CHECK(zeros_count < 600);
  CHECK(std::all_of(v.begin(), v.end(), [](double e) { return e == 0.0 || e == 2.0; }));
  drop.eval();
  CHECK_FALSE(drop.is_training());
  CHECK(drop(x).data() == x.data());
  drop.train();
  CHECK(drop(x).data() != x.data());
  CHECK_THROWS_AS(nn::Dropout<float>(1.5, gen), ValueError);
}

TEST_CASE("MLP: GELU (tanh or exact) and SwiGLU match their formulas") {
  nn::TransformerConfig c;
  c.d_model = 6;
  c.d_ff = 10;
  c.n_heads = 2;
  Generator gen(4);
  const auto x = random_uniform<double>(Shape{2, 3, 6}, -1, 1, 2);
  for (auto approx : {nn::GeluApproximation::tanh, nn::GeluApproximation::none}) {
    c.mlp = nn::MlpKind::gelu;
    c.gelu_approximation = approx;
    nn::MLP<double> mlp(c, 2, gen);
    CHECK_FALSE(mlp.gate_proj.has_value());
    const Tensor<double> up = linear(x, mlp.up_proj.weight, mlp.up_proj.bias);
    const Tensor<double> act = approx == nn::GeluApproximation::tanh ? Tensor<double>(gelu_tanh(up)) : Tensor<double>(gelu_erf(up));
    const auto want = linear(act, mlp.down_proj.weight, mlp.down_proj.bias);
    CHECK(compare(values(mlp(x)), values(want), 1e-12, 1e-14).ok());
  }
  c.mlp = nn::MlpKind::swiglu;
  nn::MLP<double> mlp(c, 2, gen);
  REQUIRE(mlp.gate_proj.has_value());
  const auto names = shapes_of(nn::MLP<float>(c, 2, gen).named_parameters());
  CHECK(names.count("gate_proj.weight") == 1);
  CHECK(names.count("up_proj.weight") == 1);
  CHECK(names.count("down_proj.bias") == 1);
  const Tensor<double> gate = linear(x, mlp.gate_proj->weight, mlp.gate_proj->bias);
  const Tensor<double> up = linear(x, mlp.up_proj.weight, mlp.up_proj.bias);
  const Tensor<double> act = silu(gate) * up;
  CHECK(compare(values(mlp(x)), values(linear(act, mlp.down_proj.weight, mlp.down_proj.bias)), 1e-12, 1e-14).ok());
}

TEST_CASE("DecoderOnly GPT tiny: the parameter-name contract and the exact count 5,240,320") {
  Generator gen(1);
  const auto c = gpt_tiny();
  nn::DecoderOnly<float> model(c, gen);
  const auto params = model.named_parameters();
  const auto shapes = shapes_of(params);
  CHECK(shapes.size() == params.size());  // no name twice
  // 3 top-level + 16 per layer (2 norms x 2, 4 projections x 2, 2 MLP projections x 2) + final norm 2
  CHECK(params.size() == 2 + 16 * 4 + 2);
  CHECK(shapes.at("decoder.embed_tokens.weight") == Shape{8000, 256});
  CHECK(shapes.at("decoder.embed_positions.weight") == Shape{128, 256});
  for (int i = 0; i < 4; ++i) {
    const std::string l = "decoder.layers." + std::to_string(i) + ".";
    for (const char* norm : {"attn_norm", "mlp_norm"}) {
      CHECK(shapes.at(l + norm + ".weight") == Shape{256});
      CHECK(shapes.at(l + norm + ".bias") == Shape{256});
    }
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
      CHECK(shapes.at(l + "attn." + proj + ".weight") == Shape{256, 256});
      CHECK(shapes.at(l + "attn." + proj + ".bias") == Shape{256});
    }
    CHECK(shapes.at(l + "mlp.up_proj.weight") == Shape{1024, 256});
    CHECK(shapes.at(l + "mlp.up_proj.bias") == Shape{1024});
    CHECK(shapes.at(l + "mlp.down_proj.weight") == Shape{256, 1024});
    CHECK(shapes.at(l + "mlp.down_proj.bias") == Shape{256});
  }
  CHECK(shapes.at("decoder.final_norm.weight") == Shape{256});
  CHECK(shapes.at("decoder.final_norm.bias") == Shape{256});
  CHECK(shapes.count("lm_head.weight") == 0);
  // V C + P C + L (2 * 2C + 4 (C^2 + C) + (C F + F) + (F C + C)) + 2C
  const Index V = 8000, C = 256, P = 128, L = 4, F = 1024;
  const Index expected = V * C + P * C + L * (4 * C + 4 * (C * C + C) + (C * F + F) + (F * C + C)) + 2 * C;
  CHECK(expected == 5240320);
  CHECK(model.num_parameters() == expected);
  // Untied: lm_head.weight [V, C] adds V C.
  auto untied = c;
  untied.tie_embeddings = false;
  nn::DecoderOnly<float> model2(untied, gen);
  CHECK(shapes_of(model2.named_parameters()).at("lm_head.weight") == Shape{8000, 256});
  CHECK(model2.num_parameters() == expected + V * C);
}

TEST_CASE("Variants: RMSNorm, no bias, SwiGLU, GQA, RoPE change exactly the expected entries") {
  Generator gen(2);
  nn::TransformerConfig c;
  c.vocab_size = 50;
  c.d_model = 16;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.d_ff = 24;
  c.max_seq_len = 12;
  c.norm = nn::NormKind::rms;
  c.bias = false;
  c.mlp = nn::MlpKind::swiglu;
  c.position = nn::PositionKind::rope;
  nn::DecoderOnly<float> model(c, gen);
  const auto shapes = shapes_of(model.named_parameters());
  for (const auto& [name, shape] : shapes) CHECK(name.find(".bias") == std::string::npos);
  CHECK(shapes.count("decoder.embed_positions.weight") == 0);
  CHECK(shapes.at("decoder.layers.1.attn.k_proj.weight") == Shape{8, 16});  // Hkv * D = 2 * 4
  CHECK(shapes.at("decoder.layers.1.attn.v_proj.weight") == Shape{8, 16});
  CHECK(shapes.at("decoder.layers.1.attn.q_proj.weight") == Shape{16, 16});
  CHECK(shapes.at("decoder.layers.0.mlp.gate_proj.weight") == Shape{24, 16});
  // V C + L (2 C + C^2 + 2 * 8 C + C^2 + 3 C F) + C
  const Index expected = 50 * 16 + 2 * (2 * 16 + 16 * 16 + 2 * 8 * 16 + 16 * 16 + 3 * 16 * 24) + 16;
  CHECK(model.num_parameters() == expected);
  CHECK(shapes.size() == 1 + 2 * 9 + 1);
}

TEST_CASE("EncoderDecoder: shared.weight once, encoder and decoder names, cross-attention entries") {
  Generator gen(3);
  nn::TransformerConfig c;
  c.vocab_size = 40;
  c.d_model = 8;
  c.n_layers = 2;
  c.n_encoder_layers = 3;
  c.n_heads = 2;
  c.d_ff = 16;
  c.max_seq_len = 10;
  nn::EncoderDecoder<float> model(c, gen);
  const auto params = model.named_parameters();
  const auto shapes = shapes_of(params);
  CHECK(shapes.at("shared.weight") == Shape{40, 8});
  CHECK(shapes.count("encoder.embed_tokens.weight") == 0);
  CHECK(shapes.count("decoder.embed_tokens.weight") == 0);
  CHECK(shapes.at("encoder.embed_positions.weight") == Shape{10, 8});
  CHECK(shapes.at("decoder.embed_positions.weight") == Shape{10, 8});
  CHECK(shapes.count("encoder.layers.2.attn.q_proj.weight") == 1);
  CHECK(shapes.count("encoder.layers.3.attn.q_proj.weight") == 0);
  CHECK(shapes.count("encoder.layers.0.cross_attn.q_proj.weight") == 0);
  CHECK(shapes.count("decoder.layers.2.attn.q_proj.weight") == 0);
  for (const char* n : {"decoder.layers.1.cross_attn_norm.weight", "decoder.layers.1.cross_attn_norm.bias",
                        "decoder.layers.1.cross_attn.q_proj.weight", "decoder.layers.1.cross_attn.k_proj.bias",
                        "decoder.layers.1.cross_attn.v_proj.weight", "decoder.layers.1.cross_attn.o_proj.weight",
                        "encoder.final_norm.weight", "decoder.final_norm.bias"})
    CHECK(shapes.count(n) == 1);
  CHECK(shapes.count("lm_head.weight") == 0);
  const Index C = 8, F = 16;
  const Index attn = 4 * (C * C + C), norm = 2 * C, mlp = C * F + F + F * C + C;
  const Index expected = 40 * C + 2 * 10 * C + 3 * (2 * norm + attn + mlp) + 2 * (3 * norm + 2 * attn + mlp) + 2 * norm;
  CHECK(model.num_parameters() == expected);
  // Every stack uses the one shared embedding object.
  CHECK(model.encoder.embed_tokens.get() == model.shared.get());
  CHECK(model.decoder.embed_tokens.get() == model.shared.get());
  CHECK(model.lm_head_weight().data() == model.shared->weight.data());
}

TEST_CASE("Tied weights share storage and collect gradients from both uses") {
  Generator gen(7);
  nn::TransformerConfig c;
  c.vocab_size = 20;
  c.d_model = 8;
  c.n_layers = 1;
  c.n_heads = 2;
  c.d_ff = 16;
  c.max_seq_len = 8;
  nn::DecoderOnly<double> tied(c, gen);
  CHECK(tied.lm_head_weight().data() == tied.decoder.embed_tokens->weight.data());
  const auto ids = ids_of({1, 2, 3, 4}, 1, 4);
  const auto targets = ids_of({2, 3, 4, 5}, 1, 4);
  tied.loss(ids, targets).backward();
  const auto g_tied = values(tied.decoder.embed_tokens->weight.grad());
  // Rows never looked up (e.g. 10) still get a gradient through the LM head.
  CHECK(g_tied[static_cast<std::size_t>(10 * 8)] != 0.0);
  c.tie_embeddings = false;
  Generator gen2(7);
  nn::DecoderOnly<double> untied(c, gen2);
  untied.loss(ids, targets).backward();
  CHECK(values(untied.decoder.embed_tokens->weight.grad())[static_cast<std::size_t>(10 * 8)] == 0.0);
  CHECK(untied.lm_head->weight.data() != untied.decoder.embed_tokens->weight.data());
}

TEST_CASE("set_trainable(false) freezes: backward leaves grads empty; zero_grad and clear_grad") {
  Generator gen(8);
  nn::TransformerConfig c;
  c.vocab_size = 20;
  c.d_model = 8;
  c.n_layers = 2;
  c.n_heads = 2;
  c.d_ff = 16;
  c.max_seq_len = 8;
  nn::DecoderOnly<float> model(c, gen);
  const auto ids = ids_of({1, 2, 3, 4, 5, 6}, 2, 3);
  model.decoder.layers[0].set_trainable(false);
  model.loss(ids, ids).backward();
  for (const auto& p : model.named_parameters()) {
    INFO(p.name);
    const bool frozen = p.name.rfind("decoder.layers.0.", 0) == 0;
    CHECK(p.tensor.requires_grad() == !frozen);
    CHECK(p.tensor.grad().defined() == !frozen);
  }
  model.zero_grad();
  for (const auto& p : model.parameters())
    if (p.grad().defined()) {
      const auto g = values(p.grad());
      CHECK(std::all_of(g.begin(), g.end(), [](double v) { return v == 0.0; }));
    }
  model.clear_grad();
  for (const auto& p : model.parameters()) CHECK_FALSE(p.grad().defined());
  model.set_trainable(false);
  for (const auto& p : model.parameters()) CHECK_FALSE(p.requires_grad());
  CHECK_FALSE(model.loss(ids, ids).requires_grad());
  model.set_trainable(true);
  CHECK(model.loss(ids, ids).requires_grad());
}

TEST_CASE("train() / eval() reach every dropout of a stack") {
  Generator gen(9);
  nn::TransformerConfig c;
  c.vocab_size = 20;
  c.d_model = 8;
  c.n_layers = 2;
  c.n_heads = 2;
  c.d_ff = 16;
  c.max_seq_len = 8;
  c.dropout = 0.3;
  nn::EncoderDecoder<float> model(c, gen);
  const auto src = ids_of({1, 2, 3, 4}, 1, 4);
  const auto tgt = ids_of({5, 6, 7}, 1, 3);
  const auto a = values(model.forward(src, tgt)), b = values(model.forward(src, tgt));
  CHECK_FALSE(compare(a, b, 1e-6, 1e-6).ok());  // a fresh mask per call
  model.eval();
  CHECK_FALSE(model.decoder.layers[1].dropout.is_training());
  CHECK_FALSE(model.encoder.dropout.is_training());
  const auto e1 = values(model.forward(src, tgt)), e2 = values(model.forward(src, tgt));
  CHECK(compare(e1, e2, 0, 0).ok());
  model.train();
  CHECK(model.encoder.layers[0].dropout.is_training());
}

TEST_CASE("Parameters can be reassigned through visit_parameters (loading, substitution)") {
  Generator gen(10);
  nn::Linear<float> lin(3, 2, true, gen);
  lin.visit_parameters("", [](const std::string& name, Tensor<float>& p) {
    if (name == "bias") p = nn::detail::make_parameter(full<float>(Shape{2}, 5.0f));
  });
  const auto y = values(lin(zeros<float>(Shape{1, 3})));
  CHECK(y == std::vector<double>{5.0, 5.0});
}

TEST_CASE("TransformerConfig::validate names the field; enums round-trip; for_each_field visits all") {
  nn::TransformerConfig c;
  CHECK_NOTHROW(c.validate());
  c.n_heads = 6;
  CHECK(message_of([&] { c.validate(); }) == "[TransformerConfig] n_heads (6) must divide d_model (256)");
  c.n_heads = 8;
  c.n_kv_heads = 3;
  CHECK(message_of([&] { c.validate(); }) == "[TransformerConfig] n_kv_heads (3) must divide n_heads (8)");
  c.n_kv_heads = 0;
  c.vocab_size = 0;
  CHECK(message_of([&] { c.validate(); }) == "[TransformerConfig] vocab_size (0) must be positive");
  c.vocab_size = 10;
  c.dropout = 1.0;
  CHECK(message_of([&] { c.validate(); }).rfind("[TransformerConfig] dropout", 0) == 0);
  c.dropout = 0.1;
  c.d_model = 24;
  c.n_heads = 8;  // head dim 3
  c.position = nn::PositionKind::rope;
  CHECK(message_of([&] { c.validate(); }).find("rope needs an even head dim") != std::string::npos);
  Generator gen(1);
  CHECK_THROWS_AS(nn::DecoderOnly<float>(c, gen), ValueError);

  CHECK(nn::norm_kind_from("rms") == nn::NormKind::rms);
  CHECK(nn::position_kind_from(nn::to_string(nn::PositionKind::sinusoidal)) == nn::PositionKind::sinusoidal);
  CHECK(nn::mlp_kind_from("swiglu") == nn::MlpKind::swiglu);
  CHECK(nn::gelu_approximation_from("none") == nn::GeluApproximation::none);
  CHECK(message_of([] { nn::norm_kind_from("batch"); }) == "[TransformerConfig] norm \"batch\" is not one of: layer, rms");
  std::set<std::string> fields;
  nn::TransformerConfig d;
  for_each_field(d, [&](const char* name, auto& value) {
    fields.insert(name);
    if constexpr (std::is_same_v<std::remove_cvref_t<decltype(value)>, Index>)
      if (std::string(name) == "d_ff") value = 77;
  });
  CHECK(fields.size() == 17);
  CHECK(d.d_ff == 77);
}
