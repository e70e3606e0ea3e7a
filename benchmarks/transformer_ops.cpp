// The fused transformer ops at transformer sizes, forward and forward + backward, side by side
// with LibTorch 1.13:
//   softmax        x [4096, 8000]                 (forward only: ops/softmax.hpp has no backward yet)
//   layer_norm     x [4096, 512], weight, bias    (backward: dx, dweight, dbias)
//   cross_entropy  logits [4096, 8000], targets   (mean reduction; backward: dlogits)
//   lm head + cross_entropy  hidden [2048, 256], W [8000, 256], targets: the tiny GPT's LM head and
//                  loss, forward + backward (dhidden, dW); cerberus's linear_cross_entropy (row
//                  blocks, no [2048, 8000] logits held) and its two ops, LibTorch's two ops
//
// This one file builds two programs (benchmarks/CMakeLists.txt):
//   transformer_ops           cerberus (C++20). It runs the LibTorch peer itself, once per thread
//                             count, and prints both columns and the ratio LibTorch / cerberus.
//   transformer_ops_libtorch  the peer (C++17: LibTorch 1.13's headers predate C++20), compiled
//                             with -DCERBERUS_BENCH_LIBTORCH; it prints "name seconds" lines.
// The peer is a separate process so that each library sees its own environment exactly as set
// (ATEN_CPU_CAPABILITY and malloc settings are read when LibTorch loads); see
// benchmarks/run_transformer_ops.sh for the settings compared.
//
// Backward timings include accumulating into the leaves' .grad, in both libraries: the grads are
// kept between iterations, so both add into an existing buffer.
//
// Usage: transformer_ops [--peer PATH | --no-peer] [threads...]   (default threads: 1 2)
//        transformer_ops_libtorch THREADS
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "timing.hpp"

namespace {

constexpr std::int64_t rows = 4096, vocab = 8000, channels = 512;
constexpr std::int64_t head_rows = 2048, head_features = 256;  // the tiny GPT's LM head: [2048, 256] x [8000, 256]^T

// Inputs both programs generate identically (a splitmix64 stream), so their losses can be compared.
std::vector<float> uniform_values(std::size_t n, float lo, float hi, std::uint64_t seed) {
  std::vector<float> v(n);
  std::uint64_t s = seed;
  for (auto& x : v) {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    x = lo + (hi - lo) * static_cast<float>(static_cast<double>(z >> 40) / 16777216.0);
  }
  return v;
}
std::vector<std::int64_t> target_values(std::size_t n, std::int64_t classes) {
  const auto u = uniform_values(n, 0.0f, 1.0f, 7);
  std::vector<std::int64_t> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = std::min<std::int64_t>(classes - 1, static_cast<std::int64_t>(u[i] * static_cast<float>(classes)));
  return t;
}

struct Inputs {
  std::vector<float> logits = uniform_values(static_cast<std::size_t>(rows * vocab), -4, 4, 1);
  std::vector<std::int64_t> targets = target_values(static_cast<std::size_t>(rows), vocab);
  std::vector<float> x = uniform_values(static_cast<std::size_t>(rows * channels), -2, 2, 2);
  std::vector<float> weight = uniform_values(static_cast<std::size_t>(channels), 0.5, 1.5, 3);
  std::vector<float> bias = uniform_values(static_cast<std::size_t>(channels), -0.5, 0.5, 4);
  std::vector<float> dy = uniform_values(static_cast<std::size_t>(rows * channels), -1, 1, 5);
  std::vector<float> hidden = uniform_values(static_cast<std::size_t>(head_rows * head_features), -2, 2, 6);
  std::vector<float> head_weight = uniform_values(static_cast<std::size_t>(vocab * head_features), -0.1f, 0.1f, 8);
  std::vector<std::int64_t> head_targets = target_values(static_cast<std::size_t>(head_rows), vocab);
};

}  // namespace

#if defined(CERBERUS_BENCH_LIBTORCH)
// ---- the LibTorch peer --------------------------------------------------------------------------
#include <dlfcn.h>

#include <ATen/Version.h>
#include <torch/torch.h>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s THREADS\n", argv[0]);
    return 2;
  }
  torch::set_num_threads(std::atoi(argv[1]));
  // Debian's OpenBLAS (LibTorch's matrix products here) keeps its own thread pool, which
  // torch::set_num_threads does not reach: limit it too (as benchmarks/peers/gpt_libtorch.cpp).
  if (auto set_blas_threads = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads")))
    set_blas_threads(std::atoi(argv[1]));
  const Inputs in;
  auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  auto from = [&](const std::vector<float>& v, std::vector<int64_t> shape) {
    return torch::from_blob(const_cast<float*>(v.data()), shape, f32).clone();
  };
  const auto logits = from(in.logits, {rows, vocab});
  const auto targets = torch::from_blob(const_cast<std::int64_t*>(in.targets.data()), {rows}, torch::kInt64).clone();
  const auto x = from(in.x, {rows, channels}), w = from(in.weight, {channels}), b = from(in.bias, {channels});
  const auto dy = from(in.dy, {rows, channels});
  const auto xg = x.clone().requires_grad_(), wg = w.clone().requires_grad_(), bg = b.clone().requires_grad_();
  const auto lg = logits.clone().requires_grad_();
  namespace F = torch::nn::functional;

  // at::show_config() has a line "CPU capability usage: AVX2" (the kernels ATen dispatches to).
  const std::string config = at::show_config(), key = "CPU capability usage: ";
  const auto at_key = config.find(key);
  std::printf("capability %s\n", at_key == std::string::npos ? "unknown" : config.substr(at_key + key.size(), config.find('\n', at_key) - at_key - key.size()).c_str());
  std::printf("threads %d\n", torch::get_num_threads());
  {
    torch::NoGradGuard no_grad;
    std::printf("softmax_fwd %.9g\n", cerberus::bench::median_seconds([&] { (void)torch::softmax(logits, -1); }));
    std::printf("layer_norm_fwd %.9g\n", cerberus::bench::median_seconds([&] { (void)torch::layer_norm(x, {channels}, w, b, 1e-5); }));
    std::printf("cross_entropy_fwd %.9g\n", cerberus::bench::median_seconds([&] { (void)F::cross_entropy(logits, targets); }));
    std::printf("loss %.9g\n", F::cross_entropy(logits, targets).item<double>());
    std::printf("layer_norm_sumsq %.9g\n", torch::layer_norm(x, {channels}, w, b, 1e-5).square().sum().item<double>());
  }
  std::printf("layer_norm_fwdbwd %.9g\n", cerberus::bench::median_seconds([&] { torch::layer_norm(xg, {channels}, wg, bg, 1e-5).backward(dy); }));
  std::printf("cross_entropy_fwdbwd %.9g\n", cerberus::bench::median_seconds([&] { F::cross_entropy(lg, targets).backward(); }));
  const auto hg = from(in.hidden, {head_rows, head_features}).requires_grad_();
  const auto hw = from(in.head_weight, {vocab, head_features}).requires_grad_();
  const auto ht = torch::from_blob(const_cast<std::int64_t*>(in.head_targets.data()), {head_rows}, torch::kInt64).clone();
  std::printf("lm_head_ce_fwdbwd %.9g\n", cerberus::bench::median_seconds([&] { F::cross_entropy(F::linear(hg, hw), ht).backward(); }));
  return 0;
}

#else
// ---- cerberus, and the table ------------------------------------------------------------------
#include "cerberus/cerberus.hpp"
#include "cerberus/ops/loss.hpp"
#include "cerberus/ops/norm.hpp"
#include "cerberus/ops/softmax.hpp"

using namespace cerberus;

namespace {

using Times = std::map<std::string, double>;

Times measure_cerberus(const Inputs& in) {
  Times t;
  const auto logits = from_vector<float>(in.logits, {rows, vocab});
  const auto targets = from_vector<std::int64_t>(in.targets, {rows});
  const auto x = from_vector<float>(in.x, {rows, channels}), w = from_vector<float>(in.weight, {channels});
  const auto b = from_vector<float>(in.bias, {channels}), dy = from_vector<float>(in.dy, {rows, channels});
  Tensor<float> xg = x.clone(), wg = w.clone(), bg = b.clone(), lg = logits.clone();
  xg.set_requires_grad();
  wg.set_requires_grad();
  bg.set_requires_grad();
  lg.set_requires_grad();
  {
    NoGradGuard no_grad;
    t["softmax_fwd"] = bench::median_seconds([&] { (void)softmax(logits); });
    t["layer_norm_fwd"] = bench::median_seconds([&] { (void)layer_norm(x, w, b, 1e-5); });
    t["cross_entropy_fwd"] = bench::median_seconds([&] { (void)cross_entropy(logits, targets); });
    t["loss"] = static_cast<double>(cross_entropy(logits, targets).item());
    double sumsq = 0;
    for (const float v : layer_norm(x, w, b, 1e-5).to_vector()) sumsq += static_cast<double>(v) * v;
    t["layer_norm_sumsq"] = sumsq;
  }
  t["layer_norm_fwdbwd"] = bench::median_seconds([&] { layer_norm(xg, wg, bg, 1e-5).backward(dy); });
  t["cross_entropy_fwdbwd"] = bench::median_seconds([&] { cross_entropy(lg, targets).backward(); });
  Tensor<float> hg = from_vector<float>(in.hidden, {head_rows, head_features});
  Tensor<float> hw = from_vector<float>(in.head_weight, {vocab, head_features});
  const auto ht = from_vector<std::int64_t>(in.head_targets, {head_rows});
  hg.set_requires_grad();
  hw.set_requires_grad();
  t["lm_head_ce_fwdbwd"] = bench::median_seconds([&] { linear_cross_entropy(hg, hw, ht).backward(); });
  t["lm_head_ce_two_ops_fwdbwd"] = bench::median_seconds([&] { cross_entropy(linear(hg, hw), ht).backward(); });
  return t;
}

// Runs the peer for one thread count; its "name value" lines become a map ("capability" is kept
// as text in `capability`).
Times measure_peer(const std::string& peer, int threads, std::string& capability) {
  Times t;
  const std::string command = "\"" + peer + "\" " + std::to_string(threads);
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return t;
  char name[128], value[128];
  while (std::fscanf(pipe, "%127s %127s", name, value) == 2) {
    if (std::string(name) == "capability") capability = value;
    else t[name] = std::atof(value);
  }
  if (pclose(pipe) != 0) t.clear();
  return t;
}

}  // namespace

int main(int argc, char** argv) {
#if defined(CERBERUS_LIBTORCH_PEER)
  std::string peer = CERBERUS_LIBTORCH_PEER;
#else
  std::string peer;
#endif
  std::vector<int> thread_counts;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--peer" && i + 1 < argc) peer = argv[++i];
    else if (a == "--no-peer") peer.clear();
    else thread_counts.push_back(std::atoi(argv[i]));
  }
  if (thread_counts.empty()) thread_counts = {1, 2};
  const Inputs in;

  std::printf("softmax: [%lld, %lld] float, forward only (ops/softmax.hpp has no backward yet)\n", static_cast<long long>(rows),
              static_cast<long long>(vocab));
  std::printf("layer_norm: x [%lld, %lld], weight and bias [%lld]; cross_entropy: logits [%lld, %lld], mean over %lld targets\n",
              static_cast<long long>(rows), static_cast<long long>(channels), static_cast<long long>(channels),
              static_cast<long long>(rows), static_cast<long long>(vocab), static_cast<long long>(rows));
  std::printf("median ms per call; ratio = LibTorch / cerberus (> 1: cerberus is faster)\n");
  std::printf("%-26s %7s %13s %13s %8s\n", "op", "threads", "cerberus ms", "LibTorch ms", "ratio");
  std::string capability = "n/a";
  std::vector<std::string> notes;
  for (const int threads : thread_counts) {
    set_num_threads(threads);
    const Times c = measure_cerberus(in);
    const Times p = peer.empty() ? Times{} : measure_peer(peer, threads, capability);
    const char* ops[][2] = {{"softmax_fwd", "softmax fwd"},
                            {"layer_norm_fwd", "layer_norm fwd"},
                            {"layer_norm_fwdbwd", "layer_norm fwd+bwd"},
                            {"cross_entropy_fwd", "cross_entropy fwd"},
                            {"cross_entropy_fwdbwd", "cross_entropy fwd+bwd"},
                            {"lm_head_ce_fwdbwd", "lm head+CE fwd+bwd"},
                            {"lm_head_ce_two_ops_fwdbwd", "  (cerberus, two ops)"}};
    for (const auto& op : ops) {
      const double ct = c.at(op[0]);
      if (p.count(op[0])) {
        const double pt = p.at(op[0]);
        std::printf("%-26s %7d %13.3f %13.3f %7.2fx\n", op[1], threads, ct * 1e3, pt * 1e3, pt / ct);
      } else {
        std::printf("%-26s %7d %13.3f %13s %8s\n", op[1], threads, ct * 1e3, "-", "-");
      }
    }
    if (p.count("loss"))
      notes.push_back("threads " + std::to_string(threads) + ": cross_entropy loss cerberus " + std::to_string(c.at("loss")) +
                      ", LibTorch " + std::to_string(p.at("loss")) + "; layer_norm sum of squares cerberus " +
                      std::to_string(c.at("layer_norm_sumsq")) + ", LibTorch " + std::to_string(p.at("layer_norm_sumsq")));
  }
  if (peer.empty()) std::printf("LibTorch: not built (find_package(Torch) failed) or --no-peer given\n");
  else std::printf("LibTorch CPU capability: %s (ATEN_CPU_CAPABILITY=%s)\n", capability.c_str(),
                   std::getenv("ATEN_CPU_CAPABILITY") ? std::getenv("ATEN_CPU_CAPABILITY") : "unset");
  for (const auto& n : notes) std::printf("%s\n", n.c_str());
  return 0;
}
#endif
