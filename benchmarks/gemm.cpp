// Single-precision GEMM throughput (GFLOP/s = 2*M*N*K / seconds), row-major C = A * B, side by side
// with OpenBLAS's cblas_sgemm in the same process (when the build found OpenBLAS) and Eigen 3.4's
// product (one thread: Eigen threads only through OpenMP, which this build does not use).
//
// Shapes: 256^3, 512^3, 1024^3, 2048^3 and a Transformer MLP product M=4096, K=512, N=2048.
// Usage: bench_gemm [threads...]      (default: 1 and 2)
// OpenBLAS picks its kernels from OPENBLAS_CORETYPE when the library loads, so compare kernel
// choices by running the binary twice: benchmarks/run_gemm.sh does (Haswell = AVX2 kernels,
// Cooperlake = AVX-512 kernels).
//
// Method: inputs are filled (touched) before timing; each library is warmed up with ~0.25 s of
// calls before each of its blocks (an idle vCPU of these VMs takes a while to get a full core back
// from the host: the first ~0.1 s of work after a pause ran at a third of the speed), then the libraries take turns in blocks of repetitions, several
// rounds; the table shows the best time of each (the machine is shared, so slow outliers are
// other people's work, not the library's) and the median of the per-round ratios. OpenBLAS's
// worker threads spin for a while after each call, so a pause separates its blocks from the
// others' (spinning workers would steal their cores).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

// cerberus first: core/simd.hpp includes the intrinsics headers with GCC 12's false
// -Wmaybe-uninitialized warnings inside them silenced (GCC bug 105593), which Eigen then reuses.
#include "cerberus/backend/cpu/gemm.hpp"
#include "cerberus/core/random.hpp"
#include "timing.hpp"

#include <Eigen/Core>

#if CERBERUS_BENCH_OPENBLAS
#include <cblas.h>
#endif

using namespace cerberus;

namespace {

struct Shape3 {
  Index m, k, n;
};

// Best and all per-round best times of fn, `reps` calls per round.
struct Timing {
  double best = 1e30;
  std::vector<double> rounds;
};

template <class Fn>
void time_block(Timing& t, int reps, Fn&& fn) {
  double round_best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double t0 = bench::now_seconds();
    fn();
    round_best = std::min(round_best, bench::now_seconds() - t0);
  }
  t.best = std::min(t.best, round_best);
  t.rounds.push_back(round_best);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void fill(std::vector<float>& v, Generator& gen) {
  for (auto& x : v) x = static_cast<float>(gen.uniform() * 2.0 - 1.0);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> thread_counts;
  for (int i = 1; i < argc; ++i) thread_counts.push_back(std::atoi(argv[i]));
  if (thread_counts.empty()) thread_counts = {1, 2};
  const Shape3 shapes[] = {{256, 256, 256}, {512, 512, 512}, {1024, 1024, 1024}, {2048, 2048, 2048}, {4096, 512, 2048}};
  constexpr int rounds = 5;

  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
#if CERBERUS_BENCH_OPENBLAS
  std::printf("OpenBLAS kernels: %s (OPENBLAS_CORETYPE=%s), config: %s\n", openblas_get_corename(), coretype ? coretype : "unset",
              openblas_get_config());
#else
  (void)coretype;
  std::printf("OpenBLAS: not found at configure time, column left empty\n");
#endif
  std::printf("GFLOP/s, best of %d rounds; ratio = cerberus / OpenBLAS (best, and median over rounds)\n\n", rounds);
  std::printf("| threads | M x K x N          | cerberus | OpenBLAS | ratio (best) | ratio (median) | Eigen (1 thr) |\n");
  std::printf("|--------:|--------------------|---------:|---------:|-------------:|---------------:|--------------:|\n");

  Generator gen(42);
  for (const int threads : thread_counts) {
    set_num_threads(threads);
#if CERBERUS_BENCH_OPENBLAS
    openblas_set_num_threads(threads);
#endif
    for (const Shape3 s : shapes) {
      const std::size_t mk = static_cast<std::size_t>(s.m * s.k), kn = static_cast<std::size_t>(s.k * s.n),
                        mn = static_cast<std::size_t>(s.m * s.n);
      std::vector<float> a(mk), b(kn), c(mn, 0.0f), c_peer(mn, 0.0f);
      fill(a, gen);
      fill(b, gen);
      const double flops = 2.0 * static_cast<double>(s.m) * static_cast<double>(s.n) * static_cast<double>(s.k);
      // About 0.2 s of work per block at ~150 GFLOP/s, at least 3 calls.
      const int reps = std::max(3, static_cast<int>(3e10 / flops));

      const auto ours = [&] {
        cpu_backend::gemm<float>(cpu_backend::Transpose::no, cpu_backend::Transpose::no, s.m, s.n, s.k, 1.0f, a.data(), s.k, b.data(),
                                 s.n, 0.0f, c.data(), s.n);
      };
#if CERBERUS_BENCH_OPENBLAS
      const auto peer = [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(s.m), static_cast<int>(s.n), static_cast<int>(s.k),
                    1.0f, a.data(), static_cast<int>(s.k), b.data(), static_cast<int>(s.n), 0.0f, c_peer.data(),
                    static_cast<int>(s.n));
      };
#endif
      using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
      Eigen::Map<const RowMajor> ea(a.data(), s.m, s.k), eb(b.data(), s.k, s.n);
      Eigen::Map<RowMajor> ec(c_peer.data(), s.m, s.n);
      const auto eigen = [&] { ec.noalias() = ea * eb; };

      Timing t_ours, t_peer, t_eigen;
      // A pause after each OpenBLAS block when it runs threads: its workers spin for a while
      // after a call and would take the cores from whatever runs next.
      const auto settle = [&] {
        if (threads > 1) std::this_thread::sleep_for(std::chrono::milliseconds(300));
      };
      const auto warm_up = [&](auto&& fn) {
        const double start = bench::now_seconds();
        do fn();
        while (bench::now_seconds() - start < 0.25);
      };
      warm_up(ours);
#if CERBERUS_BENCH_OPENBLAS
      warm_up(peer);
      settle();
#endif
      for (int r = 0; r < rounds; ++r) {
        if (r > 0) warm_up(ours);
        time_block(t_ours, reps, ours);
#if CERBERUS_BENCH_OPENBLAS
        if (r > 0) warm_up(peer);
        time_block(t_peer, reps, peer);
        settle();
#endif
        if (threads == 1) time_block(t_eigen, std::max(1, reps / 2), eigen);
      }
      // Same products? (all three write plain row-major results of the same inputs)
      ours();
      double worst = 0;
      for (std::size_t i = 0; i < mn; ++i) worst = std::max(worst, static_cast<double>(std::abs(c[i] - c_peer[i])));
      if (worst > 1e-3) std::printf("  (results differ by up to %g)\n", worst);

      std::vector<double> ratios;
      for (std::size_t r = 0; r < t_peer.rounds.size(); ++r) ratios.push_back(t_peer.rounds[r] / t_ours.rounds[r]);
      char shape_text[64], peer_text[32], ratio_text[32], median_text[32], eigen_text[32];
      std::snprintf(shape_text, sizeof shape_text, "%lld x %lld x %lld", static_cast<long long>(s.m), static_cast<long long>(s.k),
                    static_cast<long long>(s.n));
      std::snprintf(peer_text, sizeof peer_text, "%s", "-");
      std::snprintf(ratio_text, sizeof ratio_text, "%s", "-");
      std::snprintf(median_text, sizeof median_text, "%s", "-");
      std::snprintf(eigen_text, sizeof eigen_text, "%s", "-");
      if (!ratios.empty()) {
        std::snprintf(peer_text, sizeof peer_text, "%.1f", flops / t_peer.best * 1e-9);
        std::snprintf(ratio_text, sizeof ratio_text, "%.3f", t_peer.best / t_ours.best);
        std::snprintf(median_text, sizeof median_text, "%.3f", median(ratios));
      }
      if (!t_eigen.rounds.empty()) std::snprintf(eigen_text, sizeof eigen_text, "%.1f", flops / t_eigen.best * 1e-9);
      std::printf("| %7d | %-18s | %8.1f | %8s | %12s | %14s | %13s |\n", threads, shape_text, flops / t_ours.best * 1e-9, peer_text,
                  ratio_text, median_text, eigen_text);
      std::fflush(stdout);
    }
  }
}
