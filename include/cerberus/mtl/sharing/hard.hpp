// Hard parameter sharing (Caruana 1997): one trunk for every task, a head per task.
//
//   mtl::Model<nn::Encoder<>, mtl::Hard, W, Task<"a", H1>, Task<"b", H2>>
// The trunk runs once over the whole mixed batch; each task's head reads the rows of its own
// examples (index_select of the hidden states [B, T, C] -> [B_k, T, C]).
// Parameters: trunk.* (shared by every task).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#define CERBERUS_DETAIL_INCLUDE_ALLOWED
#include "cerberus/mtl/detail/routing.hpp"
#include "cerberus/mtl/detail/trunk.hpp"
#undef CERBERUS_DETAIL_INCLUDE_ALLOWED
#include "cerberus/nn/module.hpp"

namespace cerberus::mtl {

template <Trunk Tr, std::size_t N>
class HardSharing : public nn::Module<HardSharing<Tr, N>, typename Tr::element_type, trunk_device_t<Tr>> {
 public:
  using T = typename Tr::element_type;
  using D = trunk_device_t<Tr>;
  Tr trunk;

  HardSharing(Tr t, Generator&) : trunk(std::move(t)) {}

  HeadContext<T, D> context(std::size_t) { return detail::trunk_context(trunk); }

  std::vector<std::optional<Tensor<T, D>>> hidden(const Batch<T, D>& batch, const detail::Rows<D>& rows) {
    const Tensor<T, D> h = detail::trunk_forward(trunk, batch.ids, batch.padding, detail::packing_of(batch));
    std::vector<std::optional<Tensor<T, D>>> out(N);
    for (std::size_t k = 0; k < N; ++k)
      if (rows[k]) out[k] = rows[k]->numel() == h.size(0) ? h : index_select(h, 0, *rows[k]);
    return out;
  }
  Tensor<T, D> penalty() { return {}; }
  nn::ParameterList<T, D> shared_parameters() const { return trunk.named_parameters("trunk"); }

  template <class F>
  void visit_children(F&& f) {
    f("trunk", trunk);
  }
};

// The strategy tag.
struct Hard {
  static constexpr const char* name = "Hard";
  template <class Names>
  static constexpr bool groups_known = true;
  template <class Names>
  static constexpr bool groups_partition = true;
  template <class Tr, class Names>
  using impl = HardSharing<Tr, Names::value.size()>;
};

}  // namespace cerberus::mtl
