// Stream output for tensors and shapes (includes <ostream>; the core headers do not).
#pragma once

#include <ostream>

#include "cerberus/tensor/print.hpp"

namespace cerberus {

template <class T, class D>
std::ostream& operator<<(std::ostream& os, const Tensor<T, D>& t) {
  return os << to_string(t);
}
inline std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.to_string(); }

}  // namespace cerberus
