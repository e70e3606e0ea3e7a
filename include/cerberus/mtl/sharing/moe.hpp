// Mixtures of experts over a shared trunk: MMoE (Ma et al. 2018) and CGC, the single-level
// form of PLE (Tang et al. 2020).
//
//   mtl::MMoE<4>          4 shared experts, a softmax gate per task over them
//   mtl::CGC<2, 1>        2 shared experts + 1 expert per task; task k's gate mixes the shared
//                         experts and its own
//   mtl::MMoE<4, 32>      experts with hidden width 32 (0, the default: the trunk's d_ff)
// Legend: B = examples, T = time, C = d_model, S = shared experts, P = experts per task,
// E = S + P experts one gate mixes, F = an expert's hidden width.
//
// An expert is an nn::MLP of the trunk's kind (GELU or SwiGLU, C -> F -> C) applied to the
// trunk's hidden states h [B, T, C]. Gates are per token: task k's gate is a Linear C -> E
// without bias, g_k = softmax(h W_k^T) [B, T, E], so every token mixes its own experts. Task k's
// hidden states are
//   h_k + sum_e g_k,e * expert_e(h_k)
// The residual h_k is not in the papers (their towers read the mixture alone); here it keeps the
// trunk contract: a model starts near Hard sharing's function, and a tied LM head still reads
// the embedding's space.
//
// Flow over a mixed batch: the trunk and the shared experts run once over all B rows; per task
// present, its rows of both (index_select), its own experts on its rows, its gate. A task absent
// from the batch runs neither its gate nor its experts: they get no gradient.
// Parameters: trunk.*, shared_experts.{e}.*, task_experts.<task>.{e}.*, gates.<task>.weight [E, C].
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#define CERBERUS_DETAIL_INCLUDE_ALLOWED
#include "cerberus/mtl/detail/routing.hpp"
#include "cerberus/mtl/detail/trunk.hpp"
#undef CERBERUS_DETAIL_INCLUDE_ALLOWED
#include "cerberus/mtl/task.hpp"
#include "cerberus/nn/linear.hpp"
#include "cerberus/nn/mlp.hpp"
#include "cerberus/nn/module.hpp"
#include "cerberus/ops/indexing.hpp"
#include "cerberus/ops/reduce.hpp"
#include "cerberus/ops/softmax.hpp"

namespace cerberus::mtl {

// The experts of one task (CGC), a module so that they are named task_experts.<task>.{e}.
template <Element T, Device D = cpu>
class ExpertList : public nn::Module<ExpertList<T, D>, T, D> {
 public:
  std::vector<nn::MLP<T, D>> experts;

  template <class F>
  void visit_children(F&& f) {
    for (std::size_t e = 0; e < experts.size(); ++e) f(std::to_string(e), experts[e]);
  }
};

template <Trunk Tr, class Names, std::size_t NShared, std::size_t NSpecific, Index Width>
class ExpertSharing : public nn::Module<ExpertSharing<Tr, Names, NShared, NSpecific, Width>, typename Tr::element_type, trunk_device_t<Tr>> {
 public:
  using T = typename Tr::element_type;
  using D = trunk_device_t<Tr>;
  static constexpr std::size_t n_tasks = Names::value.size();
  static constexpr std::size_t n_shared = NShared;
  static constexpr std::size_t n_specific = NSpecific;
  static constexpr std::size_t n_gated = NShared + NSpecific;  // E

  Tr trunk;
  ExpertList<T, D> shared;                // S experts, every task's gate mixes them
  std::vector<ExpertList<T, D>> specific;  // per task, P experts only its gate mixes
  std::vector<nn::Linear<T, D>> gates;     // per task, C -> E

  ExpertSharing(Tr t, Generator& gen) : trunk(std::move(t)) {
    nn::TransformerConfig c = trunk.config();
    if constexpr (Width > 0) c.d_ff = Width;
    for (std::size_t e = 0; e < NShared; ++e) shared.experts.emplace_back(c, 1, gen);
    specific.resize(n_tasks);
    if constexpr (NSpecific > 0)  // (constexpr: no "pointless comparison" warning for MMoE)
      for (auto& list : specific)
        for (std::size_t e = 0; e < NSpecific; ++e) list.experts.emplace_back(c, 1, gen);
    for (std::size_t k = 0; k < n_tasks; ++k) gates.emplace_back(c.d_model, static_cast<Index>(n_gated), false, gen);
  }

  HeadContext<T, D> context(std::size_t) { return detail::trunk_context(trunk); }

  // Task k's gate on hidden states h [B, T, C]: softmax over the E experts, [B, T, E].
  Tensor<T, D> gate(std::size_t task, const Tensor<T, D>& h) {
    check_hidden(h);
    return softmax(gates.at(task)(h), -1);
  }

  // Task k's mixture on its hidden states h [B_k, T, C]; `shared_out` [B_k, T, S, C] are the
  // shared experts on those rows (computed here when undefined).
  Tensor<T, D> mix(std::size_t task, const Tensor<T, D>& h, Tensor<T, D> shared_out = {}) {
    check_hidden(h);
    if (!shared_out.defined()) shared_out = run(shared, h);
    Tensor<T, D> experts = shared_out;
    if constexpr (NSpecific > 0) experts = concat(std::vector<Tensor<T, D>>{shared_out, run(specific.at(task), h)}, 2);
    return h + sum(experts * gate(task, h).unsqueeze(3), 2);
  }

  std::vector<std::optional<Tensor<T, D>>> hidden(const Batch<T, D>& batch, const detail::Rows<D>& rows) {
    const Tensor<T, D> h = detail::trunk_forward(trunk, batch.ids, batch.padding, detail::packing_of(batch));
    const Tensor<T, D> shared_out = run(shared, h);  // [B, T, S, C]
    std::vector<std::optional<Tensor<T, D>>> out(n_tasks);
    for (std::size_t k = 0; k < n_tasks; ++k) {
      if (!rows[k]) continue;
      const bool all = rows[k]->numel() == h.size(0);
      out[k] = mix(k, all ? h : index_select(h, 0, *rows[k]), all ? shared_out : index_select(shared_out, 0, *rows[k]));
    }
    return out;
  }
  Tensor<T, D> penalty() { return {}; }
  // What every task reads: the trunk and the shared experts.
  nn::ParameterList<T, D> shared_parameters() const {
    nn::ParameterList<T, D> out = trunk.named_parameters("trunk");
    for (auto& p : shared.named_parameters("shared_experts")) out.push_back(p);
    return out;
  }

  template <class F>
  void visit_children(F&& f) {
    f("trunk", trunk);
    f("shared_experts", shared);
    if constexpr (NSpecific > 0)
      for (std::size_t k = 0; k < n_tasks; ++k) f("task_experts." + std::string(Names::value[k]), specific[k]);
    for (std::size_t k = 0; k < n_tasks; ++k) f("gates." + std::string(Names::value[k]), gates[k]);
  }

 private:
  // Every expert of `list` on h [B, T, C], stacked: [B, T, n, C].
  static Tensor<T, D> run(ExpertList<T, D>& list, const Tensor<T, D>& h) {
    std::vector<Tensor<T, D>> outs;
    outs.reserve(list.experts.size());
    for (auto& expert : list.experts) outs.push_back(expert(h));
    return stack(outs, 2);
  }
  void check_hidden(const Tensor<T, D>& h) const {
    const Index c = gates.front().in_features();
    if (h.rank() != 3 || h.size(2) != c)
      throw ShapeError("[mtl::MoE] hidden states must be [B, T, " + std::to_string(c) + "], got " + h.shape().to_string());
  }
};

// The strategy tags.
template <std::size_t NExperts, Index ExpertWidth = 0>
struct MMoE {
  static_assert(NExperts >= 1, "a mixture of experts needs at least one shared expert.");
  static_assert(ExpertWidth >= 0, "an expert's hidden width must be positive, or 0 for the trunk's d_ff.");
  static constexpr const char* name = "MMoE";
  template <class Names>
  static constexpr bool groups_known = true;
  template <class Names>
  static constexpr bool groups_partition = true;
  template <class Tr, class Names>
  using impl = ExpertSharing<Tr, Names, NExperts, 0, ExpertWidth>;
};

template <std::size_t NShared, std::size_t NSpecific, Index ExpertWidth = 0>
struct CGC {
  static_assert(NShared >= 1, "a mixture of experts needs at least one shared expert.");
  static_assert(NSpecific >= 1, "CGC needs at least one task-specific expert per task (without them it is MMoE).");
  static_assert(ExpertWidth >= 0, "an expert's hidden width must be positive, or 0 for the trunk's d_ff.");
  static constexpr const char* name = "CGC";
  template <class Names>
  static constexpr bool groups_known = true;
  template <class Names>
  static constexpr bool groups_partition = true;
  template <class Tr, class Names>
  using impl = ExpertSharing<Tr, Names, NShared, NSpecific, ExpertWidth>;
};

}  // namespace cerberus::mtl
