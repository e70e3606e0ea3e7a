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

// The device a type works on: its device_type (nn modules, mtl models), or cpu when it names none
// (a trunk or model type of the user's own, written for the CPU).
template <class T>
struct device_of {
  using type = cpu;
};
template <class T>
  requires requires { typename T::device_type; }
struct device_of<T> {
  using type = typename T::device_type;
};
template <class T>
using device_of_t = typename device_of<T>::type;

// X rebound to device D: X's own `on_device<D>` (mtl heads and learned weightings have one),
// else X itself (a type without device state, or one written for a single device).
template <class X, class D>
struct rebind_device {
  using type = X;
};
template <class X, class D>
  requires requires { typename X::template on_device<D>; }
struct rebind_device<X, D> {
  using type = typename X::template on_device<D>;
};
template <class X, class D>
using rebind_device_t = typename rebind_device<X, D>::type;

}  // namespace cerberus
