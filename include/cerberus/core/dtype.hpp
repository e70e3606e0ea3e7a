// Element types a tensor may hold, and the type its arithmetic runs in.
#pragma once

#include <concepts>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "cerberus/core/bfloat16.hpp"

namespace cerberus {

// Types a Tensor can store. Floating types take part in every op; integer types hold ids,
// labels and masks (gather, embedding, cross-entropy targets).
template <class T>
concept Element = std::same_as<T, float> || std::same_as<T, double> || std::same_as<T, bfloat16> ||
                  std::same_as<T, std::int64_t> || std::same_as<T, std::int32_t> ||
                  std::same_as<T, std::uint8_t>;

template <class T>
concept FloatElement = std::same_as<T, float> || std::same_as<T, double> || std::same_as<T, bfloat16>;

// The type arithmetic on a T runs in: bf16 is stored in 16 bits but computed in float.
template <class T>
struct compute_type {
  using type = T;
};
template <>
struct compute_type<bfloat16> {
  using type = float;
};
template <class T>
using compute_t = typename compute_type<T>::type;

// Short names used in messages and in safetensors headers.
template <class T>
constexpr std::string_view dtype_name() {
  if constexpr (std::is_same_v<T, float>) return "F32";
  else if constexpr (std::is_same_v<T, double>) return "F64";
  else if constexpr (std::is_same_v<T, bfloat16>) return "BF16";
  else if constexpr (std::is_same_v<T, std::int64_t>) return "I64";
  else if constexpr (std::is_same_v<T, std::int32_t>) return "I32";
  else if constexpr (std::is_same_v<T, std::uint8_t>) return "U8";
  else static_assert(sizeof(T) == 0, "dtype_name: unsupported element type.");
}

}  // namespace cerberus
