// Seedable random numbers: Philox-4x32-10 (Salmon et al., SC'11), a counter-based generator.
// The stream is a pure function of (seed, counter), so CPU and CUDA kernels can draw the same
// numbers in parallel, and a run resumes exactly from a saved (seed, offset).
#pragma once

#include <cstdint>

#include "cerberus/core/config.hpp"

namespace cerberus {

struct Philox {
  // Four 32-bit outputs for one (key, counter) pair.
  struct Block {
    std::uint32_t v[4];
  };
  static CERBERUS_HOST_DEVICE Block generate(std::uint64_t key, std::uint64_t counter) {
    std::uint32_t c0 = static_cast<std::uint32_t>(counter), c1 = static_cast<std::uint32_t>(counter >> 32), c2 = 0, c3 = 0;
    std::uint32_t k0 = static_cast<std::uint32_t>(key), k1 = static_cast<std::uint32_t>(key >> 32);
    for (int round = 0; round < 10; ++round) {
      const std::uint64_t p0 = static_cast<std::uint64_t>(0xD2511F53u) * c0;
      const std::uint64_t p1 = static_cast<std::uint64_t>(0xCD9E8D57u) * c2;
      const std::uint32_t n0 = static_cast<std::uint32_t>(p1 >> 32) ^ c1 ^ k0;
      const std::uint32_t n2 = static_cast<std::uint32_t>(p0 >> 32) ^ c3 ^ k1;
      c1 = static_cast<std::uint32_t>(p1);
      c3 = static_cast<std::uint32_t>(p0);
      c0 = n0;
      c2 = n2;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    return {{c0, c1, c2, c3}};
  }
  // Uniform in [0, 1) with 24 random bits (exactly representable in float).
  static CERBERUS_HOST_DEVICE float to_unit_float(std::uint32_t bits) { return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f); }
  // Uniform in [0, 1) with 53 random bits.
  static CERBERUS_HOST_DEVICE double to_unit_double(std::uint32_t hi, std::uint32_t lo) {
    const std::uint64_t bits = (static_cast<std::uint64_t>(hi) << 21) ^ (lo >> 11);
    return static_cast<double>(bits & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
  }
};

// A seeded stream of random numbers. `offset()` counts the Philox blocks consumed; saving
// (seed, offset) and restoring them with set_state() resumes the identical stream.
class Generator {
 public:
  explicit Generator(std::uint64_t seed = 0x5eed) : seed_(seed) {}

  std::uint64_t seed() const { return seed_; }
  std::uint64_t offset() const { return offset_; }
  void set_state(std::uint64_t seed, std::uint64_t offset) {
    seed_ = seed;
    offset_ = offset;
  }
  // Reserves `blocks` consecutive Philox counters (4 x 32 bits each) and returns the first:
  // kernels that draw in parallel index into that range.
  std::uint64_t reserve(std::uint64_t blocks) {
    const std::uint64_t first = offset_;
    offset_ += blocks;
    return first;
  }

  std::uint32_t next_u32() {
    const auto b = Philox::generate(seed_, reserve(1));
    return b.v[0];
  }
  // Uniform double in [0, 1).
  double uniform() {
    const auto b = Philox::generate(seed_, reserve(1));
    return Philox::to_unit_double(b.v[0], b.v[1]);
  }

 private:
  std::uint64_t seed_;
  std::uint64_t offset_ = 0;
};

// The default generator used when none is passed; reseed it with manual_seed().
inline Generator& default_generator() {
  static Generator g;
  return g;
}
inline void manual_seed(std::uint64_t seed) { default_generator().set_state(seed, 0); }

}  // namespace cerberus
