// The FP32 fused-multiply-add peak of one core: the ceiling every matrix product of this machine
// (ours, OpenBLAS's, LibTorch's) runs under, and so the yardstick for "how far can a step go".
//
// Method: 16 independent chains of SIMD FMAs (xsimd, this build's widest vectors) on registers
// only, no memory traffic; enough chains to cover the FMA latency (4-5 cycles) times the number
// of FMA pipes (1-2) on every x86 and AArch64 core we know. Best of 7 blocks of ~0.2 s, CPU time
// of the calling thread (a stolen core does not count).
//
// Usage: bench_fma_peak      prints GFLOP/s for float (2 FLOPs per FMA per lane) and the vector
//                            width it used.
#include <algorithm>
#include <array>
#include <cstdio>
#include <ctime>

#include "cerberus/core/simd.hpp"

namespace {

double thread_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

template <class T>
double fma_gflops() {
  using Batch = xsimd::batch<T>;
  constexpr int chains = 16;
  constexpr long iterations = 4'000'000;
  std::array<Batch, chains> acc;
  for (int i = 0; i < chains; ++i) acc[static_cast<std::size_t>(i)] = Batch(T(1) + T(i) * T(1e-7));
  // x * a + b with a just under 1 and b tiny: the values stay finite and normal for any count.
  const Batch a(T(0.9999999)), b(T(1e-7));
  double best = 0;
  for (int block = 0; block < 7; ++block) {
    const double t0 = thread_seconds();
    for (long k = 0; k < iterations; ++k) {
#pragma GCC unroll 16
      for (int i = 0; i < chains; ++i) acc[static_cast<std::size_t>(i)] = xsimd::fma(acc[static_cast<std::size_t>(i)], a, b);
    }
    const double seconds = thread_seconds() - t0;
    // The result feeds a volatile sink so that the loop is not optimised away.
    T sum = 0;
    for (const Batch& v : acc) sum += cerberus::simd::reduce_add(v);
    volatile T sink = sum;
    (void)sink;
    best = std::max(best, 2.0 * chains * static_cast<double>(Batch::size) * static_cast<double>(iterations) / seconds * 1e-9);
  }
  return best;
}

}  // namespace

int main() {
  std::printf("FMA peak of one core, %d-bit vectors (%s): float %.1f GFLOP/s, double %.1f GFLOP/s\n",
              static_cast<int>(8 * sizeof(xsimd::batch<float>)), xsimd::batch<float>::arch_type::name(), fma_gflops<float>(),
              fma_gflops<double>());
}
