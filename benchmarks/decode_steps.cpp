// KV-cache decoding steps of the GPT configurations of transformer_train.cpp (tiny, small): B
// sequences of a 16-token prompt, then 48 steps of one new token per sequence
// (DecoderOnly::forward_step), in eval mode without recording. Prints the best of 3 runs' mean ms
// per step and tokens/s for B = 1, 2, 4, 8, 16. No peer: this measures the few-row products of
// decoding (gemm.hpp's dot_rows_kernel for 2-8 rows, the matrix-vector path for 1) against
// earlier builds of cerberus (docs/performance.md, "A few rows against a weight").
//
// Usage: decode_steps [tiny|small] [threads]     (default: tiny 1)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "gpt_configs.hpp"

using namespace cerberus;

int main(int argc, char** argv) {
  const std::string config = argc > 1 ? argv[1] : "tiny";
  set_num_threads(argc > 2 ? std::atoi(argv[2]) : 1);
  if (config != "tiny" && config != "small") {
    std::fprintf(stderr, "decode_steps: unknown config '%s' (expected tiny or small)\n", config.c_str());
    return 2;
  }
  const nn::TransformerConfig c = bench::gpt_config(config);
  Generator gen(1);
  nn::DecoderOnly<float> model(c, gen);
  model.eval();
  NoGradGuard decoding_is_not_recorded;
  constexpr Index prompt_len = 16, steps = 48;
  std::printf("%s GPT, %d thread(s): KV-cache decoding, %lld-token prompt, %lld steps\n", config.c_str(), num_threads(),
              static_cast<long long>(prompt_len), static_cast<long long>(steps));
  for (const Index b : {Index{1}, Index{2}, Index{4}, Index{8}, Index{16}}) {
    double best = 1e30;
    for (int run = 0; run < 3; ++run) {
      auto cache = model.make_cache(b, prompt_len + steps);
      std::vector<std::int64_t> prompt(static_cast<std::size_t>(b * prompt_len));
      for (std::size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<std::int64_t>((i * 37) % static_cast<std::size_t>(c.vocab_size));
      model.forward_step(from_vector<std::int64_t>(prompt, Shape{b, prompt_len}), cache);
      const Tensor<std::int64_t> next = full<std::int64_t>(Shape{b, 1}, 5);
      const auto start = std::chrono::steady_clock::now();
      for (Index s = 0; s < steps; ++s) model.forward_step(next, cache);
      best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / steps);
    }
    std::printf("B %2lld: %7.2f ms per step, %7.0f tokens/s\n", static_cast<long long>(b), best, static_cast<double>(b) / best * 1e3);
  }
  return 0;
}
