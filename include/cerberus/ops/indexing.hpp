// Indexing and shape ops: concat, stack, split, index_select, gather. Semantics follow PyTorch
// (torch.cat, torch.stack, torch.split, torch.index_select, torch.gather); each op's backward is
// written next to its forward.
//
// Shapes (legend: N = the extent of `axis`, K = the number of indices / parts):
//   concat(parts, axis)            parts [..., N_i, ...]        ->  [..., sum N_i, ...]
//   stack(parts, axis)             K parts of [...]             ->  [..., K, ...]  (new axis)
//   split(x, sizes, axis)          x [..., N, ...]              ->  parts [..., sizes[i], ...]  (views)
//   split(x, chunk, axis)          x [..., N, ...]              ->  parts of `chunk` (the last may be smaller)
//   index_select(x, axis, idx)     x [..., N, ...], idx [K]     ->  [..., K, ...]
//   gather(x, axis, idx)           x [d0, .., N, ..], idx [e0, .., K, ..] (e_d <= d_d off the axis)  ->  idx's shape
// Axes may be negative (-1 = last; stack counts from rank + 1). Indices are int64 and must lie in
// 0..N-1 (negative indices are refused, as in PyTorch). Any element type works forward; the
// float types are differentiable.
//
// Errors: an index out of range throws IndexError naming the op, the index, its position and the
// valid range; mismatched shapes throw ShapeError naming the op and every shape involved.
//
// Device split: the public functions see only Tensors and call IndexingKernels<D> with raw
// pointers, extents and strides (trivially copyable, so a CUDA backend specialises
// IndexingKernels<cuda> without touching this API). concat/stack/split need no kernel of their
// own: they are strided copies (Backend<D>::convert) and views.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cerberus/autograd/grad_mode.hpp"
#include "cerberus/autograd/node.hpp"
#include "cerberus/backend/cpu/backend.hpp"
#include "cerberus/backend/cpu/thread_pool.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/core/shape.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus {

// The first index outside 0..limit-1 (position in row-major order), or position -1 if none.
struct BadIndex {
  Index position = -1;
  std::int64_t value = 0;
};

// Index kernels, specialised per device. All index and output buffers are contiguous.
//   find_out_of_range(idx, count, limit)                          -> BadIndex (the lowest position)
//   index_select(x, out, outer, n, inner, idx, k)                 out[o, j, i] = x[o, idx[j], i]
//   index_add(src, dst, outer, n, inner, idx, k, skip)            dst[o, v, i] = sum over j with idx[j] == v != skip of src[o, j, i]
//                                                                 (every dst element written: 0 where nothing lands)
//   gather(x, x_strides, out, idx, shape, axis)                   out[c] = x[c with c[axis] = idx[c]]  (x strided)
//   scatter_add(src, idx, shape, axis, dst, dst_shape)            dst = 0, then dst[c with c[axis] = idx[c]] += src[c]
template <class D>
struct IndexingKernels {
  static_assert(sizeof(D) == 0, "No indexing kernels for this device: include the device's backend header (cuda: compile with nvcc).");
};

namespace cpu_backend {
inline namespace CERBERUS_SIMD_ABI {

inline BadIndex find_out_of_range(const std::int64_t* idx, Index count, Index limit) {
  // Each task stops at its own first bad index; the lowest position wins, whatever the thread
  // count, so the message names the same index every time.
  std::atomic<Index> first{count};
  parallel_for(0, count, elementwise_grain, [&](Index b, Index e) {
    for (Index i = b; i < e && i < first.load(std::memory_order_relaxed); ++i) {
      if (idx[i] >= 0 && idx[i] < limit) continue;
      Index seen = first.load(std::memory_order_relaxed);
      while (i < seen && !first.compare_exchange_weak(seen, i, std::memory_order_relaxed)) {
      }
      break;
    }
  });
  const Index pos = first.load();
  return pos < count ? BadIndex{pos, idx[pos]} : BadIndex{};
}

template <class T>
void index_select(const T* x, T* out, Index outer, Index n, Index inner, const std::int64_t* idx, Index k) {
  if (inner == 1) {  // selecting along the last axis: element gathers, a task per run of outer rows
    parallel_for(0, outer, std::max<Index>(1, elementwise_grain / std::max<Index>(k, 1)), [&](Index b, Index e) {
      for (Index o = b; o < e; ++o)
        for (Index j = 0; j < k; ++j) out[o * k + j] = x[o * n + idx[j]];
    });
    return;
  }
  // One contiguous row of `inner` elements per (o, j).
  parallel_for(0, outer * k, std::max<Index>(1, elementwise_grain / inner), [&](Index b, Index e) {
    for (Index r = b; r < e; ++r) {
      const Index o = r / k, j = r % k;
      std::memcpy(out + r * inner, x + (o * n + idx[j]) * inner, static_cast<std::size_t>(inner) * sizeof(T));
    }
  });
}

// Race-free scatter-add: sources are bucketed by destination row (a stable counting sort of the
// indices), then each task owns whole destination rows and sums their sources in increasing j.
// No atomics, no per-thread copies of dst, and the summation order follows from the indices
// alone, so results are bitwise the same for any thread count. Sums run in the compute type
// (float for bf16) and are rounded once.
template <class T>
void index_add(const T* src, T* dst, Index outer, Index n, Index inner, const std::int64_t* idx, Index k, Index skip) {
  using C = compute_t<T>;
  std::vector<Index> start(static_cast<std::size_t>(n + 1), 0);
  for (Index j = 0; j < k; ++j)
    if (idx[j] != skip) ++start[static_cast<std::size_t>(idx[j] + 1)];
  for (Index v = 0; v < n; ++v) start[static_cast<std::size_t>(v + 1)] += start[static_cast<std::size_t>(v)];
  std::vector<Index> order(static_cast<std::size_t>(start[static_cast<std::size_t>(n)]));
  {
    std::vector<Index> next(start.begin(), start.end() - 1);
    for (Index j = 0; j < k; ++j)
      if (idx[j] != skip) order[static_cast<std::size_t>(next[static_cast<std::size_t>(idx[j])]++)] = j;
  }
  const Index avg_sources = 1 + (n > 0 ? static_cast<Index>(order.size()) / n : 0);
  parallel_for(0, outer * n, std::max<Index>(1, elementwise_grain / (inner * avg_sources)), [&](Index b, Index e) {
    std::vector<C> scratch(std::is_same_v<T, C> ? 0 : static_cast<std::size_t>(inner));
    for (Index row = b; row < e; ++row) {
      const Index o = row / n, v = row % n;
      C* acc;
      if constexpr (std::is_same_v<T, C>) acc = dst + row * inner;
      else acc = scratch.data();
      std::fill(acc, acc + inner, C(0));
      for (Index p = start[static_cast<std::size_t>(v)]; p < start[static_cast<std::size_t>(v + 1)]; ++p) {
        const T* s = src + (o * k + order[static_cast<std::size_t>(p)]) * inner;
        for (Index i = 0; i < inner; ++i) acc[i] += static_cast<C>(s[i]);
      }
      if constexpr (!std::is_same_v<T, C>)
        for (Index i = 0; i < inner; ++i) dst[row * inner + i] = static_cast<T>(acc[i]);
    }
  });
}

template <class T>
void gather(const T* x, const Strides& xs, T* out, const std::int64_t* idx, const Shape& shape, int axis) {
  const int rank = shape.rank();
  const Index inner = shape[rank - 1], rows = shape.numel() / inner;
  const Strides cs = contiguous_strides(shape);
  // Along the last dimension x advances by its last stride, unless that is the gathered axis.
  const Index step = axis == rank - 1 ? 0 : xs[rank - 1];
  parallel_for(0, rows, std::max<Index>(1, elementwise_grain / inner), [&](Index b, Index e) {
    for_each_row(shape, b, e, [&](const Index* coord) {
      Index base = 0;
      for (int d = 0; d + 1 < rank; ++d)
        if (d != axis) base += coord[d] * xs[d];
      const Index o = row_offset<T>(coord, cs, rank);
      for (Index i = 0; i < inner; ++i) out[o + i] = x[base + i * step + idx[o + i] * xs[axis]];
    });
  });
}

// Lines along `axis` are independent (a line of src only lands in the matching line of dst), so
// each task owns whole lines: no races. Within a line, sums run in the compute type in a
// scratch row that is touched only where indices point, so a short line in a long axis costs
// its own length, not the axis extent.
template <class T>
void scatter_add(const T* src, const std::int64_t* idx, const Shape& shape, int axis, T* dst, const Shape& dst_shape) {
  using C = compute_t<T>;
  fill<T>(dst, contiguous_strides(dst_shape), dst_shape, T(0));
  const Index len = shape[axis];
  if (shape.numel() == 0) return;
  const Index lines = shape.numel() / len;
  const Strides cs = contiguous_strides(shape), ds = contiguous_strides(dst_shape);
  const int rank = shape.rank();
  parallel_for(0, lines, std::max<Index>(1, elementwise_grain / len), [&](Index b, Index e) {
    std::vector<C> acc(static_cast<std::size_t>(dst_shape[axis]));
    for (Index line = b; line < e; ++line) {
      Index r = line, sb = 0, db = 0;
      for (int d = rank - 1; d >= 0; --d) {
        if (d == axis) continue;
        const Index c = r % shape[d];
        r /= shape[d];
        sb += c * cs[d];
        db += c * ds[d];
      }
      auto target = [&](Index j) { return static_cast<std::size_t>(idx[sb + j * cs[axis]]); };
      for (Index j = 0; j < len; ++j) acc[target(j)] = C(0);
      for (Index j = 0; j < len; ++j) acc[target(j)] += static_cast<C>(src[sb + j * cs[axis]]);
      for (Index j = 0; j < len; ++j) dst[db + static_cast<Index>(target(j)) * ds[axis]] = static_cast<T>(acc[target(j)]);
    }
  });
}

}  // namespace CERBERUS_SIMD_ABI
}  // namespace cpu_backend

template <>
struct IndexingKernels<cpu> {
  static BadIndex find_out_of_range(const std::int64_t* idx, Index count, Index limit) {
    return cpu_backend::find_out_of_range(idx, count, limit);
  }
  template <class T>
  static void index_select(const T* x, T* out, Index outer, Index n, Index inner, const std::int64_t* idx, Index k) {
    cpu_backend::index_select(x, out, outer, n, inner, idx, k);
  }
  template <class T>
  static void index_add(const T* src, T* dst, Index outer, Index n, Index inner, const std::int64_t* idx, Index k, Index skip) {
    cpu_backend::index_add(src, dst, outer, n, inner, idx, k, skip);
  }
  template <class T>
  static void gather(const T* x, const Strides& xs, T* out, const std::int64_t* idx, const Shape& shape, int axis) {
    cpu_backend::gather(x, xs, out, idx, shape, axis);
  }
  template <class T>
  static void scatter_add(const T* src, const std::int64_t* idx, const Shape& shape, int axis, T* dst, const Shape& dst_shape) {
    cpu_backend::scatter_add(src, idx, shape, axis, dst, dst_shape);
  }
};

namespace detail {

// Position `pos` of a row-major walk over `shape`, as coordinates: "[1, 2]".
inline std::string coordinate_string(Index pos, const Shape& shape) {
  Index c[max_rank] = {};
  for (int d = shape.rank() - 1; d >= 0; --d) {
    c[d] = shape[d] ? pos % shape[d] : 0;
    pos = shape[d] ? pos / shape[d] : 0;
  }
  std::string s = "[";
  for (int d = 0; d < shape.rank(); ++d) s += (d ? ", " : "") + std::to_string(c[d]);
  return s + "]";
}

// Throws IndexError unless every element of `idx` (contiguous) is in
// 0..limit-1. `target` says what is indexed, e.g. "axis 1 of x's shape [3, 4]".
template <class D>
void check_index_range(const char* op, const Tensor<std::int64_t, D>& idx, Index limit, const std::string& target) {
  const BadIndex bad = IndexingKernels<D>::find_out_of_range(idx.data(), idx.numel(), limit);
  if (bad.position < 0) return;
  const std::string range =
      limit > 0 ? "valid indices are 0.." + std::to_string(limit - 1) : "it has extent 0, so no index is valid";
  throw IndexError(std::string("[") + op + "] index " + std::to_string(bad.value) + " at position " +
                   coordinate_string(bad.position, idx.shape()) + " of the index tensor (shape " + idx.shape().to_string() +
                   ") is out of range for " + target + "; " + range);
}

template <class T, class D>
void require_defined(const char* op, const Tensor<T, D>& t, const char* what) {
  if (!t.defined()) throw ValueError(std::string("[") + op + "] " + what + " is an undefined tensor");
}

// "[2, 3], [2, 4]" (the first 16 shapes: enough to spot the odd one out).
template <class T, class D>
std::string shapes_string(const std::vector<Tensor<T, D>>& parts) {
  std::string s;
  for (std::size_t i = 0; i < parts.size() && i < 16; ++i) s += (i ? ", " : "") + parts[i].shape().to_string();
  if (parts.size() > 16) s += ", ... (" + std::to_string(parts.size()) + " tensors)";
  return s;
}

// autograd::record for a run-time number of inputs (record takes an initializer_list).
template <class T, class D>
void record_with_inputs(Tensor<T, D>& out, const char* name, const std::vector<Tensor<T, D>>& inputs,
                        typename autograd::FunctionNode<T, D>::Backward backward) {
  auto node = std::make_shared<autograd::FunctionNode<T, D>>(name, std::move(backward));
  for (const auto& in : inputs) node->inputs.push_back(in.requires_grad() ? in.gradient_edge() : nullptr);
  out.set_grad_fn(std::move(node));
}

template <class T, class D>
bool any_part_requires_grad(const std::vector<Tensor<T, D>>& parts) {
  if (!is_grad_enabled()) return false;
  return std::any_of(parts.begin(), parts.end(), [](const Tensor<T, D>& p) { return p.requires_grad(); });
}

// dst <- src elementwise through both strides (same shape): no autograd check, since ops fill
// their own fresh outputs.
template <class T, class D>
void copy_into(const Tensor<T, D>& dst, const Tensor<T, D>& src) {
  if (dst.numel() > 0) Backend<D>::template convert<T, T>(dst.data(), dst.strides(), src.data(), src.strides(), dst.shape());
}

// x seen as [outer, n, inner] around axis a.
inline void split_extents(const Shape& s, int a, Index& outer, Index& inner) {
  outer = 1;
  inner = 1;
  for (int d = 0; d < a; ++d) outer *= s[d];
  for (int d = a + 1; d < s.rank(); ++d) inner *= s[d];
}

}  // namespace detail

// ---- concat ---------------------------------------------------------------------------------
// Joins parts along an existing axis; all other extents must match.
// saves: each part's extent along the axis (backward hands part i the slice of dy it filled).
template <Element T, Device D>
Tensor<T, D> concat(const std::vector<Tensor<T, D>>& parts, int axis = 0) {
  if (parts.empty()) throw ValueError("[concat] needs at least one tensor, got none");
  for (const auto& p : parts) detail::require_defined("concat", p, "a part");
  const Shape& first = parts[0].shape();
  const int a = first.axis(axis, "concat");
  Shape out_shape = first;
  std::vector<Index> extents;
  out_shape[a] = 0;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const Shape& s = parts[i].shape();
    bool fits = s.rank() == first.rank();
    for (int d = 0; fits && d < s.rank(); ++d) fits = d == a || s[d] == first[d];
    if (!fits)
      throw ShapeError("[concat] part " + std::to_string(i) + " has shape " + s.to_string() + ", which differs from part 0's " +
                       first.to_string() + " outside axis " + std::to_string(a) + "; shapes: " + detail::shapes_string(parts));
    extents.push_back(s[a]);
    out_shape[a] += s[a];
  }
  Tensor<T, D> out = Tensor<T, D>::empty(out_shape);
  Index offset = 0;
  for (const auto& p : parts) {
    detail::copy_into(out.slice(a, offset, offset + p.shape()[a]), p);
    offset += p.shape()[a];
  }
  if constexpr (FloatElement<T>) {
    if (detail::any_part_requires_grad(parts))
      detail::record_with_inputs(out, "concat", parts, [a, extents](const Tensor<T, D>& g) {
        std::vector<Tensor<T, D>> grads;
        Index off = 0;
        for (const Index n : extents) grads.push_back(g.slice(a, off, off + n)), off += n;
        return grads;
      });
  }
  return out;
}
template <Element T, Device D>
Tensor<T, D> concat(std::initializer_list<Tensor<T, D>> parts, int axis = 0) {
  return concat(std::vector<Tensor<T, D>>(parts), axis);
}

// ---- stack ----------------------------------------------------------------------------------
// Joins equally shaped parts along a new axis (0..rank; negative counts from rank + 1).
// saves: nothing but the axis (backward hands part i the slice dy.select(axis, i)).
template <Element T, Device D>
Tensor<T, D> stack(const std::vector<Tensor<T, D>>& parts, int axis = 0) {
  if (parts.empty()) throw ValueError("[stack] needs at least one tensor, got none");
  for (const auto& p : parts) detail::require_defined("stack", p, "a part");
  const Shape& first = parts[0].shape();
  const int a = axis < 0 ? axis + first.rank() + 1 : axis;
  if (a < 0 || a > first.rank())
    throw IndexError("[stack] axis " + std::to_string(axis) + " is out of range for stacking tensors of shape " + first.to_string() +
                     " (valid axes are " + std::to_string(-first.rank() - 1) + ".." + std::to_string(first.rank()) + ")");
  if (first.rank() == max_rank)
    throw ShapeError("[stack] stacking tensors of shape " + first.to_string() + " would exceed the maximum rank " + std::to_string(max_rank));
  for (std::size_t i = 1; i < parts.size(); ++i)
    if (!(parts[i].shape() == first))
      throw ShapeError("[stack] part " + std::to_string(i) + " has shape " + parts[i].shape().to_string() + " but part 0 has " +
                       first.to_string() + "; all parts must have one shape; shapes: " + detail::shapes_string(parts));
  Shape out_shape = first;
  out_shape.insert(a, static_cast<Index>(parts.size()));
  Tensor<T, D> out = Tensor<T, D>::empty(out_shape);
  for (std::size_t i = 0; i < parts.size(); ++i) detail::copy_into(out.select(a, static_cast<Index>(i)), parts[i]);
  if constexpr (FloatElement<T>) {
    if (detail::any_part_requires_grad(parts))
      detail::record_with_inputs(out, "stack", parts, [a, k = parts.size()](const Tensor<T, D>& g) {
        std::vector<Tensor<T, D>> grads;
        for (std::size_t i = 0; i < k; ++i) grads.push_back(g.select(a, static_cast<Index>(i)));
        return grads;
      });
  }
  return out;
}
template <Element T, Device D>
Tensor<T, D> stack(std::initializer_list<Tensor<T, D>> parts, int axis = 0) {
  return stack(std::vector<Tensor<T, D>>(parts), axis);
}

// ---- split ----------------------------------------------------------------------------------
namespace autograd {

// split has several outputs and the tape's nodes have one, so it records one SplitNode for the
// input and one SplitOutputNode per part. A part's node hands its gradient to the SplitNode,
// which runs after all of them (it is their input, so it comes later in the reverse order) and
// writes each part's gradient into its slice of ONE input-shaped tensor; slices of parts that
// got no gradient (unused parts) are zero-filled. O(numel) however many parts, where recording
// each part as a slice view would cost a full zero tensor per part.
// saves: the input's shape, the axis and the part sizes.
template <class T, class D>
class SplitNode final : public GradNode<T, D> {
 public:
  SplitNode(const Shape& input, int axis, std::vector<Index> sizes)
      : input_(input), axis_(axis), sizes_(std::move(sizes)), parts_(sizes_.size()) {}
  const char* name() const override { return "split"; }

  void add_part_grad(std::size_t part, const Tensor<T, D>& g) {
    parts_[part] = parts_[part].defined() ? Tensor<T, D>(parts_[part] + g) : g;
  }
  void apply() override {
    if (std::none_of(parts_.begin(), parts_.end(), [](const Tensor<T, D>& p) { return p.defined(); })) return;
    Tensor<T, D> full = Tensor<T, D>::empty(input_);
    Index offset = 0;
    for (std::size_t i = 0; i < sizes_.size(); ++i) {
      const Tensor<T, D> dst = full.slice(axis_, offset, offset + sizes_[i]);
      offset += sizes_[i];
      if (parts_[i].defined()) detail::copy_into(dst, parts_[i]);
      else if (dst.numel() > 0) Backend<D>::template fill<T>(dst.data(), dst.strides(), dst.shape(), T(0));
    }
    this->pass_to(0, full);
  }
  void clear_grad() override {
    for (auto& p : parts_) p = Tensor<T, D>();
    GradNode<T, D>::clear_grad();
  }

 private:
  Shape input_;
  int axis_;
  std::vector<Index> sizes_;
  std::vector<Tensor<T, D>> parts_;  // gradients of the parts, during one backward
};

// The grad_fn of split's part `part`: forwards the part's gradient to the shared SplitNode.
template <class T, class D>
class SplitOutputNode final : public GradNode<T, D> {
 public:
  SplitOutputNode(const std::shared_ptr<SplitNode<T, D>>& split, std::size_t part) : split_(split.get()), part_(part) {
    this->inputs.push_back(split);
  }
  const char* name() const override { return "split output"; }
  void apply() override {
    if (this->grad_.defined()) split_->add_part_grad(part_, this->grad_);
  }

 private:
  SplitNode<T, D>* split_;  // owned through inputs[0]
  std::size_t part_;
};

}  // namespace autograd

// Cuts x along `axis` into parts of the given sizes (which must add up to the axis extent).
// The parts are views of x.
template <Element T, Device D>
std::vector<Tensor<T, D>> split(const Tensor<T, D>& x, const std::vector<Index>& sizes, int axis = 0) {
  detail::require_defined("split", x, "x");
  const int a = x.shape().axis(axis, "split");
  Index total = 0;
  std::string list = "[";
  for (std::size_t i = 0; i < sizes.size(); ++i) list += (i ? ", " : "") + std::to_string(sizes[i]), total += sizes[i];
  list += "]";
  if (sizes.empty() || std::any_of(sizes.begin(), sizes.end(), [](Index s) { return s < 0; }) || total != x.shape()[a])
    throw ShapeError("[split] sizes " + list + " must be non-negative and add up to the extent " + std::to_string(x.shape()[a]) +
                     " of axis " + std::to_string(a) + " of x's shape " + x.shape().to_string());
  std::vector<Tensor<T, D>> parts;
  const Tensor<T, D> base = x.detach();
  Index offset = 0;
  for (const Index n : sizes) parts.push_back(base.slice(a, offset, offset + n)), offset += n;
  if constexpr (FloatElement<T>) {
    if (is_grad_enabled() && x.requires_grad()) {
      auto node = std::make_shared<autograd::SplitNode<T, D>>(x.shape(), a, sizes);
      node->inputs.push_back(x.gradient_edge());
      for (std::size_t i = 0; i < parts.size(); ++i) parts[i].set_grad_fn(std::make_shared<autograd::SplitOutputNode<T, D>>(node, i));
    }
  }
  return parts;
}

// Cuts x along `axis` into parts of `chunk` elements, the last one smaller if the extent is not
// a multiple (an empty axis gives one empty part, as in PyTorch). Note: `split(x, {4})` means
// chunk 4, not sizes {4}; write `split(x, std::vector<Index>{4})` for the latter.
template <Element T, Device D>
std::vector<Tensor<T, D>> split(const Tensor<T, D>& x, Index chunk, int axis = 0) {
  detail::require_defined("split", x, "x");
  if (chunk <= 0) throw ValueError("[split] chunk size must be positive, got " + std::to_string(chunk));
  const Index n = x.shape()[x.shape().axis(axis, "split")];
  std::vector<Index> sizes;
  for (Index off = 0; off < n; off += chunk) sizes.push_back(std::min(chunk, n - off));
  if (sizes.empty()) sizes.push_back(0);
  return split(x, sizes, axis);
}

// ---- index_select ---------------------------------------------------------------------------
// out = x with the entries idx[0], idx[1], ... taken along `axis` (repeats allowed).
// saves: the indices (the contiguous handle, not a copy) and x's shape; backward scatter-adds
// dy into zeros of x's shape (indices hit several times accumulate).
template <Element T, Device D>
Tensor<T, D> index_select(const Tensor<T, D>& x, int axis, const Tensor<std::int64_t, D>& indices) {
  detail::require_defined("index_select", x, "x");
  detail::require_defined("index_select", indices, "indices");
  const int a = x.shape().axis(axis, "index_select");
  if (indices.rank() > 1)
    throw ShapeError("[index_select] indices must have rank 0 or 1, got shape " + indices.shape().to_string() + " (x has shape " +
                     x.shape().to_string() + ")");
  const Tensor<std::int64_t, D> idx = indices.contiguous();
  const Index n = x.shape()[a], k = idx.numel();
  detail::check_index_range("index_select", idx, n, "axis " + std::to_string(a) + " of x's shape " + x.shape().to_string());
  Shape out_shape = x.shape();
  out_shape[a] = k;
  Tensor<T, D> out = Tensor<T, D>::empty(out_shape);
  Index outer, inner;
  detail::split_extents(x.shape(), a, outer, inner);
  // x.detach(): a contiguous copy of a differentiable x must not record a node of its own.
  if (out.numel() > 0) IndexingKernels<D>::index_select(x.detach().contiguous().data(), out.data(), outer, n, inner, idx.data(), k);
  if constexpr (FloatElement<T>) {
    if (autograd::any_requires_grad(x))
      autograd::record<T, D>(out, "index_select", {x}, [idx, in = x.shape(), outer, n, inner, k](const Tensor<T, D>& g) {
        Tensor<T, D> dx = Tensor<T, D>::empty(in);
        if (dx.numel() > 0) IndexingKernels<D>::index_add(g.contiguous().data(), dx.data(), outer, n, inner, idx.data(), k, Index(-1));
        return std::vector<Tensor<T, D>>{dx};
      });
  }
  return out;
}

// ---- gather ---------------------------------------------------------------------------------
// out[c] = x[c with c[axis] replaced by index[c]]; index has x's rank and, off the axis, extents
// no larger than x's. The output has index's shape.
// saves: the index (the contiguous handle) and x's shape; backward scatter-adds dy into zeros
// of x's shape along the axis.
template <Element T, Device D>
Tensor<T, D> gather(const Tensor<T, D>& x, int axis, const Tensor<std::int64_t, D>& index) {
  detail::require_defined("gather", x, "x");
  detail::require_defined("gather", index, "index");
  const int a = x.shape().axis(axis, "gather");
  if (index.rank() != x.rank())
    throw ShapeError("[gather] index of shape " + index.shape().to_string() + " must have the rank of x's shape " +
                     x.shape().to_string());
  for (int d = 0; d < x.rank(); ++d)
    if (d != a && index.shape()[d] > x.shape()[d])
      throw ShapeError("[gather] index of shape " + index.shape().to_string() + " is larger than x's shape " + x.shape().to_string() +
                       " in dimension " + std::to_string(d) + " (only axis " + std::to_string(a) + " may differ freely)");
  const Tensor<std::int64_t, D> idx = index.contiguous();
  detail::check_index_range("gather", idx, x.shape()[a], "axis " + std::to_string(a) + " of x's shape " + x.shape().to_string());
  Tensor<T, D> out = Tensor<T, D>::empty(idx.shape());
  if (out.numel() > 0) IndexingKernels<D>::gather(x.data(), x.strides(), out.data(), idx.data(), idx.shape(), a);
  if constexpr (FloatElement<T>) {
    if (autograd::any_requires_grad(x))
      autograd::record<T, D>(out, "gather", {x}, [idx, in = x.shape(), a](const Tensor<T, D>& g) {
        Tensor<T, D> dx = Tensor<T, D>::empty(in);
        if (dx.numel() > 0) IndexingKernels<D>::scatter_add(g.contiguous().data(), idx.data(), idx.shape(), a, dx.data(), in);
        return std::vector<Tensor<T, D>>{dx};
      });
  }
  return out;
}

}  // namespace cerberus
