// Tensor factories: zeros, ones, full, arange, from_vector, and random uniform / normal from a
// seedable Generator. Random tensors come out the same whatever the thread count: element i
// always uses Philox counter (first + i / k).
#pragma once

#include <cmath>
#include <numbers>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/core/random.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus {

template <Element T, Device D = cpu>
Tensor<T, D> full(const Shape& shape, T value) {
  auto t = Tensor<T, D>::empty(shape);
  t.fill(value);
  return t;
}
template <Element T, Device D = cpu>
Tensor<T, D> zeros(const Shape& shape) {
  return full<T, D>(shape, T(0));
}
template <Element T, Device D = cpu>
Tensor<T, D> ones(const Shape& shape) {
  return full<T, D>(shape, T(1));
}
template <Element T, Device D = cpu>
Tensor<T, D> empty(const Shape& shape) {
  return Tensor<T, D>::empty(shape);
}

// A copy of `values` as a tensor of `shape` (rank 1 when no shape is given).
template <Element T, Device D = cpu>
Tensor<T, D> from_vector(const std::vector<T>& values, const Shape& shape) {
  if (static_cast<Index>(values.size()) != shape.numel())
    throw ShapeError("[from_vector] " + std::to_string(values.size()) + " values cannot fill shape " + shape.to_string() +
                     " (" + std::to_string(shape.numel()) + " elements)");
  auto host = Tensor<T, cpu>::empty(shape);
  if (!values.empty()) std::memcpy(host.data(), values.data(), values.size() * sizeof(T));
  if constexpr (std::is_same_v<D, cpu>) return host;
  else return host.template to<D>();
}
template <Element T, Device D = cpu>
Tensor<T, D> from_vector(const std::vector<T>& values) {
  return from_vector<T, D>(values, Shape{static_cast<Index>(values.size())});
}

// start, start+step, ... below stop (above stop for a negative step).
template <Element T, Device D = cpu>
Tensor<T, D> arange(double start, double stop, double step = 1.0) {
  if (step == 0.0) throw ValueError("[arange] step must be nonzero");
  const double span = (stop - start) / step;
  const Index n = span > 0 ? static_cast<Index>(std::ceil(span)) : 0;
  std::vector<T> values(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) values[static_cast<std::size_t>(i)] = static_cast<T>(start + static_cast<double>(i) * step);
  return from_vector<T, D>(values);
}
template <Element T, Device D = cpu>
Tensor<T, D> arange(Index n) {
  return arange<T, D>(0.0, static_cast<double>(n), 1.0);
}

// Uniform in [low, high).
template <FloatElement T, Device D = cpu>
Tensor<T, D> uniform(const Shape& shape, double low, double high, Generator& gen = default_generator()) {
  if (!(low < high)) throw ValueError("[uniform] needs low < high, got " + std::to_string(low) + " and " + std::to_string(high));
  auto host = Tensor<T, cpu>::empty(shape);
  const Index n = shape.numel();
  const std::uint64_t first = gen.reserve(static_cast<std::uint64_t>((n + 1) / 2));
  T* out = host.data();
  parallel_for(0, (n + 1) / 2, 4096, [&](Index b, Index e) {
    for (Index blk = b; blk < e; ++blk) {
      // Fixed lanes (no run-time index into r.v) keep the Philox state in registers.
      const auto r = Philox::generate(gen.seed(), first + static_cast<std::uint64_t>(blk));
      out[2 * blk] = static_cast<T>(low + (high - low) * Philox::to_unit_double(r.v[0], r.v[1]));
      if (2 * blk + 1 < n) out[2 * blk + 1] = static_cast<T>(low + (high - low) * Philox::to_unit_double(r.v[2], r.v[3]));
    }
  });
  if constexpr (std::is_same_v<D, cpu>) return host;
  else return host.template to<D>();
}

// Normal with the given mean and standard deviation (Box-Muller on 53-bit uniforms).
template <FloatElement T, Device D = cpu>
Tensor<T, D> normal(const Shape& shape, double mean = 0.0, double stddev = 1.0, Generator& gen = default_generator()) {
  if (!(stddev >= 0)) throw ValueError("[normal] stddev must be >= 0, got " + std::to_string(stddev));
  auto host = Tensor<T, cpu>::empty(shape);
  const Index n = shape.numel();
  const std::uint64_t first = gen.reserve(static_cast<std::uint64_t>((n + 1) / 2));
  T* out = host.data();
  parallel_for(0, (n + 1) / 2, 4096, [&](Index b, Index e) {
    for (Index blk = b; blk < e; ++blk) {
      const auto r = Philox::generate(gen.seed(), first + static_cast<std::uint64_t>(blk));
      const double u1 = 1.0 - Philox::to_unit_double(r.v[0], r.v[1]);  // (0, 1]: log is finite
      const double u2 = Philox::to_unit_double(r.v[2], r.v[3]);
      const double radius = std::sqrt(-2.0 * std::log(u1)), angle = 2.0 * std::numbers::pi * u2;
      out[2 * blk] = static_cast<T>(mean + stddev * radius * std::cos(angle));
      if (2 * blk + 1 < n) out[2 * blk + 1] = static_cast<T>(mean + stddev * radius * std::sin(angle));
    }
  });
  if constexpr (std::is_same_v<D, cpu>) return host;
  else return host.template to<D>();
}

}  // namespace cerberus
