// Adapters: one trunk, and per task a LoRA adapter (Hu et al. 2021) on every attention and MLP
// projection of the trunk; the trunk frozen (parameter-efficient) or trained with the adapters.
//
//   mtl::Adapters<8, 16.0>                          rank 8, alpha 16, trunk frozen
//   mtl::Adapters<8, 16.0, mtl::TrunkMode::trainable>
// For a projection W [O, I] (every rank-2 `.weight` under `.attn.` or `.mlp.` of the trunk),
// task k uses W + (Alpha / Rank) B_k A_k with A_k [Rank, I] ~ normal(0, 1/sqrt(I)) and B_k
// [O, Rank] = 0, so every task starts at the trunk's function. Applying the low-rank update to
// the weight (one [O, Rank] x [Rank, I] product per projection and task present) equals adding
// (Alpha/Rank) x A^T B^T to the projection's output, and leaves the trunk's fused q/k/v path
// as it is. A mixed batch runs the trunk once per task present, on that task's rows only.
// Parameters: trunk.* (frozen: requires_grad off), adapters.<task>.<projection>.lora_{A,B}.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#define CERBERUS_DETAIL_INCLUDE_ALLOWED
#include "cerberus/mtl/detail/routing.hpp"
#include "cerberus/mtl/detail/trunk.hpp"
#undef CERBERUS_DETAIL_INCLUDE_ALLOWED
#include "cerberus/mtl/task.hpp"
#include "cerberus/nn/module.hpp"
#include "cerberus/ops/matmul.hpp"

namespace cerberus::mtl {

enum class TrunkMode { frozen, trainable };

// One task's low-rank updates, one (A, B) pair per adapted projection of the trunk.
template <Element T = float, Device D = cpu>
class LoRA : public nn::Module<LoRA<T, D>, T, D> {
 public:
  std::vector<std::string> targets;  // the trunk parameter each pair adapts ("layers.0.attn.q_proj.weight")
  std::vector<Tensor<T, D>> a, b;       // A [r, I], B [O, r]

  LoRA() = default;
  LoRA(const nn::ParameterList<T, D>& trunk_parameters, Index rank, Generator& gen) {
    for (const auto& p : trunk_parameters) {
      if (!is_target(p.name, p.tensor)) continue;
      const Index out = p.tensor.size(0), in = p.tensor.size(1);
      targets.push_back(p.name);
      a.push_back(nn::detail::make_parameter(normal<T, D>(Shape{rank, in}, 0.0, 1.0 / std::sqrt(static_cast<double>(in)), gen)));
      b.push_back(nn::detail::make_parameter(zeros<T, D>(Shape{out, rank})));
    }
  }

  static bool is_target(const std::string& name, const Tensor<T, D>& t) {
    const auto ends_with = [&](const std::string& s) { return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0; };
    return t.rank() == 2 && ends_with(".weight") && (name.find(".attn.") != std::string::npos || name.find(".mlp.") != std::string::npos);
  }

  template <class F>
  void visit_own_parameters(F&& f) {
    for (std::size_t i = 0; i < targets.size(); ++i) {
      const std::string stem = targets[i].substr(0, targets[i].size() - 7);  // without ".weight"
      f(stem + ".lora_A", a[i]);
      f(stem + ".lora_B", b[i]);
    }
  }
};

template <class Tr, class Names, Index Rank, double Alpha, TrunkMode Mode>
class AdapterSharing : public nn::Module<AdapterSharing<Tr, Names, Rank, Alpha, Mode>, typename Tr::element_type, trunk_device_t<Tr>> {
 public:
  using T = typename Tr::element_type;
  using D = trunk_device_t<Tr>;
  static constexpr std::size_t n_tasks = Names::value.size();
  static constexpr double scale = Alpha / static_cast<double>(Rank);

  Tr trunk;
  std::vector<LoRA<T, D>> adapters;  // one per task

  AdapterSharing(Tr t, Generator& gen) : trunk(std::move(t)) {
    if constexpr (Mode == TrunkMode::frozen) trunk.set_trainable(false);
    const auto params = trunk.named_parameters();
    for (std::size_t k = 0; k < n_tasks; ++k) adapters.emplace_back(params, Rank, gen);
    if (adapters.front().targets.empty())
      throw ValueError("[mtl::Adapters] the trunk has no rank-2 projection weight under .attn. or .mlp. to adapt");
  }

  HeadContext<T, D> context(std::size_t) { return detail::trunk_context(trunk); }

  // The trunk as task k sees it: a handle copy whose adapted weights are W + scale * B_k A_k.
  Tr adapted(std::size_t task) {
    Tr t = trunk;
    const LoRA<T, D>& lora = adapters[task];
    std::size_t j = 0;
    t.visit_parameters("", [&](const std::string& name, Tensor<T, D>& p) {
      if (j < lora.targets.size() && name == lora.targets[j]) {
        p = p + matmul(lora.b[j], lora.a[j]) * scale;
        ++j;
      }
    });
    if (j != lora.targets.size())
      throw ValueError("[mtl::Adapters] the trunk's parameters changed since the adapters were made (" + std::to_string(j) + " of " +
                       std::to_string(lora.targets.size()) + " projections found)");
    return t;
  }

  std::vector<std::optional<Tensor<T, D>>> hidden(const Batch<T, D>& batch, const detail::Rows<D>& rows) {
    std::vector<std::optional<Tensor<T, D>>> out(n_tasks);
    for (std::size_t k = 0; k < n_tasks; ++k) {
      if (!rows[k]) continue;
      const bool all = rows[k]->numel() == batch.size();
      Tr trunk_k = adapted(k);
      out[k] = detail::trunk_forward(trunk_k, all ? batch.ids : index_select(batch.ids, 0, *rows[k]),
                                     all ? batch.padding : detail::select_rows(batch.padding, *rows[k]),
                                     all ? detail::packing_of(batch) : detail::select_packing(detail::packing_of(batch), *rows[k]));
    }
    return out;
  }
  Tensor<T, D> penalty() { return {}; }
  // The trunk when it is trained (shared by every task); nothing when it is frozen.
  nn::ParameterList<T, D> shared_parameters() const {
    if constexpr (Mode == TrunkMode::frozen) return {};
    else return trunk.named_parameters("trunk");
  }

  template <class F>
  void visit_children(F&& f) {
    f("trunk", trunk);
    for (std::size_t k = 0; k < n_tasks; ++k) f("adapters." + std::string(Names::value[k]), adapters[k]);
  }
};

// The strategy tag.
template <Index Rank, double Alpha, TrunkMode Mode = TrunkMode::frozen>
struct Adapters {
  static_assert(Rank >= 1, "the LoRA rank must be at least 1.");
  static constexpr const char* name = "Adapters";
  template <class Names>
  static constexpr bool groups_known = true;
  template <class Names>
  static constexpr bool groups_partition = true;
  template <class Tr, class Names>
  using impl = AdapterSharing<Tr, Names, Rank, Alpha, Mode>;
};

}  // namespace cerberus::mtl
