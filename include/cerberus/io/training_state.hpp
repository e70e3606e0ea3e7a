// Training state for an exact resume: the optimizer's state tensors, its step count, the random
// generator's (seed, offset) and free-form string entries (data-loader position, ...), in one
// safetensors file. The model's parameters are a separate checkpoint (checkpoint.hpp).
//
// Layout: tensors = optimizer.state() under the optimizer's own names (F32); __metadata__ =
//   "format": "cerberus.training_state", "format_version": "1", "step": "1234",
//   "rng.seed": "...", "rng.offset": "...", and each user entry k as "extra.k"
// (the prefix keeps user keys from ever colliding with ours). Numbers are decimal strings, which
// keep 64-bit seeds exact.
#pragma once

#include <charconv>
#include <concepts>
#include <cstdint>
#include <map>
#include <string>
#include <type_traits>
#include <utility>

#include "cerberus/core/random.hpp"
#include "cerberus/io/checkpoint.hpp"
#include "cerberus/io/safetensors.hpp"
#include "cerberus/nn/parameter.hpp"

namespace cerberus::io {

namespace detail {
template <class L>
struct float_parameter_list : std::false_type {};
template <Device D>
struct float_parameter_list<nn::ParameterList<float, D>> : std::true_type {
  using device = D;
};

// Parses all of `text` as a decimal integer of type I, or throws naming the metadata field.
template <class I>
I parse_decimal(const std::string& text, const std::string& op, const std::string& path, const std::string& key) {
  I value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || (std::is_signed_v<I> && value < 0))
    throw FileError("[" + op + "] " + path + ": __metadata__." + key + ": expected a non-negative decimal integer, found \"" + text + "\"");
  return value;
}
}  // namespace detail

// What save/load_training_state need from an optimizer: its state as named float tensors, its
// step count, and a way to take both back.
template <class O>
concept TrainingStateOwner = requires(const O& c, O& m, std::int64_t step) {
  requires detail::float_parameter_list<std::remove_cvref_t<decltype(c.state())>>::value;
  { c.step_count() } -> std::same_as<std::int64_t>;
  m.load_state(c.state(), step);
};

inline constexpr const char* training_state_format = "cerberus.training_state";

template <TrainingStateOwner O>
void save_training_state(const std::string& path, const O& optimizer, const Generator& rng, const std::map<std::string, std::string>& extra = {}) {
  const auto state = optimizer.state();
  detail::check_unique_names(state, "save_training_state");
  std::vector<NamedTensor> tensors;
  for (const auto& s : state) {
    if (!s.tensor.defined()) throw ValueError("[save_training_state] optimizer state " + detail::quote_name(s.name) + " is undefined");
    tensors.push_back({s.name, detail::to_host(s.tensor)});
  }
  Metadata metadata = {{"format", training_state_format},
                       {"format_version", "1"},
                       {"step", std::to_string(optimizer.step_count())},
                       {"rng.seed", std::to_string(rng.seed())},
                       {"rng.offset", std::to_string(rng.offset())}};
  for (const auto& [k, v] : extra) metadata.emplace("extra." + k, v);
  save_safetensors(path, tensors, metadata);
}

// Restores the optimizer (load_state) and the generator from `path` and returns the user entries.
// The file is fully read and checked first; the generator is set only after the optimizer
// accepted its state, so a failure leaves the generator as it was.
template <TrainingStateOwner O>
std::map<std::string, std::string> load_training_state(const std::string& path, O& optimizer, Generator& rng) {
  const std::string op = "load_training_state";
  using D = typename detail::float_parameter_list<std::remove_cvref_t<decltype(optimizer.state())>>::device;
  const SafetensorsFile file(path);
  const Metadata& m = file.metadata();
  const auto field = [&](const std::string& key) -> const std::string& {
    const auto it = m.find(key);
    if (it == m.end()) throw FileError("[" + op + "] " + path + ": __metadata__." + key + " is missing (is this a training-state file?)");
    return it->second;
  };
  if (field("format") != training_state_format)
    throw FileError("[" + op + "] " + path + ": __metadata__.format is \"" + field("format") + "\", expected \"" + training_state_format + "\"");
  if (field("format_version") != "1")
    throw FileError("[" + op + "] " + path + ": __metadata__.format_version is \"" + field("format_version") + "\"; this build reads version 1");
  const auto step = detail::parse_decimal<std::int64_t>(field("step"), op, path, "step");
  const auto seed = detail::parse_decimal<std::uint64_t>(field("rng.seed"), op, path, "rng.seed");
  const auto offset = detail::parse_decimal<std::uint64_t>(field("rng.offset"), op, path, "rng.offset");

  nn::ParameterList<float, D> state;
  for (const auto& info : file.tensors()) {
    Tensor<float> host = file.tensor<float>(info.name);  // a non-F32 entry is a clean dtype error
    if constexpr (std::is_same_v<D, cpu>) state.push_back({info.name, std::move(host)});
    else state.push_back({info.name, host.template to<D>()});
  }
  optimizer.load_state(state, step);
  rng.set_state(seed, offset);

  std::map<std::string, std::string> extra;
  for (const auto& [k, v] : m)
    if (k.rfind("extra.", 0) == 0) extra.emplace(k.substr(6), v);
  return extra;
}

}  // namespace cerberus::io
