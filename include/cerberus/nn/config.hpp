// TransformerConfig: the run-time sizes and choices of every Transformer stack in nn/.
//
// Legend: V = vocab_size, C = d_model, H = n_heads, Hkv = n_kv_heads, D = head dim = C / H,
// F = d_ff, L = n_layers.
//
// Structure (which blocks, in which order) comes from the stack's type; everything here is a
// plain public member so that JSON / command-line glue can read and write it, and
// `for_each_field(config, f)` visits every field as f(name, member&) in declaration order for
// that glue. Enums convert to and from their lower-case names (`to_string`, `norm_kind_from`, ...).
// `validate()` throws cerberus::ValueError naming the field: "[TransformerConfig] n_heads (6) must
// divide d_model (256)".
#pragma once

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "cerberus/core/error.hpp"
#include "cerberus/core/shape.hpp"

namespace cerberus::nn {

enum class NormKind { layer, rms };                      // LayerNorm (weight, bias) or RMSNorm (weight)
enum class MlpKind { gelu, swiglu };                      // up -> GELU -> down, or down(silu(gate) * up)
enum class GeluApproximation { tanh, none };             // GPT-2's tanh form, or the exact erf form
enum class PositionKind { learned, sinusoidal, rope };   // added table (parameter), added fixed table, rotary q/k

inline const char* to_string(NormKind k) { return k == NormKind::layer ? "layer" : "rms"; }
inline const char* to_string(MlpKind k) { return k == MlpKind::gelu ? "gelu" : "swiglu"; }
inline const char* to_string(GeluApproximation k) { return k == GeluApproximation::tanh ? "tanh" : "none"; }
inline const char* to_string(PositionKind k) {
  return k == PositionKind::learned ? "learned" : k == PositionKind::sinusoidal ? "sinusoidal" : "rope";
}

namespace detail {
template <class E, std::size_t N>
E enum_from(std::string_view name, const E (&values)[N], const char* field) {
  std::string options;
  for (const E v : values) {
    if (name == to_string(v)) return v;
    options += (options.empty() ? "" : ", ") + std::string(to_string(v));
  }
  throw ValueError("[TransformerConfig] " + std::string(field) + " \"" + std::string(name) + "\" is not one of: " + options);
}
}  // namespace detail

inline NormKind norm_kind_from(std::string_view s) {
  constexpr NormKind all[] = {NormKind::layer, NormKind::rms};
  return detail::enum_from(s, all, "norm");
}
inline MlpKind mlp_kind_from(std::string_view s) {
  constexpr MlpKind all[] = {MlpKind::gelu, MlpKind::swiglu};
  return detail::enum_from(s, all, "mlp");
}
inline GeluApproximation gelu_approximation_from(std::string_view s) {
  constexpr GeluApproximation all[] = {GeluApproximation::tanh, GeluApproximation::none};
  return detail::enum_from(s, all, "gelu_approximation");
}
inline PositionKind position_kind_from(std::string_view s) {
  constexpr PositionKind all[] = {PositionKind::learned, PositionKind::sinusoidal, PositionKind::rope};
  return detail::enum_from(s, all, "position");
}

struct TransformerConfig {
  Index vocab_size = 8000;
  Index d_model = 256;           // C
  Index n_layers = 4;            // decoder layers (all layers of a decoder-only or encoder-only stack)
  Index n_heads = 4;             // H; must divide d_model
  Index n_kv_heads = 0;          // Hkv for grouped-query attention; 0 = n_heads; must divide n_heads
  Index d_ff = 1024;             // F, the MLP's hidden width
  Index max_seq_len = 128;       // longest sequence (learned / sinusoidal / rotary tables, KV cache default)
  double dropout = 0.0;          // residual and embedding dropout probability, in [0, 1)
  NormKind norm = NormKind::layer;
  double norm_eps = 1e-5;
  MlpKind mlp = MlpKind::gelu;
  GeluApproximation gelu_approximation = GeluApproximation::tanh;
  PositionKind position = PositionKind::learned;
  double rope_theta = 10000.0;
  bool tie_embeddings = true;    // LM head reuses the token embedding (no lm_head.weight)
  bool bias = true;              // biases in Linear layers and LayerNorm
  Index n_encoder_layers = 0;    // encoder layers of an EncoderDecoder; 0 = n_layers

  Index kv_heads() const { return n_kv_heads == 0 ? n_heads : n_kv_heads; }
  Index head_dim() const { return n_heads > 0 ? d_model / n_heads : 0; }
  Index encoder_layers() const { return n_encoder_layers == 0 ? n_layers : n_encoder_layers; }

  // Throws ValueError naming the first field that is out of range.
  void validate() const {
    auto fail = [](const std::string& what) { throw ValueError("[TransformerConfig] " + what); };
    auto positive = [&](const char* name, Index v) {
      if (v <= 0) fail(std::string(name) + " (" + std::to_string(v) + ") must be positive");
    };
    positive("vocab_size", vocab_size);
    positive("d_model", d_model);
    positive("n_layers", n_layers);
    positive("n_heads", n_heads);
    positive("d_ff", d_ff);
    positive("max_seq_len", max_seq_len);
    if (n_kv_heads < 0) fail("n_kv_heads (" + std::to_string(n_kv_heads) + ") must be >= 0 (0 = n_heads)");
    if (n_encoder_layers < 0) fail("n_encoder_layers (" + std::to_string(n_encoder_layers) + ") must be >= 0 (0 = n_layers)");
    if (d_model % n_heads != 0)
      fail("n_heads (" + std::to_string(n_heads) + ") must divide d_model (" + std::to_string(d_model) + ")");
    if (n_heads % kv_heads() != 0)
      fail("n_kv_heads (" + std::to_string(kv_heads()) + ") must divide n_heads (" + std::to_string(n_heads) + ")");
    if (position == PositionKind::rope && head_dim() % 2 != 0)
      fail("rope needs an even head dim, but d_model (" + std::to_string(d_model) + ") / n_heads (" + std::to_string(n_heads) +
           ") = " + std::to_string(head_dim()));
    if (position == PositionKind::sinusoidal && d_model % 2 != 0)
      fail("sinusoidal positions need an even d_model, got " + std::to_string(d_model));
    if (!(dropout >= 0.0 && dropout < 1.0)) fail("dropout (" + std::to_string(dropout) + ") must be in [0, 1)");
    if (!(norm_eps > 0.0)) fail("norm_eps (" + std::to_string(norm_eps) + ") must be positive");
    if (!(rope_theta > 0.0)) fail("rope_theta (" + std::to_string(rope_theta) + ") must be positive");
  }
};

// Visits every field as f(name, member&) in declaration order (const or not).
template <class Config, class F>
  requires std::same_as<std::remove_cvref_t<Config>, TransformerConfig>
void for_each_field(Config&& c, F&& f) {
  f("vocab_size", c.vocab_size);
  f("d_model", c.d_model);
  f("n_layers", c.n_layers);
  f("n_heads", c.n_heads);
  f("n_kv_heads", c.n_kv_heads);
  f("d_ff", c.d_ff);
  f("max_seq_len", c.max_seq_len);
  f("dropout", c.dropout);
  f("norm", c.norm);
  f("norm_eps", c.norm_eps);
  f("mlp", c.mlp);
  f("gelu_approximation", c.gelu_approximation);
  f("position", c.position);
  f("rope_theta", c.rope_theta);
  f("tie_embeddings", c.tie_embeddings);
  f("bias", c.bias);
  f("n_encoder_layers", c.n_encoder_layers);
}

}  // namespace cerberus::nn
