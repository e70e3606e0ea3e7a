// Naive double-precision references for tests: slow, obviously correct index arithmetic.
#pragma once

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "support/message.hpp"  // message_of

namespace cerberus::testing_support {

// A tensor of uniform values in [lo, hi) from its own generator, so each test input is fixed by
// its seed alone.
template <class T>
Tensor<T> random_uniform(const Shape& shape, double lo, double hi, std::uint64_t seed) {
  Generator gen(seed);
  return uniform<T>(shape, lo, hi, gen);
}

// Visits every coordinate of `shape` in row-major order.
inline void for_each_coord(const Shape& shape, const std::function<void(const std::vector<Index>&)>& fn) {
  std::vector<Index> c(static_cast<std::size_t>(shape.rank()), 0);
  const Index n = shape.numel();
  for (Index i = 0; i < n; ++i) {
    fn(c);
    for (int d = shape.rank() - 1; d >= 0; --d) {
      if (++c[static_cast<std::size_t>(d)] < shape[d]) break;
      c[static_cast<std::size_t>(d)] = 0;
    }
  }
}

// The element of `t` that broadcasting maps output coordinate `c` (of a higher or equal rank) to.
template <class T>
double broadcast_at(const Tensor<T, cpu>& t, const std::vector<Index>& c) {
  const int shift = static_cast<int>(c.size()) - t.rank();
  Index offset = 0;
  for (int d = 0; d < t.rank(); ++d) {
    const Index i = t.shape()[d] == 1 ? 0 : c[static_cast<std::size_t>(d + shift)];
    offset += i * t.strides()[d];
  }
  return static_cast<double>(static_cast<compute_t<T>>(t.data()[offset]));
}

// Elements of `t` as doubles, row-major, read through its strides.
template <class T>
std::vector<double> values(const Tensor<T, cpu>& t) {
  std::vector<double> v;
  v.reserve(static_cast<std::size_t>(t.numel()));
  for_each_coord(t.shape(), [&](const std::vector<Index>& c) { v.push_back(broadcast_at(t, c)); });
  return v;
}

// Largest violation of |got - want| <= atol + rtol * |want|, as a ratio (<= 1 passes), with
// the index of the worst element. NaN where a number was expected never passes.
struct Closeness {
  double worst_ratio = 0;
  Index worst_index = -1;
  double got = 0, want = 0;
  bool ok() const { return worst_ratio <= 1.0; }
  std::string describe() const {
    return "worst element " + std::to_string(worst_index) + ": got " + std::to_string(got) + ", want " + std::to_string(want) +
           " (" + std::to_string(worst_ratio) + "x the tolerance)";
  }
};

inline Closeness compare(const std::vector<double>& got, const std::vector<double>& want, double rtol, double atol) {
  Closeness r;
  if (got.size() != want.size()) {
    r.worst_ratio = 1e300;
    return r;
  }
  for (std::size_t i = 0; i < got.size(); ++i) {
    double ratio;
    if (std::isnan(want[i])) ratio = std::isnan(got[i]) ? 0 : 1e300;
    else if (std::isinf(want[i])) ratio = got[i] == want[i] ? 0 : 1e300;
    else ratio = std::isnan(got[i]) ? 1e300 : std::abs(got[i] - want[i]) / (atol + rtol * std::abs(want[i]));
    if (ratio > r.worst_ratio) r = {ratio, static_cast<Index>(i), got[i], want[i]};
  }
  return r;
}

}  // namespace cerberus::testing_support
