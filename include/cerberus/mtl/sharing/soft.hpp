// Soft parameter sharing (Duong et al. 2015; Yang & Hospedales 2017): a trunk per task (or per
// group of tasks), all started from the given trunk's values, coupled by an L2 penalty between
// corresponding parameters:
//
//   penalty = Coef * sum_{i < j} sum_p || theta_i,p - theta_j,p ||^2
//   d penalty / d theta_i,p = 2 Coef sum_{j != i} (theta_i,p - theta_j,p)
//
//   mtl::Soft<1e-3>                                            a trunk per task
//   mtl::Soft<1e-3, mtl::Group<"u", "a", "b">, mtl::Group<"g", "c">>   a trunk per group
// The model adds the penalty to the loss (Model::step runs its backward after the weighting's;
// Model::total_loss includes it). Each trunk runs on its own tasks' rows of the batch only.
// Parameters: trunks.<task or group>.* ; tied LM heads tie to their own trunk's embedding.
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

template <class Tr, class Names, double Coef, class... Groups>
class SoftSharing : public nn::Module<SoftSharing<Tr, Names, Coef, Groups...>, typename Tr::element_type, trunk_device_t<Tr>> {
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
  static constexpr double coefficient = Coef;

  std::vector<Tr> trunks;  // one per task (no groups) or per group

  SoftSharing(Tr t, Generator&) {
    for (std::size_t g = 0; g + 1 < n_trunks; ++g) trunks.push_back(detail::deep_copy(t));
    trunks.push_back(std::move(t));  // the last one keeps the given storage
  }

  static std::string trunk_name(std::size_t g) {
    if constexpr (sizeof...(Groups) == 0) return std::string(Names::value[g]);
    else {
      constexpr std::array<std::string_view, sizeof...(Groups)> names{std::string_view(Groups::name)...};
      return std::string(names[g]);
    }
  }

  Tr& trunk() { return trunks.front(); }
  HeadContext<T, D> context(std::size_t task) { return detail::trunk_context(trunks[group_of[task]]); }

  std::vector<std::optional<Tensor<T, D>>> hidden(const Batch<T, D>& batch, const detail::Rows<D>& rows) {
    std::vector<std::optional<Tensor<T, D>>> out(n_tasks);
    const auto routes = detail::group_routes(rows, group_of, n_trunks);
    for (std::size_t g = 0; g < n_trunks; ++g) {
      if (!routes[g].rows) continue;
      const auto& r = *routes[g].rows;
      const bool all = r.numel() == batch.size() && routes[g].parts.size() == 1;
      const Tensor<T, D> h = detail::trunk_forward(trunks[g], all ? batch.ids : index_select(batch.ids, 0, r),
                                                all ? batch.padding : detail::select_rows(batch.padding, r),
                                                all ? detail::packing_of(batch) : detail::select_packing(detail::packing_of(batch), r));
      detail::scatter_parts(routes[g], h, out);
    }
    return out;
  }

  // Coef * sum over pairs of trunks and corresponding parameters of the squared L2 distance.
  Tensor<T, D> penalty() {
    std::vector<nn::ParameterList<T, D>> params;
    for (auto& t : trunks) params.push_back(t.named_parameters());
    Tensor<T, D> total;
    for (std::size_t i = 0; i < params.size(); ++i)
      for (std::size_t j = i + 1; j < params.size(); ++j)
        for (std::size_t p = 0; p < params[i].size(); ++p) {
          const Tensor<T, D> d = params[i][p].tensor - params[j][p].tensor;
          const Tensor<T, D> s = sum(d * d);
          total = total.defined() ? Tensor<T, D>(total + s) : s;
        }
    if (!total.defined()) return {};
    return total * Coef;
  }
  // Soft sharing shares no storage; the coupled trunks are what the tasks have in common.
  nn::ParameterList<T, D> shared_parameters() const { return this->named_parameters(); }

  template <class F>
  void visit_children(F&& f) {
    for (std::size_t g = 0; g < trunks.size(); ++g) f("trunks." + trunk_name(g), trunks[g]);
  }
};

// The strategy tag: Coef is the L2 coupling coefficient; no groups = a trunk per task.
template <double Coef, class... Groups>
struct Soft {
  static_assert((is_group_v<Groups> && ...), "Soft takes a coefficient, then zero or more mtl::Group<\"name\", \"task\", ...>.");
  static_assert(Coef >= 0.0, "the soft-sharing coefficient must not be negative.");
  static constexpr const char* name = "Soft";
  template <class Names>
  static constexpr bool groups_known = names::groups_name_known_tasks<Names::value.size(), Groups...>(Names::value);
  template <class Names>
  static constexpr bool groups_partition =
      sizeof...(Groups) == 0 || names::groups_cover_tasks_once<Names::value.size(), Groups...>(Names::value);
  template <class Tr, class Names>
  using impl = SoftSharing<Tr, Names, Coef, Groups...>;
};

}  // namespace cerberus::mtl
