// The tape. Each differentiable op that sees an input requiring grad records one Node holding
// what its backward needs; the output tensor points at it (grad_fn). backward() visits the nodes
// reachable from the output in reverse topological order, each node turning the gradient of its
// output into gradients of its inputs, and leaves accumulate into .grad().
//
// Nodes know tensors only through Tensor<T, D>'s public API, so the CUDA backend reuses them
// unchanged.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cerberus/autograd/grad_mode.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/autograd/meta.hpp"
#include "cerberus/expr/ops.hpp"  // GradNode::add_grad sums gradients with operator+

namespace cerberus::autograd {

class Node {
 public:
  virtual ~Node() = default;
  virtual const char* name() const = 0;
  // Turns the accumulated output gradient into input gradients and hands them on.
  virtual void apply() = 0;
  // Drops saved tensors: the graph is freed after backward unless retain_graph.
  virtual void release() { released_ = true; }
  virtual void clear_grad() = 0;

  // One edge per input; nullptr where that input needs no gradient.
  std::vector<std::shared_ptr<Node>> inputs;

 protected:
  void check_not_released() const {
    if (released_)
      throw Error(std::string("[backward] the graph through '") + name() +
                  "' was freed by an earlier backward(); call backward(retain_graph = true) the first time to "
                  "backpropagate through it twice");
  }
  bool released_ = false;
};

// A node whose output is a Tensor<T, D>: gradients arriving from several consumers add up here.
template <class T, class D>
class GradNode : public Node {
 public:
  void add_grad(const Tensor<T, D>& g) {
    if (!g.defined()) return;
    if (!grad_.defined()) grad_ = g;
    else grad_ = Tensor<T, D>(grad_ + g);
  }
  void clear_grad() override { grad_ = Tensor<T, D>(); }

 protected:
  // Hands input i its gradient (ignored where the input needs none).
  template <class U, class D2 = D>
  void pass_to(std::size_t i, const Tensor<U, D2>& g) {
    if (i < inputs.size() && inputs[i]) static_cast<GradNode<U, D2>&>(*inputs[i]).add_grad(g);
  }
  Tensor<T, D> grad_;
};

// Where a leaf's gradient ends up: added into its .grad().
template <class T, class D>
class AccumulateGrad final : public GradNode<T, D> {
 public:
  explicit AccumulateGrad(std::shared_ptr<Meta<T, D>> meta) : meta_(std::move(meta)) {}
  const char* name() const override { return "AccumulateGrad"; }
  void apply() override {
    if (!this->grad_.defined()) return;
    NoGradGuard no_grad;
    auto& g = meta_->grad;
    if (g.defined()) {
      g += this->grad_;
    } else if (this->grad_.storage().use_count() == 1 && this->grad_.is_contiguous() && this->grad_.offset() == 0 &&
               this->grad_.numel() * static_cast<Index>(sizeof(T)) == static_cast<Index>(this->grad_.storage()->bytes())) {
      g = this->grad_.detach();  // nobody else holds this buffer: adopt it instead of copying
    } else {
      g = this->grad_.clone();  // so that .grad() never aliases a tensor used elsewhere
    }
  }
  void release() override {}  // a leaf's accumulator holds nothing to free

 private:
  std::shared_ptr<Meta<T, D>> meta_;
};

// A node whose backward is a function from the output gradient to one gradient per input.
// Inputs are of the output's type, or of type In for ops that change it (a bf16 op whose result
// is float, e.g. cross_entropy's loss). Saved tensors live in the function's captures.
template <class T, class D, class In = T>
class FunctionNode final : public GradNode<T, D> {
 public:
  using Backward = std::function<std::vector<Tensor<In, D>>(const Tensor<T, D>&)>;
  FunctionNode(const char* name, Backward backward) : name_(name), backward_(std::move(backward)) {}
  const char* name() const override { return name_; }
  void apply() override {
    if (!this->grad_.defined()) return;
    this->check_not_released();
    const auto grads = backward_(this->grad_);
    for (std::size_t i = 0; i < grads.size(); ++i) this->template pass_to<In, D>(i, grads[i]);
  }
  void release() override {
    backward_ = nullptr;
    this->released_ = true;
  }

 private:
  const char* name_;
  Backward backward_;
};

// True when an op on these inputs must record a node.
template <class... Ts>
bool any_requires_grad(const Ts&... ts) {
  return is_grad_enabled() && (ts.requires_grad() || ...);
}

// Records `out` as produced by a FunctionNode over `inputs` (same element type and device).
template <class T, class D>
void record(Tensor<T, D>& out, const char* name, std::initializer_list<Tensor<T, D>> inputs,
            std::function<std::vector<Tensor<T, D>>(const Tensor<T, D>&)> backward) {
  auto node = std::make_shared<FunctionNode<T, D>>(name, std::move(backward));
  for (const auto& in : inputs) node->inputs.push_back(in.requires_grad() ? in.gradient_edge() : nullptr);
  out.set_grad_fn(std::move(node));
}

// Records `out` (element type T) as produced by `inputs` of another element type In.
template <class T, class In, class D>
void record_mixed(Tensor<T, D>& out, const char* name, std::initializer_list<Tensor<In, D>> inputs,
                  std::function<std::vector<Tensor<In, D>>(const Tensor<T, D>&)> backward) {
  auto node = std::make_shared<FunctionNode<T, D, In>>(name, std::move(backward));
  for (const auto& in : inputs) node->inputs.push_back(in.requires_grad() ? in.gradient_edge() : nullptr);
  out.set_grad_fn(std::move(node));
}

template <class T, class D>
std::shared_ptr<GradNode<T, D>> make_accumulator(const std::shared_ptr<Meta<T, D>>& meta) {
  return std::make_shared<AccumulateGrad<T, D>>(meta);
}

// Element-type conversion U <- T: the gradient converts back.
template <class U, class D, class T>
class ConvertNode final : public GradNode<U, D> {
 public:
  const char* name() const override { return "convert"; }
  void apply() override {
    if (this->grad_.defined()) this->template pass_to<T, D>(0, this->grad_.template to<T>());
  }
};

template <class U, class D, class T>
void record_conversion(Tensor<U, D>& out, const Tensor<T, D>& in) {
  auto node = std::make_shared<ConvertNode<U, D, T>>();
  node->inputs.push_back(in.gradient_edge());
  out.set_grad_fn(std::move(node));
}

// (Its own namespace: a nested `detail` here would hide cerberus::detail from autograd's code.)
namespace sweep_state {
inline thread_local bool frees_nodes = false;
}
// True inside a backward sweep that frees each node right after running it (retain_graph false):
// a backward function then runs once, and may hand a saved tensor over as a gradient instead of
// copying it (linear_cross_entropy's saved dx and dW when the upstream gradient is 1).
inline bool graph_freed_after_backward() { return sweep_state::frees_nodes; }

// Runs the reverse sweep from `root` seeded with `grad`.
template <class T, class D>
void run_backward(const std::shared_ptr<GradNode<T, D>>& root, const Tensor<T, D>& grad, bool retain_graph) {
  // Reverse topological order by an iterative depth-first search (no recursion limit on deep graphs).
  std::vector<Node*> order;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<Node*, std::size_t>> stack{{root.get(), 0}};
  seen.insert(root.get());
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->inputs.size()) {
      Node* child = node->inputs[next++].get();
      if (child && seen.insert(child).second) stack.push_back({child, 0});
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }
  root->add_grad(grad);
  NoGradGuard no_grad;  // backward computations are not themselves recorded
  struct SweepFlag {
    bool saved = sweep_state::frees_nodes;
    ~SweepFlag() { sweep_state::frees_nodes = saved; }
  } restore_flag;
  sweep_state::frees_nodes = !retain_graph;
  try {
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
      (*it)->apply();
      (*it)->clear_grad();
      if (!retain_graph) (*it)->release();
    }
  } catch (...) {
    for (Node* n : order) n->clear_grad();
    throw;
  }
}

}  // namespace cerberus::autograd

// Tensor is used above only inside templates, so it may be completed after them. Including it
// last (rather than first) keeps the tensor.hpp <-> node.hpp cycle safe whichever header a user
// includes first: ops included by tensor.hpp then see every declaration of this file.
#include "cerberus/tensor/tensor.hpp"
