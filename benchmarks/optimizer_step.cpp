// One AdamW step over a 5.2M-parameter Transformer-shaped model (an 8000 x 256 embedding and 4
// blocks of attention + MLP weights, biases and norm gains), against the memory-bandwidth bound
// and LibTorch 1.13's torch::optim::AdamW.
//
// AdamW reads p, g, m, v and writes p, m, v: 28 bytes per parameter, whatever the arithmetic.
// The bound is measured, not assumed: the same fused loop with the arithmetic replaced by
// p += g, m += g, v += g moves the same bytes, so its time is what this machine's memory allows
// for this traffic. Columns:
//   cerberus fused     optim::AdamW (one pass per tensor: optim/adam.hpp)
//   cerberus 4 passes  the same rule as four expression assignments per tensor (p *= decay;
//                      m = ...; v = ...; p = ...), to show what fusing saves
//   bound              the same-traffic loop
//   LibTorch           torch::optim::AdamW (its step is a sequence of in-place ops per tensor)
//
// One file, two programs (benchmarks/CMakeLists.txt), as in transformer_ops.cpp:
//   optimizer_step           cerberus (C++20); runs the LibTorch peer once per thread count
//   optimizer_step_libtorch  the peer (C++17), compiled with -DCERBERUS_BENCH_LIBTORCH
// Usage: optimizer_step [--peer PATH | --no-peer] [threads...]   (default threads: 1 2)
//        optimizer_step_libtorch THREADS
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "timing.hpp"

namespace {

// The model's parameter shapes (rank 1: biases and norm gains).
std::vector<std::vector<std::int64_t>> model_shapes() {
  const std::int64_t vocab = 8000, d = 256, ff = 1024;
  std::vector<std::vector<std::int64_t>> s{{vocab, d}};
  for (int layer = 0; layer < 4; ++layer) {
    for (auto shape : std::vector<std::vector<std::int64_t>>{
             {d}, {d}, {d, 3 * d}, {3 * d}, {d, d}, {d}, {d}, {d}, {d, ff}, {ff}, {ff, d}, {d}})
      s.push_back(shape);
  }
  s.push_back({d});
  s.push_back({d});
  return s;
}

std::int64_t numel(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (auto e : shape) n *= e;
  return n;
}

// Values both programs generate identically (splitmix64), so their results can be compared.
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

constexpr double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.1;
constexpr int checked_steps = 3;  // steps before the checksum both programs print

}  // namespace

#if defined(CERBERUS_BENCH_LIBTORCH)
// ---- the LibTorch peer --------------------------------------------------------------------------
#include <torch/torch.h>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s THREADS\n", argv[0]);
    return 2;
  }
  torch::set_num_threads(std::atoi(argv[1]));
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> params;
  std::uint64_t seed = 1;
  for (const auto& shape : model_shapes()) {
    const auto n = static_cast<std::size_t>(numel(shape));
    auto p = torch::from_blob(uniform_values(n, -0.1f, 0.1f, seed).data(), shape, torch::kFloat32).clone();
    auto g = torch::from_blob(uniform_values(n, -1.0f, 1.0f, seed + 1000).data(), shape, torch::kFloat32).clone();
    seed += 1;
    p.mutable_grad() = g;
    params.push_back(p);
  }
  // Every parameter decays here, and in the cerberus run (its default would spare rank < 2).
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(lr).betas({beta1, beta2}).eps(eps).weight_decay(weight_decay));
  for (int s = 0; s < checked_steps; ++s) opt.step();
  double checksum = 0;
  for (const auto& p : params) checksum += p.to(torch::kFloat64).sum().item<double>();
  std::printf("checksum %.12g\n", checksum);
  std::printf("adamw %.9g\n", cerberus::bench::median_seconds([&] { opt.step(); }));
  return 0;
}

#else
// ---- cerberus, and the table ------------------------------------------------------------------
#include "cerberus/cerberus.hpp"

using namespace cerberus;

namespace {

using Times = std::map<std::string, double>;

// Same bytes as an AdamW step (4 arrays read, 3 written), next to no arithmetic.
struct SameTraffic {
  template <class V>
  void operator()(V& p, V& m, V& v, const V& g) const {
    p = p + g;
    m = m + g;
    v = v + g;
  }
};

nn::ParameterList<float> make_model() {
  nn::ParameterList<float> params;
  std::uint64_t seed = 1;
  int i = 0;
  for (const auto& s : model_shapes()) {
    Shape shape;
    for (auto e : s) shape.push_back(e);
    const auto n = static_cast<std::size_t>(numel(s));
    auto p = from_vector<float>(uniform_values(n, -0.1f, 0.1f, seed), shape);
    p.set_requires_grad();
    Tensor<float> y = p * 1.0f;  // grad = exactly the chosen values
    y.backward(from_vector<float>(uniform_values(n, -1.0f, 1.0f, seed + 1000), shape));
    seed += 1;
    std::string name = "p";  // not "p" + to_string(i): GCC 12 warns falsely there (-Wrestrict, bug 105329)
    name += std::to_string(i++);
    params.push_back({name, p});
  }
  return params;
}

Times measure_cerberus(std::int64_t& total) {
  Times t;
  const auto params = make_model();
  total = 0;
  for (const auto& p : params) total += p.tensor.numel();
  optim::AdamW opt(params, {.lr = lr, .beta1 = beta1, .beta2 = beta2, .eps = eps, .weight_decay = weight_decay,
                            .decay = [](const std::string&, const Shape&) { return true; }});
  for (int s = 0; s < checked_steps; ++s) opt.step();
  double checksum = 0;
  for (const auto& p : params)
    for (const float v : p.tensor.to_vector()) checksum += v;
  t["checksum"] = checksum;
  t["adamw"] = bench::median_seconds([&] { opt.step(); });

  // The same rule, one expression per output (4 passes per tensor).
  const auto state = opt.state();
  t["adamw_4_passes"] = bench::median_seconds([&] {
    NoGradGuard no_grad;
    const double step = 10.0;  // any step: the cost does not depend on it
    const float bc2_sqrt = static_cast<float>(std::sqrt(1 - std::pow(beta2, step)));
    const float step_size = static_cast<float>(lr / (1 - std::pow(beta1, step)));
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& p = params[i].tensor;
      const auto g = p.grad();
      const auto& m = state[2 * i].tensor;
      const auto& v = state[2 * i + 1].tensor;
      p *= static_cast<float>(1 - lr * weight_decay);
      m.assign(m * static_cast<float>(beta1) + g * static_cast<float>(1 - beta1));
      v.assign(v * static_cast<float>(beta2) + g * g * static_cast<float>(1 - beta2));
      p.assign(p - m / (sqrt(v) / bc2_sqrt + static_cast<float>(eps)) * step_size);
    }
  });

  t["bound"] = bench::median_seconds([&] {
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& p = params[i].tensor;
      optim::Kernels<cpu>::update_elements(p.numel(), SameTraffic{}, p.data(), state[2 * i].tensor.data(),
                                           state[2 * i + 1].tensor.data(), static_cast<const float*>(p.grad().data()));
    }
  });
  return t;
}

Times measure_peer(const std::string& peer, int threads) {
  Times t;
  const std::string command = "\"" + peer + "\" " + std::to_string(threads);
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return t;
  char name[128], value[128];
  while (std::fscanf(pipe, "%127s %127s", name, value) == 2) t[name] = std::atof(value);
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

  std::printf("%-8s %12s %12s %12s %12s %10s %10s %10s\n", "threads", "fused ms", "4 passes ms", "bound ms", "LibTorch ms", "fused/bnd",
              "GB/s", "Torch/fused");
  std::vector<std::string> notes;
  std::int64_t total = 0;
  for (const int threads : thread_counts) {
    set_num_threads(threads);
    const Times c = measure_cerberus(total);
    const Times p = peer.empty() ? Times{} : measure_peer(peer, threads);
    const double bytes = 28.0 * static_cast<double>(total);
    char torch_ms[32] = "-", ratio[32] = "-";
    if (p.count("adamw")) {
      std::snprintf(torch_ms, sizeof torch_ms, "%.3f", p.at("adamw") * 1e3);
      std::snprintf(ratio, sizeof ratio, "%.2fx", p.at("adamw") / c.at("adamw"));
      notes.push_back("threads " + std::to_string(threads) + ": parameter sum after " + std::to_string(checked_steps) +
                      " steps: cerberus " + std::to_string(c.at("checksum")) + ", LibTorch " + std::to_string(p.at("checksum")));
    }
    std::printf("%-8d %12.3f %12.3f %12.3f %12s %9.2fx %10.1f %10s\n", threads, c.at("adamw") * 1e3, c.at("adamw_4_passes") * 1e3,
                c.at("bound") * 1e3, torch_ms, c.at("adamw") / c.at("bound"), bytes / c.at("adamw") / 1e9, ratio);
  }
  std::printf("%lld parameters in %zu tensors, 28 bytes each per step (%.1f MB); median ms per step\n", static_cast<long long>(total),
              model_shapes().size(), 28.0 * static_cast<double>(total) / 1e6);
  std::printf("fused/bnd = fused / same-traffic loop (1.00x: at the memory bound); GB/s of the fused step; "
              "Torch/fused > 1: cerberus faster\n");
  if (peer.empty()) std::printf("LibTorch: not built (find_package(Torch) failed) or --no-peer given\n");
  for (const auto& n : notes) std::printf("%s\n", n.c_str());
  return 0;
}
#endif
