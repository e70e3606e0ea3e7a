// Cross-stitch units (Misra et al. 2016): a trunk per task (or per group of tasks), all started
// from the given trunk's values, whose activations are mixed after every block by a learned
// G x G matrix per block:
//
//   x_i <- sum_j alpha_l[i, j] x_j        after block l, for every trunk i (G trunks)
//
//   mtl::CrossStitch<>                                          a trunk per task
//   mtl::CrossStitch<mtl::Group<"u", "a", "b">, mtl::Group<"g", "c">>   a trunk per group
// alpha starts near the identity: 0.9 on the diagonal, 0.1 / (G - 1) elsewhere (each row sums
// to one, so trunks with equal weights start as independent copies). With alpha = identity the
// model is G independent trunks.
//
// Flow: every trunk runs on every row of the batch (an example's activations in the other
// tasks' trunks are what its own trunk mixes in); after block l the G activations [B, T, C] are
// stacked to [G, B*T*C] and multiplied by alpha_l (one GEMM); then each trunk's final norm, and
// each task reads its rows of its trunk's output. Cost: G trunks over the whole batch. Because
// the trunks are coupled, a task absent from the batch still shapes (and gets gradient through)
// the others' activations; its head gets none.
// Parameters: stitch.alpha [L, G, G] (alpha_l = stitch.alpha[l]), trunks.<task or group>.* ; tied LM heads
// tie to their own trunk's embedding.
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
#include "cerberus/ops/indexing.hpp"
#include "cerberus/ops/matmul.hpp"

namespace cerberus::mtl {

// The mixing matrices, one per block: alpha [L, G, G] (a module, so the model lists it).
template <Element T, Device D = cpu>
class StitchUnits : public nn::Module<StitchUnits<T, D>, T, D> {
 public:
  Tensor<T, D> alpha;

  template <class F>
  void visit_own_parameters(F&& f) {
    f("alpha", alpha);
  }
};

template <class Tr, class Names, class... Groups>
class CrossStitchSharing : public nn::Module<CrossStitchSharing<Tr, Names, Groups...>, typename Tr::element_type, trunk_device_t<Tr>> {
  static_assert(BlockTrunk<Tr>, "cross-stitch units need a trunk made of a stack of blocks, such as nn::Encoder or nn::Decoder.");
  static constexpr std::size_t n_tasks_ = Names::value.size();
  static constexpr std::array<std::size_t, n_tasks_> compute_group_of() {
    if constexpr (sizeof...(Groups) == 0) {
      std::array<std::size_t, n_tasks_> out{};
      for (std::size_t k = 0; k < n_tasks_; ++k) out[k] = k;
      return out;
    } else {
      return names::group_of_tasks<n_tasks_, Groups...>(Names::value);
    }
  }

 public:
  using T = typename Tr::element_type;
  using D = trunk_device_t<Tr>;
  static constexpr std::size_t n_tasks = n_tasks_;
  static constexpr std::size_t n_trunks = sizeof...(Groups) == 0 ? n_tasks : sizeof...(Groups);
  static constexpr std::array<std::size_t, n_tasks> group_of = compute_group_of();

  std::vector<Tr> trunks;  // one per task (no groups) or per group
  StitchUnits<T, D> stitch;   // alpha [L, G, G]

  CrossStitchSharing(Tr t, Generator&) {
    const Index layers = static_cast<Index>(t.layers.size()), g = static_cast<Index>(n_trunks);
    for (std::size_t i = 0; i + 1 < n_trunks; ++i) trunks.push_back(detail::deep_copy(t));
    trunks.push_back(std::move(t));  // the last one keeps the given storage
    const double off = n_trunks > 1 ? 0.1 / static_cast<double>(n_trunks - 1) : 0.0, diag = n_trunks > 1 ? 0.9 : 1.0;
    std::vector<T> alpha(static_cast<std::size_t>(layers * g * g));
    for (Index l = 0; l < layers; ++l)
      for (Index i = 0; i < g; ++i)
        for (Index j = 0; j < g; ++j) alpha[static_cast<std::size_t>((l * g + i) * g + j)] = static_cast<T>(i == j ? diag : off);
    stitch.alpha = nn::detail::make_parameter(detail::host_to<D>(from_vector<T>(alpha, Shape{layers, g, g})));
  }

  static std::string trunk_name(std::size_t g) {
    if constexpr (sizeof...(Groups) == 0) return std::string(Names::value[g]);
    else {
      constexpr std::array<std::string_view, sizeof...(Groups)> names{std::string_view(Groups::name)...};
      return std::string(names[g]);
    }
  }

  HeadContext<T, D> context(std::size_t task) { return detail::trunk_context(trunks[group_of[task]]); }

  // The G trunks' hidden states [B, T, C] on the whole batch, stitched after every block.
  std::vector<Tensor<T, D>> stitched(const Tensor<std::int64_t, D>& ids, const Tensor<std::uint8_t, D>& padding, const nn::Packing<D>& packing = {}) {
    const std::size_t layers = trunks.front().layers.size();
    const Tensor<T, D>& alpha = stitch.alpha;
    if (alpha.rank() != 3 || alpha.size(0) != static_cast<Index>(layers) || alpha.size(1) != static_cast<Index>(n_trunks) ||
        alpha.size(2) != static_cast<Index>(n_trunks))
      throw ShapeError("[mtl::CrossStitch] stitch must be [" + std::to_string(layers) + ", " + std::to_string(n_trunks) + ", " +
                       std::to_string(n_trunks) + "] (blocks, trunks, trunks), got " + alpha.shape().to_string());
    std::vector<Tensor<T, D>> xs;
    for (auto& t : trunks) xs.push_back(detail::embed(t, ids, packing));
    for (std::size_t l = 0; l < layers; ++l) {
      for (std::size_t g = 0; g < n_trunks; ++g)
        xs[g] = detail::run_blocks(trunks[g].layers, l, l + 1, xs[g], padding, trunks[g].embed_positions, packing);
      const Shape shape = xs.front().shape();
      const Tensor<T, D> mixed = matmul(alpha.select(0, static_cast<Index>(l)), stack(xs, 0).view({static_cast<Index>(n_trunks), -1}));
      for (std::size_t g = 0; g < n_trunks; ++g) xs[g] = mixed.select(0, static_cast<Index>(g)).view(shape);
    }
    for (std::size_t g = 0; g < n_trunks; ++g) xs[g] = trunks[g].final_norm(xs[g]);
    return xs;
  }

  std::vector<std::optional<Tensor<T, D>>> hidden(const Batch<T, D>& batch, const detail::Rows<D>& rows) {
    const std::vector<Tensor<T, D>> xs = stitched(batch.ids, batch.padding, detail::packing_of(batch));
    std::vector<std::optional<Tensor<T, D>>> out(n_tasks);
    for (std::size_t k = 0; k < n_tasks; ++k) {
      if (!rows[k]) continue;
      const Tensor<T, D>& h = xs[group_of[k]];
      out[k] = rows[k]->numel() == h.size(0) ? h : index_select(h, 0, *rows[k]);
    }
    return out;
  }
  Tensor<T, D> penalty() { return {}; }
  // No storage is shared; the stitched trunks and the stitch are what the tasks have in common.
  nn::ParameterList<T, D> shared_parameters() const { return this->named_parameters(); }

  template <class F>
  void visit_children(F&& f) {
    f("stitch", stitch);
    for (std::size_t g = 0; g < trunks.size(); ++g) f("trunks." + trunk_name(g), trunks[g]);
  }
};

// The strategy tag: no groups = a trunk per task.
template <class... Groups>
struct CrossStitch {
  static_assert((is_group_v<Groups> && ...), "CrossStitch takes zero or more mtl::Group<\"name\", \"task\", ...>.");
  static constexpr const char* name = "CrossStitch";
  template <class Names>
  static constexpr bool groups_known = names::groups_name_known_tasks<Names::value.size(), Groups...>(Names::value);
  template <class Names>
  static constexpr bool groups_partition =
      sizeof...(Groups) == 0 || names::groups_cover_tasks_once<Names::value.size(), Groups...>(Names::value);
  template <class Tr, class Names>
  using impl = CrossStitchSharing<Tr, Names, Groups...>;
};

}  // namespace cerberus::mtl
