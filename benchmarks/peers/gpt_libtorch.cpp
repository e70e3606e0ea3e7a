// The peer of benchmarks/transformer_train.cpp: the same GPT-style decoder written with LibTorch
// 1.13's C++ API (torch::nn), timed the same way. C++17, because LibTorch 1.13's headers predate
// C++20; built only when CMake finds Torch.
//
//   gpt_libtorch tiny|small train|infer THREADS [STEPS] [WARMUP]
//
// prints one line `tokens_per_s=<x> step_ms=<median> peak_rss_mib=<y> params=<n>`, which the
// cerberus side parses. The model: token + learned position embeddings, pre-LayerNorm blocks
// (causal multi-head attention written with matmul / masked_fill / softmax, as LibTorch 1.13 has
// no fused attention; GELU (tanh) MLP of width 4d), final LayerNorm, LM head tied to the token
// embedding, cross-entropy, AdamW (lr 3e-4, weight decay 0.1). Shapes: B batch, T time, C d_model.
#include <torch/torch.h>

#include <dlfcn.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

struct Config {
  int64_t vocab, d_model, layers, heads, seq, batch;
};

Config config_named(const std::string& name) {
  if (name == "tiny") return {8000, 256, 4, 4, 128, 16};
  if (name == "small") return {16000, 512, 6, 8, 256, 8};
  std::fprintf(stderr, "gpt_libtorch: unknown config '%s' (expected tiny or small)\n", name.c_str());
  std::exit(2);
}

struct BlockImpl : torch::nn::Module {
  BlockImpl(const Config& c)
      : heads(c.heads),
        attn_norm(register_module("attn_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.d_model})))),
        qkv(register_module("qkv", torch::nn::Linear(c.d_model, 3 * c.d_model))),
        o_proj(register_module("o_proj", torch::nn::Linear(c.d_model, c.d_model))),
        mlp_norm(register_module("mlp_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.d_model})))),
        up_proj(register_module("up_proj", torch::nn::Linear(c.d_model, 4 * c.d_model))),
        down_proj(register_module("down_proj", torch::nn::Linear(4 * c.d_model, c.d_model))) {}

  torch::Tensor forward(torch::Tensor x, const torch::Tensor& causal_mask) {
    const auto B = x.size(0), T = x.size(1), C = x.size(2), D = C / heads;
    auto qkv_out = qkv->forward(attn_norm->forward(x)).view({B, T, 3, heads, D}).permute({2, 0, 3, 1, 4});
    auto q = qkv_out[0], k = qkv_out[1], v = qkv_out[2];                        // [B, H, T, D]
    auto scores = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(D)));
    scores = scores.masked_fill(causal_mask, -std::numeric_limits<float>::infinity());
    auto y = torch::matmul(torch::softmax(scores, -1), v).transpose(1, 2).reshape({B, T, C});
    x = x + o_proj->forward(y);
    auto h = torch::gelu(up_proj->forward(mlp_norm->forward(x)), "tanh");
    return x + down_proj->forward(h);
  }

  int64_t heads;
  torch::nn::LayerNorm attn_norm;
  torch::nn::Linear qkv, o_proj;
  torch::nn::LayerNorm mlp_norm;
  torch::nn::Linear up_proj, down_proj;
};
TORCH_MODULE(Block);

struct GptImpl : torch::nn::Module {
  explicit GptImpl(const Config& c)
      : embed_tokens(register_module("embed_tokens", torch::nn::Embedding(c.vocab, c.d_model))),
        embed_positions(register_module("embed_positions", torch::nn::Embedding(c.seq, c.d_model))),
        final_norm(register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.d_model})))) {
    for (int64_t i = 0; i < c.layers; ++i) blocks.push_back(register_module("layers_" + std::to_string(i), Block(c)));
    for (auto& p : parameters())
      if (p.dim() >= 2) torch::nn::init::normal_(p, 0.0, 0.02);
  }

  torch::Tensor forward(const torch::Tensor& ids) {
    const auto T = ids.size(1);
    auto causal = torch::ones({T, T}, torch::kBool).triu(1);
    auto x = embed_tokens->forward(ids) + embed_positions->forward(torch::arange(T));
    for (auto& block : blocks) x = block->forward(x, causal);
    return torch::matmul(final_norm->forward(x), embed_tokens->weight.t());    // [B, T, V], tied
  }

  torch::nn::Embedding embed_tokens, embed_positions;
  std::vector<Block> blocks;
  torch::nn::LayerNorm final_norm;
};
TORCH_MODULE(Gpt);

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux reports KiB
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: gpt_libtorch tiny|small train|infer THREADS [STEPS] [WARMUP]\n");
    return 2;
  }
  const Config c = config_named(argv[1]);
  const bool train = std::string(argv[2]) == "train";
  const int threads = std::atoi(argv[3]);
  const int steps = argc > 4 ? std::atoi(argv[4]) : 10;
  const int warmup = argc > 5 ? std::atoi(argv[5]) : 2;
  torch::set_num_threads(threads);
  // fp32 matmuls go to OpenBLAS (Debian's pthreads build), whose own pool ignores
  // torch::set_num_threads and starts one thread per core: without this, the "1 thread" rows ran
  // every matrix product on both cores of these 2-core VMs (seen in `perf record`: half of
  // sgemm_kernel's samples on an OpenBLAS worker). The referee's program does the same.
  if (auto set_blas_threads = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads")))
    set_blas_threads(threads);
  torch::manual_seed(0);

  Gpt model(c);
  int64_t params = 0;
  for (auto& p : model->parameters()) params += p.numel();
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(3e-4).weight_decay(0.1));
  auto ids = torch::randint(c.vocab, {c.batch, c.seq}, torch::kLong);
  auto targets = torch::randint(c.vocab, {c.batch, c.seq}, torch::kLong);

  std::vector<double> times;
  for (int i = 0; i < warmup + steps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    if (train) {
      optimizer.zero_grad();
      auto logits = model->forward(ids);
      auto loss = torch::nn::functional::cross_entropy(logits.view({-1, c.vocab}), targets.view({-1}));
      loss.backward();
      optimizer.step();
    } else {
      torch::NoGradGuard no_grad;
      auto logits = model->forward(ids);
      (void)logits.data_ptr<float>();
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (i >= warmup) times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  std::printf("tokens_per_s=%.1f step_ms=%.2f peak_rss_mib=%.1f params=%lld\n",
              double(c.batch * c.seq) / (median / 1000.0), median, peak_rss_mib(), static_cast<long long>(params));
  return 0;
}
