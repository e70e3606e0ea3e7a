// Deterministic train / validation / test splits decided by a hash of each example's key.
//
// The rule: u = unit(mix(fnv1a64(key) + seed * 0x9E3779B97F4A7C15)), a number in [0, 1) (mix is
// SplitMix64's finaliser, unit keeps the top 53 bits); u < test_fraction -> test,
// u < test_fraction + validation_fraction -> validation, else train.
// So an example's split depends only on its key, the fractions and the seed: not on the order of
// the input, on which other examples exist, on the platform or on the standard library (no
// std::hash). Examples sharing a key (one Debian package's pairs, in every task built from it)
// always land in the same split.
//
// Caps keep evaluation cheap: at most max_validation_examples / max_test_examples examples. The
// split's keys are taken in order of u while their examples fit; the remaining keys are dropped,
// NOT moved to train, so that a key never reaches two splits (of one task or, with the same
// options, of two tasks built from the same keys). Validation and test come out ordered by u
// (then input order), so any prefix of them is itself a fair sample; train keeps input order.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cerberus/core/error.hpp"

namespace cerberus::data {

// FNV-1a, 64 bits: a stable hash of bytes (the same on every platform and standard library).
inline std::uint64_t fnv1a64(std::string_view bytes) {
  std::uint64_t h = 0xcbf29ce484222325ull;  // offset basis
  for (const char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;  // FNV prime
  }
  return h;
}

enum class Split { train, validation, test };

inline const char* split_name(Split s) {
  switch (s) {
    case Split::train: return "train";
    case Split::validation: return "validation";
    case Split::test: return "test";
  }
  return "?";
}

inline constexpr std::size_t no_limit = std::numeric_limits<std::size_t>::max();

struct SplitOptions {
  double validation_fraction = 0.05;
  double test_fraction = 0.05;
  std::size_t max_validation_examples = no_limit;
  std::size_t max_test_examples = no_limit;
  std::uint64_t seed = 0;  // another seed gives another, equally deterministic, split

  void check() const {
    if (!(validation_fraction >= 0 && test_fraction >= 0 && validation_fraction + test_fraction < 1))
      throw ValueError("[SplitOptions] expected fractions >= 0 with validation + test < 1, found validation " +
                       std::to_string(validation_fraction) + ", test " + std::to_string(test_fraction));
  }
};

// The key's position in [0, 1) by the rule at the top of this file.
inline double split_position(std::string_view key, std::uint64_t seed) {
  std::uint64_t z = fnv1a64(key) + seed * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1p-53;
}

// The split a key belongs to before caps (caps drop keys, they never move them).
inline Split split_of(std::string_view key, const SplitOptions& options) {
  const double u = split_position(key, options.seed);
  if (u < options.test_fraction) return Split::test;
  if (u < options.test_fraction + options.validation_fraction) return Split::validation;
  return Split::train;
}

template <class T>
struct Splits {
  std::vector<T> train, validation, test;
  std::size_t dropped_by_cap = 0;  // validation/test examples over the caps (see the top of this file)
};

// Distributes `items` by key_of(item) (a string or string_view) by the rule at the top of this file.
template <class T, class KeyOf>
Splits<T> split_by_key(std::vector<T> items, const SplitOptions& options, KeyOf&& key_of) {
  options.check();
  Splits<T> out;
  std::vector<std::pair<double, std::size_t>> held[2];  // (u, index) for validation, test
  for (std::size_t i = 0; i < items.size(); ++i) {
    const std::string_view key = key_of(items[i]);
    const double u = split_position(key, options.seed);
    if (u < options.test_fraction) held[1].emplace_back(u, i);
    else if (u < options.test_fraction + options.validation_fraction) held[0].emplace_back(u, i);
    else out.train.push_back(std::move(items[i]));
  }
  const std::size_t caps[2] = {options.max_validation_examples, options.max_test_examples};
  std::vector<T>* targets[2] = {&out.validation, &out.test};
  for (int s = 0; s < 2; ++s) {
    std::vector<std::pair<double, std::size_t>>& h = held[s];
    std::sort(h.begin(), h.end());  // by u, then input order; one key's examples are adjacent
    std::size_t taken = 0;
    for (std::size_t a = 0; a < h.size();) {
      std::size_t b = a + 1;  // [a, b): one key (equal u; a 53-bit collision merely joins two keys)
      while (b < h.size() && h[b].first == h[a].first) ++b;
      if (taken + (b - a) > caps[s]) {
        out.dropped_by_cap += h.size() - a;
        break;
      }
      for (std::size_t k = a; k < b; ++k) targets[s]->push_back(std::move(items[h[k].second]));
      taken += b - a;
      a = b;
    }
  }
  return out;
}

}  // namespace cerberus::data
