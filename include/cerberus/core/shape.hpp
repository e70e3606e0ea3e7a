// Shape: up to max_rank extents stored inline. The same type carries strides (in elements).
// Legend used across the library: B = batch, T = time, C = channels, V = vocabulary.
#pragma once

#include <algorithm>
#include <cstddef>
#include <initializer_list>
#include <span>
#include <string>

#include "cerberus/core/config.hpp"
#include "cerberus/core/error.hpp"

namespace cerberus {

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<Index> dims) { assign(dims.begin(), dims.size()); }
  explicit Shape(std::span<const Index> dims) { assign(dims.data(), dims.size()); }

  // A shape of `rank` copies of `value` (e.g. all-ones, all-zero strides).
  static Shape filled(int rank, Index value) {
    Shape s;
    s.set_rank(rank);
    for (int d = 0; d < rank; ++d) s.dims_[d] = value;
    return s;
  }

  CERBERUS_HOST_DEVICE int rank() const { return rank_; }
  CERBERUS_HOST_DEVICE Index operator[](int d) const { return dims_[d]; }
  CERBERUS_HOST_DEVICE Index& operator[](int d) { return dims_[d]; }
  const Index* begin() const { return dims_; }
  const Index* end() const { return dims_ + rank_; }
  const Index* data() const { return dims_; }

  // Number of elements; 1 for a rank-0 (scalar) shape.
  CERBERUS_HOST_DEVICE Index numel() const {
    Index n = 1;
    for (int d = 0; d < rank_; ++d) n *= dims_[d];
    return n;
  }

  void set_rank(int rank) {
    if (rank < 0 || rank > max_rank)
      throw ShapeError("[shape] rank " + std::to_string(rank) + " is outside 0.." + std::to_string(max_rank));
    for (int d = rank_; d < rank; ++d) dims_[d] = 1;
    rank_ = rank;
  }
  void push_back(Index v) {
    set_rank(rank_ + 1);
    dims_[rank_ - 1] = v;
  }
  void erase(int d) {
    for (int i = d; i + 1 < rank_; ++i) dims_[i] = dims_[i + 1];
    --rank_;
  }
  void insert(int d, Index v) {
    set_rank(rank_ + 1);
    for (int i = rank_ - 1; i > d; --i) dims_[i] = dims_[i - 1];
    dims_[d] = v;
  }

  // Resolves a possibly negative axis (-1 = last) against this rank, or throws naming `op`.
  int axis(int d, const char* op) const {
    const int r = d < 0 ? d + rank_ : d;
    if (r < 0 || r >= rank_)
      throw IndexError(std::string("[") + op + "] axis " + std::to_string(d) + " is out of range for shape " +
                       to_string());
    return r;
  }

  friend bool operator==(const Shape& a, const Shape& b) {
    return a.rank_ == b.rank_ && std::equal(a.begin(), a.end(), b.begin());
  }

  std::string to_string() const {
    std::string s = "[";
    for (int d = 0; d < rank_; ++d) {
      if (d) s += ", ";
      s += std::to_string(dims_[d]);
    }
    return s + "]";
  }

 private:
  void assign(const Index* p, std::size_t n) {
    if (n > static_cast<std::size_t>(max_rank))
      throw ShapeError("[shape] rank " + std::to_string(n) + " exceeds the maximum of " + std::to_string(max_rank));
    rank_ = static_cast<int>(n);
    for (int d = 0; d < rank_; ++d) {
      if (p[d] < 0) throw ShapeError("[shape] negative extent " + std::to_string(p[d]) + " in dimension " + std::to_string(d));
      dims_[d] = p[d];
    }
  }

  int rank_ = 0;
  Index dims_[max_rank] = {};
};

using Strides = Shape;

// Row-major (C order) strides for a shape.
inline Strides contiguous_strides(const Shape& shape) {
  Strides s = Shape::filled(shape.rank(), 1);
  Index acc = 1;
  for (int d = shape.rank() - 1; d >= 0; --d) {
    s[d] = acc;
    acc *= shape[d];
  }
  return s;
}

// NumPy broadcasting: align trailing dimensions; extents must match or one of them be 1.
inline Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const int rank = std::max(a.rank(), b.rank());
  Shape out = Shape::filled(rank, 1);
  for (int i = 0; i < rank; ++i) {
    const int da = a.rank() - 1 - i, db = b.rank() - 1 - i;
    const Index ea = da >= 0 ? a[da] : 1, eb = db >= 0 ? b[db] : 1;
    if (ea != eb && ea != 1 && eb != 1)
      throw ShapeError(std::string("[") + op + "] shapes " + a.to_string() + " and " + b.to_string() +
                       " cannot be broadcast together (dimension " + std::to_string(i) + " from the right: " +
                       std::to_string(ea) + " vs " + std::to_string(eb) + ")");
    out[rank - 1 - i] = ea == 1 ? eb : ea;
  }
  return out;
}

}  // namespace cerberus
