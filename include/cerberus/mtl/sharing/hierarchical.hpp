// Hierarchical sharing: the bottom blocks are shared by every task, the upper blocks by the tasks
// of one group (e.g. understanding vs generation), the heads are per task.
//
//   mtl::Hierarchical<2, mtl::Group<"understanding", "sentiment", "topic">,
//                        mtl::Group<"generation", "translate", "summarize">>
// SharedLayers = how many bottom blocks (and the embeddings) every task shares; blocks
// [SharedLayers, L) and the final norm get one copy per group, made from the given trunk (so
// every group starts from the same, e.g. pre-trained, weights). The groups must partition the
// tasks (a compile error otherwise).
//
// Flow over a mixed batch: embed + shared blocks once over all B rows; then per group present in
// the batch, its rows (its tasks' rows one after the other, index_select) through its own upper
// blocks and final norm; each task's hidden states are a contiguous slice of its group's output.
// Parameters: trunk.* (embeddings and blocks 0 .. SharedLayers-1; its upper blocks and final
// norm are moved into the groups), groups.<group>.layers.{i}.*, groups.<group>.final_norm.*.
#pragma once

#include <array>
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

namespace cerberus::mtl {

// A group's copy of the upper blocks and the final norm. Layers keep the trunk's numbering.
template <class Block, class NormT, class T, Device D = cpu>
class UpperStack : public nn::Module<UpperStack<Block, NormT, T, D>, T, D> {
 public:
  std::vector<Block> layers;
  NormT final_norm;
  std::size_t first = 0;  // trunk index of layers[0]

  template <class F>
  void visit_children(F&& f) {
    for (std::size_t i = 0; i < layers.size(); ++i) f("layers." + std::to_string(first + i), layers[i]);
    f("final_norm", final_norm);
  }
};

template <class Tr, class Names, Index Shared, class... Groups>
class HierarchicalSharing : public nn::Module<HierarchicalSharing<Tr, Names, Shared, Groups...>, typename Tr::element_type, trunk_device_t<Tr>> {
  static_assert(BlockTrunk<Tr>, "hierarchical sharing needs a trunk made of a stack of blocks, such as nn::Encoder or nn::Decoder.");

 public:
  using T = typename Tr::element_type;
  using D = trunk_device_t<Tr>;
  using Block = typename decltype(Tr::layers)::value_type;
  using NormT = decltype(Tr::final_norm);
  static constexpr std::size_t n_tasks = Names::value.size();
  static constexpr std::size_t n_groups = sizeof...(Groups);
  static constexpr std::array<std::size_t, n_tasks> group_of = names::group_of_tasks<n_tasks, Groups...>(Names::value);
  static constexpr std::array<std::string_view, n_groups> group_names{std::string_view(Groups::name)...};

  Tr trunk;                                              // embeddings + shared bottom blocks
  std::vector<UpperStack<Block, NormT, T, D>> groups;       // one per group

  HierarchicalSharing(Tr t, Generator&) : trunk(std::move(t)) {
    const Index n_layers = static_cast<Index>(trunk.layers.size());
    if (Shared < 0 || Shared > n_layers)
      throw ValueError("[mtl::Hierarchical] SharedLayers (" + std::to_string(Shared) + ") must be in [0, " + std::to_string(n_layers) +
                       "], the trunk's number of blocks");
    UpperStack<Block, NormT, T, D> upper;
    upper.first = static_cast<std::size_t>(Shared);
    upper.layers.assign(trunk.layers.begin() + Shared, trunk.layers.end());
    upper.final_norm = trunk.final_norm;
    for (std::size_t g = 0; g < n_groups; ++g) groups.push_back(detail::deep_copy(upper));
    trunk.layers.resize(static_cast<std::size_t>(Shared));
    trunk.final_norm = NormT{};  // lives in the groups now (an undefined norm lists no parameter)
  }

  HeadContext<T, D> context(std::size_t) { return detail::trunk_context(trunk); }

  std::vector<std::optional<Tensor<T, D>>> hidden(const Batch<T, D>& batch, const detail::Rows<D>& rows) {
    const nn::Packing<D> packing = detail::packing_of(batch);
    Tensor<T, D> x = detail::embed(trunk, batch.ids, packing);
    x = detail::run_blocks(trunk.layers, 0, trunk.layers.size(), x, batch.padding, trunk.embed_positions, packing);
    std::vector<std::optional<Tensor<T, D>>> out(n_tasks);
    const auto routes = detail::group_routes(rows, group_of, n_groups);
    for (std::size_t g = 0; g < n_groups; ++g) {
      if (!routes[g].rows) continue;
      const bool all = routes[g].rows->numel() == x.size(0) && routes[g].parts.size() == 1;
      const Tensor<T, D> xg = all ? x : index_select(x, 0, *routes[g].rows);
      const Tensor<std::uint8_t, D> pg = all ? batch.padding : detail::select_rows(batch.padding, *routes[g].rows);
      const nn::Packing<D> packing_g = all ? packing : detail::select_packing(packing, *routes[g].rows);
      auto& upper = groups[g];
      const Tensor<T, D> hg =
          upper.final_norm(detail::run_blocks(upper.layers, 0, upper.layers.size(), xg, pg, trunk.embed_positions, packing_g));
      detail::scatter_parts(routes[g], hg, out);
    }
    return out;
  }
  Tensor<T, D> penalty() { return {}; }
  // The parameters every task shares: the embeddings and the bottom blocks.
  nn::ParameterList<T, D> shared_parameters() const { return trunk.named_parameters("trunk"); }

  template <class F>
  void visit_children(F&& f) {
    f("trunk", trunk);
    for (std::size_t g = 0; g < n_groups; ++g) f("groups." + std::string(group_names[g]), groups[g]);
  }
};

// The strategy tag: SharedLayers bottom blocks shared, then one copy of the rest per group.
template <Index SharedLayers, class... Groups>
struct Hierarchical {
  static_assert(sizeof...(Groups) >= 1 && (is_group_v<Groups> && ...),
                "Hierarchical takes the number of shared blocks, then one or more mtl::Group<\"name\", \"task\", ...>.");
  static constexpr const char* name = "Hierarchical";
  static constexpr Index shared_layers = SharedLayers;
  template <class Names>
  static constexpr bool groups_known = names::groups_name_known_tasks<Names::value.size(), Groups...>(Names::value);
  template <class Names>
  static constexpr bool groups_partition = names::groups_cover_tasks_once<Names::value.size(), Groups...>(Names::value);
  template <class Tr, class Names>
  using impl = HierarchicalSharing<Tr, Names, SharedLayers, Groups...>;
};

}  // namespace cerberus::mtl
