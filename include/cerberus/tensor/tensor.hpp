// Tensor<T, Device>: a cheap handle (shared storage + offset + shape + strides). Copies share
// data; views (reshape, permute, slice, expand, ...) never copy; contiguous() and clone() do.
//
// Shapes are dynamic (rank 0..8); element type and device are static, so mixing them is a
// compile error rather than a run-time surprise.
#pragma once

#include <cstddef>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/backend/cpu/backend.hpp"
#include "cerberus/core/device.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/core/shape.hpp"
#include "cerberus/expr/expr.hpp"
#include "cerberus/expr/functors.hpp"
#include "cerberus/tensor/storage.hpp"
#include "cerberus/autograd/grad_mode.hpp"
#include "cerberus/autograd/meta.hpp"

namespace cerberus {

namespace detail {
template <class T, class D, class E>
void assign_expression(Tensor<T, D>& out, const E& e, const char* op);
template <class T, class D, class E>
void record_expression(Tensor<T, D>& out, const E& e);
}  // namespace detail

namespace autograd {
// Sums a broadcast gradient back to the shape of the operand that was broadcast.
template <class T, class D>
Tensor<T, D> sum_to_shape(const Tensor<T, D>& grad, const Shape& shape);
template <class T, class D>
void record(Tensor<T, D>& out, const char* name, std::initializer_list<Tensor<T, D>> inputs,
            std::function<std::vector<Tensor<T, D>>(const Tensor<T, D>&)> backward);
template <class T, class D>
void run_backward(const std::shared_ptr<GradNode<T, D>>& root, const Tensor<T, D>& grad, bool retain_graph);
template <class T, class D>
std::shared_ptr<GradNode<T, D>> make_accumulator(const std::shared_ptr<Meta<T, D>>& meta);
template <class U, class D, class T>
void record_conversion(Tensor<U, D>& out, const Tensor<T, D>& in);
}  // namespace autograd

template <Element T, Device D = cpu>
class Tensor {
 public:
  using value_type = T;
  using device_type = D;

  // An undefined tensor: no storage, rank 0. defined() is false.
  Tensor() = default;

  // Evaluates an expression into a new contiguous tensor: `Tensor<float> y = exp(a) + b;`.
  template <Expression E>
    requires(!std::is_same_v<std::remove_cvref_t<E>, Tensor>)
  Tensor(const E& e) {  // NOLINT(google-explicit-constructor): assignment from expressions is the point
    static_assert(std::is_same_v<expr_value_t<E>, T>, "The expression's element type differs from the tensor's; convert with .to<T>() first.");
    static_assert(std::is_same_v<expr_device_t<E>, D>, "The expression lives on another device than this tensor.");
    *this = empty(expr_shape(e));
    {
      NoGradGuard evaluation_is_not_recorded;
      detail::assign_expression(*this, e, "assign");
    }
    detail::record_expression(*this, e);  // one node for the whole fused expression
  }

  // Uninitialised contiguous storage for `shape` (see factories.hpp for zeros, ones, ...).
  static Tensor empty(const Shape& shape) {
    Tensor t;
    t.shape_ = shape;
    t.strides_ = contiguous_strides(shape);
    t.storage_ = std::make_shared<Storage<D>>(static_cast<std::size_t>(shape.numel()) * sizeof(T));
    return t;
  }

  // Wraps existing storage; used by views and backends.
  Tensor(std::shared_ptr<Storage<D>> storage, Index offset, const Shape& shape, const Strides& strides)
      : storage_(std::move(storage)), offset_(offset), shape_(shape), strides_(strides) {}

  // ---- queries -------------------------------------------------------------------------------
  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Strides& strides() const { return strides_; }
  int rank() const { return shape_.rank(); }
  Index size(int axis) const { return shape_[shape_.axis(axis, "size")]; }
  Index numel() const { return shape_.numel(); }
  Index offset() const { return offset_; }
  const std::shared_ptr<Storage<D>>& storage() const { return storage_; }

  // Pointer to the first element (device memory for cuda tensors).
  T* data() const { return storage_ ? static_cast<T*>(storage_->data()) + offset_ : nullptr; }

  bool is_contiguous() const {
    Index expected = 1;
    for (int d = rank() - 1; d >= 0; --d) {
      if (shape_[d] != 1 && strides_[d] != expected) return false;
      expected *= shape_[d];
    }
    return true;
  }

  // ---- views: no copy --------------------------------------------------------------------------
  // Same data, new shape; one extent may be -1 (inferred). Throws if the strides cannot express it.
  Tensor view(std::initializer_list<Index> dims) const { return view(resolve_shape(dims, "view")); }
  Tensor view(const Shape& shape) const {
    const Shape target = resolve_shape(std::span<const Index>(shape.begin(), shape.end()), "view");
    Strides strides;
    if (!view_strides(target, strides))
      throw ShapeError("[view] cannot view a tensor of shape " + shape_.to_string() + " with strides " + strides_.to_string() +
                       " as " + target.to_string() + " without a copy; use reshape() or contiguous() first");
    return track(Tensor(storage_, offset_, target, strides), "view", [in = shape_](const Tensor& g) { return g.reshape(in); });
  }
  // Like view(), but copies when the strides cannot express the new shape.
  Tensor reshape(std::initializer_list<Index> dims) const { return reshape(resolve_shape(dims, "reshape")); }
  Tensor reshape(const Shape& shape) const {
    const Shape target = resolve_shape(std::span<const Index>(shape.begin(), shape.end()), "reshape");
    Strides strides;
    if (view_strides(target, strides))
      return track(Tensor(storage_, offset_, target, strides), "reshape", [in = shape_](const Tensor& g) { return g.reshape(in); });
    return contiguous().view(target);
  }

  // Reorders dimensions: result dimension i is this tensor's dimension order[i].
  Tensor permute(std::initializer_list<int> order) const { return permute(std::span<const int>(order.begin(), order.size())); }
  Tensor permute(std::span<const int> order) const {
    if (static_cast<int>(order.size()) != rank())
      throw ShapeError("[permute] got " + std::to_string(order.size()) + " axes for a tensor of shape " + shape_.to_string());
    Shape shape = shape_, strides = strides_;
    bool seen[max_rank] = {};
    for (int i = 0; i < rank(); ++i) {
      const int d = shape_.axis(order[i], "permute");
      if (seen[d]) throw IndexError("[permute] axis " + std::to_string(order[i]) + " appears twice");
      seen[d] = true;
      shape[i] = shape_[d];
      strides[i] = strides_[d];
    }
    std::vector<int> inverse(static_cast<std::size_t>(rank()));
    for (int i = 0; i < rank(); ++i) inverse[static_cast<std::size_t>(shape_.axis(order[i], "permute"))] = i;
    return track(Tensor(storage_, offset_, shape, strides), "permute",
                 [inverse](const Tensor& g) { return g.permute(std::span<const int>(inverse)); });
  }
  Tensor transpose(int a, int b) const {
    a = shape_.axis(a, "transpose");
    b = shape_.axis(b, "transpose");
    Shape shape = shape_, strides = strides_;
    std::swap(shape[a], shape[b]);
    std::swap(strides[a], strides[b]);
    return track(Tensor(storage_, offset_, shape, strides), "transpose", [a, b](const Tensor& g) { return g.transpose(a, b); });
  }
  // Matrix transpose of the last two dimensions.
  Tensor t() const {
    if (rank() < 2) throw ShapeError("[t] needs at least 2 dimensions, got shape " + shape_.to_string());
    return transpose(-2, -1);
  }

  // Elements start, start+step, ... below stop along `axis`; negative start/stop count from the
  // end and out-of-range bounds are clamped, as in Python.
  Tensor slice(int axis, Index start, Index stop, Index step = 1) const {
    const int d = shape_.axis(axis, "slice");
    if (step <= 0) throw ValueError("[slice] step must be positive, got " + std::to_string(step));
    const Index n = shape_[d];
    auto clampi = [n](Index i) { return i < 0 ? std::max<Index>(i + n, 0) : std::min(i, n); };
    start = clampi(start);
    stop = std::max(clampi(stop), start);
    Shape shape = shape_, strides = strides_;
    shape[d] = (stop - start + step - 1) / step;
    strides[d] = strides_[d] * step;
    // backward: the gradient lands in the sliced positions of a zero tensor of the input's shape
    return track(Tensor(storage_, offset_ + start * strides_[d], shape, strides), "slice",
                 [in = shape_, d, start, stop, step](const Tensor& g) {
                   Tensor full = empty(in);
                   full.fill(T(0));
                   full.slice(d, start, stop, step).assign(g);
                   return full;
                 });
  }
  // The sub-tensor at `index` along `axis`, with that axis removed.
  Tensor select(int axis, Index index) const {
    const int d = shape_.axis(axis, "select");
    if (index < -shape_[d] || index >= shape_[d])
      throw IndexError("[select] index " + std::to_string(index) + " is out of range for axis " + std::to_string(axis) +
                       " of shape " + shape_.to_string());
    if (index < 0) index += shape_[d];
    Shape shape = shape_, strides = strides_;
    shape.erase(d);
    strides.erase(d);
    return track(Tensor(storage_, offset_ + index * strides_[d], shape, strides), "select", [in = shape_, d, index](const Tensor& g) {
      Tensor full = empty(in);
      full.fill(T(0));
      full.select(d, index).assign(g);
      return full;
    });
  }

  Tensor squeeze(int axis) const {
    const int d = shape_.axis(axis, "squeeze");
    if (shape_[d] != 1)
      throw ShapeError("[squeeze] axis " + std::to_string(axis) + " has extent " + std::to_string(shape_[d]) + " in shape " +
                       shape_.to_string() + ", not 1");
    Shape shape = shape_, strides = strides_;
    shape.erase(d);
    strides.erase(d);
    return track(Tensor(storage_, offset_, shape, strides), "squeeze", [in = shape_](const Tensor& g) { return g.reshape(in); });
  }
  // Removes every extent-1 dimension.
  Tensor squeeze() const {
    Shape shape, strides;
    for (int d = 0; d < rank(); ++d)
      if (shape_[d] != 1) shape.push_back(shape_[d]), strides.push_back(strides_[d]);
    return track(Tensor(storage_, offset_, shape, strides), "squeeze", [in = shape_](const Tensor& g) { return g.reshape(in); });
  }
  // Inserts an extent-1 dimension at `axis` (0..rank, negative counts from the end).
  Tensor unsqueeze(int axis) const {
    const int d = axis < 0 ? axis + rank() + 1 : axis;
    if (d < 0 || d > rank())
      throw IndexError("[unsqueeze] axis " + std::to_string(axis) + " is out of range for shape " + shape_.to_string());
    Shape shape = shape_, strides = strides_;
    const Index stride = d < rank() ? strides_[d] * shape_[d] : 1;
    shape.insert(d, 1);
    strides.insert(d, stride);
    return track(Tensor(storage_, offset_, shape, strides), "unsqueeze", [in = shape_](const Tensor& g) { return g.reshape(in); });
  }
  // Broadcasts to `shape` (NumPy rules) by giving repeated dimensions stride 0; -1 keeps an extent.
  Tensor expand(const Shape& shape) const {
    if (shape.rank() < rank())
      throw ShapeError("[expand] cannot expand shape " + shape_.to_string() + " to the lower-rank shape " + shape.to_string());
    Shape out = shape, strides = Shape::filled(shape.rank(), 0);
    const int shift = shape.rank() - rank();
    for (int d = 0; d < shape.rank(); ++d) {
      const int s = d - shift;
      if (s < 0) {
        if (shape[d] < 0) throw ShapeError("[expand] -1 is not allowed for the new leading dimension " + std::to_string(d));
        continue;
      }
      if (shape[d] == -1 || shape[d] == shape_[s]) {
        out[d] = shape_[s];
        strides[d] = strides_[s];
      } else if (shape_[s] == 1) {
        strides[d] = 0;
      } else {
        throw ShapeError("[expand] shape " + shape_.to_string() + " cannot be expanded to " + shape.to_string());
      }
    }
    return track(Tensor(storage_, offset_, out, strides), "expand",
                 [in = shape_](const Tensor& g) { return autograd::sum_to_shape(g, in); });
  }
  Tensor broadcast_to(const Shape& shape) const { return expand(shape); }

  // ---- copies ---------------------------------------------------------------------------------
  // This tensor if already contiguous, else a contiguous copy.
  Tensor contiguous() const { return is_contiguous() ? *this : clone(); }
  // Always a new contiguous copy.
  Tensor clone() const {
    Tensor out = empty(shape_);
    Backend<D>::template convert<T, T>(out.data(), contiguous_strides(shape_), data(), strides_, shape_);
    return track(out, "clone", [](const Tensor& g) { return g; });
  }
  // Element-type conversion (always a new tensor).
  template <Element U>
  Tensor<U, D> to() const {
    auto out = Tensor<U, D>::empty(shape_);
    Backend<D>::template convert<U, T>(out.data(), contiguous_strides(shape_), data(), strides_, shape_);
    if constexpr (FloatElement<T> && FloatElement<U>) {
      if (is_grad_enabled() && requires_grad()) autograd::record_conversion(out, *this);
    }
    return out;
  }
  // Device transfer (always a new contiguous tensor).
  template <Device D2>
  Tensor<T, D2> to() const {
    const Tensor src = contiguous();
    auto out = Tensor<T, D2>::empty(shape_);
    const std::size_t bytes = static_cast<std::size_t>(numel()) * sizeof(T);
    if constexpr (std::is_same_v<D, D2>) {
      Backend<D>::template convert<T, T>(out.data(), out.strides(), src.data(), src.strides(), shape_);
    } else if constexpr (std::is_same_v<D, cpu>) {
      Backend<D2>::copy_from_host(out.data(), src.data(), bytes);
    } else {
      Backend<D>::copy_to_host(out.data(), src.data(), bytes);
    }
    return out;
  }

  // Elements in row-major order, copied to the host.
  std::vector<T> to_vector() const {
    std::vector<T> v(static_cast<std::size_t>(numel()));
    if (v.empty()) return v;
    const Tensor<T, cpu> host = [&] {  // Tensor<T, cpu>, not Tensor: for a cuda tensor this is a host copy
      if constexpr (std::is_same_v<D, cpu>) return contiguous();
      else return to<cpu>();
    }();
    std::memcpy(v.data(), host.data(), v.size() * sizeof(T));
    return v;
  }
  // The single element of a one-element tensor.
  T item() const {
    if (numel() != 1) throw ShapeError("[item] needs exactly one element, got shape " + shape_.to_string());
    return to_vector()[0];
  }

  // Element access by coordinates (CPU tensors). Negative indices count from the end.
  template <class... I>
    requires(std::is_integral_v<I> && ...)
  T& operator()(I... index) const {
    static_assert(std::is_same_v<D, cpu>, "Element access is for cpu tensors; copy with .to<cpu>() first.");
    if (static_cast<int>(sizeof...(I)) != rank())
      throw IndexError("[index] got " + std::to_string(sizeof...(I)) + " indices for shape " + shape_.to_string());
    const Index idx[] = {static_cast<Index>(index)..., 0};
    Index offset = 0;
    for (int d = 0; d < rank(); ++d) {
      Index i = idx[d];
      if (i < -shape_[d] || i >= shape_[d])
        throw IndexError("[index] index " + std::to_string(i) + " is out of range for axis " + std::to_string(d) +
                         " of shape " + shape_.to_string());
      if (i < 0) i += shape_[d];
      offset += i * strides_[d];
    }
    return data()[offset];
  }

  // ---- autodiff --------------------------------------------------------------------------------
  bool requires_grad() const { return meta_ && meta_->requires_grad; }
  // Marks a leaf as a variable whose gradient backward() accumulates into grad(). Applies to this
  // handle and to copies made afterwards.
  Tensor& set_requires_grad(bool on = true) {
    if (!is_leaf()) throw Error("[set_requires_grad] only leaf tensors can change requires_grad; use detach() for a new leaf");
    if (!meta_) meta_ = std::make_shared<autograd::Meta<T, D>>();
    meta_->requires_grad = on;
    return *this;
  }
  // The accumulated gradient of a leaf (undefined before the first backward).
  Tensor grad() const { return meta_ ? meta_->grad : Tensor(); }
  // Sets the accumulated gradient to zero (keeps its memory).
  void zero_grad() const {
    if (meta_ && meta_->grad.defined()) meta_->grad.fill(T(0));
  }
  // Forgets the accumulated gradient (frees its memory).
  void clear_grad() const {
    if (meta_) meta_->grad = Tensor();
  }
  bool is_leaf() const { return !meta_ || !meta_->grad_fn; }
  // The op that produced this tensor, if it was recorded.
  std::shared_ptr<autograd::GradNode<T, D>> grad_fn() const { return meta_ ? meta_->grad_fn : nullptr; }
  // Same data, cut from the graph.
  Tensor detach() const { return Tensor(storage_, offset_, shape_, strides_); }

  // Backpropagates from this one-element tensor (a loss).
  void backward(bool retain_graph = false) const {
    if (numel() != 1)
      throw ShapeError("[backward] called on a tensor of shape " + shape_.to_string() +
                       " without a gradient; backward() needs a one-element tensor (a loss), or pass the gradient of the output");
    Tensor seed = empty(shape_);
    seed.fill(T(1));
    backward(seed, retain_graph);
  }
  // Backpropagates `grad` (same shape as this tensor) through the graph that produced it.
  void backward(const Tensor& grad, bool retain_graph = false) const {
    if (!requires_grad())
      throw Error("[backward] this tensor does not require grad: no input of the ops that made it requires grad");
    if (grad.shape() != shape_)
      throw ShapeError("[backward] gradient of shape " + grad.shape().to_string() + " for a tensor of shape " + shape_.to_string());
    autograd::run_backward(gradient_edge(), grad, retain_graph);
  }

  // The node a consumer's gradient flows into: the producing op, or the leaf's accumulator.
  std::shared_ptr<autograd::GradNode<T, D>> gradient_edge() const {
    if (!requires_grad()) return nullptr;
    if (meta_->grad_fn) return meta_->grad_fn;
    auto acc = meta_->accumulator.lock();
    if (!acc) {
      acc = autograd::make_accumulator(meta_);
      meta_->accumulator = acc;
    }
    return acc;
  }
  // Makes this handle the output of `node` (used by ops when they record).
  void set_grad_fn(std::shared_ptr<autograd::GradNode<T, D>> node) {
    meta_ = std::make_shared<autograd::Meta<T, D>>();
    meta_->requires_grad = true;
    meta_->grad_fn = std::move(node);
  }

  // ---- writing ----------------------------------------------------------------------------------
  // Evaluates `e` into this tensor's elements (through its strides). `e` must broadcast to
  // this shape. Safe when `e` reads this tensor's own memory through another layout.
  template <Operand E>
  const Tensor& assign(const E& e) const {
    check_assign_not_differentiated(e);
    if constexpr (std::is_arithmetic_v<E>) {
      Backend<D>::template fill<T>(data(), strides_, shape_, static_cast<T>(e));
    } else {
      detail::assign_expression(*const_cast<Tensor*>(this), e, "assign");
    }
    return *this;
  }
  const Tensor& fill(T value) const {
    Backend<D>::template fill<T>(data(), strides_, shape_, value);
    return *this;
  }
  template <Operand E> const Tensor& operator+=(const E& e) const { return assign(make_expr<fn::Add>(*this, e)); }
  template <Operand E> const Tensor& operator-=(const E& e) const { return assign(make_expr<fn::Sub>(*this, e)); }
  template <Operand E> const Tensor& operator*=(const E& e) const { return assign(make_expr<fn::Mul>(*this, e)); }
  template <Operand E> const Tensor& operator/=(const E& e) const { return assign(make_expr<fn::Div>(*this, e)); }

 private:

  // Records `out` (derived from this tensor alone) with a one-input backward when needed.
  template <class Backward>
  Tensor track(Tensor out, const char* name, Backward backward) const {
    if constexpr (FloatElement<T>) {  // integer tensors have no gradients (and their backward would not compile)
      if (is_grad_enabled() && requires_grad())
        autograd::record<T, D>(out, name, {*this}, [backward](const Tensor& g) { return std::vector<Tensor>{backward(g)}; });
    }
    return out;
  }

  // In-place writes are not differentiable: refuse them while grad mode would need them.
  template <class E>
  void check_assign_not_differentiated(const E& e) const {
    if (!is_grad_enabled()) return;
    bool grad_leaf = requires_grad();
    if constexpr (Expression<E>) for_each_leaf(e, [&](const auto& leaf) { grad_leaf = grad_leaf || leaf.requires_grad(); });
    if (grad_leaf)
      throw Error("[assign] in-place writes are not recorded for autodiff, and a tensor involved requires grad; "
                  "build a new tensor (Tensor y = expr;) or write inside a NoGradGuard scope");
  }

  Shape resolve_shape(std::span<const Index> dims, const char* op) const {
    std::vector<Index> out(dims.begin(), dims.end());
    int infer = -1;
    Index known = 1;
    for (int i = 0; i < static_cast<int>(out.size()); ++i) {
      if (out[i] == -1) {
        if (infer >= 0) throw ShapeError(std::string("[") + op + "] only one extent may be -1");
        infer = i;
      } else if (out[i] < 0) {
        throw ShapeError(std::string("[") + op + "] negative extent " + std::to_string(out[i]));
      } else {
        known *= out[i];
      }
    }
    if (infer >= 0) {
      if (known == 0 || numel() % known != 0)
        throw ShapeError(std::string("[") + op + "] cannot infer -1 when reshaping " + shape_.to_string());
      out[infer] = numel() / known;
      known *= out[infer];
    }
    Shape target{std::span<const Index>(out)};
    if (known != numel()) {
      throw ShapeError(std::string("[") + op + "] shape " + shape_.to_string() + " (" + std::to_string(numel()) +
                       " elements) cannot become " + target.to_string() + " (" + std::to_string(known) + " elements)");
    }
    return target;
  }
  Shape resolve_shape(std::initializer_list<Index> dims, const char* op) const {
    return resolve_shape(std::span<const Index>(dims.begin(), dims.size()), op);
  }

  // Strides that express `target` over this tensor's memory without a copy, if any exist
  // (the algorithm of PyTorch's computeStride: split the old shape into contiguous chunks).
  bool view_strides(const Shape& target, Strides& out) const {
    out = Shape::filled(target.rank(), 1);
    if (numel() == 0 || rank() == 0) {
      out = contiguous_strides(target);
      return true;
    }
    int view_d = target.rank() - 1;
    Index chunk_base_stride = strides_[rank() - 1];
    Index tensor_numel = 1, view_numel = 1;
    for (int d = rank() - 1; d >= 0; --d) {
      tensor_numel *= shape_[d];
      if (d == 0 || (shape_[d - 1] != 1 && strides_[d - 1] != tensor_numel * chunk_base_stride)) {
        while (view_d >= 0 && (view_numel < tensor_numel || target[view_d] == 1)) {
          out[view_d] = view_numel * chunk_base_stride;
          view_numel *= target[view_d];
          --view_d;
        }
        if (view_numel != tensor_numel) return false;
        if (d > 0) {
          chunk_base_stride = strides_[d - 1];
          tensor_numel = 1;
          view_numel = 1;
        }
      }
    }
    return view_d == -1;
  }

  std::shared_ptr<Storage<D>> storage_;
  Index offset_ = 0;
  Shape shape_;
  Strides strides_;
  std::shared_ptr<autograd::Meta<T, D>> meta_;
};

}  // namespace cerberus

// Evaluation of expressions into tensors (kept in its own header; included here so that this
// header alone is enough to write `Tensor<float> y = a + b;`).
#include "cerberus/expr/evaluate.hpp"
#include "cerberus/autograd/node.hpp"
#include "cerberus/autograd/expr_grad.hpp"
