// Readable text for tensors, NumPy style: nested brackets, long dimensions elided with "...".
// Kept apart from tensor.hpp so that core headers never pull in <ostream>.
#pragma once

#include <cstdio>
#include <string>

#include "cerberus/tensor/tensor.hpp"

namespace cerberus {

namespace detail {

template <class T>
std::string format_element(T v) {
  char buf[48];
  if constexpr (std::is_integral_v<T>) std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v));
  else std::snprintf(buf, sizeof buf, "%.6g", static_cast<double>(static_cast<compute_t<T>>(v)));
  return buf;
}

template <class T>
void format_dim(std::string& s, const Tensor<T, cpu>& t, int d, Index offset, int edge) {
  const Index n = t.shape()[d];
  s += '[';
  for (Index i = 0; i < n; ++i) {
    if (n > 2 * edge && i == edge) {
      s += "..., ";
      i = n - edge - 1;
      continue;
    }
    const Index o = offset + i * t.strides()[d];
    if (d + 1 == t.rank()) s += format_element(t.data()[o]);
    else format_dim(s, t, d + 1, o, edge);
    if (i + 1 < n) s += d + 1 == t.rank() ? ", " : ",\n" + std::string(static_cast<std::size_t>(d) + 8, ' ');
  }
  s += ']';
}

}  // namespace detail

// "tensor([[1, 2], [3, 4]], shape=[2, 2], dtype=F32, device=cpu)"; at most 2*edge items per dimension.
template <class T, class D>
std::string to_string(const Tensor<T, D>& t, int edge = 3) {
  if (!t.defined()) return "tensor(undefined)";
  const Tensor<T, cpu> host = [&] {
    if constexpr (std::is_same_v<D, cpu>) return t;
    else return t.template to<cpu>();
  }();
  std::string s = "tensor(";
  if (t.rank() == 0) s += detail::format_element(host.data()[0]);
  else detail::format_dim(s, host, 0, 0, edge);
  s += ", shape=" + t.shape().to_string() + ", dtype=" + std::string(dtype_name<T>()) + ", device=" + std::string(D::name) + ")";
  return s;
}

}  // namespace cerberus
