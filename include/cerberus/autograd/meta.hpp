// What a tensor knows about autodiff: whether it requires grad, its accumulated gradient (leaves)
// and the node that produced it (non-leaves). Shared by all copies of one tensor handle.
#pragma once

#include <memory>

#include "cerberus/core/device.hpp"
#include "cerberus/core/dtype.hpp"

namespace cerberus {
template <Element T, Device D>
class Tensor;
}

namespace cerberus::autograd {

template <class T, class D>
class GradNode;

template <class T, class D>
struct Meta {
  bool requires_grad = false;
  Tensor<T, D> grad;                            // leaves: the accumulated gradient
  std::shared_ptr<GradNode<T, D>> grad_fn;      // non-leaves: the op that produced the tensor
  std::weak_ptr<GradNode<T, D>> accumulator;    // leaves: where backward adds the gradient
};

}  // namespace cerberus::autograd
