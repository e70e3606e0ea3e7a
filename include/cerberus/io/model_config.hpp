// nn::TransformerConfig to and from JSON, so a checkpoint carries its own shape: the config is
// stored as a JSON string in the safetensors `__metadata__` (key "config") or as a config.json next
// to the weights.
//
// Reading is strict: every key must be a known field (a typo like "d_modle" is an error, not a
// silently ignored default), each value must have the field's JSON type, and the result is
// validated. Missing keys keep their defaults, so older files stay readable when fields are added.
// Errors name the source and the field: `[config] run/config.json: d_model: expected integer,
// found string`.
#pragma once

#include <string>
#include <string_view>
#include <type_traits>

#include "cerberus/io/json.hpp"
#include "cerberus/nn/config.hpp"

namespace cerberus::io {

inline Json to_json(const nn::TransformerConfig& config) {
  Json out = Json::object();
  nn::for_each_field(config, [&](const char* name, const auto& value) {
    using V = std::remove_cvref_t<decltype(value)>;
    if constexpr (std::is_enum_v<V>) out[name] = Json(std::string(nn::to_string(value)));
    else out[name] = Json(value);
  });
  return out;
}

inline nn::TransformerConfig transformer_config_from_json(const Json& json, std::string_view source = "<json>") {
  const std::string where = "[config] " + std::string(source) + ": ";
  if (!json.is_object()) throw JsonError(where + "expected a JSON object of TransformerConfig fields, found " + Json::kind_name(json.kind()));
  nn::TransformerConfig config;
  std::size_t known = 0;
  nn::for_each_field(config, [&](const char* name, auto& field) {
    const Json* value = json.find(name);
    if (value == nullptr) return;
    ++known;
    using V = std::remove_cvref_t<decltype(field)>;
    try {
      if constexpr (std::is_same_v<V, bool>) field = value->as_bool(name);
      else if constexpr (std::is_integral_v<V>) field = static_cast<V>(value->as_int(name));
      else if constexpr (std::is_floating_point_v<V>) field = value->as_double(name);
      else if constexpr (std::is_same_v<V, nn::NormKind>) field = nn::norm_kind_from(value->as_string(name));
      else if constexpr (std::is_same_v<V, nn::MlpKind>) field = nn::mlp_kind_from(value->as_string(name));
      else if constexpr (std::is_same_v<V, nn::GeluApproximation>) field = nn::gelu_approximation_from(value->as_string(name));
      else if constexpr (std::is_same_v<V, nn::PositionKind>) field = nn::position_kind_from(value->as_string(name));
      else static_assert(sizeof(V) == 0, "transformer_config_from_json: a TransformerConfig field type has no JSON reader.");
    } catch (const Error& e) {
      throw JsonError(where + e.what());
    }
  });
  if (known != json.size()) {
    for (const auto& [key, value] : json.as_object()) {
      bool found = false;
      nn::for_each_field(config, [&](const char* name, const auto&) { found = found || key == name; });
      if (!found) throw JsonError(where + "unknown field \"" + key + "\" (not a TransformerConfig field)");
    }
  }
  try {
    config.validate();
  } catch (const Error& e) {
    throw JsonError(where + e.what());
  }
  return config;
}

inline nn::TransformerConfig read_transformer_config(const std::string& path) {
  return transformer_config_from_json(read_json_file(path), path);
}

inline void write_transformer_config(const std::string& path, const nn::TransformerConfig& config) {
  write_json_file(path, to_json(config));
}

}  // namespace cerberus::io
