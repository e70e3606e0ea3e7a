// Golden test: nn::DecoderOnly against an independent PyTorch implementation.
//
// tests/reference/gpt_reference.py wrote, for three configurations (GPT-2 style; Llama style with
// RMSNorm, SwiGLU, RoPE and one key/value head; sinusoidal positions with grouped-query heads),
// float64 weights under cerberus's parameter names, a batch of ids and targets (two ignored), and
// PyTorch's logits, mean cross-entropy and the gradient of that loss for every parameter. The
// fixtures are committed; this test needs no Python. It loads the weights, runs forward, loss and
// backward in double (must agree to 1e-9) and in float (to 1e-5 of each tensor's largest value),
// and checks that the file and the model name exactly the same parameters.
#include <algorithm>
#include <cmath>
#include <set>
#include <string>

#include "cerberus/cerberus.hpp"
#include "cerberus/io/model_config.hpp"
#include "support/catch.hpp"

using namespace cerberus;

namespace {

std::string fixture(const std::string& name) {
  std::string here = __FILE__;  // .../tests/nn/test_golden.cpp
  here.resize(here.rfind('/'));
  return here + "/../reference/fixtures/" + name + ".safetensors";
}

bool is_parameter_entry(const std::string& name) {
  return name.rfind("grad.", 0) != 0 && name != "input_ids" && name != "targets" && name != "logits" && name != "loss";
}

// Largest |got - want| relative to the largest |want|: one number per tensor, which is how a
// float computation of a whole model can be judged (element-wise relative error explodes on
// entries near zero).
template <class T>
double normwise_error(const Tensor<T>& got, const Tensor<double>& want, double floor = 0) {
  REQUIRE(got.shape() == want.shape());
  const auto g = got.template to<double>().contiguous().to_vector();
  const auto w = want.contiguous().to_vector();
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    if (std::isnan(g[i])) return INFINITY;
    diff = std::max(diff, std::abs(g[i] - w[i]));
    scale = std::max(scale, std::abs(w[i]));
  }
  return diff / std::max({scale, floor, 1e-300});
}

template <class T>
void check_against_reference(const std::string& name, double tolerance) {
  INFO("fixture " << name << ", element type " << (sizeof(T) == 8 ? "double" : "float"));
  const io::SafetensorsFile file(fixture(name));
  const auto config = io::transformer_config_from_json(io::parse_json(file.metadata().at("config"), name), name);
  Generator gen(1);
  nn::DecoderOnly<T> model(config, gen);
  model.eval();

  // The naming contract: the file's weights and the model's parameters are the same set.
  std::set<std::string> in_file, in_model;
  for (const auto& n : file.names())
    if (is_parameter_entry(n)) in_file.insert(n);
  auto params = model.named_parameters();
  for (const auto& p : params) in_model.insert(p.name);
  CHECK(in_file == in_model);

  {
    NoGradGuard no_grad;
    for (auto& p : params) p.tensor.assign(file.tensor<double>(p.name).template to<T>());
  }
  const auto ids = file.tensor<std::int64_t>("input_ids");
  const auto targets = file.tensor<std::int64_t>("targets");

  const auto logits = model.forward(ids);
  CHECK(normwise_error(logits.detach(), file.tensor<double>("logits")) < tolerance);

  model.zero_grad();
  auto loss = model.loss(ids, targets);
  const double want_loss = file.tensor<double>("loss").item();
  CHECK(std::abs(static_cast<double>(loss.item()) - want_loss) < tolerance * std::abs(want_loss));
  loss.backward();
  // The key projection's bias has an exactly zero gradient (softmax ignores a constant added to a
  // row of scores, and q . (k + b) adds q . b to the whole row), so the reference holds round-off
  // and the comparison is against the scale of the model's gradients instead: the largest
  // reference gradient entry of any parameter.
  double gradient_scale = 0;
  for (const auto& p : params)
    for (double g : file.tensor<double>("grad." + p.name).to_vector()) gradient_scale = std::max(gradient_scale, std::abs(g));
  for (const auto& p : params) {
    INFO("gradient of " << p.name);
    REQUIRE(p.tensor.grad().defined());
    const double floor = p.name.find("k_proj.bias") != std::string::npos ? gradient_scale : 0.0;
    CHECK(normwise_error(p.tensor.grad(), file.tensor<double>("grad." + p.name), floor) < tolerance);
  }
}

}  // namespace

TEST_CASE("DecoderOnly matches the PyTorch reference in double", "[nn][golden]") {
  for (const char* name : {"gpt_tiny", "llama_tiny", "sinusoidal_tiny"}) check_against_reference<double>(name, 1e-9);
}

TEST_CASE("DecoderOnly matches the PyTorch reference in float", "[nn][golden]") {
  for (const char* name : {"gpt_tiny", "llama_tiny", "sinusoidal_tiny"}) check_against_reference<float>(name, 1e-5);
}

TEST_CASE("The model config round-trips through JSON and rejects unknown fields", "[nn][golden][config]") {
  nn::TransformerConfig c;
  c.vocab_size = 123, c.norm = nn::NormKind::rms, c.position = nn::PositionKind::rope, c.tie_embeddings = false;
  const auto back = io::transformer_config_from_json(io::parse_json(io::to_json(c).dump()));
  CHECK(back.vocab_size == 123);
  CHECK(back.norm == nn::NormKind::rms);
  CHECK(back.position == nn::PositionKind::rope);
  CHECK_FALSE(back.tie_embeddings);
  CHECK(io::to_json(back) == io::to_json(c));

  auto bad = io::to_json(c);
  bad["d_modle"] = 3;
  CHECK_THROWS_WITH(io::transformer_config_from_json(bad, "run/config.json"),
                    Catch::Contains("run/config.json") && Catch::Contains("unknown field \"d_modle\""));
  auto wrong_type = io::to_json(c);
  wrong_type["d_model"] = "256";
  CHECK_THROWS_WITH(io::transformer_config_from_json(wrong_type, "cfg"), Catch::Contains("d_model"));
  auto invalid = io::to_json(c);
  invalid["n_heads"] = 3;
  CHECK_THROWS_WITH(io::transformer_config_from_json(invalid, "cfg"), Catch::Contains("n_heads (3) must divide d_model (256)"));
}
