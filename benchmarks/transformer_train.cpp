// Training and inference throughput of a GPT-style decoder, side by side with the same model in
// LibTorch 1.13 (benchmarks/peers/gpt_libtorch.cpp), with each side's peak memory.
//
// Models (the referee's, /work/shared/peers/README.md): token + learned position embeddings,
// pre-LayerNorm blocks with causal multi-head attention and a GELU (tanh) MLP of width 4d, final
// LayerNorm, LM head tied to the token embedding, cross-entropy, AdamW (lr 3e-4, decay 0.1).
//   tiny   vocab 8000,  d 256, 4 layers, 4 heads, seq 128, batch 16   (5.24M parameters)
//   small  vocab 16000, d 512, 6 layers, 8 heads, seq 256, batch 8    (27.2M parameters)
// A training step is forward + backward + AdamW; inference is the forward pass to logits.
// Modes train-bf16 and infer-bf16 run cerberus's mixed precision (DecoderOnly<bfloat16>, float
// master weights in AdamW) with no peer: they show what bf16 costs and saves on this CPU.
//
// Every measurement runs in its own child process (this program re-executed with --one, or the
// peer), so peak RSS (getrusage ru_maxrss) belongs to that model and mode alone, and LibTorch
// reads its environment (ATEN_CPU_CAPABILITY, MALLOC_*, OMP_WAIT_POLICY) fresh; see
// benchmarks/run_transformer_train.sh for the settings compared.
//
// Rounds: each row runs cerberus and the peer alternately, --rounds times (default 3), and prints
// the median tokens/s of each side and the median of the per-round ratios. On these shared VMs one
// program's step time drifts by up to 25% between runs minutes apart (a vCPU slowed by the
// host); a round's two runs are seconds apart, so their ratio is the figure least affected.
//
// Usage: transformer_train [--peer PATH | --no-peer] [--configs tiny,small] [--modes train,infer]
//                          [--threads 1,2] [--steps N] [--warmup N] [--rounds N]
//                          (modes: train, infer, train-bf16, infer-bf16)
//        transformer_train --one CONFIG MODE THREADS STEPS WARMUP     (one measurement)
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "gpt_configs.hpp"

namespace {

using namespace cerberus;

nn::TransformerConfig config_named(const std::string& name) {
  if (name != "tiny" && name != "small") {
    std::fprintf(stderr, "transformer_train: unknown config '%s' (expected tiny or small)\n", name.c_str());
    std::exit(2);
  }
  return bench::gpt_config(name);
}
Index batch_of(const std::string& name) { return name == "tiny" ? 16 : 8; }

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux reports KiB
}

double cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// One measurement in this process: prints the same line as the peer.
template <class Element>
int measure_one(const std::string& name, bool train, int threads, int steps, int warmup) {
  set_num_threads(threads);
  const auto c = config_named(name);
  const Index B = batch_of(name), T = c.max_seq_len;
  Generator gen(0);
  nn::DecoderOnly<Element> model(c, gen);
  // Inference builds no optimizer: AdamW allocates its moments up front (2 x 4 bytes per
  // parameter, 209 MB for small), which torch::optim::AdamW only does at its first step.
  std::optional<optim::AdamW<cpu, Element>> optimizer;
  if (train) optimizer.emplace(model.named_parameters(), optim::AdamWOptions{.lr = 3e-4, .weight_decay = 0.1});
  std::vector<std::int64_t> ids_host(static_cast<std::size_t>(B * T)), targets_host(ids_host.size());
  for (std::size_t i = 0; i < ids_host.size(); ++i) {
    ids_host[i] = static_cast<std::int64_t>((i * 2654435761u) % static_cast<std::size_t>(c.vocab_size));
    targets_host[i] = static_cast<std::int64_t>((i * 40503u + 7) % static_cast<std::size_t>(c.vocab_size));
  }
  const auto ids = from_vector<std::int64_t>(ids_host, {B, T});
  const auto targets = from_vector<std::int64_t>(targets_host, {B, T});

  std::vector<double> times, cpu_times;
  double loss_value = 0;
  for (int i = 0; i < warmup + steps; ++i) {
    const double cpu_start = cpu_ms();
    const auto start = std::chrono::steady_clock::now();
    if (train) {
      optimizer->zero_grad();
      auto loss = model.loss(ids, targets);
      loss.backward();
      optimizer->step();
      loss_value = loss.item();
    } else {
      NoGradGuard no_grad;
      auto logits = model.forward(ids);
      loss_value = static_cast<double>(static_cast<float>(logits(0, 0, 0)));
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (i >= warmup) times.push_back(ms), cpu_times.push_back(cpu_ms() - cpu_start);
  }
  std::sort(times.begin(), times.end());
  std::sort(cpu_times.begin(), cpu_times.end());
  const double median = times[times.size() / 2];
  // cpu_ms: CPU time of the whole process per step (all threads), a check on a shared machine:
  // at one thread, step_ms well above cpu_ms means the process waited for a core.
  std::printf("tokens_per_s=%.1f step_ms=%.2f cpu_ms=%.2f peak_rss_mib=%.1f params=%lld last=%.4f\n",
              static_cast<double>(B * T) / (median / 1000.0), median, cpu_times[cpu_times.size() / 2], peak_rss_mib(),
              static_cast<long long>(model.num_parameters()), loss_value);
  return 0;
}

struct Result {
  double tokens_per_s = 0, step_ms = 0, cpu_ms = 0, peak_rss_mib = 0;
  long long params = 0;
  bool ok = false;
};

// Runs argv as a child process and parses its `key=value` line.
Result run_child(const std::vector<std::string>& argv) {
  int fds[2];
  if (pipe(fds) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    std::perror("transformer_train: exec");
    _exit(127);
  }
  close(fds[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  Result r;
  std::istringstream words(out);
  for (std::string word; words >> word;) {
    const auto eq = word.find('=');
    if (eq == std::string::npos) continue;
    const std::string key = word.substr(0, eq);
    const double value = std::atof(word.c_str() + eq + 1);
    if (key == "tokens_per_s") r.tokens_per_s = value, r.ok = true;
    if (key == "step_ms") r.step_ms = value;
    if (key == "cpu_ms") r.cpu_ms = value;
    if (key == "peak_rss_mib") r.peak_rss_mib = value;
    if (key == "params") r.params = static_cast<long long>(value);
  }
  r.ok = r.ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (!r.ok) std::fprintf(stderr, "transformer_train: %s failed:\n%s\n", argv[0].c_str(), out.c_str());
  return r;
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// A row's rounds: the median of each side's measurements, and of the per-round ratios.
struct RowSummary {
  Result ours, theirs;  // medians of tokens/s, step and cpu ms; the largest peak RSS
  double speedup = 0;   // median of ours / theirs over the rounds where both ran
  std::string ratios;   // each round's ratio, in order
};

RowSummary summarise(const std::vector<Result>& ours, const std::vector<Result>& theirs) {
  const auto side = [](const std::vector<Result>& runs) {
    Result r;
    std::vector<double> tps, step, cpu;
    for (const Result& x : runs) {
      if (!x.ok) continue;
      tps.push_back(x.tokens_per_s), step.push_back(x.step_ms), cpu.push_back(x.cpu_ms);
      r.peak_rss_mib = std::max(r.peak_rss_mib, x.peak_rss_mib);
      r.params = x.params;
      r.ok = true;
    }
    r.tokens_per_s = median_of(tps), r.step_ms = median_of(step), r.cpu_ms = median_of(cpu);
    return r;
  };
  RowSummary s{side(ours), side(theirs), 0, {}};
  std::vector<double> ratios;
  for (std::size_t i = 0; i < ours.size() && i < theirs.size(); ++i)
    if (ours[i].ok && theirs[i].ok) {
      ratios.push_back(ours[i].tokens_per_s / theirs[i].tokens_per_s);
      char buf[16];
      std::snprintf(buf, sizeof buf, "%s%.2f", s.ratios.empty() ? "" : " ", ratios.back());
      s.ratios += buf;
    }
  s.speedup = median_of(ratios);
  return s;
}

std::string self_path(const char* argv0) {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string(argv0);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "--one") {
    if (args.size() != 6) {
      std::fprintf(stderr, "usage: transformer_train --one CONFIG MODE THREADS STEPS WARMUP\n");
      return 2;
    }
    const bool train = args[2].rfind("train", 0) == 0, bf16 = args[2].ends_with("-bf16");
    const int threads = std::atoi(args[3].c_str()), steps = std::atoi(args[4].c_str()), warmup = std::atoi(args[5].c_str());
    return bf16 ? measure_one<bfloat16>(args[1], train, threads, steps, warmup) : measure_one<float>(args[1], train, threads, steps, warmup);
  }
#ifdef CERBERUS_LIBTORCH_PEER
  std::string peer = CERBERUS_LIBTORCH_PEER;
#else
  std::string peer;
#endif
  std::vector<std::string> configs{"tiny", "small"}, modes{"train", "infer"}, threads{"1", "2"};
  std::string steps = "10", warmup = "2";
  int rounds = 3;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto value = [&] { return i + 1 < args.size() ? args[++i] : std::string(); };
    if (args[i] == "--peer") peer = value();
    else if (args[i] == "--no-peer") peer.clear();
    else if (args[i] == "--configs") configs = split_commas(value());
    else if (args[i] == "--modes") modes = split_commas(value());
    else if (args[i] == "--threads") threads = split_commas(value());
    else if (args[i] == "--steps") steps = value();
    else if (args[i] == "--warmup") warmup = value();
    else if (args[i] == "--rounds") rounds = std::max(1, std::atoi(value().c_str()));
    else {
      std::fprintf(stderr, "transformer_train: unknown argument '%s'\n", args[i].c_str());
      return 2;
    }
  }
  const std::string self = self_path(argv[0]);
  std::printf("GPT-style decoder, median of %s steps after %s warm-up, %d round(s) per row (cerberus and LibTorch "
              "alternately); tokens/s and ms: medians over the rounds; speedup: median of the per-round ratios; peak RSS "
              "in MiB (largest)\n",
              steps.c_str(), warmup.c_str(), rounds);
  std::printf("%-6s %-10s %4s | %10s %8s %8s %8s | %10s %8s | %8s %8s | %s\n", "config", "mode", "thr", "cerberus", "step ms",
              "cpu ms", "RSS", "LibTorch", "RSS", "speedup", "RSS x", "per round");
  for (const auto& cfg : configs)
    for (const auto& mode : modes)
      for (const auto& t : threads) {
        std::vector<Result> ours, theirs;
        for (int r = 0; r < rounds; ++r) {
          ours.push_back(run_child({self, "--one", cfg, mode, t, steps, warmup}));
          if (!peer.empty() && !mode.ends_with("-bf16")) theirs.push_back(run_child({peer, cfg, mode, t, steps, warmup}));
        }
        const RowSummary row = summarise(ours, theirs);
        std::printf("%-6s %-10s %4s | %10.0f %8.1f %8.1f %8.0f | ", cfg.c_str(), mode.c_str(), t.c_str(), row.ours.tokens_per_s,
                    row.ours.step_ms, row.ours.cpu_ms, row.ours.peak_rss_mib);
        if (row.theirs.ok && row.ours.ok)
          std::printf("%10.0f %8.0f | %7.2fx %7.2fx | %s\n", row.theirs.tokens_per_s, row.theirs.peak_rss_mib, row.speedup,
                      row.ours.peak_rss_mib / row.theirs.peak_rss_mib, row.ratios.c_str());
        else
          std::printf("%10s %8s | %8s %8s |\n", "-", "-", "-", "-");
        std::fflush(stdout);
        if (row.ours.ok && row.theirs.ok && row.ours.params != row.theirs.params)
          std::printf("  note: parameter counts differ (cerberus %lld, LibTorch %lld)\n", row.ours.params, row.theirs.params);
      }
  return 0;
}
