// bfloat16: 16-bit storage (1 sign, 8 exponent, 7 mantissa bits), float arithmetic.
// Conversion from float rounds to nearest even and keeps NaN a NaN.
#pragma once

#include <cstdint>
#include <cstring>

#include "cerberus/core/config.hpp"

namespace cerberus {

struct bfloat16 {
  std::uint16_t bits = 0;

  bfloat16() = default;
  CERBERUS_HOST_DEVICE bfloat16(float value) : bits(from_float(value)) {}  // NOLINT: implicit like float

  CERBERUS_HOST_DEVICE operator float() const { return to_float(bits); }  // NOLINT

  static CERBERUS_HOST_DEVICE bfloat16 from_bits(std::uint16_t raw) {
    bfloat16 b;
    b.bits = raw;
    return b;
  }

  static CERBERUS_HOST_DEVICE std::uint16_t from_float(float value) {
    std::uint32_t u = bit_cast_u32(value);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    return static_cast<std::uint16_t>(u >> 16);
  }
  static CERBERUS_HOST_DEVICE float to_float(std::uint16_t raw) {
    const std::uint32_t u = static_cast<std::uint32_t>(raw) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }

 private:
  static CERBERUS_HOST_DEVICE std::uint32_t bit_cast_u32(float value) {
    std::uint32_t u;
    std::memcpy(&u, &value, sizeof u);
    return u;
  }
};

static_assert(sizeof(bfloat16) == 2, "bfloat16 must be exactly two bytes to match on-disk and device layouts.");

}  // namespace cerberus
