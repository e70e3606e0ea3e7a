// The statistics a loss weighting keeps outside its parameters (DWA's loss history, GradNorm's
// initial losses, RLW's and PCGrad's generators), as string entries for a training-state file,
// so that a resumed run continues with the weights the uninterrupted run would have used.
//
// A weighting with such statistics offers the pair
//
//   void save_state(WeightingState& out, const std::string& prefix = "") const;
//   void restore_state(const WeightingState& in, const std::string& prefix = "");
//
// (HasWeightingState): save_state writes entries named prefix + "<weighting>.<field>" (e.g.
// "dwa.sum"; train::Trainer passes "weighting.", as the model names the weighting's parameters),
// restore_state reads them back, checks every one before changing anything and names the entry in
// its error. Strings, not tensors: the statistics are doubles, counts and 64-bit generator
// states, which a float tensor would round. A weighting without statistics (Equal, Static,
// RuntimeStatic, Uncertainty, MGDA, CAGrad) needs nothing; its learned parameters, if any, are
// saved with the model's. Configuration (options, Static's and RuntimeStatic's weights) is not
// state: the model of the resumed run is built with it.
//
// Numbers are written with std::to_chars (the shortest text that reads back as the same double,
// independent of the locale; "nan" and "inf" included) and lists as space-separated numbers.
#pragma once

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/core/random.hpp"

namespace cerberus::mtl {

using WeightingState = std::map<std::string, std::string>;

// A weighting whose statistics can be saved and restored (see the top of this file).
template <class W>
concept HasWeightingState = requires(const W& cw, W& w, WeightingState& out, const WeightingState& in, const std::string& prefix) {
  cw.save_state(out, prefix);
  w.restore_state(in, prefix);
};

// A weighting that names either half of the pair: with the other half missing or mistyped, a
// resume would silently start its statistics afresh, so train::Trainer refuses it.
template <class W>
concept DeclaresWeightingState = requires { &W::save_state; } || requires { &W::restore_state; };

// Writes w's statistics into `out` (nothing for a weighting without any).
template <class W>
void save_weighting_state(const W& w, WeightingState& out, const std::string& prefix = "") {
  if constexpr (HasWeightingState<W>) w.save_state(out, prefix);
}
// Restores w's statistics from `in` (nothing for a weighting without any).
template <class W>
void restore_weighting_state(W& w, const WeightingState& in, const std::string& prefix = "") {
  if constexpr (HasWeightingState<W>) w.restore_state(in, prefix);
}

namespace detail {

inline std::string encode_double(double v) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, ec == std::errc() ? end : buf);
}
inline std::string encode_doubles(const std::vector<double>& values) {
  std::string out;
  for (std::size_t i = 0; i < values.size(); ++i) out += (i ? " " : "") + encode_double(values[i]);
  return out;
}
template <class I>
std::string encode_integers(const std::vector<I>& values) {
  std::string out;
  for (std::size_t i = 0; i < values.size(); ++i) out += (i ? " " : "") + std::to_string(values[i]);
  return out;
}

// Reads the entries prefix + key of one weighting's state; every error names the entry and the
// weighting (`op`).
class WeightingStateReader {
 public:
  WeightingStateReader(const WeightingState& in, std::string prefix, std::string op) : in_(in), prefix_(std::move(prefix)), op_(std::move(op)) {}

  const std::string& text(const std::string& key) const {
    const auto it = in_.find(prefix_ + key);
    if (it == in_.end()) throw ValueError("[" + op_ + "] the saved state has no entry '" + prefix_ + key + "'");
    return it->second;
  }
  double number(const std::string& key) const {
    const std::vector<double> v = numbers(key);
    if (v.size() != 1) fail(key, "expected one number");
    return v[0];
  }
  // A space-separated list of doubles; `count` (when not npos) is the length it must have.
  std::vector<double> numbers(const std::string& key, std::size_t count = npos) const {
    return parse<double>(key, count, "numbers");
  }
  std::vector<std::uint64_t> counts(const std::string& key, std::size_t count = npos) const {
    return parse<std::uint64_t>(key, count, "non-negative integers");
  }
  std::uint64_t count(const std::string& key) const {
    const std::vector<std::uint64_t> v = counts(key);
    if (v.size() != 1) fail(key, "expected one non-negative integer");
    return v[0];
  }
  // A generator's (seed, offset), written by save_generator.
  void restore_generator(const std::string& key, Generator& g) const {
    const std::uint64_t seed = count(key + ".seed"), offset = count(key + ".offset");
    g.set_state(seed, offset);
  }

  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    throw ValueError("[" + op_ + "] the saved state's entry '" + prefix_ + key + "' is \"" + text(key) + "\": " + why);
  }

 private:
  template <class V>
  std::vector<V> parse(const std::string& key, std::size_t count, const char* what) const {
    const std::string& s = text(key);
    std::vector<V> out;
    const char* p = s.data();
    const char* const end = s.data() + s.size();
    while (p != end) {
      if (!out.empty()) {
        if (*p != ' ') fail(key, std::string("expected ") + what + " separated by single spaces");
        ++p;
      }
      V v{};
      const auto [next, ec] = std::from_chars(p, end, v);
      if (ec != std::errc() || next == p) fail(key, std::string("expected ") + what + " separated by single spaces");
      out.push_back(v);
      p = next;
    }
    if (count != npos && out.size() != count)
      fail(key, "expected " + std::to_string(count) + " values, found " + std::to_string(out.size()));
    return out;
  }

  const WeightingState& in_;
  std::string prefix_, op_;
};

inline void save_generator(WeightingState& out, const std::string& key, const Generator& g) {
  out[key + ".seed"] = std::to_string(g.seed());
  out[key + ".offset"] = std::to_string(g.offset());
}

}  // namespace detail
}  // namespace cerberus::mtl
