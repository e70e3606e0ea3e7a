// A parameter with its hierarchical name: the one currency shared by modules (which produce
// them), optimizers (which update them and key their state by name), checkpoints (which save and
// load them by name) and multi-task sharing (which decides who holds the same storage).
//
// Names are dot-separated paths after the module tree, HF/LibTorch style:
// `decoder.layers.0.attn.q_proj.weight`. Two entries whose tensors share storage are the same
// parameter reached twice (tied embeddings); `unique_parameters` keeps the first name of each.
#pragma once

#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cerberus/tensor/tensor.hpp"

namespace cerberus::nn {

template <Element T = float, Device D = cpu>
struct NamedParameter {
  std::string name;
  Tensor<T, D> tensor;
};

template <Element T = float, Device D = cpu>
using ParameterList = std::vector<NamedParameter<T, D>>;

// Drops later entries whose tensor is the same storage and view as an earlier one, so a tied
// weight is updated (and saved) once.
template <Element T, Device D>
ParameterList<T, D> unique_parameters(const ParameterList<T, D>& parameters) {
  ParameterList<T, D> out;
  std::unordered_set<const void*> seen;
  for (const auto& p : parameters)
    if (seen.insert(static_cast<const void*>(p.tensor.data())).second) out.push_back(p);
  return out;
}

}  // namespace cerberus::nn
