// Device tags. A tensor's device is part of its type, so a CPU/GPU mix-up is a compile error.
#pragma once

#include <concepts>
#include <string_view>

namespace cerberus {

struct cpu {
  static constexpr std::string_view name = "cpu";
};
struct cuda {
  static constexpr std::string_view name = "cuda";
};

template <class D>
concept Device = std::same_as<D, cpu> || std::same_as<D, cuda>;

}  // namespace cerberus
