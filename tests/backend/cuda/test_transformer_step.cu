// A whole training step of a small decoder-only Transformer on cuda against the CPU: the same
// weights (copied from the CPU model), the same batch; the loss and every parameter gradient
// (normwise relative error), then one AdamW step on each device and the parameters after it.
// Two configurations: GPT-style (learned positions, LayerNorm, GELU, tied head, key padding)
// and Llama-style (RoPE, grouped-query attention, RMSNorm, SwiGLU, untied, no bias), each in
// float and in mixed precision (bf16 weights and activations, float masters in AdamW).
#include <algorithm>
#include <cmath>

#include "check.cuh"

namespace {

using namespace cerberus;

double normwise_error(const Tensor<float, cuda>& got, const Tensor<float, cpu>& want, double floor = 0) {
  const auto g = got.to_vector(), w = want.to_vector();
  if (g.size() != w.size()) return INFINITY;
  double diff = 0, ref = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    const double d = static_cast<double>(g[i]) - static_cast<double>(w[i]);
    diff += d * d;
    ref += static_cast<double>(w[i]) * static_cast<double>(w[i]);
  }
  return std::sqrt(diff) / std::max({std::sqrt(ref), floor, 1e-30});
}

void check_config(const char* name, const nn::TransformerConfig& c, bool padding) {
  Generator gen(20240712);
  nn::DecoderOnly<float, cpu> host(c, gen);
  nn::DecoderOnly<float, cuda> device(c, gen);
  check::copy_weights(host, device);  // the device model takes the host model's weights

  const Index b = 3, t = c.max_seq_len;
  std::vector<std::int64_t> ids(static_cast<std::size_t>(b * t)), targets(ids.size());
  std::vector<std::uint8_t> pad(ids.size(), 0);
  for (Index i = 0; i < b * t; ++i) {
    ids[static_cast<std::size_t>(i)] = (i * 7919 + 13) % c.vocab_size;
    targets[static_cast<std::size_t>(i)] = (i * 104729 + 5) % c.vocab_size;
    if (padding && i / t == 1 && i % t >= t - 3) {
      pad[static_cast<std::size_t>(i)] = 1;
      targets[static_cast<std::size_t>(i)] = -100;
    }
  }
  const auto ids_h = from_vector<std::int64_t>(ids, Shape{b, t});
  const auto targets_h = from_vector<std::int64_t>(targets, Shape{b, t});
  const auto pad_h = from_vector<std::uint8_t>(pad, Shape{b, t});
  Tensor<std::uint8_t, cpu> mask_h;
  Tensor<std::uint8_t, cuda> mask_d;
  if (padding) mask_h = pad_h, mask_d = pad_h.to<cuda>();

  // A first AdamW step moves each element by about lr * sign(gradient): eps = 1e-3 keeps the
  // update continuous for gradients near zero, whose sign rounding may flip between devices.
  optim::AdamW<cpu> opt_h(host.named_parameters(), {.lr = 1e-2, .eps = 1e-3, .weight_decay = 0.1});
  optim::AdamW<cuda> opt_d(device.named_parameters(), {.lr = 1e-2, .eps = 1e-3, .weight_decay = 0.1});

  const auto loss_h = host.loss(ids_h, targets_h, mask_h);
  const auto loss_d = device.loss(ids_h.to<cuda>(), targets_h.to<cuda>(), mask_d);
  check::expect_close(std::string(name) + " loss", loss_d, loss_h, 1e-5);
  loss_h.backward();
  loss_d.backward();
  const auto params_h = host.named_parameters();
  const auto params_d = device.named_parameters();
  // The key projection's bias has an exactly zero gradient (softmax ignores q . b, which is
  // constant along a row of scores), so both devices hold round-off there: it is judged against
  // the largest gradient norm of the model instead of its own.
  double gradient_scale = 0;
  for (const auto& p : params_h) {
    double sq = 0;
    for (float g : p.tensor.grad().to_vector()) sq += static_cast<double>(g) * g;
    gradient_scale = std::max(gradient_scale, std::sqrt(sq));
  }
  for (std::size_t k = 0; k < params_h.size(); ++k) {
    const bool zero_gradient = params_h[k].name.find("k_proj.bias") != std::string::npos;
    const double e = normwise_error(params_d[k].tensor.grad(), params_h[k].tensor.grad(), zero_gradient ? gradient_scale : 0.0);
    check::report(e < 1e-4, std::string(name) + " grad " + params_h[k].name, "normwise rel error " + check::fmt(e) + " (tol 1e-4)");
  }
  opt_h.step();
  opt_d.step();
  for (std::size_t k = 0; k < params_h.size(); ++k)
    check::expect_close(std::string(name) + " AdamW step " + params_h[k].name, params_d[k].tensor, params_h[k].tensor, 1e-4);
}

// The same step in mixed precision: bf16 weights and activations on both devices, float master
// weights in AdamW. cuBLAS and the CPU sum bf16 products in float in different orders and round
// every activation to bf16, so the devices agree to bf16's precision (8 bits): ~1e-2.
void check_mixed_precision(const char* name, const nn::TransformerConfig& c) {
  Generator gen(20240713);
  nn::DecoderOnly<bfloat16, cpu> host(c, gen);
  nn::DecoderOnly<bfloat16, cuda> device(c, gen);
  check::copy_weights(host, device);  // the device model takes the host model's weights
  const Index b = 3, t = c.max_seq_len;
  std::vector<std::int64_t> ids(static_cast<std::size_t>(b * t)), targets(ids.size());
  for (Index i = 0; i < b * t; ++i) {
    ids[static_cast<std::size_t>(i)] = (i * 7919 + 13) % c.vocab_size;
    targets[static_cast<std::size_t>(i)] = (i * 104729 + 5) % c.vocab_size;
  }
  const auto ids_h = from_vector<std::int64_t>(ids, Shape{b, t});
  const auto targets_h = from_vector<std::int64_t>(targets, Shape{b, t});
  optim::AdamW opt_h(host.named_parameters(), {.lr = 1e-2, .eps = 1e-3, .weight_decay = 0.1});
  optim::AdamW opt_d(device.named_parameters(), {.lr = 1e-2, .eps = 1e-3, .weight_decay = 0.1});
  const Tensor<float, cpu> loss_h = host.loss(ids_h, targets_h);  // the loss is float (compute type)
  const Tensor<float, cuda> loss_d = device.loss(ids_h.to<cuda>(), targets_h.to<cuda>());
  check::expect_close(std::string(name) + " bf16 loss", loss_d, loss_h, 1e-2);
  loss_h.backward();
  loss_d.backward();
  const auto params_h = host.named_parameters();
  const auto params_d = device.named_parameters();
  for (std::size_t k = 0; k < params_h.size(); ++k) {
    if (params_h[k].name.find("k_proj.bias") != std::string::npos) continue;  // exactly zero, see check_config
    const double e = normwise_error(params_d[k].tensor.grad().to<float>(), params_h[k].tensor.grad().to<float>());
    check::report(e < 5e-2, std::string(name) + " bf16 grad " + params_h[k].name, "normwise rel error " + check::fmt(e) + " (tol 5e-2)");
  }
  opt_h.step();
  opt_d.step();
  const auto state_h = opt_h.state();
  const auto state_d = opt_d.state();
  for (std::size_t k = 0; k < state_h.size(); ++k)
    if (state_h[k].name.ends_with(".master"))
      check::expect_close(std::string(name) + " bf16 AdamW master " + state_h[k].name, state_d[k].tensor, state_h[k].tensor, 1e-2);
}

}  // namespace

int main() {
  return check::run("test_transformer_step (cuda)", [] {
    nn::TransformerConfig gpt;
    gpt.vocab_size = 97, gpt.d_model = 64, gpt.n_layers = 2, gpt.n_heads = 2, gpt.d_ff = 256, gpt.max_seq_len = 24;
    gpt.norm = nn::NormKind::layer, gpt.mlp = nn::MlpKind::gelu, gpt.position = nn::PositionKind::learned;
    gpt.tie_embeddings = true, gpt.bias = true;
    check_config("gpt", gpt, true);

    nn::TransformerConfig llama = gpt;
    llama.n_heads = 4, llama.n_kv_heads = 2, llama.norm = nn::NormKind::rms, llama.mlp = nn::MlpKind::swiglu;
    llama.position = nn::PositionKind::rope, llama.tie_embeddings = false, llama.bias = false;
    check_config("llama", llama, false);

    check_mixed_precision("gpt", gpt);
    check_mixed_precision("llama", llama);
  });
}
