// The GPT configurations the benchmarks share (the referee's, /work/shared/peers/README.md, and
// issue 8's large one for the GPU): pre-LayerNorm blocks, a tanh-GELU MLP of width 4d, learned
// positions, tied embeddings, biases.
//   tiny   vocab 8000,  d 256,  4 layers,  4 heads, seq 128
//   small  vocab 16000, d 512,  6 layers,  8 heads, seq 256
//   large  vocab 32000, d 1024, 16 layers, 16 heads, seq 1024
// The same model is written with LibTorch in benchmarks/peers/gpt_libtorch.cpp and with PyTorch
// in benchmarks/gpu/bench_torch.py.
#pragma once

#include <string>

#include "cerberus/core/error.hpp"
#include "cerberus/nn/config.hpp"

namespace cerberus::bench {

inline bool is_gpt_config(const std::string& name) { return name == "tiny" || name == "small" || name == "large"; }

inline nn::TransformerConfig gpt_config(const std::string& name) {
  nn::TransformerConfig c;
  if (name == "tiny") c.vocab_size = 8000, c.d_model = 256, c.n_layers = 4, c.n_heads = 4, c.max_seq_len = 128;
  else if (name == "small") c.vocab_size = 16000, c.d_model = 512, c.n_layers = 6, c.n_heads = 8, c.max_seq_len = 256;
  else if (name == "large") c.vocab_size = 32000, c.d_model = 1024, c.n_layers = 16, c.n_heads = 16, c.max_seq_len = 1024;
  else throw ValueError("unknown GPT config '" + name + "' (expected tiny, small or large)");
  c.d_ff = 4 * c.d_model;
  c.norm = nn::NormKind::layer;
  c.mlp = nn::MlpKind::gelu;
  c.gelu_approximation = nn::GeluApproximation::tanh;
  c.position = nn::PositionKind::learned;
  c.tie_embeddings = true;
  c.bias = true;
  return c;
}

}  // namespace cerberus::bench
