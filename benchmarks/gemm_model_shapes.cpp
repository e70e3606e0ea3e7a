// The matrix products of one GPT training step (benchmarks/transformer_train.cpp's tiny and small
// configs), cerberus's cpu_backend::gemm side by side with OpenBLAS's cblas_sgemm in the same
// process, in the layouts the model uses, and what they add up to per step.
//
// Layouts (ops/linear.hpp; legend: N = B*T = 2048 rows, I = in features, O = out features,
// W [O, I] row-major, x [N, I], g = dy [N, O], all row-major):
//   fwd  y  = x W^T   M x N x K = N x O x I   A = x as stored, B = W transposed (a view)
//   dx   dx = g W     N x I x O               A = g,           B = W as stored
//   dW   dW = g^T x   O x I x N               A = g transposed, B = x as stored
// Per layer: fused q/k/v (O = 3d, nn/attention.hpp), attention output (d -> d), MLP up (d -> 4d)
// and down (4d -> d); once per step the LM head tied to the embedding (O = V, I = d, no bias).
// Forward products with a bias: cerberus adds it in the GEMM's store (its epilogue, as linear()
// does), OpenBLAS accumulates onto C filled with it (beta = 1, as torch's addmm does; the fill
// itself is not timed).
//   tiny:  d 256, d_ff 1024, V 8000,  4 layers      small: d 512, d_ff 2048, V 16000, 6 layers
// The attention's own tile products (T x T x head) are not here: they are in ops/attention.hpp.
//
// Usage: bench_gemm_model_shapes [--configs tiny,small] [--threads 1,2] [--rounds R] [--filter TEXT]
//                                [--flush MIB]
// Configs tiny-decode and small-decode time the forward products of a KV-cache decoding step
// instead: B = 2, 4 and 8 rows (one new token per sequence) against each weight.
// Run with OPENBLAS_CORETYPE=Cooperlake for OpenBLAS's AVX-512 kernels (the program prints the
// kernel family OpenBLAS reports).
//
// Warm or cold operands: by default the same operands are multiplied again and again, so they sit
// in L2 / L3 (as in benchmarks/gemm.cpp). In a training step they arrive cold: an activation was
// written by the previous op, a weight was last read a step ago, the step's ~400 MB do not stay in
// cache. --flush MIB writes that many MiB of other memory before every timed call (not timed):
// 16 leaves the operands in L3, 300 sends them to DRAM. The two settings rank changes differently:
// packing A panels into a buffer still in L1 gained 5-20% cold and nothing warm.
//
// Method (as benchmarks/gemm.cpp): inputs filled before timing; before each block ~0.1 s of
// warm-up calls (an idle vCPU of these VMs needs ~0.1 s to get a full core back); the two
// libraries take turns in blocks of ~0.15 s, R rounds (default 5); each cell is the best call
// time over all rounds, the ratio column the median of the per-round ratios (each round times both
// back to back). One thread is timed in CPU time of the process (CLOCK_PROCESS_CPUTIME_ID: a
// shared machine's other work does not count, a stolen core does); more threads in wall time, with
// a 0.3 s pause after each OpenBLAS block (its workers spin after a call and would take the cores).
// The step totals weight each product by how often a step runs it (train: all three kinds;
// infer: fwd only), from the best times.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cerberus/backend/cpu/gemm.hpp"
#include "cerberus/core/random.hpp"
#include "timing.hpp"

#if CERBERUS_BENCH_OPENBLAS
#include <cblas.h>
#endif

using namespace cerberus;
using cpu_backend::Transpose;

namespace {

enum class Kind { fwd, dx, dw };

struct Product {
  std::string name;
  Kind kind;
  Index rows, in, out;  // N, I, O of the linear layer
  bool bias;            // forward adds a bias (ours: epilogue; OpenBLAS: beta = 1 onto it)
  int per_step;         // how many times a step runs it
  // GEMM view: C [m, n] = op(A) [m, k] op(B) [k, n]
  Index m() const { return kind == Kind::fwd ? rows : kind == Kind::dx ? rows : out; }
  Index n() const { return kind == Kind::fwd ? out : in; }
  Index k() const { return kind == Kind::fwd ? in : kind == Kind::dx ? out : rows; }
  bool trans_a() const { return kind == Kind::dw; }
  bool trans_b() const { return kind == Kind::fwd; }
  Index lda() const { return kind == Kind::fwd ? in : out; }  // x [N, I]; g [N, O]
  Index ldb() const { return in; }                            // W [O, I] or x [N, I]
};

std::vector<Product> products_of(const std::string& config) {
  const bool tiny = config.rfind("tiny", 0) == 0;
  const Index n = 2048, d = tiny ? 256 : 512, f = 4 * d, v = tiny ? 8000 : 16000;
  const int layers = tiny ? 4 : 6;
  struct Layer {
    const char* name;
    Index in, out;
    bool bias;
    int count;
  };
  const Layer layer_list[] = {{"qkv", d, 3 * d, true, layers},
                              {"attn out", d, d, true, layers},
                              {"mlp up", d, f, true, layers},
                              {"mlp down", f, d, true, layers},
                              {"lm head", d, v, false, 1}};
  std::vector<Product> ps;
  // A KV-cache decoding step: one new token for each of B sequences, B rows per product.
  if (config.find("-decode") != std::string::npos) {
    for (const Index batch : {Index{2}, Index{4}, Index{8}})
      for (const Layer& l : layer_list)
        ps.push_back({config.substr(0, config.find('-')) + " B" + std::to_string(batch) + " " + l.name, Kind::fwd, batch, l.in, l.out, l.bias,
                      l.count});
    return ps;
  }
  for (const Kind kind : {Kind::fwd, Kind::dx, Kind::dw})
    for (const Layer& l : layer_list) {
      const char* kind_name = kind == Kind::fwd ? "fwd" : kind == Kind::dx ? "dx " : "dW ";
      ps.push_back({config + " " + kind_name + " " + l.name, kind, n, l.in, l.out, kind == Kind::fwd && l.bias, l.count});
    }
  return ps;
}

double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= s.size()) {
    const std::size_t comma = s.find(',', start);
    out.push_back(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> configs = {"tiny", "small"};
  std::vector<int> thread_counts = {1, 2};
  int rounds = 5;
  long flush_mib = 0;
  std::string filter;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : "";
    if (arg == "--configs") configs = split(value), ++i;
    else if (arg == "--threads") {
      thread_counts.clear();
      for (const auto& t : split(value)) thread_counts.push_back(std::atoi(t.c_str()));
      ++i;
    } else if (arg == "--rounds") rounds = std::max(1, std::atoi(value)), ++i;
    else if (arg == "--filter") filter = value, ++i;
    else if (arg == "--flush") flush_mib = std::max(0L, std::atol(value)), ++i;
    else {
      std::fprintf(stderr, "usage: %s [--configs tiny,small,tiny-decode,small-decode] [--threads 1,2] [--rounds R] [--filter TEXT] [--flush MIB]\n", argv[0]);
      return 2;
    }
  }

#if CERBERUS_BENCH_OPENBLAS
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  std::printf("OpenBLAS kernels: %s (OPENBLAS_CORETYPE=%s)\n", openblas_get_corename(), coretype ? coretype : "unset");
#else
  std::printf("OpenBLAS: not found at configure time, its columns are left empty\n");
#endif
  std::printf("GFLOP/s, best of %d rounds (1 thread: CPU time, more: wall time); ratio = OpenBLAS time / cerberus time\n", rounds);
  std::printf("operands: %s\n\n", flush_mib > 0 ? ("cold (" + std::to_string(flush_mib) + " MiB written before each call)").c_str() : "warm (the same ones every call)");
  std::vector<float> flush_buffer(static_cast<std::size_t>(flush_mib) << 18);
  const auto flush = [&] {
    for (std::size_t i = 0; i < flush_buffer.size(); i += 16) flush_buffer[i] += 1.0f;  // one write per cache line
  };
  std::printf("| thr | product               | M x N x K           | cerberus | OpenBLAS | ratio (best) | ratio (median) |\n");
  std::printf("|----:|-----------------------|---------------------|---------:|---------:|-------------:|---------------:|\n");

  Generator gen(42);
  for (const int threads : thread_counts) {
    set_num_threads(threads);
#if CERBERUS_BENCH_OPENBLAS
    openblas_set_num_threads(threads);
#endif
    const auto clock = [&] { return threads == 1 ? cpu_seconds() : bench::now_seconds(); };
    for (const std::string& config : configs) {
      // Step totals in seconds: [ours, peer] x [train, infer].
      double total[2][2] = {{0, 0}, {0, 0}};
      bool all_shapes = true;
      for (const Product& p : products_of(config)) {
        if (!filter.empty() && p.name.find(filter) == std::string::npos) {
          all_shapes = false;
          continue;
        }
        const Index m = p.m(), n = p.n(), k = p.k();
        const std::size_t a_size = static_cast<std::size_t>(m * k), b_size = static_cast<std::size_t>(k * n),
                          c_size = static_cast<std::size_t>(m * n);
        std::vector<float> a(a_size), b(b_size), c(c_size), c_peer(c_size), c0(c_size);
        std::vector<float> bias(static_cast<std::size_t>(n));
        for (auto* v : {&a, &b, &c0, &bias})
          for (float& x : *v) x = static_cast<float>(gen.uniform() * 2.0 - 1.0);
        if (p.bias)  // the peer's C starts as the bias broadcast over the rows
          for (std::size_t i = 0; i < c_size; ++i) c0[i] = bias[i % static_cast<std::size_t>(n)];
        const float beta = p.bias ? 1.0f : 0.0f;
        // With beta = 1 every peer call accumulates onto C: harmless for timing, and the check
        // below starts both from the same C.
        const auto ours = [&] {
          const Index a_rs = p.trans_a() ? 1 : p.lda(), a_cs = p.trans_a() ? p.lda() : 1;
          const Index b_rs = p.trans_b() ? 1 : p.ldb(), b_cs = p.trans_b() ? p.ldb() : 1;
          cpu_backend::gemm<float>(m, n, k, 1.0f, a.data(), a_rs, a_cs, b.data(), b_rs, b_cs, 0.0f, c.data(), n, 1,
                                   cpu_backend::GemmEpilogue<float>{p.bias ? bias.data() : nullptr});
        };
#if CERBERUS_BENCH_OPENBLAS
        const auto peer = [&] {
          cblas_sgemm(CblasRowMajor, p.trans_a() ? CblasTrans : CblasNoTrans, p.trans_b() ? CblasTrans : CblasNoTrans,
                      static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), 1.0f, a.data(), static_cast<int>(p.lda()),
                      b.data(), static_cast<int>(p.ldb()), beta, c_peer.data(), static_cast<int>(n));
        };
#endif
        // Same products? One call each from the same C.
        c = c0;
        ours();
#if CERBERUS_BENCH_OPENBLAS
        c_peer = c0;
        peer();
        double worst = 0;
        for (std::size_t i = 0; i < c_size; ++i) worst = std::max(worst, static_cast<double>(std::abs(c[i] - c_peer[i])));
        if (worst > 1e-3 * std::sqrt(static_cast<double>(k))) std::printf("  (%s: results differ by up to %g)\n", p.name.c_str(), worst);
#endif

        const auto warm_up = [&](auto&& fn) {
          const double start = bench::now_seconds();
          do fn();
          while (bench::now_seconds() - start < 0.1);
        };
        const auto settle = [&] {
          if (threads > 1) std::this_thread::sleep_for(std::chrono::milliseconds(300));
        };
        // Best single call of a ~0.15 s block (at least 3 calls).
        const auto block = [&](auto&& fn) {
          double best = 1e30;
          const double start = bench::now_seconds();
          for (int r = 0; r < 3 || bench::now_seconds() - start < 0.15; ++r) {
            if (flush_mib > 0) flush();
            const double t0 = clock();
            fn();
            best = std::min(best, clock() - t0);
          }
          return best;
        };
        double best_ours = 1e30, best_peer = 1e30;
        std::vector<double> ratios;
        for (int r = 0; r < rounds; ++r) {
          warm_up(ours);
          const double t_ours = block(ours);
          best_ours = std::min(best_ours, t_ours);
#if CERBERUS_BENCH_OPENBLAS
          warm_up(peer);
          const double t_peer = block(peer);
          settle();
          best_peer = std::min(best_peer, t_peer);
          ratios.push_back(t_peer / t_ours);
#endif
        }
        const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
        for (int mode = 0; mode < 2; ++mode) {
          if (mode == 1 && p.kind != Kind::fwd) continue;
          total[0][mode] += p.per_step * best_ours;
          total[1][mode] += p.per_step * best_peer;
        }
        char shape[48], peer_text[16] = "-", ratio_text[16] = "-", median_text[16] = "-";
        std::snprintf(shape, sizeof shape, "%lld x %lld x %lld", static_cast<long long>(m), static_cast<long long>(n),
                      static_cast<long long>(k));
        if (!ratios.empty()) {
          std::snprintf(peer_text, sizeof peer_text, "%.1f", flops / best_peer * 1e-9);
          std::snprintf(ratio_text, sizeof ratio_text, "%.3f", best_peer / best_ours);
          std::snprintf(median_text, sizeof median_text, "%.3f", median(ratios));
        }
        std::printf("| %3d | %-21s | %-19s | %8.1f | %8s | %12s | %14s |\n", threads, p.name.c_str(), shape, flops / best_ours * 1e-9,
                    peer_text, ratio_text, median_text);
        std::fflush(stdout);
      }
      if (all_shapes && config.find("-decode") == std::string::npos) {
        for (int mode = 0; mode < 2; ++mode) {
          // Without OpenBLAS its totals stay empty ("-"), like its per-product columns.
          char peer_total[16] = "-", ratio_total[16] = "-";
#if CERBERUS_BENCH_OPENBLAS
          std::snprintf(peer_total, sizeof peer_total, "%.1f", total[1][mode] * 1e3);
          std::snprintf(ratio_total, sizeof ratio_total, "%.3f", total[0][mode] > 0 ? total[1][mode] / total[0][mode] : 0.0);
#endif
          std::printf("| %3d | %-21s | step's products (ms) | %8.1f | %8s | %12s |                |\n", threads,
                      (config + (mode == 0 ? " train" : " infer")).c_str(), total[0][mode] * 1e3, peer_total, ratio_total);
        }
        std::fflush(stdout);
      }
    }
  }
}
