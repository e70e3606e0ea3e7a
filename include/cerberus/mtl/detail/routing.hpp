#if !defined(CERBERUS_DETAIL_INCLUDE_ALLOWED)
#error "cerberus/mtl/detail/routing.hpp is internal; include <cerberus/mtl/model.hpp> instead"
#endif
// Routing of a mixed-task batch through groups: a group's rows are its present tasks' rows one
// after the other, so each task's hidden states are a contiguous slice of its group's output.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "cerberus/mtl/batch.hpp"

namespace cerberus::mtl::detail {

// Each task's row indices on device D (mtl::route); nullopt = absent.
template <Device D = cpu>
using Rows = std::vector<std::optional<Tensor<std::int64_t, D>>>;

struct GroupPart {
  std::size_t task;
  Index offset, count;
};
template <Device D = cpu>
struct GroupRoute {
  std::optional<Tensor<std::int64_t, D>> rows;  // nullopt: no task of the group is in the batch
  std::vector<GroupPart> parts;
};

template <std::size_t N, Device D>
std::vector<GroupRoute<D>> group_routes(const Rows<D>& rows, const std::array<std::size_t, N>& group_of, std::size_t n_groups) {
  std::vector<GroupRoute<D>> out(n_groups);
  std::vector<std::vector<Tensor<std::int64_t, D>>> pieces(n_groups);
  std::vector<Index> filled(n_groups, 0);
  for (std::size_t k = 0; k < N; ++k) {
    if (!rows[k]) continue;
    const std::size_t g = group_of[k];
    out[g].parts.push_back({k, filled[g], rows[k]->numel()});
    filled[g] += rows[k]->numel();
    pieces[g].push_back(*rows[k]);
  }
  for (std::size_t g = 0; g < n_groups; ++g)
    if (!pieces[g].empty()) out[g].rows = pieces[g].size() == 1 ? pieces[g][0] : concat(pieces[g], 0);
  return out;
}

// Each task's slice of its group's output [B_g, ...].
template <class T, Device D>
void scatter_parts(const GroupRoute<D>& route, const Tensor<T, D>& group_out, std::vector<std::optional<Tensor<T, D>>>& per_task) {
  for (const auto& part : route.parts) per_task[part.task] = group_out.slice(0, part.offset, part.offset + part.count);
}

template <Device D>
Tensor<std::uint8_t, D> select_rows(const Tensor<std::uint8_t, D>& padding, const Tensor<std::int64_t, D>& rows) {
  return padding.defined() ? index_select(padding, 0, rows) : Tensor<std::uint8_t, D>{};
}

}  // namespace cerberus::mtl::detail
